//! Refusals at accept speak HTTP: a burst of handshakes past the pending limits is answered
//! `503` with `Retry-After` (never reset), and behind a trusted proxy the per-address share is
//! the client's, named in `X-Forwarded-For`, not the proxy's.

use std::time::Duration;

use chatfleet_wire::frames::ServerFrame;
use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::support::Node;

/// How one handshake ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Joined,
    /// `503` with `Retry-After` and the JSON error.
    ToldToRetry,
}

/// Opens a session as `user` of `room` on `node`, naming `forwarded_for` as the client; panics
/// on anything but a welcome or a refusal that says when to come back.
async fn handshake(node: &Node, room: &str, user: &str, forwarded_for: &str) -> Outcome {
    let mut request = node.ws_as(room, user, "").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("a first frame");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: ServerFrame = serde_json::from_str(&text).unwrap();
                    assert!(matches!(frame, ServerFrame::Welcome(_)), "{frame:?}");
                }
                other => panic!("joined, then {other:?}"),
            }
            // Stays connected for the rest of the burst, as a member would.
            tokio::spawn(async move { while ws.next().await.is_some() {} });
            Outcome::Joined
        }
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 503, "{response:?}");
            assert_eq!(response.headers()["retry-after"], "1");
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            Outcome::ToldToRetry
        }
        Err(error) => panic!("a handshake ended without an answer: {error}"),
    }
}

/// Runs `count` handshakes at once, each retried after its `Retry-After` until it joins;
/// returns how many were told to retry.
async fn burst(node: &Node, count: usize, forwarded_for: impl Fn(usize) -> String) -> usize {
    let attempts = (0..count).map(|n| {
        let client = forwarded_for(n);
        async move {
            let (room, user) = (format!("support/burst-{}", n / 3), format!("u{n}"));
            let mut retries = 0;
            while handshake(node, &room, &user, &client).await == Outcome::ToldToRetry {
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            retries
        }
    });
    join_all(attempts).await.into_iter().sum()
}

/// 1,000 handshakes at once through one proxy address (all from 127.0.0.1), each naming its
/// own client. Trusted, the proxy's connections are counted against their clients' shares:
/// none is refused for the proxy's address. Either way, every handshake ends joined or told
/// to retry, and all join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_one_proxy_is_answered_never_reset() {
    let limits = [
        "--max-node-users",
        "3000",
        "--max-pending-per-address",
        "128",
    ];
    let client = |n: usize| format!("10.1.{}.{}", n / 250, n % 250 + 1);

    let trusting = Node::start(&[&limits[..], &["--trusted-proxies", "127.0.0.1"]].concat()).await;
    let retried = burst(&trusting, 1000, client).await;
    println!("through a trusted proxy: 1,000 joined, {retried} told to retry first");
    assert_eq!(
        retried, 0,
        "1,000 clients, each within its share and the node's total"
    );

    // Not trusted: the burst shares the proxy's 128 places; the rest are told to retry.
    let wary = Node::start(&limits).await;
    let retried = burst(&wary, 1000, client).await;
    println!("through an untrusted proxy: 1,000 joined, {retried} told to retry first");
    assert!(
        retried > 0,
        "a burst past the per-address share is told to retry"
    );
}
