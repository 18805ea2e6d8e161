//! Command-line flags, each also settable by a `CHATNODE_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use chatfleet_state::transcripts::TranscriptSettings;
use chatfleet_wire::load::Limits;

use crate::error::Error;
use crate::webhooks::WebhookSettings;

/// A chatfleet chat node: WebSocket chat rooms, a room API and a chat page on one port.
///
/// Without --redis-url the node runs standalone with in-memory history.
#[derive(Debug, Clone, Parser)]
#[command(name = "chatnode", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CHATNODE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis to share load, history and live messages with the fleet; standalone without it.
    /// `redis://host:port` (`rediss://` for TLS), under Sentinel
    /// `redis+sentinel://host:port,host:port/master`, or a Redis Cluster
    /// `redis+cluster://host:port,host:port` (any of its nodes).
    #[arg(long, env = "CHATNODE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis's password, kept apart from `--redis-url` (which then carries none): in a
    /// cluster, from a Secret of its own.
    #[arg(long, env = "CHATNODE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// PEM CA bundle that signed the Redis server's certificate (with a `rediss://` URL);
    /// without it, the system's roots.
    #[arg(long, env = "CHATNODE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM client certificate for a Redis that requires one (mutual TLS), with
    /// `--redis-client-key-file`.
    #[arg(long, env = "CHATNODE_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,

    /// PEM private key of `--redis-client-cert-file`.
    #[arg(long, env = "CHATNODE_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,

    /// This node's name in the fleet (its pod name in Kubernetes).
    #[arg(long, env = "CHATNODE_NODE_NAME", default_value = "standalone")]
    pub node_name: String,

    /// Base WebSocket URL clients reach this node at [default: ws://<listen address>].
    #[arg(long, env = "CHATNODE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Members one room accepts at once.
    #[arg(long, env = "CHATNODE_MAX_ROOM_MEMBERS", default_value_t = 300)]
    pub max_room_members: u32,

    /// WebSocket sessions this node accepts at once.
    #[arg(long, env = "CHATNODE_MAX_NODE_USERS", default_value_t = 300)]
    pub max_node_users: u32,

    /// Concurrent sessions one user may hold across the whole fleet (on this node standalone).
    #[arg(long, env = "CHATNODE_MAX_USER_SESSIONS", default_value_t = 3)]
    pub max_user_sessions: u32,

    /// How long a session's slot outlives its node's last heartbeat (a node that dies frees
    /// its users' slots within this time).
    #[arg(long, env = "CHATNODE_SESSION_TTL_SECONDS", default_value_t = 30)]
    pub session_ttl_seconds: u64,

    /// Largest message body, in bytes.
    #[arg(long, env = "CHATNODE_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Messages per second one connection may send, sustained.
    #[arg(long, env = "CHATNODE_RATE_PER_SECOND", default_value_t = 10)]
    pub rate_per_second: u32,

    /// Messages one connection may send in a burst above its rate.
    #[arg(long, env = "CHATNODE_RATE_BURST", default_value_t = 20)]
    pub rate_burst: u32,

    /// Deliveries per second one room may cause (a message to N members costs N): a room
    /// over its budget gets `rate_limited`, so one flooded room cannot starve the others.
    #[arg(
        long,
        env = "CHATNODE_ROOM_DELIVERIES_PER_SECOND",
        default_value_t = 20_000
    )]
    pub room_deliveries_per_second: u32,

    /// Bytes queued for one client before it is disconnected as too slow.
    #[arg(long, env = "CHATNODE_OUTBOUND_QUEUE_BYTES", default_value_t = 256 * 1024)]
    pub outbound_queue_bytes: usize,

    /// WebSocket read buffer per connection, in bytes (larger client frames take several
    /// reads). Small keeps idle connections cheap; chat frames are small.
    #[arg(long, env = "CHATNODE_WS_BUFFER_BYTES", default_value_t = 256)]
    pub ws_buffer_bytes: usize,

    /// Seconds a connection has to send its request head (and an idle keep-alive connection
    /// its next one) before the node closes it.
    #[arg(long, env = "CHATNODE_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_timeout_seconds: u64,

    /// Connections still sending their request or waiting for the upgrade, at once; more are
    /// closed at accept.
    #[arg(long, env = "CHATNODE_MAX_PENDING_CONNECTIONS", default_value_t = 1024)]
    pub max_pending_connections: usize,

    /// Of those, from one client address.
    #[arg(long, env = "CHATNODE_MAX_PENDING_PER_ADDRESS", default_value_t = 128)]
    pub max_pending_per_address: usize,

    /// Proxies (addresses or CIDR ranges, comma-separated) in front of the node, such as an
    /// Ingress controller or a load balancer: their `X-Forwarded-For` names the client, whose
    /// share of pending connections is then counted instead of the proxy's.
    #[arg(long, env = "CHATNODE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = address_or_range)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Standalone: megabytes of message history kept over all rooms; past it, retired rooms'
    /// history goes first, then the oldest messages of the room being written.
    #[arg(long, env = "CHATNODE_MEMORY_HISTORY_MB", default_value_t = 256)]
    pub memory_history_mb: usize,

    /// Standalone: megabytes of transcripts kept over all rooms. Transcripts and closed marks
    /// are never shed; past this, no new room opens (joins and the room API answer
    /// `unavailable`) until closed rooms' retentions run out.
    #[arg(long, env = "CHATNODE_MEMORY_TRANSCRIPTS_MB", default_value_t = 256)]
    pub memory_transcripts_mb: usize,

    /// Messages of history kept per room.
    #[arg(long, env = "CHATNODE_HISTORY_LEN", default_value_t = 1000)]
    pub history_len: usize,

    /// Seconds a room's shared state lives in Redis after the last node hosting it stops
    /// refreshing it; standalone, how long a retired room's history stays in memory.
    #[arg(long, env = "CHATNODE_ROOM_TTL_SECONDS", default_value_t = 86_400)]
    pub room_ttl_seconds: u64,

    /// Entries (messages, joins, leaves) a room's transcript keeps at most; 0 keeps no
    /// transcripts. Past the bound the oldest go, and the transcript says it is incomplete.
    #[arg(
        long,
        env = "CHATNODE_TRANSCRIPT_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub transcript_max_entries: usize,

    /// Seconds a closed room's transcript stays readable through the room API.
    #[arg(long, env = "CHATNODE_TRANSCRIPT_RETENTION_SECONDS", default_value_t = 7 * 86_400)]
    pub transcript_retention_seconds: u64,

    /// The fleet this node belongs to (`namespace/name`): names its webhook queue in Redis,
    /// so fleets sharing one Redis keep their events apart.
    #[arg(long, env = "CHATNODE_FLEET", default_value = "default/standalone")]
    pub fleet: String,

    /// A receiver of webhook events (repeat the flag, or comma-separate in the environment).
    /// None: no webhooks.
    #[arg(
        long = "webhook-url",
        env = "CHATNODE_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    pub webhook_urls: Vec<String>,

    /// The key that signs webhook deliveries (HMAC-SHA256); required with `--webhook-url`.
    #[arg(long, env = "CHATNODE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Send every message as a `message` event too.
    #[arg(long, env = "CHATNODE_WEBHOOK_MESSAGES")]
    pub webhook_messages: bool,

    /// Attempts at one delivery before it becomes a dead letter.
    #[arg(long, env = "CHATNODE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,

    /// The first retry's delay; each next one doubles, up to an hour.
    #[arg(long, env = "CHATNODE_WEBHOOK_RETRY_MS", default_value_t = 1000)]
    pub webhook_retry_ms: u64,

    /// How long one delivery may take before it counts as failed. A node that dies while
    /// delivering holds the jobs it claimed for six times this, then another node takes them.
    #[arg(long, env = "CHATNODE_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    pub webhook_timeout_seconds: u64,

    /// Let webhook receivers be on private, loopback or link-local networks (a receiver
    /// inside the cluster). Off, only public addresses are posted to, so a receiver URL (or
    /// a name it resolves to) cannot point the node at the cluster's own services.
    #[arg(long, env = "CHATNODE_WEBHOOK_ALLOW_PRIVATE_NETWORKS")]
    pub webhook_allow_private_networks: bool,

    /// Milliseconds between load reports.
    #[arg(long, env = "CHATNODE_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,

    /// Missed heartbeats after which the load report expires.
    #[arg(long, env = "CHATNODE_REPORT_MISSES", default_value_t = 3)]
    pub report_misses: u32,

    /// Seconds between WebSocket pings; a client that has not answered by the next ping is
    /// disconnected.
    #[arg(long, env = "CHATNODE_PING_SECONDS", default_value_t = 20)]
    pub ping_seconds: u64,

    /// Milliseconds a drain waits after reporting `draining` (and failing /readyz) before it
    /// sends clients away, so placement and load balancers stop sending new ones first.
    #[arg(long, env = "CHATNODE_DRAIN_NOTICE_MS", default_value_t = 1000)]
    pub drain_notice_ms: u64,

    /// Seconds a drain (SIGTERM) waits for clients to leave before the node exits anyway.
    #[arg(long, env = "CHATNODE_DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,

    /// API key for the room API (X-API-Key) [default: a random key, printed at start].
    #[arg(long, env = "CHATNODE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// API key for the admin routes (`/v1/admin/...`, also accepted by the room API)
    /// [default: a random key, printed at start].
    #[arg(long, env = "CHATNODE_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,

    /// File holding the HS256 secret that signs join tokens.
    #[arg(long, env = "CHATNODE_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// The join-token secret itself; prefer --token-secret-file. Without either, a random
    /// secret is made, valid on this node only.
    #[arg(long, env = "CHATNODE_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Also accept `?user=NAME` without a token. For local trials and load tests only.
    #[arg(long, env = "CHATNODE_INSECURE_DEV_AUTH")]
    pub insecure_dev_auth: bool,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "CHATNODE_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            max_node_users: self.max_node_users,
            max_room_members: self.max_room_members,
        }
    }

    pub fn transcripts(&self) -> TranscriptSettings {
        TranscriptSettings {
            max_entries: self.transcript_max_entries,
            retention: Duration::from_secs(self.transcript_retention_seconds),
        }
    }

    /// The webhook settings, None when no receiver is given; an error for a receiver that is
    /// not an http(s) URL or a missing secret.
    pub fn webhooks(&self) -> Result<Option<WebhookSettings>, Error> {
        let urls: Vec<String> = self
            .webhook_urls
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Ok(None);
        }
        for url in &urls {
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    if !self.webhook_allow_private_networks {
                        crate::webhooks::check_literal(&parsed).map_err(|refused| {
                            Error::Webhooks(format!("--webhook-url {url:?}: {refused}"))
                        })?;
                    }
                }
                _ => {
                    return Err(Error::Webhooks(format!(
                        "--webhook-url {url:?} is not an http:// or https:// URL"
                    )));
                }
            }
        }
        let secret = self.webhook_secret.as_deref().map(str::trim).unwrap_or("");
        if secret.is_empty() {
            return Err(Error::Webhooks(
                "--webhook-url needs --webhook-secret (CHATNODE_WEBHOOK_SECRET) to sign with"
                    .into(),
            ));
        }
        Ok(Some(WebhookSettings {
            urls,
            secret: secret.as_bytes().to_vec(),
            messages: self.webhook_messages,
            max_attempts: self.webhook_max_attempts.max(1),
            first_retry: Duration::from_millis(self.webhook_retry_ms.max(1)),
            timeout: Duration::from_secs(self.webhook_timeout_seconds.max(1)),
            allow_private_networks: self.webhook_allow_private_networks,
        }))
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(50))
    }

    /// How long a load report lives without a fresh heartbeat.
    /// The CA bundle and client certificate for TLS to Redis, read from their files.
    pub fn redis_tls(&self) -> Result<chatfleet_state::RedisTls, String> {
        chatfleet_state::RedisTls::from_files(
            self.redis_ca_file.as_deref(),
            self.redis_client_cert_file.as_deref(),
            self.redis_client_key_file.as_deref(),
        )
    }

    pub fn report_ttl(&self) -> Duration {
        self.heartbeat() * self.report_misses.max(2)
    }

    pub fn accept_limits(&self) -> crate::http::accept::AcceptLimits {
        crate::http::accept::AcceptLimits {
            header_timeout: Duration::from_secs(self.header_timeout_seconds.max(1)),
            max_pending: self.max_pending_connections.max(1),
            max_pending_per_address: self.max_pending_per_address.max(1),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_seconds.max(1))
    }

    pub fn drain_notice(&self) -> Duration {
        Duration::from_millis(self.drain_notice_ms)
    }

    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// The advertised URL, given or derived from the bound address.
    pub fn advertise_url_for(&self, bound: SocketAddr) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("ws://{bound}"))
            .trim_end_matches('/')
            .to_owned()
    }
}

/// `10.0.0.0/8`, or one address (`10.0.0.7`, as `10.0.0.7/32`).
fn address_or_range(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_limits() {
        let config = Config::try_parse_from(["chatnode"]).unwrap();
        assert_eq!(config.limits(), Limits::default());
        assert_eq!(config.max_message_bytes, 4096);
        assert!(!config.insecure_dev_auth);
        assert!(config.redis_url.is_none());
        assert_eq!(config.report_ttl(), Duration::from_secs(3));
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::try_parse_from([
            "chatnode",
            "--listen",
            "127.0.0.1:0",
            "--max-room-members",
            "2",
            "--advertise-url",
            "ws://chat-0.chat:8080/",
        ])
        .unwrap();
        assert_eq!(config.max_room_members, 2);
        assert_eq!(
            config.advertise_url_for("127.0.0.1:1".parse().unwrap()),
            "ws://chat-0.chat:8080"
        );
    }

    #[test]
    fn webhooks_need_http_urls_and_a_secret() {
        let parse = |args: &[&str]| {
            let mut all = vec!["chatnode"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap().webhooks()
        };
        assert!(parse(&[]).unwrap().is_none());
        let settings = parse(&[
            "--webhook-url",
            "https://a.example/hook",
            "--webhook-url",
            "http://b.example/hook",
            "--webhook-secret",
            "s3cret",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(settings.urls.len(), 2);
        assert_eq!(settings.secret, b"s3cret");
        assert_eq!(settings.max_attempts, 12);
        let missing = parse(&["--webhook-url", "https://a.example/hook"]).unwrap_err();
        assert!(
            missing.to_string().contains("--webhook-secret"),
            "{missing}"
        );
        let scheme = parse(&["--webhook-url", "ftp://a.example/", "--webhook-secret", "s"]);
        assert!(scheme.unwrap_err().to_string().contains("not an http"));
        // The metadata service, or any private address, only when allowed.
        let metadata = [
            "--webhook-url",
            "http://169.254.169.254/",
            "--webhook-secret",
            "s",
        ];
        let refused = parse(&metadata).unwrap_err().to_string();
        assert!(refused.contains("not a public address"), "{refused}");
        let allowed = [&metadata[..], &["--webhook-allow-private-networks"]].concat();
        assert!(parse(&allowed).unwrap().unwrap().allow_private_networks);
    }
}
