//! A client's outbound path: frames go straight into its socket when it can take them, and
//! wait in a queue bounded in bytes when it cannot. Nothing here ever blocks the room.
//!
//! A room that delivers a message writes it into each member's socket itself (one
//! non-blocking `write`); only when the socket's buffer is full does the rest wait in the
//! queue, and the client's session task, woken once, writes it out when the socket drains.
//! While anything waits, later frames queue behind it, so frames never interleave or reorder.
//! A client that reads so slowly that its queue passes the cap is told to end
//! (`slow_consumer`) and the room drops the member: one slow client costs at most its cap in
//! memory and never delays anyone else.
//!
//! An outbox made without a socket (in tests) only queues.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use super::ws_frame::WsFrame;

/// What a session writes next.
#[derive(Debug)]
pub enum Outbound {
    Frame(WsFrame),
    /// Close the connection with this code and reason after the frames before it.
    Close(u16, &'static str),
}

/// The sending side, held by rooms and by the session's own WebSocket layer.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Queue>,
    /// The client's socket, written directly while nothing is queued.
    socket: Option<Arc<TcpStream>>,
    cap: usize,
    ready: Notify,
    /// Cancelled when the client overflowed its queue.
    overflowed: CancellationToken,
}

/// What waits for the socket. A plain deque rather than a channel: an idle connection then
/// costs no preallocated blocks, and the deque shrinks again after a burst.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// Bytes of the queued frames not yet written.
    bytes: usize,
    /// Bytes of the front frame already written (a partial write).
    front_written: usize,
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

/// An outbox holding at most `cap` bytes of waiting frames, writing into `socket` directly.
pub fn outbox_for(cap: usize, socket: Option<Arc<TcpStream>>) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(Queue::default()),
        socket,
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

/// An outbox without a socket: everything queues (rooms' tests read the queue).
#[cfg(test)]
pub fn outbox(cap: usize) -> (Outbox, OutboxReceiver) {
    outbox_for(cap, None)
}

impl Shared {
    /// Writes `frame` now if nothing waits and the socket takes it; queues what is left.
    /// `capped` refuses the frame (and marks the client as overflowed) when the queue is full.
    /// Once the client overflowed, only the session's own frames (its last error and close)
    /// go to it.
    fn send(&self, frame: WsFrame, capped: bool, from_session: bool) -> Result<(), Overflowed> {
        let mut queue = self.state.lock().expect("outbox lock");
        if !from_session && self.overflowed.is_cancelled() {
            return Err(Overflowed);
        }
        let mut written = 0;
        if queue.items.is_empty()
            && let Some(socket) = &self.socket
        {
            // An error is left for the session to find when it next reads or flushes.
            if let Ok(n) = socket.try_write(frame.as_bytes()) {
                if n == frame.len() {
                    return Ok(());
                }
                written = n;
            }
        }
        let left = frame.len() - written;
        if capped && written == 0 && queue.bytes > 0 && queue.bytes + left > self.cap {
            self.overflowed.cancel();
            return Err(Overflowed);
        }
        queue.bytes += left;
        if queue.items.is_empty() {
            queue.front_written = written;
        }
        queue.items.push_back(Outbound::Frame(frame));
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// Writes what waits, as far as the socket takes it: `Ready(Ok(Some(close)))` when a
    /// close request reached the front (taken from the queue only if `take_close`),
    /// `Ready(Ok(None))` when nothing waits any more, and `Pending` until the socket can take
    /// more.
    fn poll_flush(
        &self,
        cx: &mut Context<'_>,
        take_close: bool,
    ) -> Poll<io::Result<Option<(u16, &'static str)>>> {
        let Some(socket) = &self.socket else {
            return Poll::Ready(Ok(None));
        };
        loop {
            let mut queue = self.state.lock().expect("outbox lock");
            let front_written = queue.front_written;
            let Some(front) = queue.items.front() else {
                if queue.items.capacity() > KEPT_CAPACITY {
                    queue.items.shrink_to(KEPT_CAPACITY);
                }
                return Poll::Ready(Ok(None));
            };
            let frame = match front {
                Outbound::Close(code, reason) => {
                    let close = (*code, *reason);
                    if take_close {
                        queue.items.pop_front();
                    }
                    return Poll::Ready(Ok(Some(close)));
                }
                Outbound::Frame(frame) => frame,
            };
            let frame_len = frame.len();
            match socket.try_write(&frame.as_bytes()[front_written..]) {
                Ok(n) => {
                    queue.bytes -= n;
                    if front_written + n == frame_len {
                        queue.items.pop_front();
                        queue.front_written = 0;
                    } else {
                        queue.front_written += n;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    drop(queue);
                    // Ready again means try again; Pending registers the waker.
                    std::task::ready!(socket.poll_write_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl Outbox {
    /// Sends a frame, or reports that the client overflowed (and marks it so).
    pub fn push(&self, frame: WsFrame) -> Result<(), Overflowed> {
        self.shared.send(frame, true, false)
    }

    /// Sends a frame of the session's own WebSocket layer (replies, pings, pongs, close
    /// frames): capped like any, but still taken after the client overflowed, when the session
    /// tells it why it is cut off.
    pub fn push_from_session(&self, frame: WsFrame) -> Result<(), Overflowed> {
        self.shared.send(frame, true, true)
    }

    /// Sends a frame whatever the cap: for what a room must get to a member anyway, the
    /// `welcome` and a resume's replay (which the history length bounds) and the last frame
    /// before a close.
    pub fn push_replay(&self, frame: WsFrame) {
        let _ = self.shared.send(frame, false, false);
    }

    /// Asks the session to close after the frames already sent or queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut queue = self.shared.state.lock().expect("outbox lock");
        queue.items.push_back(Outbound::Close(code, reason));
        drop(queue);
        self.shared.ready.notify_one();
    }

    /// Writes what waits, up to a close request (which is the session's to carry out).
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.poll_flush(cx, false).map_ok(|_| ())
    }
}

impl OutboxReceiver {
    /// Waits until something was queued (a frame the socket did not take, or a close).
    pub async fn queued(&self) {
        loop {
            if !self
                .shared
                .state
                .lock()
                .expect("outbox lock")
                .items
                .is_empty()
            {
                return;
            }
            // `notify_one` leaves a permit when nobody waits, so no push is missed.
            self.shared.ready.notified().await;
        }
    }

    /// Writes what is queued, waiting for the socket as needed; the close to perform if one
    /// was asked for.
    pub async fn flush(&self) -> io::Result<Option<(u16, &'static str)>> {
        std::future::poll_fn(|cx| self.shared.poll_flush(cx, true)).await
    }

    /// The next queued item, waiting for one (outboxes without a socket, in tests).
    #[cfg(test)]
    pub async fn recv(&mut self) -> Outbound {
        loop {
            {
                let mut queue = self.shared.state.lock().expect("outbox lock");
                if let Some(item) = queue.items.pop_front() {
                    if let Outbound::Frame(frame) = &item {
                        queue.bytes -= frame.len();
                    }
                    return item;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Drops what waits, but the rest of a frame partly written already: once that is out,
    /// the stream is whole again and can carry a last error and a close frame.
    pub fn keep_only_partial_front(&self) {
        let mut queue = self.shared.state.lock().expect("outbox lock");
        let partial = queue.front_written > 0;
        let keep = usize::from(partial);
        while queue.items.len() > keep {
            if let Some(Outbound::Frame(frame)) = queue.items.pop_back() {
                queue.bytes -= frame.len();
            }
        }
        if !partial {
            queue.front_written = 0;
        }
    }

    /// Cancelled when the client overflowed its queue.
    pub fn overflow_token(&self) -> CancellationToken {
        self.shared.overflowed.clone()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn frame(text: &'static str) -> WsFrame {
        WsFrame::text(text)
    }

    #[tokio::test]
    async fn queues_until_the_byte_cap_then_overflows() {
        let (out, mut rx) = outbox(10);
        out.push(frame("123")).unwrap();
        out.push(frame("123")).unwrap();
        assert_eq!(out.push(frame("1")), Err(Overflowed));
        assert!(rx.overflow_token().is_cancelled());
        assert!(matches!(rx.recv().await, Outbound::Frame(_)));
        // The client is being cut off: rooms' frames stay refused even with room again, and
        // only the session's own (its last error and close) still go.
        assert_eq!(out.push(frame("123")), Err(Overflowed));
        out.push_from_session(frame("bye")).unwrap();
    }

    /// After an overflow, the rest of a partly written frame is kept (so the stream stays
    /// whole) and everything after it dropped.
    #[tokio::test]
    async fn a_cut_off_client_keeps_only_the_frame_it_was_reading() {
        let (socket, _client) = pair().await;
        let (out, rx) = outbox_for(1 << 22, Some(socket));
        let body = "x".repeat(60_000);
        while rx.shared.state.lock().unwrap().items.len() < 4 {
            out.push(WsFrame::text(body.clone())).unwrap();
        }
        assert!(
            rx.shared.state.lock().unwrap().front_written > 0,
            "a partial front frame"
        );
        rx.keep_only_partial_front();
        let queue = rx.shared.state.lock().unwrap();
        assert_eq!(queue.items.len(), 1);
        let Some(Outbound::Frame(front)) = queue.items.front() else {
            panic!("the partial frame is kept")
        };
        assert_eq!(queue.bytes, front.len() - queue.front_written);
    }

    #[tokio::test]
    async fn one_frame_larger_than_the_cap_still_goes_to_an_empty_queue() {
        let (out, _rx) = outbox(4);
        out.push(frame("123456789")).unwrap();
        assert_eq!(out.push(frame("1")), Err(Overflowed));
    }

    /// A connected pair of loopback sockets: (ours, the client's).
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Arc::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn frames_go_straight_into_a_socket_that_takes_them() {
        let (socket, mut client) = pair().await;
        let (out, rx) = outbox_for(1 << 20, Some(socket));
        out.push(frame("one")).unwrap();
        out.push(frame("two")).unwrap();
        assert!(
            rx.shared.state.lock().unwrap().items.is_empty(),
            "nothing waited: the socket took both"
        );
        let mut read = vec![0; 10];
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(
            read,
            [frame("one").as_bytes(), frame("two").as_bytes()].concat()
        );
    }

    /// A client that stops reading fills its socket; frames then queue in order behind the
    /// partly written one, the cap applies, and a flush delivers everything intact once the
    /// client reads again.
    #[tokio::test]
    async fn a_full_socket_queues_in_order_and_a_flush_delivers_it_all() {
        let (socket, mut client) = pair().await;
        let (out, rx) = outbox_for(1 << 20, Some(socket));
        let body = "x".repeat(60_000);
        let mut sent = Vec::new();
        while rx.shared.state.lock().unwrap().items.len() < 3 {
            let frame = WsFrame::text(format!("{}{body}", sent.len()));
            sent.extend_from_slice(frame.as_bytes());
            out.push(frame).unwrap();
        }
        assert!(
            out.push(WsFrame::text("y".repeat(2 << 20))).is_err(),
            "past the cap"
        );
        out.close(1000, "bye");

        let reader = tokio::spawn(async move {
            let mut received = vec![0; sent.len()];
            client.read_exact(&mut received).await.unwrap();
            assert!(received == sent, "every byte, in order");
        });
        assert_eq!(rx.flush().await.unwrap(), Some((1000, "bye")));
        reader.await.unwrap();
    }
}
