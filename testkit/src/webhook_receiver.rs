//! A real HTTP webhook receiver for tests: it records every delivery, checks its signature as
//! a receiver should (`chatfleet_wire::webhook::verify`), and answers 500 while told to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chatfleet_wire::clock::unix_seconds;
use chatfleet_wire::webhook::{
    DEFAULT_TOLERANCE_SECONDS, EVENT_ID_HEADER, SIGNATURE_HEADER, WebhookEvent, verify,
};

use crate::eventually;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: WebhookEvent,
    /// The body as sent.
    pub body: String,
    /// The event id header.
    pub id_header: String,
    /// Whether the signature verified with the receiver's secret.
    pub signed: bool,
    /// What the receiver answered.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inbox {
    secret: Vec<u8>,
    deliveries: Mutex<Vec<Delivery>>,
    /// Requests still to answer with 500.
    fail_next: AtomicU32,
    /// Answer every request with 500.
    failing: AtomicBool,
    /// Scripted answers for the next requests: a status and a `Retry-After` in seconds.
    scripted: Mutex<std::collections::VecDeque<(u16, Option<u64>)>>,
}

/// A receiver listening on a free port of 127.0.0.1 until dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that verifies with `secret`.
    pub async fn start(secret: &str) -> Self {
        let inbox = Arc::new(Inbox {
            secret: secret.as_bytes().to_vec(),
            ..Inbox::default()
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, inbox, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next `n` requests with 500.
    pub fn fail_next(&self, n: u32) {
        self.inbox.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` requests with `status`, and `Retry-After: seconds` when given.
    pub fn answer_next(&self, n: u32, status: u16, retry_after: Option<u64>) {
        let mut scripted = self.inbox.scripted.lock().unwrap();
        scripted.extend((0..n).map(|_| (status, retry_after)));
    }

    /// Answers every request with 500 (true) or 200 (false).
    pub fn set_failing(&self, failing: bool) {
        self.inbox.failing.store(failing, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inbox.deliveries.lock().unwrap().clone()
    }

    /// The deliveries it answered with 200.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.status == 200)
            .collect()
    }

    /// Waits until an accepted delivery satisfies `matches`, and returns it.
    pub async fn wait_for(&self, what: &str, matches: impl Fn(&Delivery) -> bool) -> Delivery {
        eventually(what, || async { self.accepted().iter().any(&matches) }).await;
        self.accepted().into_iter().find(|d| matches(d)).unwrap()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signed = verify(
        &inbox.secret,
        &header(SIGNATURE_HEADER),
        &body,
        unix_seconds(),
        DEFAULT_TOLERANCE_SECONDS,
    )
    .is_ok();
    let fail = inbox.failing.load(Ordering::SeqCst)
        || inbox
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let scripted = inbox.scripted.lock().unwrap().pop_front();
    let (status, retry_after) = match scripted {
        Some(answer) => answer,
        None if fail => (500, None),
        None => (200, None),
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let event: WebhookEvent = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a webhook body that is no event: {e}: {text}"));
    inbox.deliveries.lock().unwrap().push(Delivery {
        event,
        body: text,
        id_header: header(EVENT_ID_HEADER),
        signed,
        status,
        at: std::time::Instant::now(),
    });
    let mut answer = HeaderMap::new();
    if let Some(seconds) = retry_after {
        answer.insert("retry-after", seconds.into());
    }
    (StatusCode::from_u16(status).unwrap(), answer)
}
