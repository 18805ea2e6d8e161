//! A server frame encoded once as WebSocket bytes, shared by every member it goes to.
//!
//! A server's frames are not masked (RFC 6455 §5.1), so one message to 300 members is the
//! same 300 byte strings: the room encodes it once and each socket gets a reference-counted
//! copy, instead of each session framing its own copy of the JSON.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A complete WebSocket frame (header and payload), ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    bytes: Bytes,
}

impl WsFrame {
    /// A final text frame carrying `text`.
    pub fn text(text: impl Into<Utf8Bytes>) -> WsFrame {
        let payload: Bytes = text.into().into();
        Self::encode(Frame::message(payload, OpCode::Data(Data::Text), true))
    }

    /// Bytes the WebSocket layer produced itself (a pong, a close), as they are.
    pub fn raw(bytes: Bytes) -> WsFrame {
        WsFrame { bytes }
    }

    fn encode(frame: Frame) -> WsFrame {
        let mut bytes = Vec::with_capacity(frame.len());
        frame
            .format(&mut bytes)
            .expect("a frame formats into a Vec");
        WsFrame {
            bytes: bytes.into(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The text of a frame made by [`WsFrame::text`] (for tests and diagnostics).
    #[cfg(test)]
    pub fn payload_text(&self) -> &str {
        let header = match self.bytes[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        std::str::from_utf8(&self.bytes[header..]).expect("a text frame")
    }
}

impl From<String> for WsFrame {
    fn from(text: String) -> WsFrame {
        WsFrame::text(text)
    }
}

impl From<Utf8Bytes> for WsFrame {
    fn from(text: Utf8Bytes) -> WsFrame {
        WsFrame::text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_short_medium_and_long_text_frames() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let text = "x".repeat(len);
            let frame = WsFrame::text(text.clone());
            assert_eq!(frame.as_bytes()[0], 0x81, "final text frame");
            assert_eq!(frame.as_bytes()[1] & 0x80, 0, "servers do not mask");
            assert_eq!(frame.payload_text(), text);
        }
    }
}
