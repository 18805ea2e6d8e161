/// Why the shared state could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the room's live channel could not be subscribed")]
    LiveUnavailable,
    #[error("the room was closed")]
    RoomClosed,
}
