#!/usr/bin/env python3
"""Prints the table of `scripts/bench cluster` from the reports in one folder: a fleet of two
nodes on one Redis and on clusters of 1, 3 and 6 primaries, under each load."""
import json
import sys
from pathlib import Path

from markdown_table import print_table

TICKS_PER_SECOND = 100
folder = Path(sys.argv[1])
layouts = sys.argv[2:] or ["single", "c1", "c3", "c6"]
names = {"single": "one Redis (no cluster)", "c1": "cluster, 1 primary",
         "c3": "cluster, 3 primaries", "c6": "cluster, 6 primaries"}
loads = {"rooms300": "rooms of 300, 90k deliveries/s", "rooms3": "rooms of 3, 3,000 appends/s"}

rows = []
for load, load_label in loads.items():
    for layout in layouts:
        report_path = folder / f"{layout}-{load}.json"
        cpu_path = folder / f"{layout}-{load}.cpu"
        if not report_path.exists() or not cpu_path.exists():
            continue
        report = json.loads(report_path.read_text())
        cpu = {key: int(value) for key, value in (line.split() for line in cpu_path.read_text().splitlines())}
        delivered = report["quiet"]["delivered"]
        expected = report["expected_quiet_deliveries"]
        per_delivery = lambda ticks: ticks / TICKS_PER_SECOND * 1e6 / delivered if delivered else float("nan")
        busiest_share = cpu["busiest_shard_cpu"] / cpu["redis_cpu"] if cpu["redis_cpu"] else 0.0
        lost = report["refused"] + report["dropped"] + report["other_errors"]
        rows.append((
            load_label, names.get(layout, layout),
            f"{report['delivered_per_second']:,.0f}",
            f"{delivered:,} of {expected:,}" + (f" ({lost} refused/dropped/errors)" if lost else ""),
            f"{report['quiet']['p99_ms']:.1f} ms",
            f"{per_delivery(cpu['nodes_cpu']):.2f} µs",
            f"{per_delivery(cpu['redis_cpu']):.3f} µs",
            f"{busiest_share:.0%} of {cpu['shards']}",
        ))

header = ("load", "Redis", "deliveries/s", "delivered", "p99", "nodes CPU / delivery",
          "Redis CPU / delivery", "busiest shard's share of Redis CPU")
print_table(header, rows)
