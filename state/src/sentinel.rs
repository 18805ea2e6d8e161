//! Redis under Sentinel: which server is the master, asked of the sentinels and followed
//! through failovers.

use std::sync::{RwLock, Weak};
use std::time::Duration;

use redis::ConnectionAddr;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use tokio::sync::watch;

use crate::connection::{ConnectionSettings, Current, HostList, invalid};

/// How often the sentinels are asked which server is the master. A failover is noticed
/// within this, on top of the sentinels' own detection (`down-after-milliseconds`).
const ASK_SENTINELS_EVERY: Duration = Duration::from_millis(250);

/// The URL scheme of a Redis run under Sentinel:
/// `redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]
/// [?sentinel_username=...&sentinel_password=...]`. The credentials before the hosts are the
/// master's (and its replicas'); sentinels that require a password of their own get it in the
/// query.
pub const SCHEME: &str = "redis+sentinel://";

/// What a `redis+sentinel://` URL says.
#[derive(Debug, Clone)]
pub(crate) struct SentinelConfig {
    sentinels: Vec<redis::ConnectionInfo>,
    master_name: String,
    /// The master's database and credentials.
    redis: redis::RedisConnectionInfo,
}

impl SentinelConfig {
    /// Parses what follows the scheme.
    pub(crate) fn parse(rest: &str) -> Result<Self, redis::RedisError> {
        let url = HostList::parse(rest)?;
        let mut path = url.path.split('/');
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
        for (name, value) in url::form_urlencoded::parse(url.query.as_bytes()) {
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
        let sentinels = url.connections(&sentinel_auth, "redis")?;
        let redis = url.credentials()?.set_db(db);
        Ok(Self {
            sentinels,
            master_name,
            redis,
        })
    }
}

/// Asks the sentinels for the master every [`ASK_SENTINELS_EVERY`] and moves the shared
/// connection to it when it changes; ends once every [`Redis`] handle is gone.
pub(crate) async fn follow_master(
    config: SentinelConfig,
    settings: ConnectionSettings,
    current: Weak<RwLock<Current>>,
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
