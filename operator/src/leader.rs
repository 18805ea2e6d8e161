//! Leader election: only the replica holding the Lease reconciles, so two replicas never write
//! the same placement. The others wait, serving health, metrics and the API meanwhile.

use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::context::Context;
use crate::controllers;

/// Where the Lease lives, who is asking for it, and its timing.
pub struct Lease {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long it lasts unless renewed (the failover time after a leader dies).
    pub seconds: u64,
    /// How long before expiry the holder renews it.
    pub renew_margin_seconds: u64,
}

/// Waits for the Lease, then runs the controllers until they stop (SIGTERM), and then gives
/// the Lease back so another replica takes over at once. Exits the process if the Lease is
/// lost: another replica may already be writing, and the Deployment restarts us.
pub async fn reconcile_while_leading(
    client: Client,
    lease: Lease,
    ctx: Arc<Context>,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.seconds.max(2))
        .with_grace(
            lease
                .renew_margin_seconds
                .clamp(1, lease.seconds.max(2) - 1),
        )
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(identity = %lease.identity, lease = %lease.name, "waiting for the Lease");
    while !*leader.borrow_and_update() {
        leader.changed().await?;
    }
    tracing::info!(identity = %lease.identity, "holding the Lease; reconciling");
    tokio::select! {
        _ = controllers::run(ctx) => {}
        _ = lost(&mut leader) => {
            tracing::error!("lost the Lease; exiting");
            std::process::exit(1);
        }
    }
    // Closing the watch makes the Lease task release the Lease; wait for it to do so.
    drop(leader);
    match tokio::time::timeout(std::time::Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the Lease"),
        _ => tracing::warn!("could not release the Lease; it expires by itself"),
    }
    Ok(())
}

async fn lost(leader: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if leader.changed().await.is_err() || !*leader.borrow() {
            return;
        }
    }
}
