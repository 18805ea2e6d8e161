//! Prometheus metrics of the node, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use chatfleet_wire::frames::ErrorCode;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Open WebSocket sessions.
    pub connections: Gauge,
    /// Rooms with a running task on this node.
    pub rooms: Gauge,
    pub messages_in: Counter,
    /// Frames handed to members' queues.
    pub messages_out: Counter,
    pub refused_joins: Family<ReasonLabel, Counter>,
    /// Time a room takes to hand one frame to all its members.
    pub fanout_seconds: Histogram,
    pub slow_consumers: Counter,
    /// Joins sent to another node of the fleet because this one had no seat.
    pub redirected: Counter,
    /// Connections closed at accept because too many were pending (slowloris defence).
    pub shed_connections: Counter,
    /// 1 while Redis is reachable (always 1 standalone).
    pub backend_up: Gauge,
    /// Bytes of message history held in memory (standalone).
    pub history_bytes: Gauge,
    /// Webhook jobs this node put in the queue (one per event and receiver).
    pub webhook_queued: Counter,
    /// Webhook events or jobs dropped because the node's buffer or queue was full.
    pub webhook_dropped: Counter,
    /// Webhook attempts by outcome: `delivered`, `retried`, `dead`.
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// Time one webhook attempt took.
    pub webhook_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chatnode");
        let metrics = Self {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            refused_joins: Family::default(),
            // 1 µs .. ~0.5 s
            fanout_seconds: Histogram::new(exponential_buckets(1e-6, 3.0, 13)),
            slow_consumers: Counter::default(),
            shed_connections: Counter::default(),
            redirected: Counter::default(),
            backend_up: Gauge::default(),
            history_bytes: Gauge::default(),
            webhook_queued: Counter::default(),
            webhook_dropped: Counter::default(),
            webhook_deliveries: Family::default(),
            // 1 ms .. ~20 s
            webhook_seconds: Histogram::new(exponential_buckets(1e-3, 3.0, 10)),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket sessions",
            metrics.connections.clone(),
        );
        registry.register("rooms", "Rooms with a running task", metrics.rooms.clone());
        registry.register(
            "messages_in",
            "Messages accepted from clients",
            metrics.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Frames queued to members",
            metrics.messages_out.clone(),
        );
        registry.register(
            "refused_joins",
            "Joins refused, by reason",
            metrics.refused_joins.clone(),
        );
        registry.register(
            "fanout_seconds",
            "Time to queue one frame to every member of a room",
            metrics.fanout_seconds.clone(),
        );
        registry.register(
            "slow_consumers",
            "Clients disconnected because their outbound queue overflowed",
            metrics.slow_consumers.clone(),
        );
        registry.register(
            "shed_connections",
            "Connections closed at accept because too many were pending, in total or per address",
            metrics.shed_connections.clone(),
        );
        registry.register(
            "redirected",
            "Joins sent to another node of the fleet because this one was full or draining",
            metrics.redirected.clone(),
        );
        registry.register(
            "backend_up",
            "1 while the shared state (Redis) is reachable",
            metrics.backend_up.clone(),
        );
        registry.register(
            "history_bytes",
            "Bytes of message history held in memory (standalone nodes)",
            metrics.history_bytes.clone(),
        );
        registry.register(
            "webhook_queued",
            "Webhook jobs queued by this node (one per event and receiver)",
            metrics.webhook_queued.clone(),
        );
        registry.register(
            "webhook_dropped",
            "Webhook events dropped because the node's buffer or queue was full",
            metrics.webhook_dropped.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook attempts by outcome (delivered, retried, dead)",
            metrics.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_seconds",
            "Time one webhook attempt took",
            metrics.webhook_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn refused(&self, code: ErrorCode) {
        self.refused_joins
            .get_or_create(&ReasonLabel {
                reason: code.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
