//! Runs the two controllers over a shared context until they stop.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, ResourceExt};

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

/// A ChatRoom reflector (for the room API), and the task that keeps it filled.
pub fn room_cache(
    client: &Client,
) -> (
    reflector::Store<ChatRoom>,
    impl std::future::Future<Output = ()> + Send + use<>,
) {
    cache(client, watcher::Config::default())
}

/// Runs both controllers until they end (on SIGTERM or SIGINT).
pub async fn run(ctx: Arc<Context>) {
    // Deciding from an empty pod cache would see every node gone and move every room.
    if ctx.pods.wait_until_ready().await.is_err() {
        tracing::error!("the pod cache stopped before it was filled");
        return;
    }
    // Nor size fleets before the rooms are known: big rooms' expected members count. A
    // context without a room cache (its writer gone at once) has nothing to wait for.
    let _ = ctx.rooms.wait_until_ready().await;
    let client = ctx.client.clone();
    let fleets = Controller::new(Api::<ChatFleet>::all(client.clone()), Default::default())
        .owns(Api::<StatefulSet>::all(client.clone()), Default::default())
        .owns(Api::<Service>::all(client.clone()), Default::default())
        .shutdown_on_signal()
        .run(fleet::reconcile, fleet::error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));

    // A room is reconciled when its spec changes or it is deleted (both bump its generation),
    // not when its own status is written: a placement then costs one status write, not a
    // second pass that reads Redis again. Resyncs and pod changes still wake it.
    let (placed, writer) = reflector::store();
    let changed_rooms = watcher(Api::<ChatRoom>::all(client.clone()), Default::default())
        .modify(slim)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let rooms = Controller::for_stream(changed_rooms, placed.clone());
    // A pod that changes (stops being Ready, goes away) wakes the rooms placed on it at once,
    // rather than at their next resync.
    let rooms = rooms
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(NODE_PODS),
            move |pod: Pod| {
                let name = pod.name_any();
                let namespace = pod.namespace();
                placed
                    .state()
                    .into_iter()
                    .filter(|room| room.namespace() == namespace)
                    .filter(|room| {
                        room.status.as_ref().and_then(|s| s.node.as_deref()) == Some(&name)
                    })
                    .map(|room| ObjectRef::from_obj(&*room))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(room::reconcile, room::error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    tokio::join!(fleets, rooms);
}
