//! The deliverer: claims due jobs from the queue and posts each to its receiver, signed.
//!
//! A 2xx answer completes a job; anything else (another status, a timeout, a refused
//! connection) retries it after a delay that doubles each time, and the last allowed attempt
//! buries it as a dead letter. Claims are leased for longer than an attempt can take, so a
//! job is never posted by two nodes at once unless one of them has died or stalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatfleet_state::webhooks::{DeadLetter, Job};
use chatfleet_wire::clock::{unix_millis, unix_seconds};
use chatfleet_wire::webhook::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{Queue, WebhookSettings};
use crate::metrics::{Metrics, OutcomeLabel};

/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// How often the queue is asked for due jobs while it has none.
const POLL: Duration = Duration::from_millis(250);
/// Jobs claimed per round trip, and posted at once.
const CLAIM: usize = 64;
const CONCURRENT: usize = 16;

/// Delivers until `stop`. Attempts under way when it stops are left to their lease.
pub async fn run(
    settings: WebhookSettings,
    queue: Queue,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        // A receiver answers where it is; following redirects would post events elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chatfleet-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds");
    // A claim keeps other nodes off a job past any attempt's end: the claimed jobs are
    // posted in waves of CONCURRENT, each wave taking up to the timeout, so the last wave's
    // attempts start up to (waves - 1) timeouts after the claim; two timeouts more of margin.
    let waves = CLAIM.div_ceil(CONCURRENT) as u32;
    let lease = settings.timeout * (waves + 2);
    let deliverer = Deliverer {
        client,
        settings,
        queue,
        metrics,
    };
    loop {
        let claimed = tokio::select! {
            _ = stop.cancelled() => return,
            claimed = deliverer.queue.claim(CLAIM, lease) => claimed,
        };
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::debug!(%error, "cannot claim webhook jobs");
                Vec::new()
            }
        };
        let full = jobs.len() == CLAIM;
        futures_util::stream::iter(jobs)
            .for_each_concurrent(CONCURRENT, |job| deliverer.attempt(job))
            .await;
        if !full {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

struct Deliverer {
    client: reqwest::Client,
    settings: WebhookSettings,
    queue: Queue,
    metrics: Arc<Metrics>,
}

/// The one field of an event the deliverer reads, for its header.
#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

impl Deliverer {
    async fn attempt(&self, mut job: Job) {
        let started = Instant::now();
        let outcome = self.post(&job).await;
        self.metrics
            .webhook_seconds
            .observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(()) => {
                self.count("delivered");
                self.queue.complete(&job).await
            }
            Err(error) => {
                job.attempts += 1;
                if job.attempts >= self.settings.max_attempts {
                    self.count("dead");
                    tracing::warn!(job = %job.id, attempts = job.attempts, %error, "webhook gave up; dead letter");
                    let letter = DeadLetter {
                        job,
                        error,
                        ts: unix_millis(),
                    };
                    self.queue.bury(letter).await
                } else {
                    self.count("retried");
                    tracing::info!(job = %job.id, attempts = job.attempts, %error, "webhook failed; retrying");
                    let delay = retry_delay(self.settings.first_retry, job.attempts);
                    self.queue.retry(&job, delay).await
                }
            }
        };
        if let Err(error) = result {
            // The lease brings the job back: delivered again (at least once), or tried again.
            tracing::debug!(%error, "cannot record a webhook attempt");
        }
    }

    /// One POST; Err says what went wrong, for the log and the dead letter.
    async fn post(&self, job: &Job) -> Result<(), String> {
        let event_id = job.id.split_once(' ').map_or(job.id.as_str(), |(id, _)| id);
        let kind = serde_json::from_str::<EventType>(&job.event).map_or("", |e| e.kind);
        let signature = sign(&self.settings.secret, unix_seconds(), job.event.as_bytes());
        let response = self
            .client
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, event_id)
            .header(EVENT_TYPE_HEADER, kind)
            .body(job.event.clone())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

/// The wait before attempt `attempts + 1`: `first`, doubling per failed attempt, at most
/// [`MAX_DELAY`].
fn retry_delay(first: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    first.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_an_hour() {
        let first = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay(first, n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16]);
        assert_eq!(retry_delay(first, 13), MAX_DELAY);
        assert_eq!(retry_delay(first, u32::MAX), MAX_DELAY);
    }
}
