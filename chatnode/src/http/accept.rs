//! Accepting connections with bounds, so idle or half-sent requests cannot hold the node.
//!
//! A connection is "pending" from its accept until its request is done or it upgrades to a
//! WebSocket. Pending connections are capped in total and per client address (a share of the
//! total), and each must send its request head within a timeout. Past a cap the node answers
//! `503` with `Retry-After` and the JSON error (written at once into the fresh socket, then a
//! clean close), so a reconnect storm is told to come back rather than reset.
//!
//! Behind an Ingress or a load balancer every client has the proxy's address. Connections from
//! trusted proxies (`--trusted-proxies`) count in the total at accept, and against their
//! client's share once the request head names it (`X-Forwarded-For`, read from the right:
//! the first address that is not a trusted proxy). WebSocket sessions, once upgraded, are
//! bounded by the node's seats instead.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chatfleet_api::ApiError;
use chatfleet_api::error::{ErrorBody, ErrorDetail};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Bounds on connections that have not yet become WebSocket sessions.
#[derive(Debug, Clone)]
pub struct AcceptLimits {
    /// A request head (or the first request of a new connection) must arrive within this.
    pub header_timeout: Duration,
    /// Pending connections at once.
    pub max_pending: usize,
    /// Pending connections from one client address at once.
    pub max_pending_per_address: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
}

/// How long a refused client is asked to wait.
const RETRY_AFTER_SECONDS: u32 = 1;
/// Refusals being written at once; past it, a refused connection is just closed (the node is
/// flooded with connections, and answering each would cost what the cap protects).
const MAX_REFUSING: usize = 1024;

/// The answer to a connection refused at accept, written before its request is read.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = serde_json::to_string(&ErrorBody {
        error: ErrorDetail {
            code: "unavailable".into(),
            message: "too many connections are opening at once; retry after a second".into(),
        },
    })
    .expect("errors serialize");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {RETRY_AFTER_SECONDS}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting and gives open
/// requests a few seconds to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: AcceptLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let pending = Pending::new(limits.clone());
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let app = app.layer(middleware::from_fn_with_state(
        pending.clone(),
        count_forwarded_client,
    ));
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
            refuse(stream, &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer's address goes with each request, for the per-client count behind proxies.
        let per_connection = service.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            per_connection.call(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service)
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

/// Answers a connection refused at accept with [`REFUSAL`], then closes it cleanly: its side
/// shut down, and what the client already sent read and dropped for a moment, so the close is
/// not a reset that would destroy the answer in flight.
fn refuse(stream: TcpStream, refusing: &Arc<Semaphore>) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        // A fresh socket's send buffer takes the whole answer at once.
        if stream.try_write(&REFUSAL).is_ok() {
            let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
            let discard = async {
                let mut buf = [0u8; 4096];
                loop {
                    if stream.readable().await.is_err() {
                        return;
                    }
                    match stream.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), discard).await;
        }
        drop(permit);
    });
}

/// Counts a request from a trusted proxy against its client's share, once the head names the
/// client; a client past its share is told to retry.
async fn count_forwarded_client(
    State(pending): State<Arc<Pending>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let Some(client) = peer.and_then(|peer| pending.forwarded_client(peer, request.headers()))
    else {
        return next.run(request).await;
    };
    let Some(place) = pending.enter_client(client) else {
        let error = ApiError::unavailable(
            "too many connections are opening at once from this client; retry after a second",
        );
        let mut response = error.into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return response;
    };
    let response = next.run(request).await;
    drop(place);
    response
}

/// The pending connections, in total and by client address.
struct Pending {
    limits: AcceptLimits,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A pending connection's place (in the total, and in its address's share when it has one);
/// dropping it frees the place.
struct Slot {
    pending: Arc<Pending>,
    in_total: bool,
    address: Option<IpAddr>,
}

impl Pending {
    fn new(limits: AcceptLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
        })
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }

    /// A place for a connection from `peer`, or none when the node or the address is at its
    /// limit. A trusted proxy's connection takes a place in the total only: its client's share
    /// is counted once its request names the client.
    fn enter(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let address = Some(peer.ip()).filter(|ip| !self.trusts(*ip));
        let mut counts = self.counts.lock().expect("pending lock");
        let from_address = address.map_or(0, |ip| counts.by_address.get(&ip).copied().unwrap_or(0));
        if counts.total >= self.limits.max_pending
            || from_address >= self.limits.max_pending_per_address
        {
            return None;
        }
        counts.total += 1;
        if let Some(ip) = address {
            *counts.by_address.entry(ip).or_default() += 1;
        }
        Some(Slot {
            pending: self.clone(),
            in_total: true,
            address,
        })
    }

    /// A place in `client`'s share for a request a trusted proxy forwarded (its connection
    /// already holds a place in the total), or none when the client is at its share.
    fn enter_client(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().expect("pending lock");
        let from_client = counts.by_address.entry(client).or_default();
        if *from_client >= self.limits.max_pending_per_address {
            return None;
        }
        *from_client += 1;
        Some(Slot {
            pending: self.clone(),
            in_total: false,
            address: Some(client),
        })
    }

    /// The client a request from `peer` speaks for: when `peer` is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not a trusted proxy itself (addresses to its left
    /// are the client's to write, and could be forged); the proxy's own when it names none.
    /// None for a peer that is not a trusted proxy (its connection was counted at accept).
    fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusts(peer) {
            return None;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let client = forwarded
            .iter()
            .rev()
            .map(|hop| hop.parse::<IpAddr>().ok())
            .take_while(Option::is_some)
            .flatten()
            .find(|hop| !self.trusts(*hop));
        Some(client.unwrap_or(peer))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.pending.counts.lock().expect("pending lock");
        if self.in_total {
            counts.total -= 1;
        }
        if let Some(address) = self.address
            && let Some(count) = counts.by_address.get_mut(&address)
        {
            *count -= 1;
            if *count == 0 {
                counts.by_address.remove(&address);
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
            trusted_proxies: Vec::new(),
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

    #[test]
    fn behind_a_trusted_proxy_the_client_named_last_has_the_share() {
        let pending = Pending::new(AcceptLimits {
            header_timeout: Duration::from_secs(1),
            max_pending: 10,
            max_pending_per_address: 1,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        });
        let proxy: SocketAddr = "10.0.0.9:1".parse().unwrap();
        // The proxy's connections take places in the total only.
        let _one = pending.enter(proxy).unwrap();
        let _two = pending.enter(proxy).unwrap();
        let forwarded = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().unwrap());
            pending.forwarded_client(proxy.ip(), &headers)
        };
        // Read from the right, past trusted hops; what a client wrote to the left is not
        // believed.
        assert_eq!(
            forwarded("6.6.6.6, 1.2.3.4, 10.1.1.1"),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            forwarded("garbage, 1.2.3.4"),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            forwarded("10.1.1.1"),
            Some(proxy.ip()),
            "no client named: the proxy"
        );
        assert_eq!(
            pending.forwarded_client("1.2.3.4".parse().unwrap(), &HeaderMap::new()),
            None,
            "an untrusted peer's header means nothing"
        );
        let client = "1.2.3.4".parse().unwrap();
        let place = pending.enter_client(client).unwrap();
        assert!(
            pending.enter_client(client).is_none(),
            "the client's share is 1"
        );
        assert!(pending.enter_client("5.6.7.8".parse().unwrap()).is_some());
        drop(place);
        assert!(pending.enter_client(client).is_some());
    }
}
