//! The Lua scripts, loaded once per process. Each file's header is its contract.

use std::sync::LazyLock;

use redis::Script;

/// A script that writes a room's keys, after the closed-mark check they all share
/// (`is_closed`, in `closed_prelude.lua`).
fn guarded(body: &str) -> Script {
    Script::new(&format!(
        "{}\n{body}",
        include_str!("scripts/closed_prelude.lua")
    ))
}

pub static APPEND: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/append.lua")));
pub static POSITION: LazyLock<Script> =
    LazyLock::new(|| guarded(include_str!("scripts/position.lua")));
pub static CLAIM_SESSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/claim_session.lua")));
pub static REFRESH_SESSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/refresh_session.lua")));
pub static FREE_SLOTS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/free_slots.lua")));
pub static RELEASE_SESSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release_session.lua")));
pub static END_SESSIONS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/end_sessions.lua")));
pub static SEATS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/seats.lua")));
pub static READS: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/reads.lua")));
pub static CREATE_ROOM: LazyLock<Script> =
    LazyLock::new(|| guarded(include_str!("scripts/create_room.lua")));
pub static MODERATE: LazyLock<Script> =
    LazyLock::new(|| guarded(include_str!("scripts/moderate.lua")));
pub static CLOSE: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/close.lua")));
pub static TRANSCRIPT: LazyLock<Script> =
    LazyLock::new(|| guarded(include_str!("scripts/transcript.lua")));
pub static REFRESH_ROOM: LazyLock<Script> =
    LazyLock::new(|| guarded(include_str!("scripts/refresh_room.lua")));
pub static INCARNATION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/incarnation.lua")));
pub static CLOSED: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/closed.lua")));
pub static ENQUEUE_WEBHOOKS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/enqueue_webhooks.lua")));
pub static CLAIM_WEBHOOKS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/claim_webhooks.lua")));
pub static RETRY_WEBHOOK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/retry_webhook.lua")));
