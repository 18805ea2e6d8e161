//! Redis Cluster: keys and live channels sharded over several primaries.
//!
//! Every key of one room shares a hash tag, as do every key of one user and of one node, so
//! each script and transaction touches one slot. Live channels are sharded channels
//! (`SPUBLISH`/`SSUBSCRIBE`): a message travels only within its room's shard. redis-rs
//! follows `MOVED` and `ASK`, refreshes the slot map, and sends sharded subscriptions to
//! whichever primary owns their slot now.

use redis::ProtocolVersion;
use redis::aio::AsyncPushSender;
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;

use crate::connection::{ConnectionSettings, HostList, invalid};

/// The URL scheme of a Redis Cluster:
/// `redis+cluster://[[user]:password@]host:port[,host:port...]`: any of its nodes, from which
/// the rest of the cluster is learnt.
pub const SCHEME: &str = "redis+cluster://";
/// The same over TLS to every node: `rediss+cluster://…`.
pub const TLS_SCHEME: &str = "rediss+cluster://";

/// How a cluster's nodes are reached: plain, or TLS with optional CA and client certificates.
#[derive(Clone)]
pub(crate) enum Transport {
    Plain,
    /// Boxed: certificates are bytes, and every handle on the cluster carries this.
    Tls(Option<Box<redis::TlsCertificates>>),
}

/// A Redis Cluster's seed nodes and a shared command connection to it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    seeds: Vec<redis::ConnectionInfo>,
    settings: ConnectionSettings,
    transport: Transport,
    conn: ClusterConnection,
}

impl Cluster {
    /// Parses what follows the scheme; connects in the background.
    pub(crate) fn new(
        rest: &str,
        settings: ConnectionSettings,
        transport: Transport,
    ) -> Result<Self, redis::RedisError> {
        let url = HostList::parse(rest)?;
        if !url.path.is_empty() || !url.query.is_empty() {
            return Err(invalid(
                "a Cluster URL is redis+cluster://[user:password@]host:port[,host:port...] (a cluster has one database)",
            ));
        }
        let scheme = match transport {
            Transport::Plain => "redis",
            Transport::Tls(_) => "rediss",
        };
        let seeds = url.connections(&url.credentials()?, scheme)?;
        let client = Self::builder(&seeds, settings, &transport).build()?;
        let conn = client.get_pending_async_connection_with_config(ClusterConfig::default());
        Ok(Self {
            seeds,
            settings,
            transport,
            conn,
        })
    }

    fn builder(
        seeds: &[redis::ConnectionInfo],
        settings: ConnectionSettings,
        transport: &Transport,
    ) -> ClusterClientBuilder {
        let builder = ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.response_timeout)
            .retries(settings.retries as u32)
            .max_retry_wait(500);
        match transport {
            Transport::Plain => builder,
            Transport::Tls(None) => builder.tls(redis::TlsMode::Secure),
            Transport::Tls(Some(certificates)) => builder
                .tls(redis::TlsMode::Secure)
                .certs(certificates.as_ref().clone()),
        }
    }

    pub(crate) fn conn(&self) -> ClusterConnection {
        self.conn.clone()
    }

    /// A connection of its own for subscriptions: RESP3, its messages (and its
    /// subscriptions' confirmations and losses) pushed to `pushes`.
    pub(crate) async fn subscriber(
        &self,
        pushes: impl AsyncPushSender,
    ) -> Result<ClusterConnection, redis::RedisError> {
        let client: ClusterClient = Self::builder(&self.seeds, self.settings, &self.transport)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?;
        client.get_async_connection().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cluster_url_lists_seed_nodes_with_their_credentials() {
        let cluster = Cluster::new(
            "u:p%40ss@r-0:6379,r-1:6379",
            ConnectionSettings::NODE,
            Transport::Plain,
        )
        .unwrap();
        let seeds: Vec<String> = cluster.seeds.iter().map(|s| s.addr().to_string()).collect();
        assert_eq!(seeds, ["r-0:6379", "r-1:6379"]);
        let settings = cluster.seeds[1].redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("u"), Some("p@ss"))
        );
        assert!(
            Cluster::new("r-0:6379/1", ConnectionSettings::NODE, Transport::Plain).is_err(),
            "no databases"
        );
        assert!(
            Cluster::new("", ConnectionSettings::NODE, Transport::Plain).is_err(),
            "no seed"
        );
    }
}
