//! What the users observed, gathered across thousands of tasks with little contention:
//! counters are atomics, latencies go into a few sharded histograms.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Quiet rooms and flooded rooms are measured apart, to see whether a flood leaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Quiet = 0,
    Flood = 1,
}

const SHARDS: usize = 16;
/// Latencies are recorded in microseconds, up to a minute.
const MAX_MICROS: u64 = 60_000_000;

#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    /// Deliveries the quiet rooms' sends should cause: each send times its room's size.
    pub expected_quiet: AtomicU64,
    pub sent_flood: AtomicU64,
    pub rate_limited: AtomicU64,
    pub other_errors: AtomicU64,
}

pub struct Stats {
    pub counters: Counters,
    delivered: [AtomicU64; 2],
    latency: [Vec<Mutex<Histogram<u64>>>; 2],
}

impl Stats {
    pub fn new() -> Self {
        let shards = || {
            (0..SHARDS)
                .map(|_| {
                    Mutex::new(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"))
                })
                .collect()
        };
        Self {
            counters: Counters::default(),
            delivered: [AtomicU64::new(0), AtomicU64::new(0)],
            latency: [shards(), shards()],
        }
    }

    pub fn delivered(&self, class: Class, user: usize, latency_micros: u64) {
        self.delivered[class as usize].fetch_add(1, Ordering::Relaxed);
        let mut shard = self.latency[class as usize][user % SHARDS]
            .lock()
            .expect("histogram lock");
        shard.saturating_record(latency_micros.clamp(1, MAX_MICROS));
    }

    pub fn delivered_count(&self, class: Class) -> u64 {
        self.delivered[class as usize].load(Ordering::Relaxed)
    }

    /// All shards of a class merged.
    pub fn latency(&self, class: Class) -> Histogram<u64> {
        let mut merged = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds");
        for shard in &self.latency[class as usize] {
            merged
                .add(&*shard.lock().expect("histogram lock"))
                .expect("same bounds");
        }
        merged
    }
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
