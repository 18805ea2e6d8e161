#!/usr/bin/env python3
"""Prints the table of `scripts/bench compare` from the reports in one folder: chatnode beside
the Node.js peer and the kernel floor, with the ratios issue 13 targets."""
import json
import re
import sys
from pathlib import Path

from markdown_table import print_table

folder = Path(sys.argv[1])


def reports(prefix):
    """The JSON reports of every round of one hub in one part."""
    found = []
    for path in sorted(folder.glob(f"{prefix}*.json")):
        report = json.loads(path.read_text())
        cpu = folder / (path.stem + ".redis_cpu")
        report["redis_cpu"] = float(cpu.read_text()) if cpu.exists() else None
        found.append(report)
    return found


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def fmt(value, unit="", digits=2):
    return "—" if value is None else f"{value:,.{digits}f}{unit}"


def ratio(a, b):
    return None if a is None or not b else a / b


rows = []
floor = None
floor_txt = folder / "floor.txt"
if floor_txt.exists():
    match = re.search(r"([0-9.]+) us/write", floor_txt.read_text())
    floor = float(match.group(1)) if match else None
    rows.append(("kernel floor: CPU per write (90k writes/s, 3,000 connections)", fmt(floor, " µs"), "", "", ""))

for part, label in (("delivery", "standalone"), ("redis", "with Redis")):
    ours, peer = reports(f"{part}-chatnode"), reports(f"{part}-peer")
    if not ours or not peer:
        continue
    ours_cpu = mean(r["node"]["cpu_us_per_delivery"] for r in ours)
    peer_cpu = mean(r["node"]["cpu_us_per_delivery"] for r in peer)
    rows.append((f"90k deliveries/s {label}: hub CPU per delivery", fmt(ours_cpu, " µs"), fmt(peer_cpu, " µs"),
                 fmt(ratio(ours_cpu, peer_cpu), " ×"), fmt(ratio(ours_cpu, floor), " × floor")))
    ours_p99 = mean(r["quiet"]["p99_ms"] for r in ours)
    peer_p99 = mean(r["quiet"]["p99_ms"] for r in peer)
    rows.append((f"90k deliveries/s {label}: delivery p99", fmt(ours_p99, " ms", 1), fmt(peer_p99, " ms", 1),
                 fmt(ratio(ours_p99, peer_p99), " ×"), ""))
    lost = sum(r["refused"] + r["dropped"] for r in ours + peer)
    if part == "redis":
        def redis_us(r):
            delivered = r["quiet"]["delivered"]
            return None if r["redis_cpu"] is None or not delivered else r["redis_cpu"] * 1e6 / delivered
        ours_redis = mean(redis_us(r) for r in ours)
        peer_redis = mean(redis_us(r) for r in peer)
        rows.append(("90k deliveries/s with Redis: Redis CPU per delivery", fmt(ours_redis, " µs", 3),
                     fmt(peer_redis, " µs", 3), fmt(ratio(ours_redis, peer_redis), " ×"), ""))
        both = mean(r["node"]["cpu_us_per_delivery"] + (redis_us(r) or 0) for r in ours)
        rows.append(("90k deliveries/s with Redis: hub + Redis CPU per delivery", fmt(both, " µs"),
                     fmt(mean(r["node"]["cpu_us_per_delivery"] + (redis_us(r) or 0) for r in peer), " µs"),
                     "", fmt(ratio(both, floor), " × floor")))
    if lost:
        rows.append((f"  ({label}: {lost} connections refused or dropped)", "", "", "", ""))

for size in (300, 3):
    ours, peer = reports(f"idle{size}-chatnode"), reports(f"idle{size}-peer")
    if not ours or not peer:
        continue
    ours_b = mean(r["node"]["bytes_per_connection"] for r in ours)
    peer_b = mean(r["node"]["bytes_per_connection"] for r in peer)
    held = min(r["connections_held"] for r in ours + peer)
    rows.append((f"{held:,} idle connections in rooms of {size}: memory per connection",
                 fmt(ours_b / 1024, " KiB", 1), fmt(peer_b / 1024, " KiB", 1), fmt(ratio(ours_b, peer_b), " ×"), ""))

header = ("", "chatnode", "Node.js peer", "chatnode / peer", "chatnode / floor")
print_table(header, rows)
