#!/usr/bin/env python3
"""What one call costs redis-server in CPU (user + system), paced as a quiet node sends (300 a second) and back
to back: plain commands, empty and busy scripts, the peer's INCR + PUBLISH, and chatnode's
append script. Starts its own redis-server on a free port; CPU from /proc/<pid>/stat.

    python3 load/scripts/redis_call_cost.py [CALLS]
"""
import os
import socket
import subprocess
import sys
import time

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
APPEND = os.path.join(os.path.dirname(__file__), "../../state/src/scripts/append.lua")
TAIL = '","room":"support/r1","from":"u1","body":"' + "x" * 40 + '","ts":1764000000000}'


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def main():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        # A subscriber, as a node has, so PUBLISH delivers.
        sub = socket.create_connection(("127.0.0.1", port))
        sub.sendall(resp("SUBSCRIBE", "live:{r}"))
        sub.recv(4096)

        def ticks():
            with open(f"/proc/{server.pid}/stat") as stat:
                return sum(int(x) for x in stat.read().split()[13:15])

        def roundtrip(*args):
            conn.sendall(resp(*args))
            reply = conn.recv(65536)
            while not reply.endswith(b"\r\n"):
                reply += conn.recv(65536)
            return reply

        def load(script):
            return roundtrip("SCRIPT", "LOAD", script).split(b"\r\n")[1]

        empty = load("return 1")
        nine = load("for i = 1, 9 do redis.call('EXISTS', KEYS[1]) end return 1")
        peer_in_lua = load("local id = redis.call('INCR', KEYS[1]) "
                           "redis.call('PUBLISH', ARGV[3], ARGV[1] .. id .. ARGV[2]) return id")
        with open(APPEND) as f:
            append = load(f.read())
        cases = {
            "plain EXISTS": lambda i: [roundtrip("EXISTS", "k")],
            "empty script": lambda i: [roundtrip("EVALSHA", empty, 1, "k")],
            "script, 9 EXISTS": lambda i: [roundtrip("EVALSHA", nine, 1, "k")],
            "peer: INCR, then PUBLISH": lambda i: [roundtrip("INCR", "{r}:seq2"),
                                                   roundtrip("PUBLISH", "live:{r}", '{"id":1' + TAIL)],
            "INCR + PUBLISH in one script": lambda i: [roundtrip(
                "EVALSHA", peer_in_lua, 1, "{r}:seq3", '{"type":"message","id":', TAIL, "live:{r}")],
            "chatnode's append script": lambda i: [roundtrip(
                "EVALSHA", append, 5, "{r}:seq", "{r}:log", "{r}:closed", "{r}:sent", "{r}:epoch",
                '{"type":"message","id":', TAIL, 1000, "live:{r}", 86400, 0, "", "epoch1")],
        }
        print(f"{'per message':32} {'paced µs':>9} {'burst µs':>9}   (redis-server CPU, {CALLS} each)")
        for name, call in cases.items():
            costs = []
            for rate in (300, None):
                before, start = ticks(), time.time()
                for i in range(CALLS):
                    if rate:
                        wait = start + i / rate - time.time()
                        if wait > 0:
                            time.sleep(wait)
                    call(i)
                costs.append((ticks() - before) * 1e6 / os.sysconf("SC_CLK_TCK") / CALLS)
            print(f"{name:32} {costs[0]:9.1f} {costs[1]:9.1f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
