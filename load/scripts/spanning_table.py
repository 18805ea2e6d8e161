#!/usr/bin/env python3
"""Prints the table of `scripts/bench spanning` from the reports in one folder: a room of 900
on one node, and spread over three."""
import json
import sys
from pathlib import Path

from markdown_table import print_table

TICKS_PER_SECOND = 100
folder = Path(sys.argv[1])
runs = {"one-node": "one node", "three-nodes": "three nodes (members on each)"}

rows = []
for name, label in runs.items():
    report_path, cpu_path = folder / f"{name}.json", folder / f"{name}.cpu"
    if not report_path.exists() or not cpu_path.exists():
        continue
    report = json.loads(report_path.read_text())
    cpu = {key: int(value) for key, value in (line.split() for line in cpu_path.read_text().splitlines())}
    delivered = report["quiet"]["delivered"]
    expected = report["expected_quiet_deliveries"]
    per_delivery = lambda ticks: ticks / TICKS_PER_SECOND * 1e6 / delivered if delivered else float("nan")
    lost = report["refused"] + report["dropped"] + report["other_errors"]
    rows.append((
        label,
        f"{report['delivered_per_second']:,.0f}",
        f"{delivered:,} of {expected:,}" + (f" ({lost} refused/dropped/errors)" if lost else ""),
        f"{report['quiet']['p99_ms']:.1f} ms",
        f"{per_delivery(cpu['nodes_cpu']):.2f} µs",
        f"{per_delivery(cpu['redis_cpu']):.3f} µs",
    ))

header = ("a room of 900 on", "deliveries/s", "delivered", "p99", "nodes CPU / delivery",
          "Redis CPU / delivery")
print_table(header, rows)
