//! The URLs clients are given: a room's WebSocket endpoint on a node, its transcript's path,
//! and the node's chat page.

use crate::RoomId;

/// The WebSocket URL of a room on a node.
pub fn ws_endpoint(advertise_url: &str, room: &RoomId) -> String {
    format!(
        "{advertise_url}/v1/rooms/{}/{}/ws",
        room.namespace(),
        room.name()
    )
}

/// The room API path of a room's transcript, relative to the room API's base URL (a node's,
/// or the operator's): what the `room.closed` webhook links to. With an incarnation it names
/// that room's transcript even after the name is used again.
pub fn transcript_path(room: &RoomId, incarnation: &str) -> String {
    let path = format!("/v1/rooms/{}/{}/transcript", room.namespace(), room.name());
    if incarnation.is_empty() {
        path
    } else {
        format!("{path}?incarnation={incarnation}")
    }
}

/// The chat page's base URL for a node's advertised WebSocket URL.
pub fn http_base(advertise_url: &str) -> String {
    if let Some(rest) = advertise_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = advertise_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        advertise_url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_page_and_socket_urls_from_the_advertised_url() {
        let room: RoomId = "a/b".parse().unwrap();
        assert_eq!(ws_endpoint("ws://n:1", &room), "ws://n:1/v1/rooms/a/b/ws");
        assert_eq!(transcript_path(&room, ""), "/v1/rooms/a/b/transcript");
        assert_eq!(
            transcript_path(&room, "1f3a"),
            "/v1/rooms/a/b/transcript?incarnation=1f3a"
        );
        assert_eq!(http_base("ws://n:1"), "http://n:1");
        assert_eq!(http_base("wss://chat.example"), "https://chat.example");
    }
}
