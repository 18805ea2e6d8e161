# Helpers the bench scripts share; sourced, not run.

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (1/100 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# free_port: a TCP port on loopback that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
