//! Prometheus metrics of the operator, served at `/metrics` by every replica.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub controller: &'static str,
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    /// From reading the candidates to a reserved seat.
    pub placement_seconds: Histogram,
    pub overflows: Counter,
    pub reschedules: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            registry: Registry::with_prefix("chatfleet_operator"),
            reconciles: Family::default(),
            errors: Family::default(),
            placement_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
            overflows: Counter::default(),
            reschedules: Counter::default(),
        };
        let mut registry = metrics.registry;
        registry.register("reconciles", "Reconciles run", metrics.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed",
            metrics.errors.clone(),
        );
        registry.register(
            "placement_seconds",
            "Time to place a room",
            metrics.placement_seconds.clone(),
        );
        registry.register(
            "overflows",
            "Rooms placed by the overflow fallback",
            metrics.overflows.clone(),
        );
        registry.register(
            "reschedules",
            "Rooms moved off a dead or draining node",
            metrics.reschedules.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode to a String");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
