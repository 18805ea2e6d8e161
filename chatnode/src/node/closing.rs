//! Ending a WebSocket properly, whoever ends it: the client always receives a close frame with a
//! meaningful code, and no close turns into a TCP reset.
//!
//! A reset happens when a socket is closed with unread input: the kernel then discards what we
//! sent, close frame included, and the client sees 1006. So after the closing handshake the node
//! shuts its side down (FIN) and reads and discards whatever is still in flight, bounded in
//! bytes and time, before dropping the socket.

use std::time::Duration;

use chatfleet_wire::frames::close;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long each step of a close may take: sending our frame, awaiting the client's.
const STEP: Duration = Duration::from_secs(1);
/// The most input read and discarded after a close (a client may be mid-way through a huge
/// frame), and for how long.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The node closes with this code and reason, then waits for the client's close.
    Close(u16, &'static str),
    /// The input is broken (a protocol violation, a frame too big): close with this code at
    /// once, without reading further frames.
    Fail(u16, &'static str),
    /// The client sent a close frame; the node answers it.
    ClosedByClient,
    /// The connection is already gone: nothing to say.
    Gone,
}

/// The end a read error calls for.
pub fn on_read_error(error: &Error) -> End {
    match error {
        Error::Capacity(_) => End::Fail(close::TOO_BIG, "message too big"),
        Error::Utf8(_) => End::Fail(close::INVALID_PAYLOAD, "invalid UTF-8"),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        Error::Protocol(_) => End::Fail(close::PROTOCOL_ERROR, "protocol error"),
        Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_) => End::Gone,
        _ => End::Fail(close::INTERNAL_ERROR, "internal error"),
    }
}

/// Carries out `end` on `socket`.
pub async fn finish<S>(socket: &mut WebSocketStream<S>, end: End)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match end {
        End::Close(code, reason) => {
            if send_close(socket, code, reason).await {
                await_client_close(socket).await;
                discard_input(socket).await;
            }
        }
        End::Fail(code, reason) => {
            if send_close(socket, code, reason).await {
                discard_input(socket).await;
            }
        }
        End::ClosedByClient => {
            // The WebSocket layer queued the reply when it read the client's close: send it.
            if matches!(tokio::time::timeout(STEP, socket.flush()).await, Ok(Ok(()))) {
                discard_input(socket).await;
            }
        }
        End::Gone => {}
    }
}

/// Sends our close frame; false when the connection is gone.
async fn send_close<S>(socket: &mut WebSocketStream<S>, code: u16, reason: &'static str) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    matches!(
        tokio::time::timeout(STEP, socket.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    )
}

/// Reads frames until the client's close (the end of the handshake), briefly.
async fn await_client_close<S>(socket: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(STEP, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Shuts our side down and reads what is still in flight, so closing does not reset.
async fn discard_input<S>(socket: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = socket.get_mut();
    let _ = tokio::time::timeout(STEP, io.shutdown()).await;
    let mut buf = [0u8; 8192];
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::error::CapacityError;

    use super::*;

    #[test]
    fn read_errors_map_to_close_codes() {
        let too_big = Error::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        });
        assert_eq!(on_read_error(&too_big), End::Fail(1009, "message too big"));
        let rsv = Error::Protocol(ProtocolError::NonZeroReservedBits);
        assert_eq!(on_read_error(&rsv), End::Fail(1002, "protocol error"));
        let reset = Error::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(on_read_error(&reset), End::Gone);
        assert_eq!(on_read_error(&Error::ConnectionClosed), End::Gone);
    }
}
