//! What every reconcile shares: the Kubernetes client, the Redis the fleet reports to, the
//! pod cache, metrics and settings.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};

use crate::controllers::RoomWatch;
use crate::crd::{ChatFleet, ChatRoom};

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
    /// Every ChatFleet, when a reflector keeps them (see [`Context::with_fleet_cache`]).
    pub fleets: Store<ChatFleet>,
    /// Every ChatRoom, when the replica's room watch keeps them (see
    /// [`Context::with_room_watch`]): the fleet reconciler counts the seats big rooms still
    /// expect from it.
    pub rooms: Store<ChatRoom>,
    /// The room watch the room controller reconciles from; none in reconcile tests.
    pub room_watch: Option<RoomWatch>,
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
            fleets: reflector::store().0,
            rooms: reflector::store().0,
            room_watch: None,
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

    /// Counts rooms from `rooms` (a reflector's store). Without one, the fleet's free seats
    /// leave out what rooms bigger than a node still expect.
    pub fn with_room_cache(self, rooms: Store<ChatRoom>) -> Self {
        Self { rooms, ..self }
    }

    /// Reads rooms from the replica's room watch. Without one, the fleet's free seats leave
    /// out what rooms bigger than a node still expect, and the room controller cannot run.
    pub fn with_room_watch(self, watch: RoomWatch) -> Self {
        Self {
            rooms: watch.store.clone(),
            room_watch: Some(watch),
            ..self
        }
    }

    /// Reads fleets from `fleets` (a reflector's store) before asking the API server.
    pub fn with_fleet_cache(self, fleets: Store<ChatFleet>) -> Self {
        Self { fleets, ..self }
    }

    /// The fleet `name` in `namespace`: from the cache when it has it, else from the API server
    /// (a fleet created a moment ago may not have reached the cache yet).
    pub async fn fleet(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ChatFleet>>, kube::Error> {
        let key = ObjectRef::<ChatFleet>::new(name).within(namespace);
        if let Some(fleet) = self.fleets.get(&key) {
            return Ok(Some(fleet));
        }
        let fleet = Api::<ChatFleet>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await?;
        Ok(fleet.map(Arc::new))
    }

    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}
