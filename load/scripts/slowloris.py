#!/usr/bin/env python3
"""Slowloris against a chat node: N TCP connections that send nothing or half a request head,
from a few loopback addresses, while a real client joins. Reports how many the node shed at
accept, how fast it closed the rest, what they cost it in memory, and how long the real join
took. Loopback only; every loop is bounded.

    load/scripts/slowloris.py --node 127.0.0.1:PORT --pid PID [--connections 2000] [--sources 4]
"""
import argparse
import asyncio
import base64
import os
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metric(node, name):
    with urllib.request.urlopen(f"http://{node}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def stalled(host, port, source, half):
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    except OSError:
        return None
    if half:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return reader, writer


async def closed_after(reader, start, limit):
    try:
        await asyncio.wait_for(reader.read(), timeout=limit)
    except asyncio.TimeoutError:
        return None
    except OSError:
        pass  # reset: closed all the same
    return time.monotonic() - start


async def real_join(host, port, source):
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (f"GET /v1/rooms/support/real/ws?user=real HTTP/1.1\r\nHost: {host}\r\n"
         f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    ok = head.startswith(b"HTTP/1.1 101")
    writer.close()
    return ok, time.monotonic() - start


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--limit", type=float, default=60.0)
    a = p.parse_args()
    host, port = a.node.rsplit(":", 1)
    port = int(port)
    before = rss_kib(a.pid)
    start = time.monotonic()
    conns = []
    for i in range(a.connections):
        source = f"127.0.0.{10 + i % a.sources}"
        c = await stalled(host, port, source, half=i % 2 == 0)
        if c:
            conns.append(c)
    opened = time.monotonic() - start
    peak = rss_kib(a.pid)
    ok, join_s = await real_join(host, port, "127.0.0.200")
    times = await asyncio.gather(*(closed_after(r, start, a.limit) for r, _ in conns))
    closed = [t for t in times if t is not None]
    shed = metric(a.node, "chatnode_shed_connections_total")
    print(f"stalled connections opened      {len(conns)} in {opened:.2f} s from {a.sources} addresses")
    print(f"shed at accept                  {int(shed)}")
    print(f"closed by the node              {len(closed)} of {len(conns)}"
          + (f", all within {max(closed):.2f} s" if len(closed) == len(conns) and closed else ""))
    print(f"node RSS before / with them     {before / 1024:.1f} / {peak / 1024:.1f} MiB")
    print(f"a real join meanwhile           {'upgraded' if ok else 'FAILED'} in {join_s * 1000:.1f} ms")
    for _, w in conns:
        w.close()


asyncio.run(main())
