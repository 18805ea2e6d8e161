//! One connection to a fleet's Redis, with the timeouts that decide how an outage looks.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long to wait for Redis before calling it unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Reconnection attempts within one request.
    pub retries: usize,
}

impl ConnectionSettings {
    /// A chat node: a client waits on every answer, so give up quickly and report not ready.
    pub const NODE: Self = Self {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(2),
        retries: 2,
    };
    /// The operator: a failed reconcile is retried with its own backoff, so fail fast, but
    /// allow the slower scripts (placement reads a whole node) a little longer.
    pub const OPERATOR: Self = Self {
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(3),
        retries: 1,
    };
}

/// A fleet's Redis: the client (for dedicated connections such as pub/sub) and one
/// multiplexed, self-reconnecting connection for everything else. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
}

impl Redis {
    /// Prepares the connection without waiting for Redis, so a component starts (and reports
    /// not ready) while Redis is down.
    pub fn open(url: &str, settings: ConnectionSettings) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(settings.retries)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Self { client, conn })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A handle on the shared connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(drop)
    }
}
