# Helpers the bench scripts share; sourced, not run.

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (1/100 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# free_port: a TCP port on loopback that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_redis PORT PID: until the server answers; fails if it exited.
wait_redis() {
  until redis-cli -p "$1" ping >/dev/null 2>&1; do
    kill -0 "$2" 2>/dev/null || { echo "redis-server on port $1 exited at start" >&2; exit 1; }
    sleep 0.1
  done
}

# start_node NAME [FLAGS...]: a release chat node on $redis_url (logs in $out); appends its
# ws:// URL to $node_urls and its pid to $node_pids once it is ready.
start_node() {
  local port; port=$(free_port)
  ./target/release/chatnode --listen "127.0.0.1:$port" --node-name "$1" --insecure-dev-auth \
    --max-node-users 20000 --redis-url "$redis_url" "${@:2}" >/dev/null 2>"$out/node-$1.log" &
  node_pids+=($!)
  node_urls+=("ws://127.0.0.1:$port")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "chatnode $1 did not become ready on $redis_url" >&2; exit 1
}

# sum_ticks PID...: their CPU time together, in clock ticks.
sum_ticks() { local total=0; for pid in "$@"; do total=$((total + $(cpu_ticks "$pid"))); done; echo "$total"; }
