//! Leader election: only the replica holding the Lease reconciles, so two replicas never write
//! the same placement. The others wait, serving health, metrics and the API meanwhile.

use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::context::Context;
use crate::controllers;

/// Where the Lease lives and who is asking for it.
pub struct Lease {
    pub name: String,
    pub namespace: String,
    pub identity: String,
}

/// Waits for the Lease, then runs the controllers until they stop. Exits the process if the
/// Lease is lost: another replica may already be writing, and the Deployment restarts us.
pub async fn reconcile_while_leading(
    client: Client,
    lease: Lease,
    ctx: Arc<Context>,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, _lease_task) = manager.watch().await;
    tracing::info!(identity = %lease.identity, lease = %lease.name, "waiting for the Lease");
    while !*leader.borrow_and_update() {
        leader.changed().await?;
    }
    tracing::info!(identity = %lease.identity, "holding the Lease; reconciling");
    tokio::select! {
        _ = controllers::run(ctx) => Ok(()),
        _ = lost(&mut leader) => {
            tracing::error!("lost the Lease; exiting");
            std::process::exit(1);
        }
    }
}

async fn lost(leader: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if leader.changed().await.is_err() || !*leader.borrow() {
            return;
        }
    }
}
