//! The custom resources: `ChatFleet` (a StatefulSet of chat nodes) and `ChatRoom` (a room
//! placed on one of them). `crdgen` writes their CRDs to `crds/`; everything the API server can
//! check on its own (ranges, enums, required fields, CEL rules) lives in the schema, so a bad
//! `kubectl apply` fails at once with a clear message.

// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a mistake.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of both resources.
pub const GROUP: &str = "chatfleet.dev";

/// Annotation on a ChatRoom being deleted: the reason its members see in `closed` (the room
/// API sets it before deleting; `kubectl annotate` can too).
pub const CLOSE_REASON_ANNOTATION: &str = "chatfleet.dev/close-reason";

/// A fleet of chat nodes: a StatefulSet whose pods report their load to one Redis.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "chatfleet.dev",
    version = "v1alpha1",
    kind = "ChatFleet",
    namespaced,
    status = "ChatFleetStatus",
    shortname = "cfleet",
    category = "chatfleet-all",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyNodes"),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.users"),
    printcolumn(name = "Rooms", type_ = "integer", json_path = ".status.rooms"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.freeSeats"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChatFleetSpec {
    /// Chat nodes to run.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// The chat node image, e.g. `ghcr.io/example/chatnode:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Pull policy of the image; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// CPU and memory of each chat node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The Redis the nodes report to and keep room history in.
    pub redis: RedisSource,
    /// The Secret key holding the HS256 key that signs join tokens.
    pub token_secret: SecretKeyRef,
    #[serde(default)]
    pub limits: FleetLimits,
    #[serde(default)]
    pub placement: PlacementStrategy,
    /// Endpoint template for clients outside the cluster, e.g. `wss://chat.example.com/{pod}`.
    /// `{pod}`, `{namespace}` and `{fleet}` are replaced; the room path is appended. Without it
    /// rooms get the in-cluster address of their pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('ws://') || self.startsWith('wss://')").message("publicEndpoint must start with ws:// or wss://"))]
    pub public_endpoint: Option<String>,
    /// How long a node may take to hand its clients over when it stops.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_seconds: u32,
    /// Proxies in front of the nodes (IP addresses or CIDR ranges: an Ingress controller's
    /// pods, a load balancer's range) whose `X-Forwarded-For` names the client: a client's
    /// share of the connections still opening is then counted, not the proxy's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(p, isIP(p) || isCIDR(p))").message("trustedProxies must be IP addresses or CIDR ranges"))]
    pub trusted_proxies: Vec<String>,
    /// Sizes the fleet by its free seats; `replicas` is then the operator's to set. Without
    /// it, `replicas` is yours (or an HPA's, through the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<FleetAutoscaling>,
    /// What the fleet keeps of its rooms' conversations.
    #[serde(default)]
    pub transcripts: FleetTranscripts,
    /// Where the fleet sends its room and member events; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<FleetWebhooks>,
}

/// Keeps `bufferSeats` free seats fleet-wide: grows at once when fewer are free, and shrinks
/// by draining the highest ordinal (its rooms move with `moved`) when the buffer holds without
/// it, at most once per `cooldownSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct FleetAutoscaling {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: u32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// Free seats to keep: a count (`30`) or a share of the fleet's seats below 100%
    /// (`"10%"`; a fleet can never keep all its seats free).
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : self.matches('^[0-9]{1,2}%$')").message("bufferSeats must be a count or a percentage below 100% such as \"10%\""))]
    pub buffer_seats: IntOrString,
    /// Quiet time after a change before the fleet shrinks again.
    #[serde(default = "default_cooldown_seconds")]
    #[schemars(range(max = 86_400))]
    pub cooldown_seconds: u32,
}

/// Rooms' transcripts: every message, join, leave and the close, readable through the room API
/// for a retention after the room closes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FleetTranscripts {
    /// Entries one transcript holds at most (the oldest go past it); 0 keeps no transcripts.
    #[serde(default = "default_transcript_entries")]
    #[schemars(range(max = 10_000_000))]
    pub max_entries: u32,
    /// How long a closed room's transcript stays readable.
    #[serde(default = "default_transcript_retention")]
    #[schemars(range(min = 60, max = 31_536_000))]
    pub retention_seconds: u32,
}

impl Default for FleetTranscripts {
    fn default() -> Self {
        Self {
            max_entries: default_transcript_entries(),
            retention_seconds: default_transcript_retention(),
        }
    }
}

/// The fleet's webhook receivers. Every event goes to each, signed with the Secret's key;
/// `docs/webhooks.md` lists the events and how to verify them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetWebhooks {
    /// Receiver URLs, e.g. `https://support.example.com/chatfleet/events`.
    #[schemars(length(min = 1, max = 10), inner(length(min = 8, max = 2048)))]
    #[x_kube(validation = Rule::new("self.all(u, u.startsWith('http://') || u.startsWith('https://'))").message("webhook urls must start with http:// or https://"))]
    pub urls: Vec<String>,
    /// The Secret key holding the key deliveries are signed with (HMAC-SHA256).
    pub secret_ref: SecretKeyRef,
    /// Send every message as a `message` event too.
    #[serde(default)]
    pub messages: bool,
    /// Attempts at one delivery (doubling the wait from one second) before it becomes a dead
    /// letter.
    #[serde(default = "default_webhook_attempts")]
    #[schemars(range(min = 1, max = 50))]
    pub max_attempts: u32,
    /// Let receivers be on private, loopback or link-local networks (a receiver inside the
    /// cluster). Off by default: nodes post only to public addresses, so a receiver URL, or a
    /// name it resolves to, cannot point them at the cluster's own services.
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// Where the Redis URL comes from: given inline, or read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("redis needs exactly one of url or secretRef"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !has(self.url) || self.url.startsWith('rediss://') || self.url.startsWith('rediss+cluster://')").message("redis.tls needs a rediss:// or rediss+cluster:// URL"))]
pub struct RedisSource {
    /// e.g. `redis://redis.chatfleet:6379`; for Redis under Sentinel
    /// `redis+sentinel://sentinel-0:26379,sentinel-1:26379/mymaster` (sentinels, then the
    /// master's name; credentials before the hosts are the master's); for a Redis Cluster
    /// `redis+cluster://redis-0:6379,redis-1:6379` (any of its nodes), over TLS
    /// `rediss+cluster://…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('redis://') || self.startsWith('rediss://') || self.startsWith('redis+sentinel://') || self.startsWith('redis+cluster://') || self.startsWith('rediss+cluster://')").message("redis.url must start with redis://, rediss://, redis+sentinel://, redis+cluster:// or rediss+cluster://"))]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Redis's password, in a Secret of its own (the URL then carries none): how the shipped
    /// trial Redis is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// TLS beyond what a `rediss://` URL says: the CA that signed the server's certificate
    /// and, for a Redis that requires one, a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsSource>,
}

/// A Secret in cert-manager's layout: `ca.crt` (the CA that signed the Redis server's
/// certificate) and, when `clientCertificate` is set, `tls.crt` and `tls.key` that the nodes
/// and the operator present to Redis.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedisTlsSource {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    #[serde(default)]
    pub client_certificate: bool,
}

/// One key of a Secret in the resource's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Hard limits every node of the fleet enforces.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FleetLimits {
    /// WebSocket sessions one node accepts.
    #[serde(default = "default_users_per_node")]
    #[schemars(range(min = 1, max = 20000))]
    pub users_per_node: u32,
    /// Members one room accepts.
    #[serde(default = "default_members_per_room")]
    #[schemars(range(min = 2, max = 20000))]
    pub members_per_room: u32,
    /// Concurrent sessions one user may hold across the whole fleet.
    #[serde(default = "default_sessions_per_user")]
    #[schemars(range(min = 1, max = 100))]
    pub sessions_per_user: u32,
}

impl Default for FleetLimits {
    fn default() -> Self {
        Self {
            users_per_node: default_users_per_node(),
            members_per_room: default_members_per_room(),
            sessions_per_user: default_sessions_per_user(),
        }
    }
}

/// How rooms are spread over the nodes that have room for them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlacementStrategy {
    /// The node with the most free seats: spreads load.
    #[default]
    LeastLoaded,
    /// The fullest node that still fits: fills nodes before using empty ones.
    Packed,
}

/// Image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// What the fleet looks like now, from Kubernetes and the nodes' load reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChatFleetStatus {
    /// Nodes Ready in Kubernetes with a fresh load report.
    pub ready_nodes: u32,
    /// WebSocket sessions on those nodes.
    pub users: u32,
    /// Rooms with members on those nodes.
    pub rooms: u32,
    /// Seats left for new members: limits minus users minus reservations, over non-draining
    /// nodes, minus what rooms bigger than a node still expect beyond their home node
    /// (negative when the fleet is short of that).
    pub free_seats: i64,
    /// Pods of the fleet (the scale subresource's replicas).
    #[serde(default)]
    pub replicas: u32,
    /// The label selector of the fleet's pods, for the scale subresource (an HPA reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// What the autoscaler decided last, with autoscaling on. Written as `null` when off, so
    /// the status's merge patch removes what an earlier autoscaler left.
    #[serde(default)]
    pub autoscaling: Option<AutoscalingStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The autoscaler's memory between reconciles.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The replicas it wants.
    pub desired_replicas: u32,
    /// When it last changed `replicas` (RFC 3339).
    #[serde(default)]
    pub last_scale_time: Option<String>,
    /// The node it is draining before removing it, and since when (RFC 3339). Written as
    /// null when none, so the status's merge patch clears them.
    #[serde(default)]
    pub draining_node: Option<String>,
    #[serde(default)]
    pub draining_since: Option<String>,
}

/// A chat room placed on one node of a fleet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "chatfleet.dev",
    version = "v1alpha1",
    kind = "ChatRoom",
    namespaced,
    status = "ChatRoomStatus",
    shortname = "croom",
    category = "chatfleet-all",
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message("a room's name must be a DNS label: at most 63 characters, no dots"),
    printcolumn(name = "Fleet", type_ = "string", json_path = ".spec.fleet"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxMembers) || self.expectedMembers <= self.maxMembers").message("expectedMembers must not exceed maxMembers"))]
pub struct ChatRoomSpec {
    /// The ChatFleet, in the same namespace, that hosts the room. Cannot change.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("fleet is immutable"))]
    pub fleet: String,
    /// Members expected to join: the seats placement reserves for the room.
    #[serde(default = "default_expected_members")]
    #[schemars(range(min = 1, max = 20000))]
    pub expected_members: u32,
    /// The most members the room admits; at most the fleet's `limits.membersPerRoom`, which is
    /// also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 20000))]
    pub max_members: Option<u32>,
    /// What the room is for, shown to operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub purpose: Option<String>,
    /// Delete the room once it has been empty this long; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31536000))]
    pub ttl_seconds_after_empty: Option<u32>,
}

/// Where a room stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoomPhase {
    /// Not placed yet; `reason` says why.
    #[default]
    Pending,
    /// On a node with room for its expected members.
    Placed,
    /// Every node was full; on the node with the lowest message rate.
    Overflow,
    /// Its node went away or is draining; moving to another.
    Rescheduling,
    /// Being deleted; its members were told.
    Closed,
}

/// Where the room lives and how it is doing.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChatRoomStatus {
    pub phase: RoomPhase,
    /// The pod hosting the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The UID of that pod when the room was placed: a pod made anew under the same name is
    /// another process, and the room has lost its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// WebSocket URL to join (add `?token=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Members connected, on its node and on any other its members were sent to.
    #[serde(default)]
    pub members: u32,
    /// Messages per second, averaged over the last minute.
    #[serde(default)]
    pub message_rate: f64,
    /// Why the room is where it is (or is not anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the room was last seen empty (RFC 3339), for `ttlSecondsAfterEmpty`. Written once
    /// when the room empties, not on every reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The CRD files `crdgen` writes to `crds/`: (file name, YAML).
pub fn crd_files() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    let header = "# Generated by `cargo run -p operator --bin crdgen` from operator/src/crd.rs; do not edit.\n";
    let yaml = |crd| {
        format!(
            "{header}{}",
            serde_yaml::to_string(&crd).expect("CRDs serialize")
        )
    };
    vec![
        ("chatfleets.chatfleet.dev.yaml", yaml(ChatFleet::crd())),
        ("chatrooms.chatfleet.dev.yaml", yaml(ChatRoom::crd())),
    ]
}

fn default_replicas() -> i32 {
    3
}
fn default_drain_seconds() -> u32 {
    20
}
fn default_min_replicas() -> u32 {
    1
}
fn default_cooldown_seconds() -> u32 {
    300
}
fn default_transcript_entries() -> u32 {
    100_000
}
fn default_transcript_retention() -> u32 {
    7 * 86_400
}
fn default_webhook_attempts() -> u32 {
    12
}
fn default_users_per_node() -> u32 {
    300
}
fn default_members_per_room() -> u32 {
    300
}
fn default_sessions_per_user() -> u32 {
    3
}
fn default_expected_members() -> u32 {
    2
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    fn schema_of<K: CustomResourceExt>() -> String {
        serde_json::to_string(&K::crd()).unwrap()
    }

    /// kubectl expands categories before names: a category equal to a resource's name would
    /// make `kubectl get chatfleet NAME` list (and `delete` delete) both kinds.
    #[test]
    fn the_category_names_no_resource() {
        let names = [ChatFleet::crd().spec.names, ChatRoom::crd().spec.names];
        let mut taken = Vec::new();
        for n in &names {
            taken.push(n.plural.clone());
            taken.extend(n.singular.clone());
            taken.push(n.kind.to_lowercase());
            taken.extend(n.short_names.clone().unwrap_or_default());
        }
        for n in &names {
            assert_eq!(
                n.categories.as_deref(),
                Some(&["chatfleet-all".to_owned()][..])
            );
            for category in n.categories.iter().flatten() {
                assert!(
                    !taken.contains(category),
                    "{category} is also a resource name"
                );
            }
        }
    }

    #[test]
    fn room_schema_carries_its_rules() {
        let crd = schema_of::<ChatRoom>();
        for needle in [
            "self.expectedMembers <= self.maxMembers",
            r#""rule":"self == oldSelf""#,
            r#""enum":["Pending","Placed","Overflow","Rescheduling","Closed"]"#,
            r#""required":["fleet"]"#,
            r#""shortNames":["croom"]"#,
            r#""status":{}"#,
        ] {
            assert!(crd.contains(needle), "ChatRoom CRD lacks {needle}");
        }
    }

    #[test]
    fn fleet_schema_carries_its_rules() {
        let crd = schema_of::<ChatFleet>();
        for needle in [
            "has(self.url) != has(self.secretRef)",
            r#""enum":["LeastLoaded","Packed"]"#,
            r#""maximum":1000"#,
            r#""shortNames":["cfleet"]"#,
        ] {
            assert!(crd.contains(needle), "ChatFleet CRD lacks {needle}");
        }
    }

    /// CI fails here when someone changes the types without running crdgen.
    #[test]
    fn crds_on_disk_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        for (file, yaml) in crd_files() {
            let on_disk = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "crds/{file} is stale: run `cargo run -p operator --bin crdgen`"
            );
        }
    }

    #[test]
    fn defaults_fill_a_minimal_room() {
        let spec: ChatRoomSpec = serde_json::from_str(r#"{"fleet":"chat"}"#).unwrap();
        assert_eq!(spec.expected_members, 2);
        assert_eq!(spec.max_members, None);
        let fleet: ChatFleetSpec = serde_json::from_str(
            r#"{"image":"chatnode:dev","redis":{"url":"redis://r:6379"},"tokenSecret":{"name":"s","key":"k"}}"#,
        )
        .unwrap();
        assert_eq!(fleet.replicas, 3);
        assert_eq!(fleet.limits, FleetLimits::default());
        assert_eq!(fleet.placement, PlacementStrategy::LeastLoaded);
    }
}
