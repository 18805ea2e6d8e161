//! The client's TCP socket as the WebSocket layer sees it. Reads come straight from the
//! socket; writes (the session's replies, pings, pongs and close frames) go through the
//! client's [`Outbox`], the one path into the socket, so they never interleave with frames a
//! room is writing into it at the same moment.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::outbox::{Outbox, Overflowed, WsFrame};

pub struct ClientSocket {
    stream: Arc<TcpStream>,
    outbox: Outbox,
}

impl ClientSocket {
    pub fn new(stream: Arc<TcpStream>, outbox: Outbox) -> Self {
        Self { stream, outbox }
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: it is cleared now, so the next poll registers.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for ClientSocket {
    /// Takes all of `buf` (the WebSocket layer hands over whole frames), so a frame is never
    /// split around another writer's. Within the outbox's cap like any frame: a client that
    /// sends pings and never reads would otherwise have the node queue pongs without end.
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self
            .outbox
            .push_from_session(WsFrame::raw(Bytes::copy_from_slice(buf)))
        {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            // The session sees the overflow too, and ends as a slow consumer.
            Err(Overflowed) => Poll::Ready(Err(io::Error::other("the client does not read"))),
        }
    }

    /// Written once everything before a close request is: the request itself is the
    /// session's to carry out.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.outbox.poll_flush(cx))?;
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write))
    }
}
