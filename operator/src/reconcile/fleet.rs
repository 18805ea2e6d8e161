//! The `ChatFleet` reconciler: applies the fleet's StatefulSet, headless Service and
//! PodDisruptionBudget (owned by the fleet, so deleting it cleans up) and sums the nodes'
//! load reports into its status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::FleetState;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::pods::{fleet_pods, ready_pods};
use super::room::room_id;
use super::{autoscale, status, writes};
use crate::context::Context;
use crate::crd::{ChatFleet, ChatFleetStatus, ChatRoom};
use crate::decide::{room as decide, workload};
use crate::error::{Error, Result};
use crate::metrics::{ControllerLabel, ErrorLabel};

/// Field manager for server-side apply.
pub const MANAGER: &str = "chatfleet-operator";

pub async fn reconcile(fleet: Arc<ChatFleet>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .reconciles
        .get_or_create(&ControllerLabel {
            controller: "fleet",
        })
        .inc();
    let namespace = fleet
        .namespace()
        .ok_or_else(|| Error::NoNamespace(fleet.name_any()))?;
    let generation = fleet.meta().generation;
    if ctx
        .applied
        .due(&key(&fleet), generation, ctx.settings.workload_resync)
    {
        apply_workload(&fleet, &namespace, &ctx).await?;
        ctx.applied.done(&key(&fleet), generation);
    }

    let mut status = match observe(&fleet, &namespace, &ctx).await {
        Ok(status) => status,
        Err(error @ (Error::Redis(_) | Error::State(_) | Error::Config(_) | Error::Kube(_))) => {
            // The workload is applied; say in the status why the fleet cannot be measured.
            let status = unmeasured(&fleet, &error.to_string());
            writes::fleet_status(&fleet, &ctx, &status).await?;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if let Some(settings) = &fleet.spec.autoscaling {
        let redis = ctx.redis.for_fleet(&ctx.client, &fleet).await?;
        autoscale::run(&fleet, settings, &redis, &mut status, &ctx).await?;
    } else {
        autoscale::stop(&fleet, &mut status, &ctx).await?;
    }
    if changed(fleet.status.as_ref(), &status, &fleet) {
        writes::fleet_status(&fleet, &ctx, &status).await?;
    }
    ctx.backoff.succeeded(&key(&fleet));
    Ok(Action::requeue(ctx.settings.fleet_resync))
}

/// Applies the fleet's Service, StatefulSet and PodDisruptionBudget (server-side apply, owned
/// by the fleet so deleting it cleans up).
async fn apply_workload(fleet: &ChatFleet, namespace: &str, ctx: &Context) -> Result<()> {
    let name = fleet.name_any();
    let apply = PatchParams::apply(MANAGER).force();
    Api::<Service>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &apply,
            &Patch::Apply(with_kind(workload::service(fleet))),
        )
        .await?;
    Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &apply,
            &Patch::Apply(with_kind(workload::stateful_set(fleet))),
        )
        .await?;
    Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &apply,
            &Patch::Apply(with_kind(workload::disruption_budget(fleet))),
        )
        .await?;
    Ok(())
}

/// When each fleet's workload was last applied, and for which generation: the workload is
/// applied again when the spec changes, and at least every `workload_resync`, while the status
/// is refreshed far more often.
#[derive(Default)]
pub struct AppliedWorkloads {
    by_fleet: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl AppliedWorkloads {
    pub fn due(&self, fleet: &str, generation: Option<i64>, every: Duration) -> bool {
        match self.by_fleet.lock().expect("applied lock").get(fleet) {
            Some((applied, at)) => *applied != generation || at.elapsed() >= every,
            None => true,
        }
    }

    pub fn done(&self, fleet: &str, generation: Option<i64>) {
        self.by_fleet
            .lock()
            .expect("applied lock")
            .insert(fleet.to_owned(), (generation, Instant::now()));
    }
}

fn key(fleet: &ChatFleet) -> String {
    format!(
        "fleet:{}/{}",
        fleet.namespace().unwrap_or_default(),
        fleet.name_any()
    )
}

/// Whether the status is worth writing: any change but small moves of the load figures, which
/// change on every heartbeat and would otherwise make every write wake the controller again.
fn changed(old: Option<&ChatFleetStatus>, new: &ChatFleetStatus, fleet: &ChatFleet) -> bool {
    let Some(old) = old else { return true };
    let capacity =
        i64::from(fleet.spec.replicas.max(0)) * i64::from(fleet.spec.limits.users_per_node);
    let tolerance = (capacity / 50).max(1);
    let near = |a: i64, b: i64| (a - b).abs() < tolerance;
    let settled = ChatFleetStatus {
        users: old.users,
        free_seats: old.free_seats,
        ..new.clone()
    };
    settled != *old
        || !near(i64::from(old.users), i64::from(new.users))
        || !near(old.free_seats, new.free_seats)
}

/// The status when the fleet's Redis (or its Secret) cannot be read.
fn unmeasured(fleet: &ChatFleet, why: &str) -> ChatFleetStatus {
    let old = fleet.status.clone().unwrap_or_default();
    let generation = fleet.meta().generation;
    ChatFleetStatus {
        ready_nodes: 0,
        observed_generation: generation,
        conditions: status::fleet_unmeasured(&old.conditions, why, generation, Timestamp::now()),
        ..old
    }
}

pub fn error_policy(fleet: Arc<ChatFleet>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(fleet = %fleet.name_any(), %error, "fleet reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabel {
            controller: "fleet",
            kind: error.kind(),
        })
        .inc();
    Action::requeue(ctx.backoff.failed(&key(&fleet)))
}

/// Server-side apply needs apiVersion and kind in the body.
fn with_kind<K: Resource<DynamicType = ()> + serde::Serialize>(object: K) -> serde_json::Value {
    let mut value = serde_json::to_value(&object).expect("objects serialize");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

/// The fleet as its Ready pods report it.
async fn observe(fleet: &ChatFleet, namespace: &str, ctx: &Context) -> Result<ChatFleetStatus> {
    let ready = ready_pods(&ctx.pods.state(), namespace, &fleet.name_any());
    let redis = ctx.redis.for_fleet(&ctx.client, fleet).await?;
    // Asked first, so an outage shows as such even when it made every pod fail readiness.
    redis
        .redis
        .ping()
        .await
        .map_err(chatfleet_state::StateError::from)?;
    let generation = fleet.meta().generation;
    let pods = ctx.pods.state();
    let mut status = ChatFleetStatus {
        observed_generation: generation,
        replicas: fleet_pods(&pods, namespace, &fleet.name_any()).len() as u32,
        selector: Some(workload::pod_selector(fleet)),
        ..ChatFleetStatus::default()
    };
    // Each node's report is read fresh (the autoscaler acts on it: a drain it just called off
    // must show at once), its reservations and room loads from its snapshot, shared with the
    // room checks: the fleet's status costs Redis nothing per room.
    for pod in &ready {
        let Some(report) = redis.reports.report(pod).await? else {
            continue;
        };
        status.ready_nodes += 1;
        status.users += report.users;
        status.rooms += report.rooms;
        if !report.draining {
            let held = redis.node(pod).await?.held_seats();
            status.free_seats += report.free_seats_beside(held).max(0);
        }
    }
    status.free_seats -= i64::from(unheld_expected(fleet, &ctx.rooms.state(), &redis).await?);
    let old = fleet
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let wanted = u32::try_from(fleet.spec.replicas).unwrap_or(0);
    status.conditions = status::fleet_ready(
        old,
        status.ready_nodes,
        wanted,
        generation,
        Timestamp::now(),
    );
    Ok(status)
}

/// The members the fleet's placed rooms still expect beyond their home nodes' reservations
/// (only rooms bigger than a node have any): their seats are not free for others.
async fn unheld_expected(
    fleet: &ChatFleet,
    rooms: &[Arc<ChatRoom>],
    redis: &FleetState,
) -> Result<u32> {
    let per_node = fleet.spec.limits.users_per_node;
    let mut unheld = 0u32;
    for room in rooms {
        let expected = room.spec.expected_members;
        let placed = room.status.as_ref().is_some_and(|s| s.node.is_some());
        if expected <= per_node
            || !placed
            || room.spec.fleet != fleet.name_any()
            || room.namespace() != fleet.namespace()
        {
            continue;
        }
        let present = redis.room_seats.count(&room_id(room)?).await?;
        let present = u32::try_from(present).unwrap_or(u32::MAX);
        unheld = unheld.saturating_add(decide::unheld_expected(expected, per_node, present));
    }
    Ok(unheld)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_is_applied_again_on_a_new_generation_or_after_a_while() {
        let applied = AppliedWorkloads::default();
        let every = Duration::from_secs(3600);
        assert!(applied.due("ns/chat", Some(1), every), "never applied");
        applied.done("ns/chat", Some(1));
        assert!(!applied.due("ns/chat", Some(1), every));
        assert!(applied.due("ns/chat", Some(2), every), "the spec changed");
        assert!(applied.due("ns/other", Some(1), every));
        assert!(
            applied.due("ns/chat", Some(1), Duration::ZERO),
            "time for a repair"
        );
    }
}
