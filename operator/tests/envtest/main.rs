//! envtest-style tests: the operator in-process against a real `kube-apiserver` and `etcd`
//! (from `KUBEBUILDER_ASSETS`), a real Redis and real chat node processes running under the
//! pod names. Without `KUBEBUILDER_ASSETS` they skip with a message, as controller-runtime's
//! envtest does. Get the binaries with `setup-envtest use -p path` and export the folder.

mod apiserver;

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
    let (pods, pod_task) = controllers::pod_cache(client);
    tokio::spawn(pod_task);
    let metrics = Arc::new(Metrics::new());
    let (fleets, fleet_task) = controllers::fleet_cache(client);
    tokio::spawn(fleet_task);
    let (rooms, room_task) = controllers::room_cache(client);
    tokio::spawn(room_task);
    let ctx = Context::new(
        client.clone(),
        pods,
        metrics.clone(),
        settings,
        Some("envtest".into()),
    )
    .with_fleet_cache(fleets)
    .with_room_cache(rooms);
    tokio::spawn(controllers::run(Arc::new(ctx)));
    metrics
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
    let (rooms, room_task) = controllers::room_cache(&client);
    tokio::spawn(room_task);
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
async fn big_fleet_pods(client: &kube::Client, redis: &Redis) {
    for n in 0..10 {
        let name = format!("chat-{n}");
        ready_pod(client, &name).await;
        redis
            .write_report(&testkit::load_report(&name, 0, 3000, 0.0))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Creates ChatRooms `r0`..`r{count}` (2 expected members each) from `clients` concurrent
/// clients, and returns when each was created.
async fn create_rooms_concurrently(
    client: kube::Client,
    count: usize,
    clients: usize,
) -> std::collections::HashMap<String, std::time::Instant> {
    let creators: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut created = Vec::new();
                for n in (c..count).step_by(clients) {
                    let name = format!("r{n}");
                    create_room(&client, &name, 2).await;
                    created.push((name, std::time::Instant::now()));
                }
                created
            })
        })
        .collect();
    let mut created_at = std::collections::HashMap::new();
    for creator in creators {
        created_at.extend(creator.await.unwrap());
    }
    created_at
}

/// The operator's own pace, without the API server's creation pace in the way: 1,000
/// ChatRooms created first, then the operator started, timed until every one is Placed.
///
///     KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture placement_backlog
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn placement_backlog() {
    const ROOMS: usize = 1000;
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    big_fleet_pods(&client, &redis).await;
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    // The API server's own pace, with no operator writing: the ceiling of any placement rate.
    let (creating, cpu_creating) = (std::time::Instant::now(), server.cpu_seconds());
    create_rooms_concurrently(client.clone(), ROOMS, 16).await;
    let created_in = creating.elapsed().as_secs_f64();
    println!(
        "created {ROOMS} rooms from 16 clients with no operator in {created_in:.2} s: {:.0} rooms/s; API server and etcd CPU per create {:.2} ms",
        ROOMS as f64 / created_in,
        (server.cpu_seconds() - cpu_creating) * 1000.0 / ROOMS as f64
    );

    let writes_before = server.writes().await;
    let cpu_before = apiserver::cpu_seconds(std::process::id());
    let started = std::time::Instant::now();
    start_operator_with(&client, Settings::default());
    let placed = eventually("every room placed", || async {
        let list = rooms.list(&Default::default()).await.ok()?;
        let placed = list
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == RoomPhase::Placed)
            })
            .count();
        (placed == ROOMS).then_some(started.elapsed())
    })
    .await;
    println!(
        "a backlog of {ROOMS} rooms placed in {:.2} s after the operator started: {:.0} rooms/s",
        placed.as_secs_f64(),
        ROOMS as f64 / placed.as_secs_f64()
    );
    println!(
        "operator CPU per placement (this process: the operator and the test's polling): {:.2} ms",
        (apiserver::cpu_seconds(std::process::id()) - cpu_before) * 1000.0 / ROOMS as f64
    );
    println!(
        "API writes per placement:\n{}",
        apiserver::writes_between(&writes_before, &server.writes().await, ROOMS)
    );
}

/// Placement throughput against the real API server: 1,000 ChatRooms created by 16 concurrent
/// clients on a fleet of 10 nodes of 300 seats, then deleted the same way. A benchmark, not a
/// test (it asserts only that every room was placed and deleted):
///
///     KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture placement_throughput
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn placement_throughput() {
    const ROOMS: usize = 1000;
    const CLIENTS: usize = 16;
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    // The operator's own defaults, as in a cluster.
    let metrics = start_operator_with(&client, Settings::default());
    create_fleet(&client, &redis).await;
    big_fleet_pods(&client, &redis).await;

    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let writes_before = server.writes().await;
    let cpu_before = (
        server.cpu_seconds(),
        apiserver::cpu_seconds(std::process::id()),
    );
    let started = std::time::Instant::now();
    let creating = tokio::spawn(create_rooms_concurrently(client.clone(), ROOMS, CLIENTS));
    // Watch the rooms' statuses and note when each was first Placed.
    let mut placed_at = std::collections::HashMap::new();
    let watch = kube::runtime::watcher(rooms.clone(), Default::default());
    let mut watch = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watch));
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while placed_at.len() < ROOMS {
        assert!(
            std::time::Instant::now() < deadline,
            "rooms were not all placed"
        );
        use futures_util::StreamExt;
        let Some(Ok(room)) = watch.next().await else {
            continue;
        };
        if room
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RoomPhase::Placed)
        {
            placed_at
                .entry(room.metadata.name.clone().unwrap())
                .or_insert_with(std::time::Instant::now);
        }
    }
    let all_placed = started.elapsed();
    let created_at = creating.await.unwrap();
    let last_created = created_at.values().max().copied().unwrap();
    println!(
        "created {ROOMS} rooms from {CLIENTS} clients in {:.2} s",
        last_created.duration_since(started).as_secs_f64()
    );
    let mut latencies: Vec<Duration> = placed_at
        .iter()
        .map(|(name, at)| at.saturating_duration_since(created_at[name]))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "placed {ROOMS} rooms from {CLIENTS} clients in {:.2} s: {:.0} rooms/s; created->Placed p50 {:?} p99 {:?} max {:?}",
        all_placed.as_secs_f64(),
        ROOMS as f64 / all_placed.as_secs_f64(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    let writes_placed = server.writes().await;
    let cpu_placed = (
        server.cpu_seconds(),
        apiserver::cpu_seconds(std::process::id()),
    );
    println!(
        "CPU per room, created and placed: API server and etcd {:.2} ms; this process (operator, clients, watch) {:.2} ms",
        (cpu_placed.0 - cpu_before.0) * 1000.0 / ROOMS as f64,
        (cpu_placed.1 - cpu_before.1) * 1000.0 / ROOMS as f64,
    );
    println!(
        "API writes per room, created and placed:\n{}",
        apiserver::writes_between(&writes_before, &writes_placed, ROOMS)
    );

    let started = std::time::Instant::now();
    let deleters: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let rooms = rooms.clone();
            tokio::spawn(async move {
                for n in (c..ROOMS).step_by(CLIENTS) {
                    rooms
                        .delete(&format!("r{n}"), &DeleteParams::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for deleter in deleters {
        deleter.await.unwrap();
    }
    eventually("every room to be gone", || async {
        let left = rooms.list(&Default::default()).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
    let deleted = started.elapsed();
    let errors: u64 = metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("chatfleet_operator_reconcile_errors_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    println!(
        "deleted {ROOMS} rooms in {:.2} s: {:.0} rooms/s; reconcile errors: {}",
        deleted.as_secs_f64(),
        ROOMS as f64 / deleted.as_secs_f64(),
        errors
    );
    println!(
        "API writes per room, deleted:\n{}",
        apiserver::writes_between(&writes_placed, &server.writes().await, ROOMS)
    );
}

/// Redis's CPU seconds and the commands it served (`INFO`s aside), so far.
async fn redis_cpu_and_calls(redis: &Redis) -> (f64, u64) {
    let mut conn = redis.conn().await;
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .unwrap();
    let field = |name: &str| -> f64 {
        cpu.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let calls = redis.command_calls().await;
    (field("used_cpu_sys") + field("used_cpu_user"), calls)
}

/// The operator at rest with many rooms placed: `CHATFLEET_BENCH_ROOMS` ChatRooms (5,000 by
/// default) on a fleet of 3 nodes, created by 16 clients at the API server's pace; once every
/// one is Placed and things settle, 30 s of nothing happening, measured: Redis CPU and calls,
/// the test process's RSS per room (the operator, its caches and the test's own watch), API
/// writes. A benchmark, not a test:
///
///     CHATFLEET_BENCH_ROOMS=5000 KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture rooms_at_rest
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn rooms_at_rest() {
    let rooms_wanted: usize = std::env::var("CHATFLEET_BENCH_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    let nodes = ["chat-0", "chat-1", "chat-2"];
    for name in nodes {
        ready_pod(&client, name).await;
    }
    // The nodes' heartbeats: reports kept fresh for as long as the benchmark runs.
    let reports = redis.state().reports.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            for name in nodes {
                let report = testkit::load_report(name, 0, 100_000, 0.0);
                let _ = reports.write(&report, &[], Duration::from_secs(30)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    // The operator's binary, alone in its process, so its CPU and memory are its own.
    let operator = OperatorProcess::start(&server, "bench");
    let pid = operator.0.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_empty = chatfleet_load::procfs::sample(pid).unwrap().rss_kib;
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let started = std::time::Instant::now();
    create_rooms_concurrently(client.clone(), rooms_wanted, 16).await;
    println!(
        "created {rooms_wanted} rooms in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eventually_within("every room placed", Duration::from_secs(1800), || async {
        let placed = rooms
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == RoomPhase::Placed)
            })
            .count();
        (placed == rooms_wanted).then_some(())
    })
    .await;
    println!(
        "all placed {:.1} s after the first create",
        started.elapsed().as_secs_f64()
    );
    // Settle: the last placements' writes and the first resyncs.
    tokio::time::sleep(Duration::from_secs(10)).await;

    const WINDOW: Duration = Duration::from_secs(30);
    let (cpu_before, calls_before) = redis_cpu_and_calls(&redis).await;
    let writes_before = server.writes().await;
    let process_before = chatfleet_load::procfs::sample(pid).unwrap();
    tokio::time::sleep(WINDOW).await;
    let (cpu_after, calls_after) = redis_cpu_and_calls(&redis).await;
    let process_after = chatfleet_load::procfs::sample(pid).unwrap();
    let seconds = WINDOW.as_secs_f64();
    println!(
        "at rest with {rooms_wanted} placed rooms: Redis CPU {:.2} % of a core, {:.0} calls/s (the benchmark's own heartbeat included); \
         operator CPU {:.1} % of a core; operator RSS {} KiB above its empty start, {:.2} KiB per room",
        (cpu_after - cpu_before) * 100.0 / seconds,
        (calls_after - calls_before) as f64 / seconds,
        (process_after.cpu_seconds - process_before.cpu_seconds) * 100.0 / seconds,
        process_after.rss_kib.saturating_sub(rss_empty),
        process_after.rss_kib.saturating_sub(rss_empty) as f64 / rooms_wanted as f64,
    );
    println!(
        "API writes at rest:\n{}",
        apiserver::writes_between(&writes_before, &server.writes().await, 1)
    );
    heartbeat.abort();
}

/// An operator binary running as `identity` against `server`, killed when dropped.
struct OperatorProcess(std::process::Child);

impl OperatorProcess {
    fn start(server: &ApiServer, identity: &str) -> Self {
        // target/<profile>/deps/<test> → target/<profile>/operator
        let binary = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|deps| deps.parent())
            .map(|profile| profile.join("operator"))
            .filter(|binary| binary.exists())
            .expect("build the operator binary first: cargo build [--release] -p operator");
        let child = std::process::Command::new(binary)
            .env("KUBECONFIG", &server.kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{}", testkit::free_port())])
            .args(["--lease-namespace", NS, "--identity", identity])
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var_os("CHATFLEET_TEST_LOGS").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .unwrap();
        Self(child)
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Leader failover, with two operator processes on the real API server: the time from the
/// leader's death (SIGKILL), or its stop (SIGTERM), to the next room placed by the other. A
/// benchmark, not a test:
///
///     cargo build --release -p operator && KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture leader_failover
#[tokio::test]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn leader_failover() {
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    for name in ["chat-0", "chat-1"] {
        ready_pod(&client, name).await;
        redis
            .write_report(&testkit::load_report(name, 0, 3000, 0.0))
            .await;
    }
    let mut operators = std::collections::HashMap::new();
    for identity in ["a", "b"] {
        operators.insert(
            identity.to_owned(),
            OperatorProcess::start(&server, identity),
        );
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    let holder = || async {
        leases
            .get_opt("chatfleet-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    let placed = |name: &'static str| {
        let client = client.clone();
        async move {
            create_room(&client, name, 2).await;
            status_when(&client, name, "the room placed", |s| {
                s.phase == RoomPhase::Placed
            })
            .await;
        }
    };
    placed("warm-up").await;

    for (signal, room) in [("KILL", "after-kill"), ("TERM", "after-term")] {
        let leader = eventually("a leader", &holder).await;
        let stopped = std::time::Instant::now();
        operators[&leader].signal(signal);
        placed(room).await;
        let new_leader = holder().await.unwrap_or_default();
        println!(
            "SIG{signal} to leader {leader}: the next room was placed {:.2} s later, by {new_leader}",
            stopped.elapsed().as_secs_f64()
        );
        assert_ne!(new_leader, leader);
        // The stopped one comes back as a standby.
        operators.insert(leader.clone(), OperatorProcess::start(&server, &leader));
    }
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

/// The fleet's `spec.replicas` and its autoscaler's view, read from the API server.
async fn fleet_when(
    client: &kube::Client,
    what: &str,
    done: impl Fn(&ChatFleet) -> bool,
) -> ChatFleet {
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    eventually(what, || async {
        let fleet = fleets.get("chat").await.ok()?;
        done(&fleet).then_some(fleet)
    })
    .await
}

/// Autoscaling against the real API server, with real nodes reporting their seats: a fleet
/// short of its buffer grows, and one with seats to spare drains its highest ordinal (the node
/// hears the drain and reports it), then shrinks; Events say so; min holds.
#[tokio::test]
async fn the_autoscaler_keeps_a_buffer_of_free_seats() {
    let Some(assets) = assets() else { return };
    let (_server, client, redis) = api_server_with_crds(&assets).await;
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let with_autoscaling = |autoscaling: serde_json::Value| -> ChatFleet {
        serde_json::from_value(json!({
            "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatFleet",
            "metadata": {"name": "dry"},
            "spec": {"image": "chatfleet/chatnode:dev", "redis": {"url": "redis://r:6379"},
                     "tokenSecret": {"name": "tokens", "key": "secret"},
                     "autoscaling": autoscaling}
        }))
        .unwrap()
    };
    for (bad, message) in [
        (
            json!({"minReplicas": 3, "maxReplicas": 2, "bufferSeats": 1}),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            json!({"maxReplicas": 2, "bufferSeats": "lots"}),
            "bufferSeats must be a count or a percentage",
        ),
        (
            json!({"maxReplicas": 2, "bufferSeats": "100%"}),
            "bufferSeats must be a count or a percentage below 100%",
        ),
    ] {
        let refused = fleets
            .create(&dry_run, &with_autoscaling(bad))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains(message), "{refused}");
    }
    fleets
        .create(
            &dry_run,
            &with_autoscaling(json!({"maxReplicas": 4, "bufferSeats": "25%"})),
        )
        .await
        .unwrap();

    start_operator(&client);
    let autoscaling =
        json!({"minReplicas": 1, "maxReplicas": 3, "bufferSeats": 3, "cooldownSeconds": 1});
    create_fleet_with(
        &client,
        &redis,
        json!({"replicas": 1, "autoscaling": autoscaling}),
    )
    .await;
    let first = node_pod(&client, &redis, "chat-0").await;

    // Two of chat-0's four seats taken: 2 free, 3 wanted. The fleet grows to two nodes.
    let room = "support/busy";
    let mut users = Vec::new();
    for user in ["ann", "bob"] {
        users.push(testkit::Client::join(&first.ws_as(room, user, "")).await.0);
    }
    // The replicas change first, then the status that records the decision.
    let grown = fleet_when(&client, "the fleet to grow", |f| {
        let scaling = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        f.spec.replicas == 2 && scaling.is_some_and(|a| a.desired_replicas == 2)
    })
    .await;
    let scaling = grown.status.unwrap().autoscaling.unwrap();
    assert!(scaling.last_scale_time.is_some());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually("the StatefulSet to follow", || async {
        (sets.get("chat").await.ok()?.spec.replicas == Some(2)).then_some(())
    })
    .await;
    let second = node_pod(&client, &redis, "chat-1").await;

    // 6 free with two nodes: without chat-1 only 2 would be, so it stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady = fleets.get("chat").await.unwrap();
    assert_eq!(steady.spec.replicas, 2);
    assert!(
        steady
            .status
            .unwrap()
            .autoscaling
            .unwrap()
            .draining_node
            .is_none()
    );

    // chat-0's users leave and one user sits on chat-1: 7 free, 3 without chat-1. It is
    // drained (and says so), but it is busy, so it stays for now.
    let dee = testkit::Client::join(&second.ws_as("support/calm", "dee", ""))
        .await
        .0;
    for user in users {
        user.leave().await;
    }
    let draining = |wanted: bool| {
        let redis = &redis;
        async move {
            eventually(&format!("chat-1 to report draining: {wanted}"), || async {
                let key = chatfleet_wire::keys::node_report("chat-1");
                let json: Option<String> = redis.conn().await.get(&key).await.ok()?;
                let report: chatfleet_wire::load::LoadReport = serde_json::from_str(&json?).ok()?;
                (report.draining == wanted).then_some(())
            })
            .await
        }
    };
    draining(true).await;

    // A surge on chat-0 while chat-1 drains: 2 free without chat-1, 3 wanted. The drain is
    // called off, and chat-1 takes members again.
    let mut surge = Vec::new();
    for user in ["eve", "fay"] {
        surge.push(testkit::Client::join(&first.ws_as(room, user, "")).await.0);
    }
    draining(false).await;
    let kept = fleet_when(&client, "the drain to be called off", |f| {
        let scaling = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        scaling.is_some_and(|a| a.draining_node.is_none())
    })
    .await;
    assert_eq!(kept.spec.replicas, 2);

    // Everyone leaves: 8 free, 4 without chat-1. It is drained again, then removed.
    for user in surge {
        user.leave().await;
    }
    dee.leave().await;
    draining(true).await;
    let shrunk = fleet_when(&client, "the fleet to shrink", |f| {
        let drained = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        f.spec.replicas == 1 && drained.is_some_and(|a| a.draining_node.is_none())
    })
    .await;
    let status = shrunk.status.unwrap();
    assert_eq!(status.autoscaling.unwrap().desired_replicas, 1);
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/name=chatnode,chatfleet.dev/fleet=chat")
    );
    drop(second);

    // Each decision is an Event on the fleet.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let reasons = eventually("the scaling Events", || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ChatFleet"))
            .filter_map(|e| e.reason)
            .collect();
        let all = ["ScaledUp", "Draining", "DrainCalledOff", "ScaledDown"];
        all.iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(reasons)
    })
    .await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "DrainCalledOff").count(),
        1,
        "one drain called off: {reasons:?}"
    );

    // At minReplicas it stays, however idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleets.get("chat").await.unwrap().spec.replicas, 1);
}
