//! The operator's watches, and the two controllers it runs over a shared context.

use std::sync::Arc;

use futures_util::{Stream, StreamExt, stream};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, controller, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::broadcast;

use crate::context::Context;
use crate::crd::{ChatFleet, ChatRoom};
use crate::reconcile::{fleet, room};

/// Label selector of every chat node pod.
pub const NODE_PODS: &str = "app.kubernetes.io/name=chatnode";

/// A reflector's store of every `K` that `config` selects, and the task that keeps it filled.
fn cache<K>(
    client: &Client,
    config: watcher::Config,
) -> (
    reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + use<K>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let watched = watcher(Api::<K>::all(client.clone()), config).modify(slim);
    let stream = reflector(writer, watched)
        .default_backoff()
        .applied_objects()
        .for_each(|_| std::future::ready(()));
    (reader, stream)
}

/// Drops what the operator never reads before an object is cached: its managed fields and
/// kubectl's copy of the last applied object, which together are often most of a small
/// object's size (a cache of 20,000 rooms holds them 20,000 times).
fn slim<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A pod reflector for the context (chat node pods only), and the task that keeps it filled.
pub fn pod_cache(
    client: &Client,
) -> (
    reflector::Store<Pod>,
    impl std::future::Future<Output = ()> + Send + use<>,
) {
    cache(client, watcher::Config::default().labels(NODE_PODS))
}

/// A ChatFleet reflector for the context, and the task that keeps it filled: reconciles read
/// fleets from it instead of asking the API server each time.
pub fn fleet_cache(
    client: &Client,
) -> (
    reflector::Store<ChatFleet>,
    impl std::future::Future<Output = ()> + Send + use<>,
) {
    cache(client, watcher::Config::default())
}

/// How many changed rooms may wait for the room controller before it falls behind and
/// looks at every room again instead (see [`RoomWatch::changes`]).
const CHANGED_ROOMS_BUFFER: usize = 4096;

/// The one ChatRoom watch of a replica. The room API, the fleet reconciler and the room
/// controller all read its store, and the room controller (only on the leader) hears from it
/// which rooms changed: one copy of every room in memory, one watch on the API server.
#[derive(Clone)]
pub struct RoomWatch {
    pub store: reflector::Store<ChatRoom>,
    changed: broadcast::Sender<ObjectRef<ChatRoom>>,
}

impl RoomWatch {
    /// Rooms whose generation changed (created, spec edited, deletion begun) from now on.
    /// A receiver that falls more than a buffer behind is told it lagged, and then looks at
    /// every room again rather than miss one.
    pub fn changes(&self) -> broadcast::Receiver<ObjectRef<ChatRoom>> {
        self.changed.subscribe()
    }
}

/// The replica's ChatRoom watch, and the task that keeps it current.
///
/// A room counts as changed when its generation does (its spec, or its deletion), not when
/// its own status is written: a placement then costs one status write, not a second pass
/// that reads Redis again. Resyncs and pod changes still wake placed rooms.
pub fn room_watch(
    client: &Client,
) -> (
    RoomWatch,
    impl std::future::Future<Output = ()> + Send + use<>,
) {
    let (store, writer) = reflector::store();
    let (changed, _) = broadcast::channel(CHANGED_ROOMS_BUFFER);
    let watch = RoomWatch {
        store,
        changed: changed.clone(),
    };
    let task = watcher(Api::<ChatRoom>::all(client.clone()), Default::default())
        .modify(slim)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default())
        .for_each(move |room| {
            if let Ok(room) = room {
                // Nobody listening (a standby) is fine: the leader looks at every room when
                // it starts.
                let _ = changed.send(ObjectRef::from_obj(&room));
            }
            std::future::ready(())
        });
    (watch, task)
}

/// Runs both controllers until they end (on SIGTERM or SIGINT).
pub async fn run(ctx: Arc<Context>) {
    // Deciding from an empty pod cache would see every node gone and move every room.
    if ctx.pods.wait_until_ready().await.is_err() {
        tracing::error!("the pod cache stopped before it was filled");
        return;
    }
    let Some(room_watch) = ctx.room_watch.clone() else {
        tracing::error!("the context has no room watch to reconcile rooms from");
        return;
    };
    // Nor size fleets before the rooms are known: big rooms' expected members count.
    if room_watch.store.wait_until_ready().await.is_err() {
        tracing::error!("the room watch stopped before it was filled");
        return;
    }
    // Subscribed before the store is read below, so no change falls between the two (and
    // after the first list, which the takeover's pass over the store covers).
    let changes = room_watch.changes();
    let client = ctx.client.clone();
    let fleets = Controller::new(Api::<ChatFleet>::all(client.clone()), Default::default())
        .with_config(controller::Config::default().concurrency(FLEET_CONCURRENCY))
        .owns(Api::<StatefulSet>::all(client.clone()), Default::default())
        .owns(Api::<Service>::all(client.clone()), Default::default())
        .shutdown_on_signal()
        .run(fleet::reconcile, fleet::error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));

    let placed = room_watch.store.clone();
    let takeover = rooms_on_takeover(placed.clone(), ctx.settings.room_resync);
    let rooms = Controller::for_stream(stream::pending(), placed.clone())
        .with_config(controller::Config::default().concurrency(ROOM_CONCURRENCY))
        .reconcile_on(stream::select(
            takeover,
            changed_rooms(changes, placed.clone()),
        ))
        // A pod that changes (stops being Ready, goes away) wakes the rooms placed on it at
        // once, rather than at their next resync. Changes only: the watch's first list would
        // wake every placed room at once, which the takeover's pass spreads out instead.
        .watches_stream(pod_changes(&client), move |pod: Pod| {
            let name = pod.name_any();
            let namespace = pod.namespace();
            placed
                .state()
                .into_iter()
                .filter(|room| room.namespace() == namespace)
                .filter(|room| room.status.as_ref().and_then(|s| s.node.as_deref()) == Some(&name))
                .map(|room| ObjectRef::from_obj(&*room))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(room::reconcile, room::error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    tokio::join!(fleets, rooms);
}

/// Chat node pods as they change (applied or deleted), without the lists a watch begins and
/// restarts with.
fn pod_changes(client: &Client) -> impl Stream<Item = Result<Pod, watcher::Error>> + Send + use<> {
    watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(NODE_PODS),
    )
    .default_backoff()
    .filter_map(|event| {
        std::future::ready(match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::Delete(pod)) => Some(Ok(pod)),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
    })
}

/// The longest a new leader takes to look at every placed room once.
const TAKEOVER_SPREAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Rooms reconciled at once: enough to keep placements flowing while some wait on Redis or
/// the API server, few enough that a takeover or a relist cannot put thousands of requests in
/// flight against either at the same moment.
const ROOM_CONCURRENCY: u16 = 32;
/// Fleets reconciled at once: few exist, and each pass reads every node's report.
const FLEET_CONCURRENCY: u16 = 4;

/// What a new leader looks at: every room once, those waiting for a node (unplaced, or being
/// deleted) first, then the placed ones spread over one resync period (at most
/// [`TAKEOVER_SPREAD`]), so a room created during a takeover does not queue behind thousands
/// that are fine where they are.
fn rooms_on_takeover(
    rooms: reflector::Store<ChatRoom>,
    resync: std::time::Duration,
) -> impl Stream<Item = ObjectRef<ChatRoom>> + Send + use<> {
    let resync = resync.min(TAKEOVER_SPREAD);
    let (waiting, placed): (Vec<_>, Vec<_>) = rooms.state().into_iter().partition(|room| {
        room.meta().deletion_timestamp.is_some()
            || room.status.as_ref().and_then(|s| s.node.as_ref()).is_none()
    });
    let refs = |rooms: Vec<Arc<ChatRoom>>| {
        rooms
            .iter()
            .map(|room| ObjectRef::from_obj(&**room))
            .collect::<Vec<_>>()
    };
    const STEPS: usize = 50;
    let every = resync / STEPS as u32;
    let batch = placed.len().div_ceil(STEPS).max(1);
    let spread = stream::iter(refs(placed))
        .chunks(batch)
        .enumerate()
        .then(move |(i, batch)| async move {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            batch
        })
        .flat_map(stream::iter);
    stream::iter(refs(waiting)).chain(spread)
}

/// The rooms the watch says changed; after falling behind, every room.
fn changed_rooms(
    changes: broadcast::Receiver<ObjectRef<ChatRoom>>,
    rooms: reflector::Store<ChatRoom>,
) -> impl Stream<Item = ObjectRef<ChatRoom>> + Send + use<> {
    stream::unfold(changes, |mut changes| async move {
        let batch = match changes.recv().await {
            Ok(room) => vec![room],
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "fell behind the room watch; looking at every room");
                Vec::new()
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((batch, changes))
    })
    .flat_map(move |batch| {
        let batch = if batch.is_empty() {
            rooms
                .state()
                .iter()
                .map(|room| ObjectRef::from_obj(&**room))
                .collect()
        } else {
            batch
        };
        stream::iter(batch)
    })
}
