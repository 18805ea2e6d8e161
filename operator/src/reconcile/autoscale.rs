//! The autoscaler, run by the fleet reconciler for fleets with `spec.autoscaling`: reads the
//! fleet's seats (the status just observed) and the drain under way, asks
//! `crate::decide::autoscale`, and acts. It grows or shrinks `spec.replicas` (so the workload,
//! an HPA-free scale subresource and `kubectl get` all agree), drains a node through the
//! fleet's control channel, and records the decision in the status, a condition and an Event.

use std::time::Duration;

use chatfleet_state::FleetState;
use chatfleet_wire::control::Control;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::pods::{fleet_pods, ready_pods};
use super::{status, writes};
use crate::context::Context;
use crate::crd::{AutoscalingStatus, ChatFleet, ChatFleetStatus, FleetAutoscaling};
use crate::decide::autoscale::{self, Bounds, Buffer, Decision, Draining, FleetSeats};
use crate::error::Result;

/// Decides and acts for one fleet; `observed` is the status about to be written, which gains
/// the autoscaler's part.
pub async fn run(
    fleet: &ChatFleet,
    settings: &FleetAutoscaling,
    redis: &FleetState,
    observed: &mut ChatFleetStatus,
    ctx: &Context,
) -> Result<()> {
    let now = Timestamp::now();
    // Read fresh, not from the cache: the pass after a resize may see the new replicas before
    // the status that recorded the decision (its time, the drain), and would forget it.
    let fleet =
        &Api::<ChatFleet>::namespaced(ctx.client.clone(), &fleet.namespace().unwrap_or_default())
            .get(&fleet.name_any())
            .await?;
    let generation = fleet.metadata.generation;
    let old = fleet
        .status
        .as_ref()
        .and_then(|s| s.autoscaling.clone())
        .unwrap_or_default();
    let Some(buffer) = buffer(&settings.buffer_seats) else {
        let why = "bufferSeats must be a count or a percentage below 100% such as \"10%\"";
        status::set_autoscaling(
            &mut observed.conditions,
            false,
            "InvalidBuffer",
            why,
            generation,
            now,
        );
        observed.autoscaling = Some(old);
        return Ok(());
    };
    let bounds = Bounds {
        min: settings.min_replicas,
        max: settings.max_replicas,
        buffer,
        cooldown: Duration::from_secs(settings.cooldown_seconds.into()),
        drain: Duration::from_secs(fleet.spec.drain_seconds.into()),
    };
    let replicas = u32::try_from(fleet.spec.replicas).unwrap_or(0);
    let mut old = old;
    if old.draining_node.as_deref() != Some(&autoscale::top_node(&fleet.name_any(), replicas)) {
        // No drain, or one already finished (the fleet shrank, or someone resized it): a
        // drained node that is no longer the top ordinal is not waited for again. If the
        // fleet still has it (someone grew the fleet), it takes members again; a node the
        // resize removes stays drained until it stops.
        if let Some(node) = old.draining_node.take()
            && autoscale::ordinal(&fleet.name_any(), &node).is_some_and(|n| n < replicas)
        {
            redis.control.publish(&Control::Undrain { node }).await?;
        }
        old.draining_since = None;
    }
    let draining = match (
        &old.draining_node,
        since(old.draining_since.as_deref(), now),
    ) {
        (Some(node), Some(for_)) => Some(Draining {
            node: node.clone(),
            for_,
            busy: busy(redis, node).await?,
        }),
        _ => None,
    };
    let seats = FleetSeats {
        replicas,
        present: present(fleet, redis, observed, ctx).await?,
        seats_per_node: fleet.spec.limits.users_per_node,
        free: observed.free_seats,
        draining,
        since_last_change: since(old.last_scale_time.as_deref(), now),
    };
    let decision = autoscale::decide(&fleet.name_any(), &seats, &bounds);
    let mut next = AutoscalingStatus {
        desired_replicas: replicas,
        ..old
    };
    let (reason, why) = match decision {
        Decision::Hold { why } => {
            if let Some(node) = &next.draining_node {
                // Said again on every pass the drain goes on: a node that missed the command
                // (pub/sub keeps nothing) hears it now.
                let command = Control::Drain { node: node.clone() };
                redis.control.publish(&command).await?;
            }
            ("Stable", why)
        }
        Decision::Grow { to, why } => {
            set_replicas(fleet, to, ctx).await?;
            next.desired_replicas = to;
            next.last_scale_time = Some(now.to_string());
            announce(
                fleet,
                ctx,
                "ScaledUp",
                format!("{replicas} → {to} nodes: {why}"),
            )
            .await;
            ("Grew", why)
        }
        Decision::Drain { node, why } => {
            next.draining_node = Some(node.clone());
            next.draining_since = Some(now.to_string());
            next.desired_replicas = replicas.saturating_sub(1);
            // The intent is written before the drain is published: should this operator stop
            // or this pass fail in between, the next pass finds the drain to follow up (or to
            // call off), never a drained node nobody tracks.
            writes::fleet_autoscaling(fleet, ctx, &next).await?;
            redis
                .control
                .publish(&Control::Drain { node: node.clone() })
                .await?;
            announce(
                fleet,
                ctx,
                "Draining",
                format!("draining {node} to remove it: {why}"),
            )
            .await;
            ("Draining", why)
        }
        Decision::Undrain { node, why } => {
            redis
                .control
                .publish(&Control::Undrain { node: node.clone() })
                .await?;
            next.draining_node = None;
            next.draining_since = None;
            next.desired_replicas = replicas;
            // The cool-down keeps the node from being drained again at once.
            next.last_scale_time = Some(now.to_string());
            announce(
                fleet,
                ctx,
                "DrainCalledOff",
                format!("{node} takes members again: {why}"),
            )
            .await;
            ("DrainCalledOff", why)
        }
        Decision::Shrink { to, why } => {
            set_replicas(fleet, to, ctx).await?;
            next.desired_replicas = to;
            next.last_scale_time = Some(now.to_string());
            next.draining_node = None;
            next.draining_since = None;
            announce(
                fleet,
                ctx,
                "ScaledDown",
                format!("{replicas} → {to} nodes: {why}"),
            )
            .await;
            ("Shrank", why)
        }
    };
    status::set_autoscaling(
        &mut observed.conditions,
        true,
        reason,
        &why,
        generation,
        now,
    );
    observed.autoscaling = Some(next);
    Ok(())
}

/// For a fleet whose autoscaling was switched off: a drain it left under way is called off,
/// and its part of the status (and its condition) goes.
pub async fn stop(fleet: &ChatFleet, observed: &mut ChatFleetStatus, ctx: &Context) -> Result<()> {
    let draining = fleet
        .status
        .as_ref()
        .and_then(|s| s.autoscaling.as_ref())
        .and_then(|a| a.draining_node.clone());
    if let Some(node) = draining {
        let redis = ctx.redis.for_fleet(&ctx.client, fleet).await?;
        redis
            .control
            .publish(&Control::Undrain { node: node.clone() })
            .await?;
        announce(
            fleet,
            ctx,
            "DrainCalledOff",
            format!("{node} takes members again: autoscaling is off"),
        )
        .await;
    }
    observed.autoscaling = None;
    status::clear_autoscaling(&mut observed.conditions);
    Ok(())
}

/// `bufferSeats` as the decision reads it.
fn buffer(value: &IntOrString) -> Option<Buffer> {
    match value {
        IntOrString::Int(seats) => u32::try_from(*seats).ok().map(Buffer::Seats),
        IntOrString::String(text) => Buffer::parse(text),
    }
}

/// Time since an RFC 3339 stamp; None without one.
fn since(stamp: Option<&str>, now: Timestamp) -> Option<Duration> {
    let at: Timestamp = stamp?.parse().ok()?;
    let elapsed = now.duration_since(at);
    Some(Duration::try_from(elapsed).unwrap_or_default())
}

/// The fleet's nodes that report, Ready or not: the Ready ones the status counted, and those
/// that fail readiness only because they are drained.
async fn present(
    fleet: &ChatFleet,
    redis: &FleetState,
    observed: &ChatFleetStatus,
    ctx: &Context,
) -> Result<u32> {
    let namespace = fleet.namespace().unwrap_or_default();
    let pods = ctx.pods.state();
    let ready = ready_pods(&pods, &namespace, &fleet.name_any());
    let mut present = observed.ready_nodes;
    for pod in fleet_pods(&pods, &namespace, &fleet.name_any()) {
        if !ready.contains(&pod) && redis.reports.report(&pod).await?.is_some() {
            present += 1;
        }
    }
    Ok(present)
}

/// Whether a draining node still has users or rooms; a node without a report (gone) has none.
async fn busy(redis: &FleetState, node: &str) -> Result<bool> {
    Ok(redis
        .reports
        .report(node)
        .await?
        .is_some_and(|report| report.users > 0 || report.rooms > 0))
}

/// Sets `spec.replicas`: the workload follows on the next pass, as it would a person's edit.
async fn set_replicas(fleet: &ChatFleet, replicas: u32, ctx: &Context) -> Result<()> {
    Api::<ChatFleet>::namespaced(ctx.client.clone(), &fleet.namespace().unwrap_or_default())
        .patch(
            &fleet.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
    Ok(())
}

async fn announce(fleet: &ChatFleet, ctx: &Context, reason: &str, note: String) {
    tracing::info!(fleet = %fleet.name_any(), reason, %note, "autoscaling");
    writes::fleet_event(fleet, ctx, EventType::Normal, reason, note).await;
}
