//! Accepting connections with bounds, so idle or half-sent requests cannot hold the node.
//!
//! A connection is "pending" from its accept until its request is done or it upgrades to a
//! WebSocket. Pending connections are capped in total and per source address (a share of the
//! total), and each must send its request head within a timeout; past either limit the node
//! closes it. WebSocket sessions, once upgraded, are bounded by the node's seats instead.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Bounds on connections that have not yet become WebSocket sessions.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// A request head (or the first request of a new connection) must arrive within this.
    pub header_timeout: Duration,
    /// Pending connections at once.
    pub max_pending: usize,
    /// Pending connections from one source address at once.
    pub max_pending_per_address: usize,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting and gives open
/// requests a few seconds to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: AcceptLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let pending = Pending::new(limits);
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of files, most likely: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = pending.enter(peer) else {
            metrics.shed_connections.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            // Done when the request (or keep-alive series) ends, or when it upgrades.
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopping.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(Duration::from_secs(5), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still open at exit");
    }
}

/// The pending connections, in total and by source address.
struct Pending {
    limits: AcceptLimits,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// A pending connection's place; dropping it frees the place.
struct Slot {
    pending: Arc<Pending>,
    address: IpAddr,
}

impl Pending {
    fn new(limits: AcceptLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            by_address: Mutex::default(),
        })
    }

    /// A place for a connection from `peer`, or none when the node or the address is at its
    /// limit.
    fn enter(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let mut by_address = self.by_address.lock().expect("pending lock");
        let total: usize = by_address.values().sum();
        let address = peer.ip();
        let from_address = by_address.get(&address).copied().unwrap_or(0);
        if total >= self.limits.max_pending || from_address >= self.limits.max_pending_per_address {
            return None;
        }
        *by_address.entry(address).or_default() += 1;
        Some(Slot {
            pending: self.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_address = self.pending.by_address.lock().expect("pending lock");
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_capped_in_total_and_per_address() {
        let pending = Pending::new(AcceptLimits {
            header_timeout: Duration::from_secs(1),
            max_pending: 3,
            max_pending_per_address: 2,
        });
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let first = pending.enter(a).unwrap();
        let _second = pending.enter(a).unwrap();
        assert!(pending.enter(a).is_none(), "a's share is 2");
        let _third = pending.enter(b).unwrap();
        assert!(pending.enter(b).is_none(), "3 in total");
        drop(first);
        assert!(pending.enter(a).is_some(), "a place was freed");
    }
}
