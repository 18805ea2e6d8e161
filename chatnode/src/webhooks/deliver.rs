//! The deliverer: claims due jobs from the queue and posts each to its receiver, signed.
//!
//! A 2xx answer completes a job. A final answer completes it as a dead letter at once: a 4xx
//! other than 408 and 429 (the receiver refuses the event itself; asking again changes
//! nothing), a job whose URL is not one of the fleet's receivers any more (removed from its
//! configuration, or written into Redis by someone else), and a receiver on a network the node
//! may not post to (see `target`). Anything else (another status, a timeout, a refused
//! connection) retries the job after a delay that doubles each time, or after the receiver's
//! `Retry-After` when it asks for longer, and the last allowed attempt buries it. A receiver
//! that failed every one of its last [`FAILURES_TO_PAUSE`] deliveries is paused (see
//! [`Breakers`]). Claims are leased for longer than an attempt can take, so a job is never
//! posted by two nodes at once unless one of them has died or stalled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::webhooks::{DeadLetter, Job};
use chatfleet_wire::clock::{unix_millis, unix_seconds};
use chatfleet_wire::webhook::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::target::{self, PublicOnly};
use super::{Queue, WebhookSettings};
use crate::metrics::{Metrics, OutcomeLabel};

/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// How often the queue is asked for due jobs while it has none.
const POLL: Duration = Duration::from_millis(250);
/// Jobs claimed per round trip, and posted at once.
const CLAIM: usize = 64;
const CONCURRENT: usize = 16;
/// Consecutive failed deliveries to one receiver after which it is paused.
pub const FAILURES_TO_PAUSE: u32 = 20;
/// The first pause; each further one (the receiver failed again right after) doubles, up to
/// [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_secs(60);
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 60);

/// Delivers until `stop`. Attempts under way when it stops are left to their lease.
pub async fn run(
    settings: WebhookSettings,
    queue: Queue,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut client = reqwest::Client::builder()
        .timeout(settings.timeout)
        // A receiver answers where it is; following redirects would post events elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chatfleet-webhooks/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_private_networks {
        client = client.dns_resolver(Arc::new(PublicOnly));
    }
    let client = client.build().expect("the HTTP client builds");
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
        breakers: Breakers::default(),
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
    breakers: Breakers,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Worth another attempt, not before `not_before` when the receiver said so.
    Failed {
        error: String,
        not_before: Option<Duration>,
    },
    /// Asking again changes nothing: a dead letter at once.
    Final(String),
}

/// Per receiver on this node: how many deliveries in a row failed, and until when it is
/// paused. A receiver down for long is not hammered: after [`FAILURES_TO_PAUSE`] failures in
/// a row its jobs wait out a pause (their attempts not counted), then one goes through as a
/// probe; a success ends the pause, a failure pauses it again for twice as long.
#[derive(Default)]
struct Breakers {
    receivers: Mutex<HashMap<String, Breaker>>,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    paused_until: Option<Instant>,
    pause: Duration,
}

impl Breakers {
    /// How long `url` stays paused, if it is.
    fn paused(&self, url: &str) -> Option<Duration> {
        let receivers = self.receivers.lock().expect("breaker lock");
        let until = receivers.get(url)?.paused_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Records an attempt's result; returns the pause it starts, if any.
    fn record(&self, url: &str, delivered: bool) -> Option<Duration> {
        let mut receivers = self.receivers.lock().expect("breaker lock");
        let breaker = receivers.entry(url.to_owned()).or_default();
        if delivered {
            *breaker = Breaker::default();
            return None;
        }
        breaker.failures += 1;
        if breaker.failures < FAILURES_TO_PAUSE {
            return None;
        }
        breaker.pause = if breaker.pause.is_zero() {
            FIRST_PAUSE
        } else {
            (breaker.pause * 2).min(MAX_PAUSE)
        };
        breaker.paused_until = Some(Instant::now() + breaker.pause);
        // The next attempt after the pause is a probe: one more failure pauses again.
        breaker.failures = FAILURES_TO_PAUSE - 1;
        Some(breaker.pause)
    }
}

/// The one field of an event the deliverer reads, for its header.
#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

impl Deliverer {
    async fn attempt(&self, mut job: Job) {
        if let Some(left) = self.breakers.paused(&job.url) {
            // Not an attempt: the job waits out the receiver's pause.
            if let Err(error) = self.queue.retry(&job, left).await {
                tracing::debug!(%error, "cannot put back a job of a paused receiver");
            }
            return;
        }
        let started = Instant::now();
        let outcome = self.post(&job).await;
        self.metrics
            .webhook_seconds
            .observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Outcome::Delivered => {
                self.breakers.record(&job.url, true);
                self.count("delivered");
                self.queue.complete(&job).await
            }
            Outcome::Final(error) => {
                job.attempts += 1;
                self.count("dead");
                tracing::warn!(job = %job.id, url = %job.url, %error, "webhook refused for good; dead letter");
                self.bury(job, error).await
            }
            Outcome::Failed { error, not_before } => {
                job.attempts += 1;
                if let Some(pause) = self.breakers.record(&job.url, false) {
                    tracing::warn!(url = %job.url, ?pause, "webhook receiver failing every delivery; pausing it");
                }
                if job.attempts >= self.settings.max_attempts {
                    self.count("dead");
                    tracing::warn!(job = %job.id, attempts = job.attempts, %error, "webhook gave up; dead letter");
                    self.bury(job, error).await
                } else {
                    self.count("retried");
                    tracing::info!(job = %job.id, attempts = job.attempts, %error, "webhook failed; retrying");
                    let delay = retry_delay(self.settings.first_retry, job.attempts);
                    let delay = delay.max(not_before.unwrap_or_default()).min(MAX_DELAY);
                    self.queue.retry(&job, delay).await
                }
            }
        };
        if let Err(error) = result {
            // The lease brings the job back: delivered again (at least once), or tried again.
            tracing::debug!(%error, "cannot record a webhook attempt");
        }
    }

    async fn bury(&self, job: Job, error: String) -> Result<(), chatfleet_state::StateError> {
        let letter = DeadLetter {
            job,
            error,
            ts: unix_millis(),
        };
        self.queue.bury(letter).await
    }

    /// One POST, unless the job may not be posted at all.
    async fn post(&self, job: &Job) -> Outcome {
        if !self.settings.urls.contains(&job.url) {
            return Outcome::Final(format!(
                "not sent: {} is not one of the fleet's webhook receivers (any more)",
                job.url
            ));
        }
        if !self.settings.allow_private_networks {
            let checked = reqwest::Url::parse(&job.url)
                .map_err(|e| e.to_string())
                .and_then(|url| target::check_literal(&url).map_err(|e| e.to_string()));
            if let Err(refused) = checked {
                return Outcome::Final(format!("not sent: {refused}"));
            }
        }
        let event_id = job.id.split_once(' ').map_or(job.id.as_str(), |(id, _)| id);
        let kind = serde_json::from_str::<EventType>(&job.event).map_or("", |e| e.kind);
        let signature = sign(&self.settings.secret, unix_seconds(), job.event.as_bytes());
        let sent = self
            .client
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, event_id)
            .header(EVENT_TYPE_HEADER, kind)
            .body(job.event.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                if let Some(refused) = target::refusal_in(&error) {
                    return Outcome::Final(format!("not sent: {refused}"));
                }
                return Outcome::Failed {
                    error: format!("request failed: {error}"),
                    not_before: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        judge(status, retry_after)
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

/// What an answer means for the job: 2xx delivered; 408 (timeout) and 429 (too many) and
/// every 5xx worth another attempt, after `Retry-After` when given; any other 4xx final.
fn judge(status: reqwest::StatusCode, retry_after: Option<Duration>) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let error = format!("HTTP {status}");
    let retryable = matches!(status.as_u16(), 408 | 429) || !status.is_client_error();
    if retryable {
        Outcome::Failed {
            error,
            not_before: retry_after,
        }
    } else {
        Outcome::Final(format!("{error}: the receiver refused the event"))
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
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
    fn a_4xx_is_final_but_408_429_and_5xx_are_retried_after_retry_after() {
        let status = |code| reqwest::StatusCode::from_u16(code).unwrap();
        assert_eq!(judge(status(204), None), Outcome::Delivered);
        for code in [400, 401, 403, 404, 410, 422] {
            assert!(
                matches!(judge(status(code), None), Outcome::Final(_)),
                "{code}"
            );
        }
        let later = Some(Duration::from_secs(30));
        for code in [408, 429, 500, 503] {
            let Outcome::Failed { not_before, .. } = judge(status(code), later) else {
                panic!("{code} is worth another attempt");
            };
            assert_eq!(not_before, later);
        }
        assert_eq!(retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn a_receiver_failing_every_delivery_is_paused_longer_each_time() {
        let breakers = Breakers::default();
        let url = "https://support.example.com/hook";
        for _ in 1..FAILURES_TO_PAUSE {
            assert_eq!(breakers.record(url, false), None);
        }
        assert_eq!(breakers.record(url, false), Some(FIRST_PAUSE));
        assert!(breakers.paused(url).is_some());
        assert!(breakers.paused("https://other.example.com/").is_none());
        // The probe after the pause fails: paused again, twice as long.
        assert_eq!(breakers.record(url, false), Some(FIRST_PAUSE * 2));
        // A success ends it.
        assert_eq!(breakers.record(url, true), None);
        assert!(breakers.paused(url).is_none());
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_an_hour() {
        let first = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay(first, n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16]);
        assert_eq!(retry_delay(first, 13), MAX_DELAY);
        assert_eq!(retry_delay(first, u32::MAX), MAX_DELAY);
    }
}
