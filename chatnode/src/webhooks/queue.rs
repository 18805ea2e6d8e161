//! Where a node's webhook jobs wait: the fleet's Redis queue (shared and durable), or memory
//! on a standalone node (which has no other node to hand them to).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::StateError;
use chatfleet_state::webhooks::{DEAD_LETTERS_KEPT, DeadLetter, Job, WebhookQueue};

/// Jobs a standalone node holds at most; past it new events are dropped (and counted).
const MEMORY_JOBS_MAX: usize = 10_000;

#[derive(Clone)]
pub enum Queue {
    Memory(Arc<Mutex<MemoryQueue>>),
    Redis(WebhookQueue),
}

/// What an enqueue did: jobs new to the queue, and jobs a full queue dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub new: usize,
    pub dropped: usize,
}

impl Queue {
    pub fn memory() -> Self {
        Queue::Memory(Arc::default())
    }

    /// Queues jobs due at once. A job already queued is taken as it is (no new job); a full
    /// memory queue drops the rest.
    pub async fn enqueue(&self, jobs: &[Job]) -> Result<Enqueued, StateError> {
        match self {
            Queue::Memory(m) => Ok(m.lock().expect("queue lock").enqueue(jobs)),
            Queue::Redis(r) => Ok(Enqueued {
                new: r.enqueue(jobs).await? as usize,
                dropped: 0,
            }),
        }
    }

    pub async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<Job>, StateError> {
        match self {
            Queue::Memory(m) => Ok(m.lock().expect("queue lock").claim(limit, lease)),
            Queue::Redis(r) => r.claim(limit, lease).await,
        }
    }

    pub async fn complete(&self, job: &Job) -> Result<(), StateError> {
        match self {
            Queue::Memory(m) => {
                m.lock().expect("queue lock").jobs.remove(&job.id);
                Ok(())
            }
            Queue::Redis(r) => r.complete(job).await,
        }
    }

    pub async fn retry(&self, job: &Job, delay: Duration) -> Result<(), StateError> {
        match self {
            Queue::Memory(m) => {
                let mut queue = m.lock().expect("queue lock");
                if let Some(entry) = queue.jobs.get_mut(&job.id) {
                    *entry = (job.clone(), Instant::now() + delay);
                }
                Ok(())
            }
            Queue::Redis(r) => r.retry(job, delay).await,
        }
    }

    pub async fn bury(&self, letter: DeadLetter) -> Result<(), StateError> {
        match self {
            Queue::Memory(m) => {
                let mut queue = m.lock().expect("queue lock");
                queue.jobs.remove(&letter.job.id);
                queue.dead.push_front(letter);
                queue.dead.truncate(DEAD_LETTERS_KEPT);
                Ok(())
            }
            Queue::Redis(r) => r.bury(&letter).await,
        }
    }

    /// The newest dead letters, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StateError> {
        match self {
            Queue::Memory(m) => {
                let queue = m.lock().expect("queue lock");
                Ok(queue.dead.iter().take(limit).cloned().collect())
            }
            Queue::Redis(r) => r.dead_letters(limit).await,
        }
    }
}

/// A standalone node's queue: jobs with the time each is due (its next attempt, or the end of
/// the lease of the attempt under way). Claims scan every job: there are few, and at most
/// [`MEMORY_JOBS_MAX`].
#[derive(Default)]
pub struct MemoryQueue {
    jobs: HashMap<String, (Job, Instant)>,
    dead: VecDeque<DeadLetter>,
}

impl MemoryQueue {
    fn enqueue(&mut self, jobs: &[Job]) -> Enqueued {
        let now = Instant::now();
        let mut enqueued = Enqueued::default();
        for job in jobs {
            if self.jobs.contains_key(&job.id) {
                continue;
            }
            if self.jobs.len() >= MEMORY_JOBS_MAX {
                enqueued.dropped += 1;
                continue;
            }
            self.jobs.insert(job.id.clone(), (job.clone(), now));
            enqueued.new += 1;
        }
        enqueued
    }

    fn claim(&mut self, limit: usize, lease: Duration) -> Vec<Job> {
        let now = Instant::now();
        let mut due: Vec<(&String, Instant)> = self
            .jobs
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (_, at))| (id, *at))
            .collect();
        // Oldest first, as Redis's sorted set gives them.
        due.sort_by_key(|(_, at)| *at);
        let ids: Vec<String> = due
            .into_iter()
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| {
                let (job, at) = self.jobs.get_mut(id)?;
                *at = now + lease;
                Some(job.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u32) -> Job {
        Job::new(
            &format!("evt_{n}"),
            "http://hooks.example/",
            format!("{{\"n\":{n}}}"),
        )
    }

    #[tokio::test]
    async fn the_memory_queue_leases_retries_and_buries_as_redis_does() {
        let queue = Queue::memory();
        let enqueued = queue.enqueue(&[job(1), job(2), job(1)]).await.unwrap();
        assert_eq!(enqueued, Enqueued { new: 2, dropped: 0 });
        let lease = Duration::from_millis(50);
        let claimed = queue.claim(10, lease).await.unwrap();
        assert_eq!(claimed.len(), 2, "a job queued twice is one job");
        assert!(queue.claim(10, lease).await.unwrap().is_empty(), "leased");
        queue.complete(&job(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(queue.claim(10, lease).await.unwrap(), vec![job(2)]);

        let failed = Job {
            attempts: 1,
            ..job(2)
        };
        queue
            .retry(&failed, Duration::from_millis(30))
            .await
            .unwrap();
        assert!(queue.claim(10, lease).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(queue.claim(10, lease).await.unwrap(), vec![failed.clone()]);

        let letter = DeadLetter {
            job: failed,
            error: "HTTP 500".into(),
            ts: 1,
        };
        queue.bury(letter.clone()).await.unwrap();
        assert_eq!(queue.dead_letters(5).await.unwrap(), vec![letter]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(queue.claim(10, lease).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_full_memory_queue_takes_no_more() {
        let queue = Queue::memory();
        let jobs: Vec<Job> = (0..MEMORY_JOBS_MAX as u32 + 5).map(job).collect();
        assert_eq!(
            queue.enqueue(&jobs).await.unwrap(),
            Enqueued {
                new: MEMORY_JOBS_MAX,
                dropped: 5
            }
        );
        // An event already queued is taken as it is: neither new nor dropped.
        assert_eq!(queue.enqueue(&[job(0)]).await.unwrap(), Enqueued::default());
    }
}
