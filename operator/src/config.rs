//! Command-line flags, each also settable by an environment variable.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "operator", version, about = "chatfleet's Kubernetes operator")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "CHATFLEET_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// Seconds between health checks of a placed room (its node's report, pod and drain).
    #[arg(long, env = "CHATFLEET_ROOM_RESYNC_SECONDS", default_value_t = 5)]
    pub room_resync_seconds: u64,
    /// Seconds between refreshes of a fleet's status.
    #[arg(long, env = "CHATFLEET_FLEET_RESYNC_SECONDS", default_value_t = 1)]
    pub fleet_resync_seconds: u64,
    /// Name of the Lease that elects the one replica that reconciles.
    #[arg(
        long,
        env = "CHATFLEET_LEASE_NAME",
        default_value = "chatfleet-operator"
    )]
    pub lease_name: String,
    /// Namespace of that Lease; the operator's own namespace in a cluster.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds a Lease lasts unless renewed: how long the replicas wait after a leader dies
    /// before another takes over. Shorter fails over faster and renews more often.
    #[arg(long, env = "CHATFLEET_LEASE_SECONDS", default_value_t = 4)]
    pub lease_seconds: u64,
    /// Seconds before the Lease's expiry at which the leader renews it (less than
    /// --lease-seconds): room for a slow API server.
    #[arg(
        long,
        env = "CHATFLEET_LEASE_RENEW_MARGIN_SECONDS",
        default_value_t = 2
    )]
    pub lease_renew_margin_seconds: u64,
    /// This replica's identity in the Lease; its pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconcile without taking the Lease: only for a single replica run by hand.
    #[arg(long, env = "CHATFLEET_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Keys the room API accepts in `X-API-Key`, comma-separated; without any, the room API is
    /// off. In a cluster they come from a Secret.
    #[arg(
        long,
        env = "CHATFLEET_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_keys: Vec<String>,
    /// API keys of the admin scope (comma-separated): the room API plus the admin routes
    /// over `--default-fleet` (users' sessions, fleet view, drain, broadcast).
    #[arg(
        long,
        env = "CHATFLEET_ADMIN_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub admin_api_keys: Vec<String>,
    /// Namespace of rooms opened through the room API without one.
    #[arg(long, env = "CHATFLEET_ROOM_NAMESPACE", default_value = "default")]
    pub room_namespace: String,
    /// Fleet of rooms opened through the room API without one.
    #[arg(long, env = "CHATFLEET_DEFAULT_FLEET")]
    pub default_fleet: Option<String>,
    /// How long opening a room through the API waits for its placement.
    #[arg(long, env = "CHATFLEET_PLACEMENT_WAIT_SECONDS", default_value_t = 10)]
    pub placement_wait_seconds: u64,
    /// Log as JSON lines.
    #[arg(long, env = "CHATFLEET_LOG_JSON")]
    pub log_json: bool,
}
