//! Webhooks: the node's events on their way to the fleet's receivers, at least once.
//!
//! Rooms and the room API [`emit`](Webhooks::emit) events without waiting (a full buffer drops
//! the event and counts it, so a Redis outage never stalls a room). A writer task moves them
//! into the [`queue`] in batches, one job per receiver URL, retrying until Redis takes them;
//! the [`deliver`] task claims due jobs, fleet-wide, and posts them signed. An event is
//! durable once queued: another node delivers it if this one dies.

mod deliver;
mod queue;
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatfleet_state::StateError;
use chatfleet_state::webhooks::{DeadLetter, Job};
use chatfleet_wire::webhook::WebhookEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::queue::{Enqueued, Queue};
pub use self::target::check_literal;
use crate::metrics::Metrics;

/// Events a node holds before they are queued; past it new ones are dropped and counted.
const BUFFER: usize = 100_000;
/// Events written to the queue per round trip.
const BATCH: usize = 512;
/// Pause before writing a batch again after the queue refused it.
const WRITE_RETRY: Duration = Duration::from_secs(1);

/// Where and how a node sends its events.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Receivers: every event goes to each.
    pub urls: Vec<String>,
    /// The key of the HMAC-SHA256 signature.
    pub secret: Vec<u8>,
    /// Whether every message is an event too.
    pub messages: bool,
    /// Attempts before a job becomes a dead letter.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to [`deliver::MAX_DELAY`].
    pub first_retry: Duration,
    /// How long one attempt may take; a claim's lease is six times this.
    pub timeout: Duration,
    /// Whether receivers may be on private, loopback or link-local networks (see `target`).
    pub allow_private_networks: bool,
}

/// A cheap handle to the node's webhooks; does nothing when none are configured.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<WebhookEvent>,
    messages: bool,
    queue: Queue,
    /// Events emitted and not yet in the queue.
    unwritten: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// No receivers: events go nowhere.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts the writer and the deliverer; both stop with `stop`.
    pub fn start(
        settings: WebhookSettings,
        queue: Queue,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        let inner = Arc::new(Inner {
            tx,
            messages: settings.messages,
            queue: queue.clone(),
            unwritten: AtomicUsize::new(0),
            metrics: metrics.clone(),
        });
        tokio::spawn(write(inner.clone(), rx, settings.urls.clone()));
        tokio::spawn(deliver::run(settings, queue, metrics, stop));
        Self { inner: Some(inner) }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether messages are events too.
    pub fn messages(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.messages)
    }

    /// Hands an event on for queueing; never waits.
    pub fn emit(&self, event: WebhookEvent) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.unwritten.fetch_add(1, Ordering::AcqRel);
        if inner.tx.try_send(event).is_err() {
            inner.unwritten.fetch_sub(1, Ordering::AcqRel);
            inner.metrics.webhook_dropped.inc();
            tracing::warn!("webhook buffer full; dropping an event");
        }
    }

    /// Waits, at most `limit`, until every emitted event is in the queue: a stopping node
    /// hands its last events (the leaves of its drain) over before it exits.
    pub async fn flush(&self, limit: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let written = async {
            while inner.unwritten.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(limit, written).await.is_err() {
            tracing::warn!(
                events = inner.unwritten.load(Ordering::Acquire),
                "stopping with webhook events not yet queued"
            );
        }
    }

    /// The newest dead letters, newest first (none when webhooks are off).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StateError> {
        match &self.inner {
            Some(inner) => inner.queue.dead_letters(limit).await,
            None => Ok(Vec::new()),
        }
    }
}

/// Moves emitted events into the queue, a batch per round trip, until Redis takes each batch.
async fn write(inner: Arc<Inner>, mut rx: mpsc::Receiver<WebhookEvent>, urls: Vec<String>) {
    let mut events = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut events, BATCH).await > 0 {
        let jobs: Vec<Job> = events
            .iter()
            .flat_map(|event| {
                let body = event.to_json();
                urls.iter()
                    .map(move |url| Job::new(&event.id, url, body.clone()))
            })
            .collect();
        loop {
            match inner.queue.enqueue(&jobs).await {
                Ok(Enqueued { new, dropped }) => {
                    if dropped > 0 {
                        inner.metrics.webhook_dropped.inc_by(dropped as u64);
                        tracing::warn!(dropped, "webhook queue full; dropping jobs");
                    }
                    inner.metrics.webhook_queued.inc_by(new as u64);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, events = events.len(), "cannot queue webhook events; retrying");
                    tokio::time::sleep(WRITE_RETRY).await;
                }
            }
        }
        inner.unwritten.fetch_sub(events.len(), Ordering::AcqRel);
        events.clear();
    }
}
