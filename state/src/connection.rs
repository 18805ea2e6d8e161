//! One connection to a fleet's Redis, with the timeouts that decide how an outage looks: a
//! single server, the master the sentinels name, or a Redis Cluster.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::watch;

use crate::cluster::{self, Cluster};
use crate::sentinel::{self, SentinelConfig};

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

/// `url` with `password` as its credentials (`scheme://:password@…`), for a password kept
/// apart from the URL (a Secret of its own): any of the URL forms [`Redis::open`] takes. A URL
/// that carries credentials already is refused, so the password has one source.
pub fn with_password(url: &str, password: &str) -> Result<String, redis::RedisError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("a Redis URL starts with a scheme such as redis://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            "the Redis URL carries credentials already: give the password in one place",
        ));
    }
    let password =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
    Ok(format!("{scheme}://:{password}@{rest}"))
}

/// TLS to Redis beyond what a `rediss://` URL says, all PEM: the CA bundle that signed the
/// server's certificate (without one, the system's roots) and a client certificate and key for
/// mutual TLS. Used with `rediss://` URLs.
#[derive(Clone, Default)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    /// (certificate chain, private key)
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    /// Reads the files given; a client certificate needs its key and the other way round.
    pub fn from_files(
        ca: Option<&std::path::Path>,
        client_cert: Option<&std::path::Path>,
        client_key: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        let client = match (client_cert, client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(
                    "a Redis client certificate needs its key, and the other way round".into(),
                );
            }
        };
        Ok(Self {
            ca: ca.map(read).transpose()?,
            client,
        })
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.ca.is_none() && self.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        })
    }
}

/// A fleet's Redis: one multiplexed, self-reconnecting connection for commands, and what a
/// subscription needs to make its own (see [`crate::subscription`]). Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    mode: Mode,
}

#[derive(Clone)]
pub(crate) enum Mode {
    /// One server, or the master the sentinels name.
    Server {
        current: Arc<RwLock<Current>>,
        /// Counts the masters followed (0 for a plain Redis).
        master: watch::Receiver<u64>,
    },
    /// Redis Cluster: commands follow the slot map, live channels are sharded.
    Cluster(Cluster),
}

/// The server commands go to now, and a connection to it.
pub(crate) struct Current {
    pub(crate) client: redis::Client,
    conn: ConnectionManager,
}

impl Redis {
    /// Prepares the connection without waiting for Redis, so a component starts (and reports
    /// not ready) while Redis is down. Takes `redis://` and `rediss://` URLs, a
    /// [`sentinel::SCHEME`] URL, or a [`cluster::SCHEME`] URL. A Sentinel URL starts a task
    /// (so call this within a Tokio runtime) that asks the sentinels for the master until
    /// every handle is dropped; until they name one, requests fail as refused: nothing was
    /// sent.
    pub fn open(url: &str, settings: ConnectionSettings) -> Result<Self, redis::RedisError> {
        Self::open_with_tls(url, settings, &RedisTls::default())
    }

    /// As [`Redis::open`], with a CA bundle and a client certificate for a `rediss://` or
    /// [`cluster::TLS_SCHEME`] URL. (TLS through Sentinel is not built yet: a Sentinel URL
    /// refuses `tls`.)
    pub fn open_with_tls(
        url: &str,
        settings: ConnectionSettings,
        tls: &RedisTls,
    ) -> Result<Self, redis::RedisError> {
        let certificates = tls.certificates();
        let over_tls = url.starts_with("rediss://") || url.starts_with(cluster::TLS_SCHEME);
        if certificates.is_some() && !over_tls {
            return Err(invalid(
                "a Redis CA or client certificate needs a rediss:// or rediss+cluster:// URL (TLS through Sentinel is not supported yet)",
            ));
        }
        if let Some(rest) = url.strip_prefix(cluster::SCHEME) {
            return Ok(Self {
                mode: Mode::Cluster(Cluster::new(rest, settings, cluster::Transport::Plain)?),
            });
        }
        if let Some(rest) = url.strip_prefix(cluster::TLS_SCHEME) {
            let transport = cluster::Transport::Tls(certificates.map(Box::new));
            return Ok(Self {
                mode: Mode::Cluster(Cluster::new(rest, settings, transport)?),
            });
        }
        let Some(rest) = url.strip_prefix(sentinel::SCHEME) else {
            let (_, master) = watch::channel(0);
            let client = match certificates {
                Some(certificates) => redis::Client::build_with_tls(url, certificates)?,
                None => redis::Client::open(url)?,
            };
            let current = Current::connect(client, settings)?;
            return Ok(Self {
                mode: Mode::Server {
                    current: Arc::new(RwLock::new(current)),
                    master,
                },
            });
        };
        let config = SentinelConfig::parse(rest)?;
        // No master yet: a socket path that does not exist fails each request as refused.
        let nowhere = redis::Client::open("redis+unix:///nonexistent/chatfleet-no-master-yet")?;
        let current = Arc::new(RwLock::new(Current::connect(nowhere, settings)?));
        let (announce, master) = watch::channel(0);
        tokio::spawn(sentinel::follow_master(
            config,
            settings,
            Arc::downgrade(&current),
            announce,
        ));
        Ok(Self {
            mode: Mode::Server { current, master },
        })
    }

    /// A handle on the shared connection.
    pub fn conn(&self) -> Conn {
        match &self.mode {
            Mode::Server { current, .. } => {
                Conn::Server(current.read().expect("redis lock").conn.clone())
            }
            Mode::Cluster(cluster) => Conn::Cluster(cluster.conn()),
        }
    }

    /// Changes whenever the sentinels name a new master (never for a plain server or a
    /// cluster): a connection that failed to the old one may succeed at once.
    pub fn master_changes(&self) -> watch::Receiver<u64> {
        match &self.mode {
            Mode::Server { master, .. } => master.clone(),
            Mode::Cluster(_) => watch::channel(0).1,
        }
    }

    pub(crate) fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Whether this is a Redis Cluster: every multi-key command and pipeline must then stay
    /// within one slot, and live channels are sharded.
    pub fn is_cluster(&self) -> bool {
        matches!(self.mode, Mode::Cluster(_))
    }

    /// The command that publishes on a room's live channel: `SPUBLISH` on a cluster, so a
    /// message travels only within its room's shard rather than to every node of the cluster.
    pub fn room_publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Sends one pipeline of the commands `add` makes for each item, several at once: one
    /// pipeline on one server; on a cluster, one per slot of the items' `key`s, since a
    /// pipeline there stays within one slot. The replies come grouped by slot.
    pub(crate) async fn pipeline_by_slot<I, T: FromRedisValue>(
        &self,
        items: &[I],
        key: impl Fn(&I) -> String,
        add: impl Fn(&mut Pipeline, &I),
    ) -> Result<Vec<T>, redis::RedisError> {
        let groups = self.group_by_slot(items, key, |_| {}, add);
        let replies: Vec<Vec<T>> = self.send_all(&groups).await?;
        Ok(replies.into_iter().flatten().collect())
    }

    /// Sends one command per item, `add` writing it after `prelude`'s commands (whose replies
    /// the prelude must `ignore`), grouped as [`Redis::pipeline_by_slot`] groups them, and
    /// returns the replies in the items' order.
    pub(crate) async fn query_each_by_slot<I, T: FromRedisValue>(
        &self,
        items: &[I],
        key: impl Fn(&I) -> String,
        prelude: impl Fn(&mut Pipeline),
        add: impl Fn(&mut Pipeline, &I),
    ) -> Result<Vec<T>, redis::RedisError> {
        let groups = self.group_by_slot(items, key, prelude, add);
        let replies: Vec<Vec<T>> = self.send_all(&groups).await?;
        let mut ordered: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        for ((_, indices), replies) in groups.iter().zip(replies) {
            if replies.len() != indices.len() {
                return Err(invalid(
                    "a pipeline answered a different number of commands",
                ));
            }
            for (index, reply) in indices.iter().zip(replies) {
                ordered[*index] = Some(reply);
            }
        }
        Ok(ordered.into_iter().flatten().collect())
    }

    /// The pipelines for `items`, each with the indices of the items it carries: one on one
    /// server; on a cluster, one per slot of the items' `key`s. Each opens with `prelude`.
    fn group_by_slot<I>(
        &self,
        items: &[I],
        key: impl Fn(&I) -> String,
        prelude: impl Fn(&mut Pipeline),
        add: impl Fn(&mut Pipeline, &I),
    ) -> Vec<(Pipeline, Vec<usize>)> {
        let mut groups: Vec<(Pipeline, Vec<usize>)> = Vec::new();
        // On one server every item goes into the one pipeline (slot None).
        let mut slots: HashMap<Option<Slot>, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let slot = self.is_cluster().then(|| Slot::for_key(key(item)));
            let group = *slots.entry(slot).or_insert_with(|| {
                let mut pipe = redis::pipe();
                prelude(&mut pipe);
                groups.push((pipe, Vec::new()));
                groups.len() - 1
            });
            let (pipe, indices) = &mut groups[group];
            add(pipe, item);
            indices.push(index);
        }
        groups
    }

    /// Sends every pipeline at once and returns their replies, pipeline by pipeline.
    async fn send_all<T: FromRedisValue>(
        &self,
        groups: &[(Pipeline, Vec<usize>)],
    ) -> Result<Vec<Vec<T>>, redis::RedisError> {
        try_join_all(groups.iter().map(|(pipe, _)| {
            let mut conn = self.conn();
            async move { pipe.query_async::<Vec<T>>(&mut conn).await }
        }))
        .await
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
    pub(crate) fn connect(
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

/// A handle on a fleet's shared command connection, whichever layout Redis has.
#[derive(Clone)]
pub enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

/// A URL's host list and what surrounds it: `[credentials@]host:port[,host:port...][/path]
/// [?query]`, as Sentinel and Cluster URLs write it.
pub(crate) struct HostList<'a> {
    pub(crate) credentials: Option<&'a str>,
    pub(crate) hosts: Vec<&'a str>,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
}

impl<'a> HostList<'a> {
    /// Parses what follows the scheme.
    pub(crate) fn parse(rest: &'a str) -> Result<Self, redis::RedisError> {
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<&str> = hosts.split(',').filter(|host| !host.is_empty()).collect();
        if hosts.is_empty() {
            return Err(invalid("the URL lists at least one host:port"));
        }
        Ok(Self {
            credentials,
            hosts,
            path,
            query,
        })
    }

    /// Each host, to be reached with `settings` (credentials, database) over `scheme`
    /// (`redis`, or `rediss` for TLS).
    pub(crate) fn connections(
        &self,
        settings: &redis::RedisConnectionInfo,
        scheme: &str,
    ) -> Result<Vec<redis::ConnectionInfo>, redis::RedisError> {
        self.hosts
            .iter()
            .map(|host| {
                Ok(format!("{scheme}://{host}")
                    .into_connection_info()?
                    .set_redis_settings(settings.clone()))
            })
            .collect()
    }

    /// The credentials, parsed (and percent-decoded) as redis-rs parses them in a plain URL.
    pub(crate) fn credentials(&self) -> Result<redis::RedisConnectionInfo, redis::RedisError> {
        Ok(match self.credentials {
            Some(credentials) => format!("redis://{credentials}@{}", self.hosts[0])
                .into_connection_info()?
                .redis_settings()
                .clone(),
            None => redis::RedisConnectionInfo::default(),
        })
    }
}

/// An error for a URL that cannot be used.
pub(crate) fn invalid(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, why))
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn a_password_kept_apart_joins_any_url_form() {
        assert_eq!(
            with_password("redis://redis:6379/2", "p@ss word").unwrap(),
            "redis://:p%40ss%20word@redis:6379/2"
        );
        assert_eq!(
            with_password("redis+sentinel://s1:26379,s2:26379/chat", "x").unwrap(),
            "redis+sentinel://:x@s1:26379,s2:26379/chat"
        );
        assert_eq!(
            with_password("redis+cluster://r0:6379,r1:6379", "x").unwrap(),
            "redis+cluster://:x@r0:6379,r1:6379"
        );
        // A password parses back out as given.
        let url = with_password("rediss://redis:6380", "a/b?c:d@e").unwrap();
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).unwrap();
        assert_eq!(info.redis_settings().password(), Some("a/b?c:d@e"));
        assert!(with_password("redis://:old@redis:6379", "new").is_err());
        assert!(with_password("redis:6379", "x").is_err());
    }
}
