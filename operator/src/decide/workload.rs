//! What a `ChatFleet` becomes: a StatefulSet of chat nodes, the headless Service that gives each
//! pod a stable DNS name, and a PodDisruptionBudget. Pure functions of the fleet, so tests can
//! compare their output without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::room::node_base_url;

/// Where a node finds its fleet's Redis TLS Secret (`spec.redis.tls`).
const REDIS_TLS_DIR: &str = "/etc/chatfleet/redis-tls";
const REDIS_TLS_VOLUME: &str = "redis-tls";
use crate::crd::{ChatFleet, SecretKeyRef};

/// The port every chat node listens on (HTTP and WebSocket).
pub const NODE_PORT: i32 = 8080;
/// Label naming the fleet a pod belongs to.
pub const FLEET_LABEL: &str = "chatfleet.dev/fleet";
/// Seconds a node gets beyond its drain deadline before Kubernetes kills it.
const GRACE_MARGIN_SECONDS: i64 = 10;

/// Labels that select the fleet's pods.
pub fn selector_labels(fleet: &ChatFleet) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "chatnode".to_owned()),
        (FLEET_LABEL.to_owned(), fleet.name_any()),
    ])
}

/// The same labels as a selector string (`a=b,c=d`), as the scale subresource gives an HPA.
pub fn pod_selector(fleet: &ChatFleet) -> String {
    selector_labels(fleet)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on everything the operator makes for the fleet.
fn labels(fleet: &ChatFleet) -> BTreeMap<String, String> {
    let mut labels = selector_labels(fleet);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "chatfleet-operator".to_owned(),
    );
    labels
}

fn metadata(fleet: &ChatFleet) -> ObjectMeta {
    ObjectMeta {
        name: Some(fleet.name_any()),
        namespace: fleet.namespace(),
        labels: Some(labels(fleet)),
        owner_references: fleet.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The in-cluster WebSocket base URL of one pod, through the headless Service.
pub fn pod_url(fleet_name: &str, namespace: &str, pod: &str) -> String {
    format!("ws://{pod}.{fleet_name}.{namespace}.svc:{NODE_PORT}")
}

/// The headless Service: stable DNS names for the pods, published before they are Ready so a
/// starting node's advertised URL already resolves.
pub fn service(fleet: &ChatFleet) -> Service {
    Service {
        metadata: metadata(fleet),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(fleet)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: NODE_PORT,
                target_port: Some(IntOrString::Int(NODE_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one node down at a time by choice: its rooms move and its clients resume.
pub fn disruption_budget(fleet: &ChatFleet) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(fleet),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(fleet)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The chat nodes. Each pod's name is its node name. It advertises the URL clients reach it
/// at: the fleet's `publicEndpoint` when it has one (a node redirects outside clients there,
/// and knows a `moved` that names it), else its stable DNS name.
pub fn stateful_set(fleet: &ChatFleet) -> StatefulSet {
    let spec = &fleet.spec;
    let name = fleet.name_any();
    let namespace = fleet.namespace().unwrap_or_default();
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        plain_env("CHATNODE_LISTEN", &format!("0.0.0.0:{NODE_PORT}")),
        plain_env("CHATNODE_NODE_NAME", "$(POD_NAME)"),
        plain_env(
            "CHATNODE_ADVERTISE_URL",
            &node_base_url(
                spec.public_endpoint.as_deref(),
                &name,
                &namespace,
                "$(POD_NAME)",
                None,
            ),
        ),
        plain_env(
            "CHATNODE_MAX_NODE_USERS",
            &spec.limits.users_per_node.to_string(),
        ),
        plain_env(
            "CHATNODE_MAX_ROOM_MEMBERS",
            &spec.limits.members_per_room.to_string(),
        ),
        plain_env(
            "CHATNODE_MAX_USER_SESSIONS",
            &spec.limits.sessions_per_user.to_string(),
        ),
        plain_env("CHATNODE_DRAIN_SECONDS", &spec.drain_seconds.to_string()),
        plain_env("CHATNODE_LOG_JSON", "true"),
        secret_env("CHATNODE_TOKEN_SECRET", &spec.token_secret),
    ];
    env.push(match (&spec.redis.url, &spec.redis.secret_ref) {
        (_, Some(secret)) => secret_env("CHATNODE_REDIS_URL", secret),
        (url, None) => plain_env("CHATNODE_REDIS_URL", url.as_deref().unwrap_or_default()),
    });
    if let Some(password) = &spec.redis.password_secret_ref {
        env.push(secret_env("CHATNODE_REDIS_PASSWORD", password));
    }
    env.extend([
        plain_env(
            "CHATNODE_TRANSCRIPT_MAX_ENTRIES",
            &spec.transcripts.max_entries.to_string(),
        ),
        plain_env(
            "CHATNODE_TRANSCRIPT_RETENTION_SECONDS",
            &spec.transcripts.retention_seconds.to_string(),
        ),
    ]);
    if !spec.trusted_proxies.is_empty() {
        env.push(plain_env(
            "CHATNODE_TRUSTED_PROXIES",
            &spec.trusted_proxies.join(","),
        ));
    }
    // The fleet's key names its webhook queue: the operator queues there too.
    env.push(plain_env("CHATNODE_FLEET", &format!("{namespace}/{name}")));
    if let Some(hooks) = &spec.webhooks {
        env.extend([
            plain_env("CHATNODE_WEBHOOK_URLS", &hooks.urls.join(",")),
            secret_env("CHATNODE_WEBHOOK_SECRET", &hooks.secret_ref),
            plain_env("CHATNODE_WEBHOOK_MESSAGES", &hooks.messages.to_string()),
            plain_env(
                "CHATNODE_WEBHOOK_MAX_ATTEMPTS",
                &hooks.max_attempts.to_string(),
            ),
            plain_env(
                "CHATNODE_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
                &hooks.allow_private_networks.to_string(),
            ),
        ]);
    }
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(NODE_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    // The fleet's Redis TLS Secret, mounted where the node's flags say.
    let redis_tls = spec.redis.tls.as_ref();
    if let Some(tls) = redis_tls {
        env.push(plain_env(
            "CHATNODE_REDIS_CA_FILE",
            &format!("{REDIS_TLS_DIR}/ca.crt"),
        ));
        if tls.client_certificate {
            env.extend([
                plain_env(
                    "CHATNODE_REDIS_CLIENT_CERT_FILE",
                    &format!("{REDIS_TLS_DIR}/tls.crt"),
                ),
                plain_env(
                    "CHATNODE_REDIS_CLIENT_KEY_FILE",
                    &format!("{REDIS_TLS_DIR}/tls.key"),
                ),
            ]);
        }
    }
    let container = Container {
        name: "chatnode".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: NODE_PORT,
            ..ContainerPort::default()
        }]),
        volume_mounts: redis_tls.as_ref().map(|_| {
            vec![VolumeMount {
                name: REDIS_TLS_VOLUME.to_owned(),
                mount_path: REDIS_TLS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    StatefulSet {
        metadata: metadata(fleet),
        spec: StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(name),
            // Nodes are independent: start and stop them all at once.
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(fleet)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(fleet)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: redis_tls.map(|tls| {
                        vec![Volume {
                            name: REDIS_TLS_VOLUME.to_owned(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(tls.secret_name.clone()),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        }]
                    }),
                    termination_grace_period_seconds: Some(
                        i64::from(spec.drain_seconds) + GRACE_MARGIN_SECONDS,
                    ),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ChatFleetSpec;

    pub fn fleet() -> ChatFleet {
        let spec: ChatFleetSpec = serde_json::from_value(serde_json::json!({
            "replicas": 4,
            "image": "chatnode:dev",
            "redis": {"url": "redis://redis:6379"},
            "tokenSecret": {"name": "chat-tokens", "key": "secret"},
            "drainSeconds": 15
        }))
        .unwrap();
        let mut fleet = ChatFleet::new("chat", spec);
        fleet.metadata.namespace = Some("support".into());
        fleet.metadata.uid = Some("uid-1".into());
        fleet
    }

    fn env_of(set: &StatefulSet) -> BTreeMap<String, EnvVar> {
        let pod = set.spec.template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn nodes_are_named_after_their_pods_and_advertise_stable_dns() {
        let set = stateful_set(&fleet());
        let spec = &set.spec;
        assert_eq!(spec.replicas, Some(4));
        assert_eq!(spec.service_name.as_deref(), Some("chat"));
        let env = env_of(&set);
        assert_eq!(
            env["CHATNODE_NODE_NAME"].value.as_deref(),
            Some("$(POD_NAME)")
        );
        assert_eq!(
            env["CHATNODE_ADVERTISE_URL"].value.as_deref(),
            Some("ws://$(POD_NAME).chat.support.svc:8080")
        );
        let mut public = fleet();
        public.spec.public_endpoint = Some("wss://chat.example.com/{namespace}/{pod}/".into());
        assert_eq!(
            env_of(&stateful_set(&public))["CHATNODE_ADVERTISE_URL"]
                .value
                .as_deref(),
            Some("wss://chat.example.com/support/$(POD_NAME)")
        );
        assert_eq!(
            env["CHATNODE_REDIS_URL"].value.as_deref(),
            Some("redis://redis:6379")
        );
        assert_eq!(
            env["CHATNODE_MAX_USER_SESSIONS"].value.as_deref(),
            Some("3")
        );
        let token = env["CHATNODE_TOKEN_SECRET"].value_from.as_ref().unwrap();
        assert_eq!(token.secret_key_ref.as_ref().unwrap().name, "chat-tokens");
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(25));
        let owner = &set.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ChatFleet", Some(true))
        );
    }

    #[test]
    fn trusted_proxies_reach_the_nodes_only_when_set() {
        assert!(!env_of(&stateful_set(&fleet())).contains_key("CHATNODE_TRUSTED_PROXIES"));
        let mut behind = fleet();
        behind.spec.trusted_proxies = vec!["10.0.0.0/8".into(), "192.168.1.7".into()];
        assert_eq!(
            env_of(&stateful_set(&behind))["CHATNODE_TRUSTED_PROXIES"]
                .value
                .as_deref(),
            Some("10.0.0.0/8,192.168.1.7")
        );
    }

    #[test]
    fn a_fleets_redis_tls_secret_is_mounted_where_the_node_reads_it() {
        let mut fleet = fleet();
        fleet.spec.redis.tls = Some(crate::crd::RedisTlsSource {
            secret_name: "redis-tls".into(),
            client_certificate: true,
        });
        let set = stateful_set(&fleet);
        let env = env_of(&set);
        let pod = set.spec.template.spec.as_ref().unwrap();
        let volume = &pod.volumes.as_ref().unwrap()[0];
        let secret = volume.secret.as_ref().unwrap().secret_name.as_deref();
        assert_eq!(secret, Some("redis-tls"));
        let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.name, volume.name);
        for (var, file) in [
            ("CHATNODE_REDIS_CA_FILE", "ca.crt"),
            ("CHATNODE_REDIS_CLIENT_CERT_FILE", "tls.crt"),
            ("CHATNODE_REDIS_CLIENT_KEY_FILE", "tls.key"),
        ] {
            assert_eq!(
                env[var].value.as_deref(),
                Some(format!("{}/{file}", mount.mount_path).as_str())
            );
        }
        // Without TLS, nothing is mounted.
        let plain = stateful_set(&super::tests::fleet());
        assert!(plain.spec.template.spec.unwrap().volumes.is_none());
    }

    #[test]
    fn redis_url_can_come_from_a_secret() {
        let mut fleet = fleet();
        fleet.spec.redis.url = None;
        fleet.spec.redis.secret_ref = Some(SecretKeyRef {
            name: "redis".into(),
            key: "url".into(),
        });
        let env = env_of(&stateful_set(&fleet));
        let from = env["CHATNODE_REDIS_URL"].value_from.as_ref().unwrap();
        assert_eq!(from.secret_key_ref.as_ref().unwrap().key, "url");
    }

    #[test]
    fn webhooks_reach_the_nodes_with_their_secret_and_the_fleets_queue() {
        let env = env_of(&stateful_set(&fleet()));
        assert_eq!(env["CHATNODE_FLEET"].value.as_deref(), Some("support/chat"));
        assert_eq!(
            env["CHATNODE_TRANSCRIPT_RETENTION_SECONDS"]
                .value
                .as_deref(),
            Some("604800")
        );
        assert!(
            !env.contains_key("CHATNODE_WEBHOOK_URLS"),
            "none configured"
        );

        let mut fleet = fleet();
        fleet.spec.webhooks = Some(
            serde_json::from_value(serde_json::json!({
                "urls": ["https://a.example/hook", "http://b.example/hook"],
                "secretRef": {"name": "hooks", "key": "signing-key"},
                "messages": true
            }))
            .unwrap(),
        );
        let env = env_of(&stateful_set(&fleet));
        assert_eq!(
            env["CHATNODE_WEBHOOK_URLS"].value.as_deref(),
            Some("https://a.example/hook,http://b.example/hook")
        );
        let secret = env["CHATNODE_WEBHOOK_SECRET"].value_from.as_ref().unwrap();
        let secret = secret.secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("hooks", "signing-key")
        );
        assert_eq!(
            env["CHATNODE_WEBHOOK_MESSAGES"].value.as_deref(),
            Some("true")
        );
        assert_eq!(
            env["CHATNODE_WEBHOOK_MAX_ATTEMPTS"].value.as_deref(),
            Some("12")
        );
    }

    #[test]
    fn the_service_is_headless_and_selects_the_pods() {
        let svc = service(&fleet());
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()[FLEET_LABEL], "chat");
    }
}
