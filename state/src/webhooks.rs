//! A fleet's webhook queue in Redis: durable, shared by every node, delivered at least once.
//!
//! Whoever sees an event (a node, the operator) queues one job per receiver URL; any node of
//! the fleet claims due jobs with a lease, delivers, and then completes, retries or buries
//! them. A job outlives the process that queued it and the one delivering it: a dead
//! deliverer's lease runs out and another node takes the job again.

use std::time::Duration;

use chatfleet_wire::keys::WebhookKeys;
use serde::{Deserialize, Serialize};

use crate::{Redis, StateError, scripts};

/// Dead letters kept per fleet; older ones go.
pub const DEAD_LETTERS_KEPT: usize = 1_000;

/// One event on its way to one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `<event id> <url>`: the same event queued twice for one receiver is one job.
    pub id: String,
    pub url: String,
    /// The event's JSON: the request body, byte for byte, on every attempt.
    pub event: String,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
}

impl Job {
    pub fn new(event_id: &str, url: &str, event: String) -> Self {
        Self {
            id: format!("{event_id} {url}"),
            url: url.to_owned(),
            event,
            attempts: 0,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("jobs always encode")
    }
}

/// A job that failed every attempt, kept for an admin to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job: Job,
    /// What the last attempt got: a status code or a connection error.
    pub error: String,
    /// Milliseconds since the Unix epoch, when it was given up.
    pub ts: u64,
}

/// One fleet's queue. Cheap to clone.
#[derive(Clone)]
pub struct WebhookQueue {
    redis: Redis,
    keys: WebhookKeys,
}

impl WebhookQueue {
    /// The queue of `fleet` (`namespace/name`) in `redis`.
    pub fn new(redis: Redis, fleet: &str) -> Self {
        Self {
            redis,
            keys: WebhookKeys::new(fleet),
        }
    }

    /// Queues jobs, due at once, in one round trip; returns how many were new (a job already
    /// queued stays as it is).
    pub async fn enqueue(&self, jobs: &[Job]) -> Result<u32, StateError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut script = scripts::ENQUEUE_WEBHOOKS.key(&self.keys.due);
        script.key(&self.keys.jobs);
        for job in jobs {
            script.arg(&job.id).arg(job.to_json());
        }
        Ok(script.invoke_async(&mut self.redis.conn()).await?)
    }

    /// Claims up to `limit` due jobs for `lease`: nobody else gets them until it ends.
    pub async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<Job>, StateError> {
        let claimed: Vec<String> = scripts::CLAIM_WEBHOOKS
            .key(&self.keys.due)
            .key(&self.keys.jobs)
            .arg(limit)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(claimed
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(job) => Some(job),
                Err(error) => {
                    tracing::warn!(%error, "dropping a webhook job that does not parse");
                    None
                }
            })
            .collect())
    }

    /// The receiver took the job: it leaves the queue.
    pub async fn complete(&self, job: &Job) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(&self.keys.jobs, &job.id)
            .ignore()
            .zrem(&self.keys.due, &job.id)
            .ignore();
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// The attempt failed: the job (with `attempts` counted) comes due again after `delay`.
    pub async fn retry(&self, job: &Job, delay: Duration) -> Result<(), StateError> {
        let _: i64 = scripts::RETRY_WEBHOOK
            .key(&self.keys.due)
            .key(&self.keys.jobs)
            .arg(&job.id)
            .arg(job.to_json())
            .arg(delay.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// The job failed its last attempt: it moves to the dead letters.
    pub async fn bury(&self, letter: &DeadLetter) -> Result<(), StateError> {
        let json = serde_json::to_string(letter).expect("dead letters always encode");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lpush(&self.keys.dead, json)
            .ignore()
            .ltrim(&self.keys.dead, 0, DEAD_LETTERS_KEPT as isize - 1)
            .ignore()
            .hdel(&self.keys.jobs, &letter.job.id)
            .ignore()
            .zrem(&self.keys.due, &letter.job.id)
            .ignore();
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// The newest `limit` dead letters, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StateError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let letters: Vec<String> = redis::cmd("LRANGE")
            .arg(&self.keys.dead)
            .arg(0)
            .arg(limit as isize - 1)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(letters
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    /// Jobs queued and not yet delivered or buried.
    pub async fn pending(&self) -> Result<u64, StateError> {
        Ok(redis::cmd("ZCARD")
            .arg(&self.keys.due)
            .query_async(&mut self.redis.conn())
            .await?)
    }
}
