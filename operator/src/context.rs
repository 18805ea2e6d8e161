//! What every reconcile shares: the Kubernetes client, the Redis the fleet reports to, the
//! pod cache, metrics and settings.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::backoff::Backoff;
use crate::fleet_redis::RedisPool;
use crate::metrics::Metrics;
use crate::reconcile::fleet::AppliedWorkloads;
use crate::reconcile::placing::Placer;

/// Tunables of the reconcilers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a placed room is checked against its node's health and load.
    pub room_resync: Duration,
    /// How often a fleet's status is refreshed from its nodes' reports.
    pub fleet_resync: Duration,
    /// How often a fleet's workload is applied again even when its spec did not change
    /// (repairing hand edits); a spec change applies it at once.
    pub workload_resync: Duration,
    /// How long room state lives in Redis without a node refreshing it.
    pub room_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            room_resync: Duration::from_secs(5),
            fleet_resync: Duration::from_secs(1),
            workload_resync: Duration::from_secs(15),
            room_ttl: Duration::from_secs(86_400),
        }
    }
}

pub struct Context {
    pub client: Client,
    /// The Redis of each fleet.
    pub redis: RedisPool,
    /// Pods of every fleet, kept current by a reflector.
    pub pods: Store<Pod>,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Retry delays of objects whose reconcile failed.
    pub backoff: Backoff,
    /// Places one room at a time per fleet.
    pub placer: Placer,
    /// When each fleet's workload was last applied, and for which generation.
    pub applied: AppliedWorkloads,
}

impl Context {
    /// A context for reconcilers that report Events as `instance` (this replica).
    pub fn new(
        client: Client,
        pods: Store<Pod>,
        metrics: Arc<Metrics>,
        settings: Settings,
        instance: Option<String>,
    ) -> Self {
        Self {
            client,
            redis: RedisPool::new(settings.room_ttl),
            pods,
            reporter: Reporter {
                controller: "chatfleet-operator".into(),
                instance,
            },
            metrics,
            settings,
            backoff: Backoff::default(),
            placer: Placer::default(),
            applied: AppliedWorkloads::default(),
        }
    }

    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}
