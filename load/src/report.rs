//! The run's figures: printed as a table, written as JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::Args;
use crate::stats::{Class, Stats, get};
use chatfleet_load::procfs::ProcSample;

#[derive(Debug, Serialize)]
pub struct Latency {
    pub delivered: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>, delivered: u64) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            delivered,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NodeCost {
    /// Node CPU seconds spent during the chat phase and its settling.
    pub cpu_seconds: f64,
    /// Node CPU microseconds per delivered message.
    pub cpu_us_per_delivery: f64,
    pub rss_at_rest_mib: f64,
    pub peak_rss_mib: f64,
    /// Memory the connections added, per connection, at rest.
    pub bytes_per_connection: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub users: usize,
    pub rooms: usize,
    pub room_size: usize,
    pub connections_held: u64,
    pub refused: u64,
    pub dropped: u64,
    pub connect_seconds: f64,
    pub chat_seconds: f64,
    pub sent: u64,
    pub sent_per_second: f64,
    pub rate_limited: u64,
    pub other_errors: u64,
    /// Deliveries the quiet rooms' sends should have caused.
    pub expected_quiet_deliveries: u64,
    pub delivered_per_second: f64,
    pub quiet: Latency,
    pub flood: Option<Latency>,
    pub node: Option<NodeCost>,
    /// The load tool's own CPU seconds over the chat phase and its settling: on a shared
    /// machine, what the tool took from the node.
    pub tool_cpu_seconds: f64,
}

impl Report {
    pub fn new(
        args: &Args,
        stats: &Stats,
        connect_seconds: f64,
        chat_seconds: f64,
        samples: [Option<ProcSample>; 4],
        tool_cpu_seconds: f64,
    ) -> Self {
        let counters = &stats.counters;
        let quiet_delivered = stats.delivered_count(Class::Quiet);
        let flood_delivered = stats.delivered_count(Class::Flood);
        let delivered = quiet_delivered + flood_delivered;
        let held = get(&counters.connected) - get(&counters.dropped);
        let node = match samples {
            [
                Some(before),
                Some(at_rest),
                Some(after_chat),
                Some(after_settle),
            ] => {
                let cpu = after_settle.cpu_seconds - at_rest.cpu_seconds;
                let _ = after_chat;
                Some(NodeCost {
                    cpu_seconds: cpu,
                    cpu_us_per_delivery: if delivered > 0 {
                        cpu * 1e6 / delivered as f64
                    } else {
                        0.0
                    },
                    rss_at_rest_mib: at_rest.rss_kib as f64 / 1024.0,
                    peak_rss_mib: after_settle.peak_rss_kib as f64 / 1024.0,
                    bytes_per_connection: if held > 0 {
                        (at_rest.rss_kib.saturating_sub(before.rss_kib) * 1024) as f64
                            / get(&counters.connected) as f64
                    } else {
                        0.0
                    },
                })
            }
            _ => None,
        };
        Self {
            scenario: args.scenario.clone(),
            users: args.users,
            rooms: args.rooms(),
            room_size: args.room_size,
            connections_held: held,
            refused: get(&counters.refused),
            dropped: get(&counters.dropped),
            connect_seconds,
            chat_seconds,
            sent: get(&counters.sent),
            sent_per_second: get(&counters.sent) as f64 / chat_seconds,
            rate_limited: get(&counters.rate_limited),
            other_errors: get(&counters.other_errors),
            expected_quiet_deliveries: get(&counters.expected_quiet),
            delivered_per_second: delivered as f64 / chat_seconds,
            quiet: Latency::of(&stats.latency(Class::Quiet), quiet_delivered),
            flood: (args.flood_rooms > 0)
                .then(|| Latency::of(&stats.latency(Class::Flood), flood_delivered)),
            node,
            tool_cpu_seconds,
        }
    }

    pub fn print(&self) {
        let row = |k: &str, v: String| println!("  {k:<32} {v}");
        println!("chatfleet-load: {}", self.scenario);
        row(
            "users / rooms / room size",
            format!("{} / {} / {}", self.users, self.rooms, self.room_size),
        );
        row("connections held", self.connections_held.to_string());
        row(
            "refused / dropped",
            format!("{} / {}", self.refused, self.dropped),
        );
        row("connect phase", format!("{:.1} s", self.connect_seconds));
        row(
            "sent (per second)",
            format!("{} ({:.0}/s)", self.sent, self.sent_per_second),
        );
        row(
            "rate limited / other errors",
            format!("{} / {}", self.rate_limited, self.other_errors),
        );
        row(
            "delivered per second",
            format!("{:.0}/s", self.delivered_per_second),
        );
        row(
            "quiet rooms delivered / expected",
            format!(
                "{} / {}",
                self.quiet.delivered, self.expected_quiet_deliveries
            ),
        );
        let latency = |name: &str, l: &Latency| {
            row(
                &format!("{name} latency p50/p99/p99.9/max"),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                ),
            );
        };
        latency("quiet", &self.quiet);
        if let Some(flood) = &self.flood {
            row("flood rooms delivered", flood.delivered.to_string());
            latency("flood", flood);
        }
        if let Some(node) = &self.node {
            row(
                "node CPU (chat + settle)",
                format!("{:.2} s", node.cpu_seconds),
            );
            row(
                "node CPU per delivery",
                format!("{:.2} µs", node.cpu_us_per_delivery),
            );
            row(
                "node RSS at rest / peak",
                format!("{:.1} / {:.1} MiB", node.rss_at_rest_mib, node.peak_rss_mib),
            );
            row(
                "node memory per connection",
                format!("{:.0} bytes", node.bytes_per_connection),
            );
        }
        row(
            "load tool CPU (chat + settle)",
            format!("{:.2} s", self.tool_cpu_seconds),
        );
    }
}
