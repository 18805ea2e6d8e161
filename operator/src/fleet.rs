//! The `ChatFleet` reconciler: applies the fleet's StatefulSet, headless Service and
//! PodDisruptionBudget (owned by the fleet, so deleting it cleans up) and sums the nodes'
//! load reports into its status.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::crd::{ChatFleet, ChatFleetStatus};
use crate::error::{Error, Result};
use crate::metrics::{ControllerLabel, ErrorLabel};
use crate::room::ready_pods;
use crate::seats::Seats;
use crate::workload;

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
    let name = fleet.name_any();
    let apply = PatchParams::apply(MANAGER).force();
    Api::<Service>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &name,
            &apply,
            &Patch::Apply(with_kind(workload::service(&fleet))),
        )
        .await?;
    Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &name,
            &apply,
            &Patch::Apply(with_kind(workload::stateful_set(&fleet))),
        )
        .await?;
    Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &name,
            &apply,
            &Patch::Apply(with_kind(workload::disruption_budget(&fleet))),
        )
        .await?;

    let status = match observe(&fleet, &namespace, &ctx).await {
        Ok(status) => status,
        Err(error @ (Error::Redis(_) | Error::Config(_) | Error::Kube(_))) => {
            // The workload is applied; say in the status why the fleet cannot be measured.
            let status = unmeasured(&fleet, &error.to_string());
            patch_fleet_status(&fleet, &namespace, &ctx, &status).await?;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if changed(fleet.status.as_ref(), &status, &fleet) {
        patch_fleet_status(&fleet, &namespace, &ctx, &status).await?;
    }
    ctx.backoff.succeeded(&key(&fleet));
    Ok(Action::requeue(ctx.settings.fleet_resync))
}

fn key(fleet: &ChatFleet) -> String {
    format!(
        "fleet:{}/{}",
        fleet.namespace().unwrap_or_default(),
        fleet.name_any()
    )
}

async fn patch_fleet_status(
    fleet: &ChatFleet,
    namespace: &str,
    ctx: &Context,
    status: &ChatFleetStatus,
) -> Result<()> {
    if fleet.status.as_ref() != Some(status) {
        Api::<ChatFleet>::namespaced(ctx.client.clone(), namespace)
            .patch_status(
                &fleet.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(())
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
    let since = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "RedisUnavailable")
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    ChatFleetStatus {
        ready_nodes: 0,
        observed_generation: fleet.meta().generation,
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: "False".to_owned(),
            reason: "RedisUnavailable".to_owned(),
            message: format!("cannot read the nodes' load reports: {why}"),
            observed_generation: fleet.meta().generation,
            last_transition_time: since,
        }],
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
    let mut status = ChatFleetStatus {
        observed_generation: fleet.meta().generation,
        conditions: fleet
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        ..ChatFleetStatus::default()
    };
    for pod in &ready {
        let Some(report) = redis.seats.report(pod).await? else {
            continue;
        };
        status.ready_nodes += 1;
        status.users += report.users;
        status.rooms += report.rooms;
        if let Seats::Free { free } = redis.seats.peek_node(pod).await?.seats {
            status.free_seats += free.max(0);
        }
    }
    let wanted = u32::try_from(fleet.spec.replicas).unwrap_or(0);
    let all_ready = status.ready_nodes >= wanted;
    let (reason, message) = if all_ready {
        (
            "AllNodesReporting",
            format!("{wanted} of {wanted} nodes ready and reporting"),
        )
    } else {
        (
            "NodesMissing",
            format!(
                "{} of {wanted} nodes ready and reporting",
                status.ready_nodes
            ),
        )
    };
    let value = if all_ready { "True" } else { "False" };
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    status.conditions = vec![Condition {
        type_: "Ready".to_owned(),
        status: value.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: fleet.meta().generation,
        last_transition_time: since,
    }];
    Ok(status)
}
