//! A client's outbound queue: bounded in bytes, never blocking the room that fills it.
//!
//! Rooms push encoded frames without waiting; the client's session task writes them to the
//! socket. When a client reads too slowly and its queued bytes pass the cap, the push fails,
//! the session is told to end (`slow_consumer`) and the room drops the member. One slow client
//! therefore costs at most its cap in memory and never delays anyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
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
    tx: mpsc::UnboundedSender<Outbound>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queued_bytes: AtomicUsize,
    cap: usize,
    /// Cancelled when the client overflowed its queue.
    overflowed: CancellationToken,
}

/// The receiving side, held by the session task.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Outbound>,
    shared: Arc<Shared>,
}

/// The client could not keep up and is being disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

/// A queue holding at most `cap` bytes of frames.
pub fn outbox(cap: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        cap,
        overflowed: CancellationToken::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
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
        // A closed receiver means the session already ended; nothing is lost by dropping.
        let _ = self.tx.send(Outbound::Frame(frame));
        Ok(())
    }

    /// Queues a frame whatever the cap, still counting its bytes: for a resume's replay, which
    /// the history length already bounds.
    pub fn push_replay(&self, frame: Utf8Bytes) {
        self.shared
            .queued_bytes
            .fetch_add(frame.len(), Ordering::AcqRel);
        let _ = self.tx.send(Outbound::Frame(frame));
    }

    /// Asks the session to close after the frames already queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Outbound::Close(code, reason));
    }
}

impl OutboxReceiver {
    /// The next item, or `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.rx.recv().await
    }

    /// The next item if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
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
            Some(Outbound::Frame(f)) => {
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
