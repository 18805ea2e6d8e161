//! envtest-style tests: the operator in-process against a real `kube-apiserver` and `etcd`
//! (from `KUBEBUILDER_ASSETS`), a real Redis and real chat node processes running under the
//! pod names. Without `KUBEBUILDER_ASSETS` they skip with a message, as controller-runtime's
//! envtest does. Get the binaries with `setup-envtest use -p path` and export the folder.

mod apiserver;
mod autoscaling;
mod benches;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatfleet_api::ApiKeys;
use chatfleet_api::history::HistoryView;
use chatfleet_api::rooms::CreatedRoom;
use chatfleet_wire::frames::{ErrorCode, Role, ServerFrame};
use chatfleet_wire::keys::RoomKeys;
use chatfleet_wire::transcript::{Transcript, TranscriptEntry};
use chatfleet_wire::webhook::EventBody;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use operator::api::admin::KubeFleetAdmin;
use operator::api::rooms::{DirectoryCaches, DirectorySettings, KubeDirectory};
use operator::context::{Context, Settings};
use operator::controllers;
use operator::crd::{ChatFleet, ChatRoom, ChatRoomStatus, RoomPhase};
use operator::fleet_redis::RedisPool;
use operator::metrics::Metrics;
use redis::AsyncCommands;
use serde_json::json;
use testkit::{Node, Redis, WebhookReceiver};

use apiserver::ApiServer;

const NS: &str = "support";
const PATIENCE: Duration = Duration::from_secs(60);

fn assets() -> Option<PathBuf> {
    match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!(
                "SKIPPED: envtest needs KUBEBUILDER_ASSETS, a folder with kube-apiserver and etcd \
                 (e.g. `export KUBEBUILDER_ASSETS=$(setup-envtest use -p path)`)"
            );
            None
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after [`PATIENCE`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, check: impl Fn() -> F) -> T {
    eventually_within(what, PATIENCE, check).await
}

/// Polls `check` until it returns `Some`, or fails after `limit`.
async fn eventually_within<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    check: impl Fn() -> F,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn install_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, yaml) in operator::crd::crd_files() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    for name in ["chatfleets.chatfleet.dev", "chatrooms.chatfleet.dev"] {
        eventually("the CRDs to be established", || async {
            let crd = crds.get(name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await;
    }
}

async fn create_namespace(client: &kube::Client) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// Fleet `chat` of 2 nodes of 4 seats on `redis`, its token key in Secret `tokens` (the
/// secret the test nodes use).
async fn create_fleet(client: &kube::Client, redis: &Redis) {
    create_fleet_with(client, redis, json!({})).await;
}

/// Fleet `chat` as [`create_fleet`] makes it, with `extra` fields in its spec.
async fn create_fleet_with(client: &kube::Client, redis: &Redis, extra: serde_json::Value) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tokens"}, "stringData": {"secret": testkit::SECRET}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut spec = json!({"replicas": 2, "image": "chatfleet/chatnode:dev",
                 "redis": {"url": redis.url()},
                 "tokenSecret": {"name": "tokens", "key": "secret"},
                 "limits": {"usersPerNode": 4}});
    for (field, value) in extra.as_object().unwrap() {
        spec[field] = value.clone();
    }
    let fleet: ChatFleet = serde_json::from_value(json!({
        "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatFleet",
        "metadata": {"name": "chat"},
        "spec": spec
    }))
    .unwrap();
    Api::<ChatFleet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &fleet)
        .await
        .unwrap();
}

/// Runs the operator's controllers in this process.
fn start_operator(client: &kube::Client) {
    let settings = Settings {
        room_resync: Duration::from_millis(500),
        fleet_resync: Duration::from_secs(1),
        ..Settings::default()
    };
    start_operator_with(client, settings);
}

/// Runs the operator's controllers in this process with `settings`; returns their metrics.
fn start_operator_with(client: &kube::Client, settings: Settings) -> Arc<Metrics> {
    spawn_operator(client, settings).detach()
}

/// The operator's watches and controllers, running in this process until dropped (as if its
/// process died) or detached.
struct InProcessOperator {
    metrics: Arc<Metrics>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessOperator {
    /// Leaves it running for the rest of the test; returns its metrics.
    fn detach(mut self) -> Arc<Metrics> {
        self.task.take();
        self.metrics.clone()
    }

    /// Rooms it has reconciled so far.
    fn room_reconciles(&self) -> u64 {
        self.metrics
            .reconciles
            .get_or_create(&operator::metrics::ControllerLabel { controller: "room" })
            .get()
    }
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn spawn_operator(client: &kube::Client, settings: Settings) -> InProcessOperator {
    let (pods, pod_task) = controllers::pod_cache(client);
    let metrics = Arc::new(Metrics::new());
    let (fleets, fleet_task) = controllers::fleet_cache(client);
    let (rooms, room_task) = controllers::room_watch(client);
    let ctx = Context::new(
        client.clone(),
        pods,
        metrics.clone(),
        settings,
        Some("envtest".into()),
    )
    .with_fleet_cache(fleets)
    .with_room_watch(rooms);
    let task = tokio::spawn(async move {
        tokio::join!(
            pod_task,
            fleet_task,
            room_task,
            controllers::run(Arc::new(ctx))
        );
    });
    InProcessOperator {
        metrics,
        task: Some(task),
    }
}

/// A real API server with the CRDs and the test namespace (and a client of it), beside a
/// fresh Redis.
async fn api_server_with_crds(assets: &std::path::Path) -> (ApiServer, kube::Client, Redis) {
    let server = ApiServer::start(assets).await;
    let client = server.client.clone();
    let redis = Redis::start().await;
    install_crds(&client).await;
    create_namespace(&client).await;
    (server, client, redis)
}

/// A real API server with the CRDs and namespace, the operator running, and fleet `chat` on
/// a fresh Redis (no pods yet).
async fn operator_with_fleet(assets: &std::path::Path) -> (ApiServer, Redis) {
    let (server, _, redis) = api_server_with_crds(assets).await;
    start_operator(&server.client);
    create_fleet(&server.client, &redis).await;
    (server, redis)
}

/// The pod the StatefulSet controller would make, made Ready through its status subresource
/// (no kubelet runs here), with a real chat node serving under its name.
async fn node_pod(client: &kube::Client, redis: &Redis, name: &str) -> Node {
    ready_pod(client, name).await;
    Node::in_fleet(redis, name, &["--max-node-users", "4"]).await
}

/// A pod of fleet `chat`, as the StatefulSet controller would make it, made Ready through its
/// status subresource.
async fn ready_pod(client: &kube::Client, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/name": "chatnode", "chatfleet.dev/fleet": "chat"}},
        "spec": {"containers": [{"name": "chatnode", "image": "chatfleet/chatnode:dev"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    set_ready(client, name, true).await;
}

async fn set_ready(client: &kube::Client, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    Api::<Pod>::namespaced(client.clone(), NS)
        .patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": status}]}})),
        )
        .await
        .unwrap();
}

async fn create_room(client: &kube::Client, name: &str, expected: u32) {
    let room: ChatRoom = serde_json::from_value(json!({
        "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatRoom",
        "metadata": {"name": name},
        "spec": {"fleet": "chat", "expectedMembers": expected}
    }))
    .unwrap();
    Api::<ChatRoom>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &room)
        .await
        .unwrap();
}

async fn status_when(
    client: &kube::Client,
    name: &str,
    what: &str,
    done: impl Fn(&ChatRoomStatus) -> bool,
) -> ChatRoomStatus {
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    eventually(what, || async {
        let status = rooms.get(name).await.ok()?.status?;
        done(&status).then_some(status)
    })
    .await
}

#[tokio::test]
async fn the_operator_places_overflows_reschedules_and_deletes_rooms() {
    let Some(assets) = assets() else { return };
    let (_server, client, redis) = api_server_with_crds(&assets).await;

    // A bad room is refused by the schema, with the rule's message.
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let bad: ChatRoom = serde_json::from_value(json!({
        "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatRoom",
        "metadata": {"name": "bad"},
        "spec": {"fleet": "chat", "expectedMembers": 9, "maxMembers": 3}
    }))
    .unwrap();
    let refused = rooms
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("expectedMembers must not exceed maxMembers")
    );
    // A fleet's Redis is a plain, a Sentinel or a Cluster URL, nothing else.
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let fleet_on = |url: &str| -> ChatFleet {
        serde_json::from_value(json!({
            "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatFleet",
            "metadata": {"name": "dry"},
            "spec": {"image": "chatfleet/chatnode:dev", "redis": {"url": url},
                     "tokenSecret": {"name": "tokens", "key": "secret"}}
        }))
        .unwrap()
    };
    for url in [
        "redis://r:6379",
        "redis+sentinel://:pw@s-0:26379,s-1:26379/mymaster",
        "redis+cluster://:pw@c-0:6379,c-1:6379",
    ] {
        fleets.create(&dry_run, &fleet_on(url)).await.unwrap();
    }
    let refused = fleets
        .create(&dry_run, &fleet_on("http://r:6379"))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("redis.url must start with"),
        "{refused}"
    );

    start_operator(&client);
    create_fleet(&client, &redis).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually("the fleet's StatefulSet", || async {
        sets.get("chat").await.ok()
    })
    .await;

    let nodes = [
        node_pod(&client, &redis, "chat-0").await,
        node_pod(&client, &redis, "chat-1").await,
    ];

    // Two rooms of 3 on nodes of 4 seats: one each. A third fits nowhere: overflow.
    create_room(&client, "a", 3).await;
    let a = status_when(&client, "a", "room a placed", |s| {
        s.phase == RoomPhase::Placed
    })
    .await;
    create_room(&client, "b", 3).await;
    let b = status_when(&client, "b", "room b placed", |s| {
        s.phase == RoomPhase::Placed
    })
    .await;
    assert_ne!(a.node, b.node, "least loaded spreads the rooms");
    create_room(&client, "c", 3).await;
    let c = status_when(&client, "c", "room c to overflow", |s| {
        s.phase == RoomPhase::Overflow
    })
    .await;
    assert!(c.node.is_some());

    // Kill room a's node: its report expires, its pod stops being Ready, the room moves.
    let dead = a.node.clone().unwrap();
    let index = if dead == "chat-0" { 0 } else { 1 };
    nodes[index].signal("KILL");
    set_ready(&client, &dead, false).await;
    let moved = status_when(&client, "a", "room a to move", |s| {
        s.node.as_deref() != Some(dead.as_str()) && s.phase != RoomPhase::Rescheduling
    })
    .await;
    assert!(moved.node.is_some());
    assert!(moved.endpoint.unwrap().contains("/v1/rooms/support/a/ws"));

    // Deleting a room closes it and lets the object go.
    rooms.delete("b", &DeleteParams::default()).await.unwrap();
    eventually("room b to be gone", || async {
        rooms.get_opt("b").await.unwrap().is_none().then_some(())
    })
    .await;
    let closed: bool = redis
        .conn()
        .await
        .exists(RoomKeys::new(&"support/b".parse().unwrap()).closed)
        .await
        .unwrap();
    assert!(closed, "the room's tombstone keeps old tokens out");
}

/// The room API and admin routes, served by the operator's Kubernetes backends over the real
/// API server: one call opens a placed room with working tokens, a retry finds the same room,
/// history and the fleet view come from the fleet's Redis, and the key scopes hold.
#[tokio::test]
async fn the_room_api_opens_a_support_session_through_the_api_server() {
    let Some(assets) = assets() else { return };
    let (server, redis) = operator_with_fleet(&assets).await;
    let client = server.client.clone();
    let _node = node_pod(&client, &redis, "chat-0").await;

    let pool = Arc::new(RedisPool::new(Duration::from_secs(60)));
    let settings = DirectorySettings {
        namespace: NS.into(),
        fleet: Some("chat".into()),
        placement_wait: PATIENCE / 2,
    };
    // Read from reflectors, as the operator binary does.
    let (rooms, room_task) = controllers::room_watch(&client);
    tokio::spawn(room_task);
    let rooms = rooms.store;
    let (fleets, fleet_task) = controllers::fleet_cache(&client);
    tokio::spawn(fleet_task);
    let directory = KubeDirectory::new(client.clone(), settings, pool.clone())
        .with_caches(DirectoryCaches { rooms, fleets });
    let admin = KubeFleetAdmin::new(client.clone(), NS, "chat", pool);
    let keys = ApiKeys::scoped(vec!["room-key".into()], vec!["admin-key".into()]);
    let app = chatfleet_api::rooms::router(Arc::new(directory), keys.clone())
        .merge(chatfleet_api::admin::router(Arc::new(admin), keys));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    let http = reqwest::Client::new();

    let open = || {
        http.post(format!("{base}/v1/rooms"))
            .header("x-api-key", "room-key")
            .header("idempotency-key", "ticket-4711")
            .json(&json!({"participants": [
                {"user": "cust-1", "name": "Dana"}, {"user": "agent-1", "role": "agent"}]}))
            .send()
    };
    let first = open().await.unwrap();
    assert_eq!(first.status(), 201);
    let created: CreatedRoom = first.json().await.unwrap();
    assert_eq!(created.room.node, "chat-0");
    assert_eq!(created.tokens.len(), 2);
    let again = open().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: CreatedRoom = again.json().await.unwrap();
    assert_eq!(
        again.room.id, created.room.id,
        "a retry finds the same room"
    );

    let (mut dana, _) = testkit::Client::join(&created.tokens[0].ws_url).await;
    dana.say("my order is stuck").await;
    dana.message().await;
    let read = |what: &'static str| {
        http.get(format!("{base}/v1/rooms/{}/{what}", created.room.id))
            .header("x-api-key", "room-key")
            .send()
    };
    let history: HistoryView = read("history").await.unwrap().json().await.unwrap();
    assert_eq!(history.messages[0].content.body, "my order is stuck");

    // Moderation goes through the fleet's Redis to the room's node.
    let muted = http
        .post(format!(
            "{base}/v1/rooms/{}/members/cust-1/mute",
            created.room.id
        ))
        .header("x-api-key", "room-key")
        .json(&json!({"seconds": 60, "reason": "one moment"}))
        .send()
        .await
        .unwrap();
    assert_eq!(muted.status(), 200);
    assert!(matches!(
        dana.recv_skip_presence().await,
        ServerFrame::Moderation(m) if m.reason == "one moment"
    ));
    dana.say("hello?").await;
    testkit::assert_error(&dana.recv_skip_presence().await, ErrorCode::Muted);

    let fleet = |key: &'static str| {
        http.get(format!("{base}/v1/admin/fleet"))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(fleet("room-key").await.unwrap().status(), 403);
    let view: serde_json::Value = fleet("admin-key").await.unwrap().json().await.unwrap();
    assert_eq!(view["nodes"][0]["node"], "chat-0");

    // Closing with a reason: the finalizer tells the members why.
    let closed = http
        .delete(format!(
            "{base}/v1/rooms/{}?reason=order%20found",
            created.room.id
        ))
        .header("x-api-key", "room-key")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 204);
    match dana.recv_skip_presence().await {
        ServerFrame::Closed { reason, .. } => assert_eq!(reason, "order found"),
        other => panic!("expected closed, got {other:?}"),
    }

    // The transcript outlives the ChatRoom: the operator finds it in the fleet's Redis.
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let name = created.room.id.name().to_owned();
    testkit::eventually("the ChatRoom is gone", || async {
        rooms.get_opt(&name).await.unwrap().is_none()
    })
    .await;
    let transcript: Transcript = read("transcript").await.unwrap().json().await.unwrap();
    assert!(transcript.closed, "{transcript:?}");
    let said: Vec<&str> = transcript
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Message(m) => Some(m.content.body.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["my order is stuck"]);
    assert!(matches!(
        transcript.entries.last(),
        Some(TranscriptEntry::Closed { reason, .. }) if reason == "order found"
    ));
}

/// A fleet's Redis frozen past the nodes' report TTL, with every pod failing readiness as the
/// kubelet would see it: the operator holds every placement (no room moves, no `moved`), says
/// `RedisUnavailable` on the fleet, and is Ready again after the thaw with the rooms in place.
#[tokio::test]
async fn a_redis_freeze_moves_no_room() {
    let Some(assets) = assets() else { return };
    let (server, redis) = operator_with_fleet(&assets).await;
    let client = server.client.clone();
    let nodes = [
        node_pod(&client, &redis, "chat-0").await,
        node_pod(&client, &redis, "chat-1").await,
    ];
    create_room(&client, "a", 2).await;
    let placed = status_when(&client, "a", "room a placed", |s| {
        s.phase == RoomPhase::Placed
    })
    .await;
    let home = placed.node.clone().unwrap();
    let index = if home == "chat-0" { 0 } else { 1 };
    let (mut ann, _) = testkit::Client::join(&nodes[index].ws_as("support/a", "ann", "")).await;

    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let fleet_ready = |reason: &'static str| {
        let fleets = fleets.clone();
        async move {
            let fleet = fleets.get("chat").await.ok()?;
            let ready = fleet
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.reason == reason).then_some(())
        }
    };

    // Every status the room shows from now on, as a watcher would see it.
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let watching = {
        let (rooms, seen) = (rooms.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(room) = rooms.get("a").await {
                    let status = room.status.unwrap_or_default();
                    seen.lock().unwrap().push((status.phase, status.node));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    redis.pause();
    for pod in ["chat-0", "chat-1"] {
        set_ready(&client, pod, false).await;
    }
    eventually("the fleet to say RedisUnavailable", || {
        fleet_ready("RedisUnavailable")
    })
    .await;
    // Past the reports' TTL (0.6 s here) several times over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.resume();
    // The kubelet sees the nodes ready again a little after Redis answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for pod in ["chat-0", "chat-1"] {
        set_ready(&client, pod, true).await;
    }
    eventually("the fleet to be Ready again", || {
        fleet_ready("AllNodesReporting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    watching.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() > 20,
        "the room was watched throughout ({} looks)",
        seen.len()
    );
    for (phase, node) in &seen {
        assert_eq!(
            (phase, node.as_deref()),
            (&RoomPhase::Placed, Some(home.as_str())),
            "the room left its node during the outage: {seen:?}"
        );
    }
    // Its member was never sent away.
    match tokio::time::timeout(Duration::from_secs(1), ann.next()).await {
        Err(_) => {}
        Ok(frame) => assert!(
            !matches!(
                frame,
                Some(Ok(chatfleet_wire::frames::ServerFrame::Moved { .. })) | None
            ),
            "the member was moved or cut off: {frame:?}"
        ),
    }
}

/// Ten Ready pods of the fleet, 3,000 seats each, with their load reports in `redis` (as their
/// heartbeats would write them, lasting past a benchmark's run).
/// A new leader relists every room and looks at each once. For rooms that did not change
/// while nobody led, that pass writes nothing to the API server and reads Redis per node (one
/// snapshot each), not per room; a room created after the takeover is placed.
#[tokio::test]
async fn a_new_leader_writes_nothing_to_rooms_that_did_not_change() {
    const ROOMS: usize = 100;
    let Some(assets) = assets() else { return };
    let (_server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    let nodes = ["chat-0", "chat-1"];
    for name in nodes {
        ready_pod(&client, name).await;
        // Reports that outlive the test: no heartbeat talks to Redis while it counts.
        let report = testkit::load_report(name, 0, 3000, 0.0);
        redis
            .state()
            .reports
            .write(&report, &[], Duration::from_secs(600))
            .await
            .unwrap();
    }
    // No periodic pass during the test: every reconcile below is the takeover's own.
    let settings = Settings {
        room_resync: Duration::from_secs(3600),
        fleet_resync: Duration::from_secs(3600),
        workload_resync: Duration::from_secs(3600),
        ..Settings::default()
    };
    let first = spawn_operator(&client, settings.clone());
    for n in 0..ROOMS {
        create_room(&client, &format!("case-{n}"), 2).await;
    }
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let versions = || async {
        let list = rooms.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .map(|room| {
                let placed = room
                    .status
                    .as_ref()
                    .is_some_and(|s| s.phase == RoomPhase::Placed);
                (
                    room.metadata.name.clone().unwrap(),
                    (placed, room.metadata.resource_version.clone()),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = eventually("every room placed", || async {
        let versions = versions().await;
        (versions.len() == ROOMS && versions.values().all(|(placed, _)| *placed))
            .then_some(versions)
    })
    .await;
    // The old leader dies; its Redis work is over.
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let calls_before = redis.command_calls().await;
    let second = spawn_operator(&client, settings);
    eventually("the new leader to look at every room", || async {
        (second.room_reconciles() >= ROOMS as u64).then_some(())
    })
    .await;
    // Anything a pass would write would have landed by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = redis.command_calls().await - calls_before;
    assert_eq!(
        versions().await,
        before,
        "the takeover wrote to rooms that did not change"
    );
    println!("a takeover with {ROOMS} placed rooms on 2 nodes: {calls} Redis commands");
    // Its fleet pass (the reports and each node's rooms) and each node's snapshot (3 reads,
    // again each second while the pass, spread over up to 5 s, goes on): per node and second,
    // where a read per room would be 100 at least.
    assert!(
        calls < ROOMS as u64 / 2,
        "{calls} Redis commands for a takeover of {ROOMS} rooms"
    );

    create_room(&client, "after-takeover", 2).await;
    status_when(
        &client,
        "after-takeover",
        "the new leader to place a new room",
        |s| s.phase == RoomPhase::Placed,
    )
    .await;
}

/// A fleet whose Redis requires TLS and a client certificate (`redis.tls`, a Secret in
/// cert-manager's layout): the schema wants `rediss://` with it, and the operator reaches
/// Redis through it to place a room (it has no other way in).
#[tokio::test]
async fn the_operator_reaches_a_fleets_redis_over_tls() {
    let Some(assets) = assets() else { return };
    let (_server, client, _plain) = api_server_with_crds(&assets).await;
    let (redis, tls) = Redis::start_tls().await;
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let refused = fleets
        .create(
            &DRY_RUN,
            &dry_fleet(json!({"redis": {"url": "redis://r:6379", "tls": {"secretName": "x"}}})),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("redis.tls needs a rediss:// or rediss+cluster:// URL"),
        "{refused}"
    );

    let read = |path: &std::path::Path| String::from_utf8(std::fs::read(path).unwrap()).unwrap();
    let files = json!({"ca.crt": read(&tls.ca), "tls.crt": read(&tls.client_cert),
                       "tls.key": read(&tls.client_key)});
    let over_tls =
        json!({"url": tls.url(), "tls": {"secretName": "redis-tls", "clientCertificate": true}});
    let status = place_through(&client, &redis, ("redis-tls", files), over_tls).await;
    assert_eq!(status.node.as_deref(), Some("chat-0"));
}

/// Starts the operator on fleet `chat` whose spec's `redis` is `source` (its Secret `secret`
/// made first: name and string data), with one Ready pod reporting, and places a room: the
/// operator must reach Redis the way `source` says to.
async fn place_through(
    client: &kube::Client,
    redis: &Redis,
    (name, data): (&str, serde_json::Value),
    source: serde_json::Value,
) -> ChatRoomStatus {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    start_operator(client);
    create_fleet_with(client, redis, json!({ "redis": source })).await;
    ready_pod(client, "chat-0").await;
    redis
        .write_report(&testkit::load_report("chat-0", 0, 300, 0.0))
        .await;
    create_room(client, "locked", 2).await;
    status_when(client, "locked", "the room placed", |s| {
        s.phase == RoomPhase::Placed
    })
    .await
}

/// A fleet whose Redis requires a password, kept in a Secret of its own
/// (`redis.passwordSecretRef`, as the shipped samples do): the operator reads it, reaches
/// Redis, and places a room; the nodes get it as `CHATNODE_REDIS_PASSWORD`.
#[tokio::test]
async fn the_operator_reaches_a_fleets_redis_with_its_password() {
    let Some(assets) = assets() else { return };
    let (_server, client, _plain) = api_server_with_crds(&assets).await;
    let redis = Redis::start_guarded("trial-password").await;
    let guarded = json!({"url": format!("redis://127.0.0.1:{}", redis.port),
                         "passwordSecretRef": {"name": "redis-auth", "key": "password"}});
    let password = json!({"password": "trial-password\n"});
    place_through(&client, &redis, ("redis-auth", password), guarded).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let set = eventually("the fleet's StatefulSet", || async {
        sets.get("chat").await.ok()
    })
    .await;
    let env = set.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let password = env
        .iter()
        .find(|e| e.name == "CHATNODE_REDIS_PASSWORD")
        .unwrap();
    let from = password
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("redis-auth", "password")
    );
}

/// A create that the API server validates and admits but does not store.
const DRY_RUN: PostParams = PostParams {
    dry_run: true,
    field_manager: None,
};

/// Fleet `dry`, to be created with [`DRY_RUN`]: what the schema makes of `extra` spec fields.
fn dry_fleet(extra: serde_json::Value) -> ChatFleet {
    let mut spec = json!({"image": "chatfleet/chatnode:dev", "redis": {"url": "redis://r:6379"},
                          "tokenSecret": {"name": "tokens", "key": "secret"}});
    for (field, value) in extra.as_object().unwrap() {
        spec[field] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatFleet",
        "metadata": {"name": "dry"},
        "spec": spec
    }))
    .unwrap()
}

/// A fleet's trusted proxies are IP addresses or CIDR ranges, checked by the API server, and
/// reach its nodes as `CHATNODE_TRUSTED_PROXIES`.
#[tokio::test]
async fn a_fleets_trusted_proxies_are_addresses_or_ranges() {
    let Some(assets) = assets() else { return };
    let (_server, client, _redis) = api_server_with_crds(&assets).await;
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let fleet = |proxies: serde_json::Value| dry_fleet(json!({ "trustedProxies": proxies }));
    let refused = fleets
        .create(&DRY_RUN, &fleet(json!(["10.0.0.0/8", "the-ingress"])))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("trustedProxies must be IP addresses or CIDR ranges"),
        "{refused}"
    );
    fleets
        .create(
            &DRY_RUN,
            &fleet(json!(["10.0.0.0/8", "192.168.1.7", "fd00::/8"])),
        )
        .await
        .unwrap();
}

/// Registers a Node for the scheduler to bind pods to, Ready (no kubelet will keep it so for
/// long, but a test is shorter than the node controller's grace).
async fn register_node(client: &kube::Client, name: &str) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let resources = json!({"cpu": "64", "memory": "256Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Plays the kubelet for a scheduled pod: a chat node process under its name, then the pod
/// Running and Ready.
async fn run_pod(client: &kube::Client, redis: &Redis, name: &str) -> Node {
    let node = Node::in_fleet(redis, name, &["--max-node-users", "4"]).await;
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}});
    Api::<Pod>::namespaced(client.clone(), NS)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    node
}

/// The fleet's pods the scheduler bound to `node`, by name.
async fn scheduled_pods(client: &kube::Client, node: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods
        .list(&kube::api::ListParams::default().labels("chatfleet.dev/fleet=chat"))
        .await
        .unwrap();
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter_map(|pod| pod.metadata.name)
        .collect();
    names.sort();
    names
}

/// With the real controller-manager and scheduler: the fleet's StatefulSet makes the pods, the
/// scheduler binds them to a Node the test registered, and the test plays the kubelet. A room
/// lands on one of them; deleting that pod moves the room to the other, its member told with
/// `moved`, while the StatefulSet makes the pod anew.
#[tokio::test]
async fn a_fleets_statefulset_pods_take_the_rooms() {
    let Some(assets) = assets() else { return };
    let server = ApiServer::start_with_controllers(&assets).await;
    let client = server.client.clone();
    let redis = Redis::start().await;
    install_crds(&client).await;
    create_namespace(&client).await;
    register_node(&client, "envtest-node").await;
    start_operator(&client);
    create_fleet(&client, &redis).await;

    let names = eventually("the StatefulSet's pods to be scheduled", || async {
        let names = scheduled_pods(&client, "envtest-node").await;
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(names, ["chat-0", "chat-1"]);
    let mut nodes = std::collections::HashMap::new();
    for name in &names {
        nodes.insert(name.clone(), run_pod(&client, &redis, name).await);
    }

    create_room(&client, "a", 2).await;
    let placed = status_when(&client, "a", "room a placed", |s| {
        s.phase == RoomPhase::Placed
    })
    .await;
    let home = placed.node.clone().unwrap();
    let other = if home == "chat-0" { "chat-1" } else { "chat-0" };
    let (mut ann, _) = testkit::Client::join(&nodes[&home].ws_as("support/a", "ann", "")).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.delete(&home, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let moved = status_when(&client, "a", "room a to move", |s| {
        s.node.as_deref() == Some(other) && s.phase == RoomPhase::Placed
    })
    .await;
    // The test's nodes advertise their loopback address.
    let other_base = format!("ws://{}/", nodes[other].addr);
    assert!(moved.endpoint.unwrap().starts_with(&other_base));
    match ann.recv_skip_presence().await {
        chatfleet_wire::frames::ServerFrame::Moved { endpoint, .. } => {
            assert!(endpoint.starts_with(&other_base), "{endpoint}")
        }
        frame => panic!("the member was not told the room moved: {frame:?}"),
    }
    // The StatefulSet makes the deleted pod anew, and the scheduler binds it.
    eventually("the deleted pod to come back", || async {
        let names = scheduled_pods(&client, "envtest-node").await;
        names.contains(&home).then_some(())
    })
    .await;
}

/// kubectl as users run it, when the assets folder has one: `kubectl apply -f crds/` and
/// `-k crds/` succeed, `kubectl get chatfleet NAME` names one fleet (the category no longer
/// swallows it), and the category lists both kinds.
#[tokio::test]
async fn kubectl_applies_the_crds_and_names_one_fleet() {
    let Some(assets) = assets() else { return };
    let kubectl = assets.join("kubectl");
    if !kubectl.exists() {
        eprintln!(
            "SKIPPED: no kubectl in KUBEBUILDER_ASSETS (envtest-assets links one when installed)"
        );
        return;
    }
    let (server, _redis) = operator_with_fleet(&assets).await;
    create_room(&server.client, "a", 2).await;
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", server.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let errors = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "kubectl {args:?}: {errors}");
        text
    };
    let crds = crds.to_string_lossy().into_owned();
    run(&["apply", "-f", &crds]);
    run(&["apply", "-k", &crds]);
    let one = run(&["-n", NS, "get", "chatfleet", "chat", "-o", "name"]);
    assert_eq!(one.trim(), "chatfleet.chatfleet.dev/chat");
    let both = run(&["-n", NS, "get", "chatfleet-all", "-o", "name"]);
    assert!(both.contains("chatfleet.chatfleet.dev/chat"), "{both}");
    assert!(both.contains("chatroom.chatfleet.dev/a"), "{both}");
    let short = run(&["-n", NS, "get", "croom", "a", "-o", "name"]);
    assert_eq!(short.trim(), "chatroom.chatfleet.dev/a");
    // The scale subresource: `kubectl scale` sets the replicas, and the status gives an HPA
    // the pods' selector.
    run(&["-n", NS, "scale", "chatfleet", "chat", "--replicas=3"]);
    let replicas = run(&[
        "-n",
        NS,
        "get",
        "chatfleet",
        "chat",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas.trim(), "3");
    let scale_path = format!("/apis/chatfleet.dev/v1alpha1/namespaces/{NS}/chatfleets/chat/scale");
    let selector = "app.kubernetes.io/name=chatnode,chatfleet.dev/fleet=chat";
    eventually("the scale subresource to show the selector", || async {
        run(&["get", "--raw", &scale_path])
            .contains(selector)
            .then_some(())
    })
    .await;
    // The shipped fleets pass the schema: the sample, and the production ones whose Redis runs
    // under Sentinel or as a Cluster (in a namespace of their own, so none merges into `chat`).
    run(&["create", "namespace", "shipped"]);
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    for fleet in [
        "samples/fleet.yaml",
        "production/sentinel/fleet.yaml",
        "production/cluster/fleet.yaml",
    ] {
        let file = manifests.join(fleet).to_string_lossy().into_owned();
        run(&["-n", "shipped", "apply", "--dry-run=server", "-f", &file]);
    }
    // The whole install passes the API server's checks: the namespace, CRDs, RBAC, operator,
    // Redis, the network policies, the samples, and a default-deny beside them.
    run(&["create", "namespace", "chatfleet"]);
    for kustomization in ["", "samples", "production/default-deny"] {
        let dir = manifests.join(kustomization).to_string_lossy().into_owned();
        run(&["apply", "--dry-run=server", "-k", &dir]);
    }
}

/// Webhooks through the real API server: the fleet's spec names a receiver and a Secret, the
/// operator queues room events in the fleet's Redis, and the chat nodes (run with the
/// environment the StatefulSet gives them) deliver those and their own member events, signed.
/// The fleet's transcript retention applies from the close.
#[tokio::test]
async fn a_fleets_webhooks_tell_the_support_tool_what_happens_to_a_room() {
    let Some(assets) = assets() else { return };
    let (_server, client, redis) = api_server_with_crds(&assets).await;
    let receiver = WebhookReceiver::start("hook-key").await;
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let bad: ChatFleet = serde_json::from_value(json!({
        "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatFleet",
        "metadata": {"name": "dry"},
        "spec": {"image": "chatfleet/chatnode:dev", "redis": {"url": "redis://r:6379"},
                 "tokenSecret": {"name": "tokens", "key": "secret"},
                 "webhooks": {"urls": ["ftp://hooks.example/x"],
                              "secretRef": {"name": "hooks", "key": "key"}}}
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let refused = fleets.create(&dry_run, &bad).await.unwrap_err();
    assert!(
        refused.to_string().contains("webhook urls must start with"),
        "{refused}"
    );

    start_operator(&client);
    // The receiver is on loopback, a private network: allowed explicitly.
    let hooks = json!({"urls": [receiver.url()], "secretRef": {"name": "hooks", "key": "key"},
                       "allowPrivateNetworks": true});
    let kept = json!({"retentionSeconds": 3600});
    create_fleet_with(
        &client,
        &redis,
        json!({"webhooks": hooks, "transcripts": kept}),
    )
    .await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let set = eventually("the fleet's StatefulSet", || async {
        sets.get("chat").await.ok()
    })
    .await;
    // The nodes run with what the StatefulSet says: the fleet's queue and its receivers.
    let env: std::collections::BTreeMap<String, String> =
        set.spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
    assert_eq!(env["CHATNODE_FLEET"], "support/chat");
    assert_eq!(env["CHATNODE_WEBHOOK_URLS"], receiver.url());
    assert_eq!(env["CHATNODE_WEBHOOK_ALLOW_PRIVATE_NETWORKS"], "true");
    let node_args = [
        "--webhook-allow-private-networks",
        "--max-node-users",
        "4",
        "--fleet",
        &env["CHATNODE_FLEET"],
        "--webhook-url",
        &env["CHATNODE_WEBHOOK_URLS"],
        "--webhook-secret",
        "hook-key",
    ];
    let mut nodes = Vec::new();
    for name in ["chat-0", "chat-1"] {
        ready_pod(&client, name).await;
        nodes.push(Node::in_fleet(&redis, name, &node_args).await);
    }

    create_room(&client, "hooked", 2).await;
    let placed = status_when(&client, "hooked", "room placed", |s| {
        s.phase == RoomPhase::Placed
    })
    .await;
    let home = placed.node.clone().unwrap();
    let ann_token = testkit::token("support/hooked", "ann", Role::Customer);
    let endpoint = placed.endpoint.unwrap();
    let (mut ann, _) = testkit::Client::join(&format!("{endpoint}?token={ann_token}")).await;
    ann.say("hello").await;
    ann.message().await;
    receiver
        .wait_for("ann's join", |d| d.event.body.kind() == "member.joined")
        .await;

    // Its node dies: the room moves, and the tool hears where to.
    let index = if home == "chat-0" { 0 } else { 1 };
    nodes[index].signal("KILL");
    set_ready(&client, &home, false).await;
    let moved = receiver
        .wait_for("room.moved", |d| d.event.body.kind() == "room.moved")
        .await;
    let EventBody::RoomMoved { from, to, .. } = &moved.event.body else {
        unreachable!()
    };
    assert_eq!(from, &home);
    assert_ne!(to, &home);

    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    rooms
        .delete("hooked", &DeleteParams::default())
        .await
        .unwrap();
    let closed = receiver
        .wait_for("room.closed", |d| d.event.body.kind() == "room.closed")
        .await;
    let EventBody::RoomClosed { transcript, .. } = &closed.event.body else {
        unreachable!()
    };
    // The link names this room's incarnation (its UID), so it keeps pointing at this
    // conversation if the name is used again.
    let incarnation = closed.event.incarnation.clone().expect("the room's UID");
    assert_eq!(
        transcript,
        &format!("/v1/rooms/support/hooked/transcript?incarnation={incarnation}")
    );
    // The fleet's transcript retention holds from the close.
    let key = RoomKeys::new(&"support/hooked".parse().unwrap()).transcript_of(&incarnation);
    let ttl: i64 = redis.conn().await.ttl(&key).await.unwrap();
    assert!((3000..=3600).contains(&ttl), "transcript TTL {ttl}");

    let accepted = receiver.accepted();
    // Deliveries run concurrently, so receivers order by `ts`, as this does.
    let mut room_events: Vec<(u64, &str)> = accepted
        .iter()
        .map(|d| (d.event.ts, d.event.body.kind()))
        .filter(|(_, k)| k.starts_with("room."))
        .collect();
    room_events.sort();
    let order: Vec<&str> = room_events.iter().map(|(_, k)| *k).collect();
    let mut kinds = order.clone();
    kinds.sort();
    assert_eq!(
        kinds,
        ["room.closed", "room.moved", "room.opened", "room.placed"]
    );
    assert_eq!(
        &order[2..],
        ["room.moved", "room.closed"],
        "{room_events:?}"
    );
    let placed_event = accepted
        .iter()
        .find(|d| d.event.body.kind() == "room.placed")
        .unwrap();
    assert!(
        matches!(&placed_event.event.body, EventBody::RoomPlaced { node, .. } if node == &home)
    );
    assert!(
        receiver.deliveries().iter().all(|d| d.signed),
        "signed with the Secret's key"
    );
    let mut ids: Vec<&str> = accepted.iter().map(|d| d.event.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted.len(), "no event twice");
    assert!(
        accepted
            .iter()
            .all(|d| d.event.room.to_string() == "support/hooked")
    );
}
