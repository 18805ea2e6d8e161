//! Join tokens as the API hands them out: the same rules (user id, lifetime, URLs) for every
//! backend of the room API.

use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::Member;
use chatfleet_wire::token::TokenKeys;
use chatfleet_wire::urls::http_base;

use crate::ApiError;
use crate::rooms::{TokenRequest, TokenView};

/// Longest user id.
const MAX_USER_LEN: usize = 128;
/// Token lifetime when the request names none.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Mints a join token for `request` in `room`, which lives at `endpoint` (its WebSocket URL);
/// the same rules for every backend.
pub fn mint_token_view(
    keys: &TokenKeys,
    room: &RoomId,
    request: TokenRequest,
    endpoint: &str,
) -> Result<TokenView, ApiError> {
    if request.user.trim().is_empty() || request.user.len() > MAX_USER_LEN {
        return Err(ApiError::invalid(format!(
            "user must be 1 to {MAX_USER_LEN} bytes"
        )));
    }
    let member = Member {
        name: request.name.unwrap_or_else(|| request.user.clone()),
        user: request.user,
        role: request.role,
    };
    let ttl = request
        .ttl_seconds
        .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
    let (token, expires_at) = keys.mint(room, &member, ttl);
    let node_base = endpoint.split("/v1/rooms/").next().unwrap_or(endpoint);
    Ok(TokenView {
        room: room.clone(),
        user: member.user,
        ws_url: format!("{endpoint}?token={token}"),
        chat_url: format!("{}/?room={room}&token={token}", http_base(node_base)),
        token,
        expires_at,
    })
}
