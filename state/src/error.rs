/// Why the shared state could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the room's live channel could not be subscribed")]
    LiveUnavailable,
    #[error("the room was closed")]
    RoomClosed,
    /// A standalone node's transcript memory is at its bound: closed rooms' transcripts are
    /// kept for their retention, so no new room opens until some run out.
    #[error(
        "the node's transcript memory is full; no new room opens until closed rooms' transcripts expire"
    )]
    Full,
}
