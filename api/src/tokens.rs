//! Join tokens as the API hands them out: the same rules (user id, lifetime, URLs) for every
//! backend of the room API.

use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::Member;
use chatfleet_wire::token::TokenKeys;
use chatfleet_wire::urls::http_base;

use crate::ApiError;
use crate::rooms::{TokenRequest, TokenView};

/// Token lifetime when the request names none.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Mints a join token for `request` in `room`'s `incarnation` (`""`: a room without one),
/// which lives at `endpoint` (its WebSocket URL); the same rules for every backend.
pub fn mint_token_view(
    keys: &TokenKeys,
    room: &RoomId,
    incarnation: &str,
    request: TokenRequest,
    endpoint: &str,
) -> Result<TokenView, ApiError> {
    let member = Member {
        name: request.name.unwrap_or_else(|| request.user.clone()),
        user: request.user,
        role: request.role,
    };
    member.check_bounds().map_err(ApiError::invalid)?;
    let ttl = request
        .ttl_seconds
        .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
    let (token, expires_at) = keys.mint_for(room, Some(incarnation), &member, ttl);
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
