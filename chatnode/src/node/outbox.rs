//! A client's outbound queue: bounded in bytes, never blocking the room that fills it.
//!
//! Rooms push encoded frames without waiting; the client's session task writes them to the
//! socket. When a client reads too slowly and its queued bytes pass the cap, the push fails,
//! the session is told to end (`slow_consumer`) and the room drops the member. One slow client
//! therefore costs at most its cap in memory and never delays anyone else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// What a session writes next.
#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// Close the connection with this code and reason after the frames before it.
    Close(u16, &'static str),
}

/// The sending side, held by rooms.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// A plain locked deque rather than a channel: an idle connection then costs one small
/// allocation instead of a channel's preallocated blocks, and the deque shrinks again after a
/// burst. Thousands of idle connections make that matter.
#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Outbound>>,
    queued_bytes: AtomicUsize,
    cap: usize,
    ready: Notify,
    /// Cancelled when the client overflowed its queue.
    overflowed: CancellationToken,
}

/// The receiving side, held by the session task.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// The client could not keep up and is being disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

/// Capacity a drained queue keeps; more is given back.
const KEPT_CAPACITY: usize = 8;

/// A queue holding at most `cap` bytes of frames.
pub fn outbox(cap: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        queued_bytes: AtomicUsize::new(0),
        cap,
        ready: Notify::new(),
        overflowed: CancellationToken::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver { shared },
    )
}

impl Shared {
    fn enqueue(&self, item: Outbound) {
        self.queue.lock().expect("outbox lock").push_back(item);
        self.ready.notify_one();
    }
}

impl Outbox {
    /// Queues a frame, or reports that the client overflowed (and marks it so).
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), Overflowed> {
        let len = frame.len();
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.shared.cap && before > 0 {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared.overflowed.cancel();
            return Err(Overflowed);
        }
        self.shared.enqueue(Outbound::Frame(frame));
        Ok(())
    }

    /// Queues a frame whatever the cap, still counting its bytes: for a resume's replay, which
    /// the history length already bounds.
    pub fn push_replay(&self, frame: Utf8Bytes) {
        self.shared
            .queued_bytes
            .fetch_add(frame.len(), Ordering::AcqRel);
        self.shared.enqueue(Outbound::Frame(frame));
    }

    /// Asks the session to close after the frames already queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.shared.enqueue(Outbound::Close(code, reason));
    }
}

impl OutboxReceiver {
    /// The next item, waiting for one.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Some(item) = self.try_recv() {
                return item;
            }
            // `notify_one` leaves a permit when nobody waits, so no push is missed.
            self.shared.ready.notified().await;
        }
    }

    /// The next item if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut queue = self.shared.queue.lock().expect("outbox lock");
        let item = queue.pop_front();
        if queue.is_empty() && queue.capacity() > KEPT_CAPACITY {
            queue.shrink_to(KEPT_CAPACITY);
        }
        item
    }

    /// Call once a frame from this queue has been written.
    pub fn written(&self, len: usize) {
        self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Cancelled when the client overflowed its queue.
    pub fn overflow_token(&self) -> CancellationToken {
        self.shared.overflowed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pushes_until_the_byte_cap_then_overflows() {
        let (out, mut rx) = outbox(10);
        out.push(Utf8Bytes::from_static("12345")).unwrap();
        out.push(Utf8Bytes::from_static("12345")).unwrap();
        assert_eq!(out.push(Utf8Bytes::from_static("1")), Err(Overflowed));
        assert!(rx.overflow_token().is_cancelled());
        match rx.recv().await {
            Outbound::Frame(f) => {
                rx.written(f.len());
            }
            other => panic!("{other:?}"),
        }
        // Room again after the client read some.
        out.push(Utf8Bytes::from_static("12345")).unwrap();
    }

    #[tokio::test]
    async fn one_frame_larger_than_the_cap_still_goes_to_an_empty_queue() {
        let (out, _rx) = outbox(4);
        out.push(Utf8Bytes::from_static("123456789")).unwrap();
        assert_eq!(out.push(Utf8Bytes::from_static("1")), Err(Overflowed));
    }
}
