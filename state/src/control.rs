//! The control channel: fleet-wide commands, published for every node to act on.

use chatfleet_wire::control::Control;
use chatfleet_wire::keys;
use redis::AsyncCommands;

use crate::{Redis, StateError};

#[derive(Clone)]
pub struct ControlChannel {
    redis: Redis,
}

impl ControlChannel {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Publishes a command for every node.
    pub async fn publish(&self, command: &Control) -> Result<(), StateError> {
        let _: () = self
            .redis
            .conn()
            .publish(keys::control_channel(), command.to_json())
            .await?;
        Ok(())
    }
}
