//! One connection to a fleet's Redis, with the timeouts that decide how an outage looks, and
//! the master it follows when Redis runs under Sentinel.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::sync::watch;

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

/// How often the sentinels are asked which server is the master. A failover is noticed
/// within this, on top of the sentinels' own detection (`down-after-milliseconds`).
const ASK_SENTINELS_EVERY: Duration = Duration::from_millis(250);

/// The URL scheme of a Redis run under Sentinel:
/// `redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]
/// [?sentinel_username=...&sentinel_password=...]`. The credentials before the hosts are the
/// master's (and its replicas'); sentinels that require a password of their own get it in the
/// query.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A fleet's Redis: the client (for dedicated connections such as pub/sub) and one
/// multiplexed, self-reconnecting connection for everything else. Under Sentinel, both
/// follow the master the sentinels name. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    current: Arc<RwLock<Current>>,
    /// Counts the masters this handle has followed (0 for a plain Redis).
    master: watch::Receiver<u64>,
}

struct Current {
    client: redis::Client,
    conn: ConnectionManager,
}

impl Redis {
    /// Prepares the connection without waiting for Redis, so a component starts (and reports
    /// not ready) while Redis is down. A `redis+sentinel://` URL starts a task (so call this
    /// within a Tokio runtime) that asks the sentinels for the master until every handle is
    /// dropped; until they name one, requests fail as refused: nothing was sent.
    pub fn open(url: &str, settings: ConnectionSettings) -> Result<Self, redis::RedisError> {
        let Some(sentinel) = url.strip_prefix(SENTINEL_SCHEME) else {
            let (_, master) = watch::channel(0);
            let current = Current::connect(redis::Client::open(url)?, settings)?;
            return Ok(Self {
                current: Arc::new(RwLock::new(current)),
                master,
            });
        };
        let config = SentinelConfig::parse(sentinel)?;
        // No master yet: a socket path that does not exist fails each request as refused.
        let nowhere = redis::Client::open("redis+unix:///nonexistent/chatfleet-no-master-yet")?;
        let current = Arc::new(RwLock::new(Current::connect(nowhere, settings)?));
        let (announce, master) = watch::channel(0);
        tokio::spawn(follow_master(
            config,
            settings,
            Arc::downgrade(&current),
            announce,
        ));
        Ok(Self { current, master })
    }

    pub fn client(&self) -> redis::Client {
        self.current.read().expect("redis lock").client.clone()
    }

    /// A handle on the shared connection.
    pub fn conn(&self) -> ConnectionManager {
        self.current.read().expect("redis lock").conn.clone()
    }

    /// Changes whenever Redis runs under Sentinel and a new master was followed: dedicated
    /// connections (subscriptions) are then to be made again, on it.
    pub fn master_changes(&self) -> watch::Receiver<u64> {
        self.master.clone()
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(drop)
    }
}

impl Current {
    fn connect(
        client: redis::Client,
        settings: ConnectionSettings,
    ) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(settings.retries)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Self { client, conn })
    }
}

/// What a `redis+sentinel://` URL says.
#[derive(Debug, Clone)]
struct SentinelConfig {
    sentinels: Vec<redis::ConnectionInfo>,
    master_name: String,
    /// The master's database and credentials.
    redis: redis::RedisConnectionInfo,
}

impl SentinelConfig {
    /// Parses what follows the scheme.
    fn parse(rest: &str) -> Result<Self, redis::RedisError> {
        let invalid = |why: &'static str| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, why))
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| {
            invalid("a Sentinel URL names its master: redis+sentinel://host:port/name")
        })?;
        let mut path = path.split('/');
        let master_name = path.next().unwrap_or_default().to_owned();
        if master_name.is_empty() {
            return Err(invalid(
                "a Sentinel URL names its master: redis+sentinel://host:port/name",
            ));
        }
        let db = match path.next() {
            Some(db) if !db.is_empty() => db
                .parse()
                .map_err(|_| invalid("the database is a number"))?,
            _ => 0,
        };
        let mut sentinel_auth = redis::RedisConnectionInfo::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            sentinel_auth = match name.as_ref() {
                "sentinel_username" => sentinel_auth.set_username(value),
                "sentinel_password" => sentinel_auth.set_password(value),
                _ => {
                    return Err(invalid(
                        "a Sentinel URL takes only sentinel_username and sentinel_password",
                    ));
                }
            };
        }
        let hosts: Vec<&str> = hosts.split(',').filter(|host| !host.is_empty()).collect();
        let Some(first) = hosts.first() else {
            return Err(invalid("a Sentinel URL lists at least one sentinel"));
        };
        let sentinels = hosts
            .iter()
            .map(|host| {
                Ok(format!("redis://{host}")
                    .into_connection_info()?
                    .set_redis_settings(sentinel_auth.clone()))
            })
            .collect::<Result<Vec<_>, redis::RedisError>>()?;
        // The master's credentials, parsed as redis-rs parses them in a plain URL.
        let redis = match credentials {
            Some(credentials) => format!("redis://{credentials}@{first}")
                .into_connection_info()?
                .redis_settings()
                .clone(),
            None => redis::RedisConnectionInfo::default(),
        }
        .set_db(db);
        Ok(Self {
            sentinels,
            master_name,
            redis,
        })
    }
}

/// Asks the sentinels for the master every [`ASK_SENTINELS_EVERY`] and moves the shared
/// connection to it when it changes; ends once every [`Redis`] handle is gone.
async fn follow_master(
    config: SentinelConfig,
    settings: ConnectionSettings,
    current: std::sync::Weak<RwLock<Current>>,
    announce: watch::Sender<u64>,
) {
    let mut sentinel = match Sentinel::build(config.sentinels.clone()) {
        Ok(sentinel) => sentinel,
        Err(error) => {
            tracing::error!(%error, "cannot use the sentinels");
            return;
        }
    };
    let node =
        SentinelNodeConnectionInfo::default().set_redis_connection_info(config.redis.clone());
    let mut master: Option<ConnectionAddr> = None;
    let mut asked = tokio::time::interval(ASK_SENTINELS_EVERY);
    asked.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        asked.tick().await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let found = tokio::time::timeout(
            settings.connect_timeout * 2,
            sentinel.async_master_for(&config.master_name, Some(&node)),
        )
        .await;
        let client = match found {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                tracing::debug!(%error, "the sentinels name no master now");
                continue;
            }
            Err(_) => continue,
        };
        let addr = client.get_connection_info().addr().clone();
        if master.as_ref() == Some(&addr) {
            continue;
        }
        match Current::connect(client, settings) {
            Ok(connected) => {
                tracing::info!(master = %addr, "following the master the sentinels name");
                *current.write().expect("redis lock") = connected;
                master = Some(addr);
                announce.send_modify(|count| *count += 1);
            }
            Err(error) => {
                tracing::warn!(%error, master = %addr, "cannot connect to the new master")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_master_and_its_database() {
        let config = SentinelConfig::parse(":secret@s1:26379,s2:26380/chat/2").unwrap();
        let hosts: Vec<String> = config
            .sentinels
            .iter()
            .map(|sentinel| sentinel.addr().to_string())
            .collect();
        assert_eq!(hosts, ["s1:26379", "s2:26380"]);
        assert_eq!(config.sentinels[0].redis_settings().password(), None);
        assert_eq!(config.master_name, "chat");
        assert_eq!(config.redis.db(), 2);
        assert_eq!(config.redis.password(), Some("secret"));

        let plain = SentinelConfig::parse("s1:26379/chat").unwrap();
        assert_eq!(plain.redis.db(), 0);
        assert_eq!(plain.redis.password(), None);

        let guarded =
            SentinelConfig::parse("u:p%40ss@s1:26379/chat?sentinel_password=s%26cret").unwrap();
        assert_eq!(guarded.redis.username(), Some("u"));
        assert_eq!(guarded.redis.password(), Some("p@ss"));
        let sentinel = guarded.sentinels[0].redis_settings();
        assert_eq!(
            (sentinel.username(), sentinel.password()),
            (None, Some("s&cret"))
        );
        assert!(
            SentinelConfig::parse("s1:26379/chat?password=x").is_err(),
            "unknown option"
        );

        assert!(SentinelConfig::parse("s1:26379").is_err(), "no master name");
        assert!(
            SentinelConfig::parse("s1:26379/").is_err(),
            "empty master name"
        );
        assert!(SentinelConfig::parse("/chat").is_err(), "no sentinel");
        assert!(
            SentinelConfig::parse("s1:26379/chat/x").is_err(),
            "bad database"
        );
    }
}
