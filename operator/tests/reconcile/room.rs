//! The ChatRoom reconciler: placement, overflow, rescheduling, the finalizer, a missing fleet.

use std::sync::Arc;
use std::time::Duration;

use chatfleet_wire::keys::{self, RoomKeys};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use operator::crd::{ChatFleet, ChatRoom, ChatRoomSpec, ChatRoomStatus, RoomPhase};
use operator::reconcile::room::{FINALIZER, reconcile};
use redis::AsyncCommands;
use serde_json::{Value, json};
use testkit::Redis;

use crate::mock::{
    self, Call, MockApi, Reply, context, fleet_store, meta, not_found, pod, pod_store,
};
use operator::context::Context;

const ROOMS: &str = "/apis/chatfleet.dev/v1alpha1/namespaces/support/chatrooms/case-1";
const FLEET: &str = "/apis/chatfleet.dev/v1alpha1/namespaces/support/chatfleets/chat";

fn fleet(redis: &Redis) -> ChatFleet {
    mock::fleet(&redis.url())
}

fn room(status: Option<ChatRoomStatus>) -> ChatRoom {
    let mut metadata = meta("case-1");
    metadata.finalizers = Some(vec![FINALIZER.into()]);
    ChatRoom {
        metadata,
        spec: ChatRoomSpec {
            fleet: "chat".into(),
            expected_members: 3,
            max_members: Some(5),
            purpose: None,
            ttl_seconds_after_empty: None,
        },
        status,
    }
}

fn placed_on(node: &str) -> Option<ChatRoomStatus> {
    Some(ChatRoomStatus {
        phase: RoomPhase::Placed,
        node: Some(node.into()),
        endpoint: Some(format!("ws://{node}:8080/v1/rooms/support/case-1/ws")),
        ..ChatRoomStatus::default()
    })
}

/// A node's heartbeat, as the chat node writes it.
async fn report(redis: &Redis, node: &str, users: u32, msg_rate: f64) {
    redis
        .write_report(&testkit::load_report(node, users, 10, msg_rate))
        .await;
}

/// An API server that knows the fleet (or not) and accepts every write.
fn api_server(fleet: Option<ChatFleet>, room: ChatRoom) -> impl Fn(&Call) -> Reply {
    move |call| match (&call.method, call.path()) {
        (&Method::GET, FLEET) => match &fleet {
            Some(fleet) => (StatusCode::OK, serde_json::to_value(fleet).unwrap()),
            None => not_found(),
        },
        (&Method::POST, path) if path.ends_with("/events") => {
            (StatusCode::CREATED, call.body.clone())
        }
        _ => (StatusCode::OK, serde_json::to_value(&room).unwrap()),
    }
}

/// The statuses the reconciler wrote, in order.
fn statuses(api: &MockApi) -> Vec<Value> {
    api.find(Method::PATCH, &format!("{ROOMS}/status"))
        .into_iter()
        .map(|c| c.body["status"].clone())
        .collect()
}

async fn reserved(redis: &Redis, node: &str) -> Option<u32> {
    redis
        .conn()
        .await
        .hget(keys::node_reserved(node), "support/case-1")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_room_goes_to_the_node_with_the_most_free_seats() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 6, 0.0).await;
    report(&redis, "chat-1", 1, 9.0).await;
    report(&redis, "chat-2", 0, 0.0).await; // its pod is not Ready
    let room = room(None);
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let pods = vec![
        pod("chat", "chat-0", true),
        pod("chat", "chat-1", true),
        pod("chat", "chat-2", false),
    ];
    let ctx = context(client, pods);

    reconcile(Arc::new(room), ctx.clone()).await.unwrap();

    let status = statuses(&api).pop().expect("a status patch");
    assert_eq!(status["phase"], "Placed");
    assert_eq!(status["node"], "chat-1");
    assert_eq!(
        status["endpoint"],
        "ws://chat-1.chat.support.svc:8080/v1/rooms/support/case-1/ws"
    );
    assert_eq!(status["conditions"][0]["type"], "Placed");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(reserved(&redis, "chat-1").await, Some(3));
    let max: Option<u32> = redis
        .conn()
        .await
        .hget(
            RoomKeys::new(&"support/case-1".parse().unwrap()).meta,
            "max_members",
        )
        .await
        .unwrap();
    assert_eq!(max, Some(5), "the nodes must enforce the room's maxMembers");
    assert!(
        api.event_reasons().is_empty(),
        "a routine placement is recorded by its condition, not an Event"
    );
    assert!(
        api.find(Method::PATCH, ROOMS).is_empty(),
        "the room had its finalizer already"
    );
}

/// A room without the finalizer gets it and its placement in the same pass: the controller no
/// longer waits for the watch to bring the finalizer back (nor is woken by its own writes).
#[tokio::test]
async fn a_new_room_gets_its_finalizer_and_its_node_in_one_pass() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    let mut room = room(None);
    room.metadata.finalizers = None;
    room.metadata.resource_version = Some("41".into());
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    reconcile(Arc::new(room), ctx).await.unwrap();

    let calls = api.calls();
    let finalizer = calls
        .iter()
        .position(|c| c.method == Method::PATCH && c.path() == ROOMS)
        .expect("the finalizer is added");
    assert_eq!(
        calls[finalizer].body["metadata"],
        json!({ "finalizers": [FINALIZER], "resourceVersion": "41" }),
        "added on the version the reconciler read, so a concurrent edit conflicts"
    );
    let placed = calls
        .iter()
        .position(|c| c.method == Method::PATCH && c.path() == format!("{ROOMS}/status"))
        .expect("the placement is written in the same pass");
    assert!(
        finalizer < placed,
        "seats are held only once the finalizer is on"
    );
    assert_eq!(calls[placed].body["status"]["node"], "chat-0");
    assert_eq!(reserved(&redis, "chat-0").await, Some(3));
}

#[tokio::test]
async fn when_every_node_is_full_the_quietest_takes_the_room() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 9, 4.0).await;
    report(&redis, "chat-1", 10, 0.5).await;
    report(&redis, "chat-2", 8, 2.0).await;
    let room = room(None);
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let pods = vec![
        pod("chat", "chat-0", true),
        pod("chat", "chat-1", true),
        pod("chat", "chat-2", true),
    ];
    let ctx = context(client, pods);

    reconcile(Arc::new(room), ctx.clone()).await.unwrap();

    let status = statuses(&api).pop().unwrap();
    assert_eq!(status["phase"], "Overflow");
    assert_eq!(status["node"], "chat-1");
    let overflow = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Overflow")
        .unwrap();
    assert_eq!(overflow["status"], "True");
    assert_eq!(reserved(&redis, "chat-1").await, Some(3));
    assert_eq!(api.event_reasons(), ["Overflow", "FleetFull"]);
    assert!(
        ctx.metrics
            .encode()
            .contains("chatfleet_operator_overflows_total 1")
    );
}

#[tokio::test]
async fn a_room_on_a_dead_node_moves_and_its_members_are_told() {
    let redis = Redis::start().await;
    // chat-0's report expired: no key. chat-1 is alive.
    report(&redis, "chat-1", 0, 0.0).await;
    let _: () = redis
        .conn()
        .await
        .hset(keys::node_reserved("chat-0"), "support/case-1", 3)
        .await
        .unwrap();
    let room = room(placed_on("chat-0"));
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(
        client,
        vec![pod("chat", "chat-0", true), pod("chat", "chat-1", true)],
    );
    let mut live = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    live.subscribe(RoomKeys::new(&"support/case-1".parse().unwrap()).live)
        .await
        .unwrap();

    reconcile(Arc::new(room), ctx.clone()).await.unwrap();

    let phases: Vec<Value> = statuses(&api).iter().map(|s| s["phase"].clone()).collect();
    assert_eq!(phases, [json!("Rescheduling"), json!("Placed")]);
    let status = statuses(&api).pop().unwrap();
    assert_eq!(status["node"], "chat-1");
    assert_eq!(status["reason"], "moved from chat-0");
    let frame = tokio::time::timeout(Duration::from_secs(5), live.on_message().next())
        .await
        .expect("a moved frame on the room's live channel")
        .unwrap();
    let frame: Value = serde_json::from_slice(frame.get_payload_bytes()).unwrap();
    assert_eq!(frame["type"], "moved");
    assert_eq!(frame["endpoint"], status["endpoint"]);
    assert_eq!(
        reserved(&redis, "chat-0").await,
        None,
        "the old seats are released"
    );
    assert_eq!(reserved(&redis, "chat-1").await, Some(3));
    assert_eq!(api.event_reasons(), ["Rescheduled"]);
}

#[tokio::test]
async fn a_room_on_a_healthy_node_stays_and_reports_its_members() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 9, 0.0).await; // full now, but the room is already there
    report(&redis, "chat-1", 0, 0.0).await;
    let load = r#"{"members":2,"msg_rate":1.234}"#;
    let _: () = redis
        .conn()
        .await
        .hset(keys::node_rooms("chat-0"), "support/case-1", load)
        .await
        .unwrap();
    let room = room(placed_on("chat-0"));
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(
        client,
        vec![pod("chat", "chat-0", true), pod("chat", "chat-1", true)],
    );

    reconcile(Arc::new(room), ctx).await.unwrap();

    let status = statuses(&api).pop().unwrap();
    assert_eq!(status["node"], "chat-0");
    assert_eq!(status["phase"], "Placed");
    assert_eq!(status["members"], 2);
    assert_eq!(status["messageRate"], 1.23);
    assert_eq!(
        status["podUid"], "uid-chat-0",
        "a room learns its pod's UID"
    );
    assert!(api.event_reasons().is_empty(), "staying is not news");
}

/// A StatefulSet makes a deleted pod anew under its name at once, while the deleted pod's
/// process may still report for a moment: the room has lost its node all the same.
#[tokio::test]
async fn a_room_whose_pod_was_made_anew_moves() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 1, 0.0).await;
    report(&redis, "chat-1", 0, 0.0).await;
    let mut status = placed_on("chat-0").unwrap();
    status.pod_uid = Some("uid-of-the-deleted-pod".into());
    let room = room(Some(status));
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(
        client,
        vec![pod("chat", "chat-0", false), pod("chat", "chat-1", true)],
    );

    reconcile(Arc::new(room), ctx).await.unwrap();

    let status = statuses(&api).pop().unwrap();
    assert_eq!(status["node"], "chat-1");
    assert_eq!(status["podUid"], "uid-chat-1");
    assert_eq!(status["reason"], "moved from chat-0");
}

#[tokio::test]
async fn deleting_a_room_closes_it_releases_its_seats_and_lets_it_go() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 1, 0.0).await;
    let id = "support/case-1".parse().unwrap();
    let room_keys = RoomKeys::new(&id);
    let _: () = redis
        .conn()
        .await
        .hset(&room_keys.meta, "max_members", 5)
        .await
        .unwrap();
    let _: () = redis
        .conn()
        .await
        .hset(keys::node_reserved("chat-0"), "support/case-1", 3)
        .await
        .unwrap();
    let mut room = room(placed_on("chat-0"));
    room.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);
    let mut live = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    live.subscribe(&room_keys.live).await.unwrap();

    reconcile(Arc::new(room), ctx).await.unwrap();

    let frame = tokio::time::timeout(Duration::from_secs(5), live.on_message().next())
        .await
        .expect("a closed frame")
        .unwrap();
    let frame: Value = serde_json::from_slice(frame.get_payload_bytes()).unwrap();
    assert_eq!(frame["type"], "closed");
    let mut conn = redis.conn().await;
    assert!(
        conn.exists::<_, bool>(&room_keys.closed).await.unwrap(),
        "a tombstone stays"
    );
    assert!(
        !conn.exists::<_, bool>(&room_keys.meta).await.unwrap(),
        "history is gone"
    );
    assert_eq!(reserved(&redis, "chat-0").await, None);
    let finalizer_patch = api.find(Method::PATCH, ROOMS);
    assert_eq!(finalizer_patch.len(), 1, "{:?}", api.calls());
    assert_eq!(
        finalizer_patch[0].body["metadata"]["finalizers"],
        json!([]),
        "the finalizer is removed: {}",
        finalizer_patch[0].body
    );
    assert!(
        statuses(&api).is_empty(),
        "a cleanup that succeeds writes no status to an object about to go"
    );
    assert_eq!(api.event_reasons(), ["Closed"]);
}

#[tokio::test]
async fn a_room_of_a_missing_fleet_waits_with_a_reason() {
    let redis = Redis::start().await;
    let room = room(placed_on("chat-0"));
    let (client, api) = MockApi::start(api_server(None, room.clone()));
    let ctx = context(client, vec![]);

    reconcile(Arc::new(room), ctx).await.unwrap();

    let status = statuses(&api).pop().unwrap();
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["reason"], "fleet chat does not exist");
    assert_eq!(status["conditions"][0]["reason"], "FleetNotFound");
    // A merge patch keeps what it leaves out: the old placement must be cleared with nulls.
    assert_eq!(status["node"], Value::Null);
    assert_eq!(status["endpoint"], Value::Null);
    assert!(status.as_object().unwrap().contains_key("node"));
    assert_eq!(api.event_reasons(), ["FleetNotFound"]);
    drop(redis);
}

#[tokio::test]
async fn status_patches_are_conditional_on_the_rooms_resource_version() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    let room = room(None);
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    reconcile(Arc::new(room), ctx).await.unwrap();

    let patch = api
        .find(Method::PATCH, &format!("{ROOMS}/status"))
        .pop()
        .unwrap();
    assert_eq!(patch.body["metadata"]["resourceVersion"], "1");
}

#[tokio::test]
async fn a_stale_placement_gives_its_seats_back() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    let room = room(None);
    let answer = serde_json::to_value(&room).unwrap();
    let fleet = serde_json::to_value(fleet(&redis)).unwrap();
    // Someone else changed the room since our cache saw it: the status patch conflicts.
    let (client, _api) = MockApi::start(move |call| match (&call.method, call.path()) {
        (&Method::GET, FLEET) => (StatusCode::OK, fleet.clone()),
        (&Method::PATCH, path) if path.ends_with("/status") => (
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
        ),
        _ => (StatusCode::OK, answer.clone()),
    });
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    let error = reconcile(Arc::new(room), ctx).await.unwrap_err();

    assert!(error.to_string().contains("modified"), "{error}");
    assert_eq!(
        reserved(&redis, "chat-0").await,
        None,
        "no seats held for an unrecorded placement"
    );
}

#[tokio::test]
async fn a_room_whose_node_recovers_is_placed_again() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    let mut status = placed_on("chat-0").unwrap();
    status.phase = RoomPhase::Rescheduling;
    let room = room(Some(status));
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    reconcile(Arc::new(room), ctx).await.unwrap();

    let status = statuses(&api).pop().unwrap();
    assert_eq!(status["phase"], "Placed");
    assert_eq!(status["node"], "chat-0");
}

#[tokio::test]
async fn an_empty_room_past_its_ttl_deletes_itself_unless_members_remain_elsewhere() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    report(&redis, "chat-1", 0, 0.0).await;
    let mut status = placed_on("chat-0").unwrap();
    status.empty_since = Some("2026-01-01T00:00:00Z".into());
    let mut room = room(Some(status));
    room.spec.ttl_seconds_after_empty = Some(60);
    let pods = || vec![pod("chat", "chat-0", true), pod("chat", "chat-1", true)];

    // A member is still connected to chat-1 (say, from before a move): the room stays.
    let _: () = redis
        .conn()
        .await
        .hset(
            keys::node_rooms("chat-1"),
            "support/case-1",
            r#"{"members":1,"msg_rate":0}"#,
        )
        .await
        .unwrap();
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    reconcile(Arc::new(room.clone()), context(client, pods()))
        .await
        .unwrap();
    assert!(api.find(Method::DELETE, ROOMS).is_empty());

    // Nobody anywhere: the room deletes itself.
    let _: () = redis
        .conn()
        .await
        .del(keys::node_rooms("chat-1"))
        .await
        .unwrap();
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    reconcile(Arc::new(room), context(client, pods()))
        .await
        .unwrap();
    assert_eq!(api.find(Method::DELETE, ROOMS).len(), 1);
}

#[tokio::test]
async fn a_new_room_may_reuse_the_name_of_a_deleted_one() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    let closed = RoomKeys::new(&"support/case-1".parse().unwrap()).closed;
    let _: () = redis.conn().await.set(&closed, 1).await.unwrap();
    let room = room(None);
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    reconcile(Arc::new(room), ctx).await.unwrap();

    assert_eq!(statuses(&api).pop().unwrap()["phase"], "Placed");
    // The new ChatRoom is a new incarnation (its UID): open, while the old room's mark stays.
    let rooms = redis.state().rooms;
    let id = "support/case-1".parse().unwrap();
    assert!(
        !rooms.is_closed(&id, "").await.unwrap(),
        "the name is open again"
    );
    assert!(rooms.is_closed(&id, "").await.is_ok());
    let still_closed: bool = redis.conn().await.exists(&closed).await.unwrap();
    assert!(still_closed, "the deleted room stays closed");
}

/// The whole drain path with real nodes: an admin drains chat-0 through the operator's admin
/// routes, chat-0 reports draining, the reconciler moves the room to chat-1, and the member on
/// chat-0 gets `moved` and resumes on chat-1 without losing a message.
#[tokio::test]
async fn draining_a_node_moves_its_rooms_and_their_members() {
    use chatfleet_api::admin::FleetAdmin;
    use chatfleet_wire::frames::ServerFrame;
    use operator::api::admin::KubeFleetAdmin;
    use operator::fleet_redis::RedisPool;
    use testkit::{Client, Node};

    let redis = Redis::start().await;
    let chat_0 = Node::in_fleet(&redis, "chat-0", &[]).await;
    let chat_1 = Node::in_fleet(&redis, "chat-1", &[]).await;
    let mut status = placed_on("chat-0").unwrap();
    status.endpoint = Some(
        chat_0
            .ws("support/case-1", "")
            .trim_end_matches('?')
            .to_owned(),
    );
    let room = room(Some(status));
    let (client, api) = MockApi::start(api_server(Some(fleet(&redis)), room.clone()));
    let ctx = context(
        client.clone(),
        vec![pod("chat", "chat-0", true), pod("chat", "chat-1", true)],
    );
    let (mut ann, _) = Client::join(&chat_0.ws_as("support/case-1", "ann", "")).await;
    ann.say("before the drain").await;
    let seen = ann.message().await.id;

    let admin = KubeFleetAdmin::new(
        client,
        "support",
        "chat",
        Arc::new(RedisPool::new(Duration::from_secs(60))),
    );
    admin.drain("chat-0").await.unwrap();
    testkit::eventually("chat-0 to report draining", || async {
        let view = admin.fleet().await.unwrap();
        view.nodes.iter().any(|n| n.node == "chat-0" && n.draining)
    })
    .await;
    reconcile(Arc::new(room), ctx).await.unwrap();

    let placed = statuses(&api).pop().unwrap();
    assert_eq!(placed["node"], "chat-1");
    let endpoint = match ann.recv_skip_presence().await {
        ServerFrame::Moved { endpoint, .. } => endpoint,
        other => panic!("expected moved, got {other:?}"),
    };
    assert_eq!(endpoint, placed["endpoint"].as_str().unwrap());
    assert!(endpoint.contains(&chat_1.addr.to_string()), "{endpoint}");
    let token = testkit::token(
        "support/case-1",
        "ann",
        chatfleet_wire::frames::Role::Customer,
    );
    let (mut resumed, welcome) =
        Client::join(&format!("{endpoint}?token={token}&since={}", seen - 1)).await;
    assert_eq!(welcome.node, "chat-1");
    assert_eq!(resumed.message().await.content.body, "before the drain");
}

/// A room whose object is already gone when its finalizer is to be removed (its deletion raced
/// another): the cleanup ran, so the reconcile succeeds instead of counting an error.
#[tokio::test]
async fn a_room_gone_before_its_finalizer_is_removed_is_not_an_error() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 1, 0.0).await;
    let mut room = room(placed_on("chat-0"));
    room.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let answer = api_server(Some(fleet(&redis)), room.clone());
    let (client, api) = MockApi::start(move |call| match (&call.method, call.path()) {
        (&Method::PATCH, ROOMS) => not_found(),
        _ => answer(call),
    });
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    let action = reconcile(Arc::new(room), ctx).await;

    assert!(action.is_ok(), "{action:?}");
    assert_eq!(
        api.find(Method::PATCH, ROOMS).len(),
        1,
        "the removal was tried"
    );
    let closed: bool = redis
        .conn()
        .await
        .exists(RoomKeys::new(&"support/case-1".parse().unwrap()).closed)
        .await
        .unwrap();
    assert!(closed, "the room was closed first");
}

/// With a fleet cache, the reconcile reads the fleet from it: it places the room without
/// asking the API server for the fleet (which here would answer 404).
#[tokio::test]
async fn a_room_reads_its_fleet_from_the_cache() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    let room = room(None);
    let (client, api) = MockApi::start(api_server(None, room.clone()));
    let mut cached = fleet(&redis);
    cached.metadata.namespace = Some("support".into());
    let ctx = Context::new(
        client,
        pod_store(vec![pod("chat", "chat-0", true)]),
        Arc::new(operator::metrics::Metrics::new()),
        operator::context::Settings::default(),
        None,
    )
    .with_fleet_cache(fleet_store(vec![cached]));

    reconcile(Arc::new(room), Arc::new(ctx)).await.unwrap();

    assert!(api.find(Method::GET, FLEET).is_empty(), "{:?}", api.calls());
    let status = statuses(&api).pop().expect("a status patch");
    assert_eq!(
        (status["phase"].as_str(), status["node"].as_str()),
        (Some("Placed"), Some("chat-0"))
    );
}

/// The periodic check of placed rooms reads each node once (a snapshot shared by its rooms),
/// not Redis per room: once every room's reservation is right, checking 60 rooms again costs
/// Redis at most one read per node, and none while the snapshots are fresh.
#[tokio::test]
async fn a_resync_of_unchanged_rooms_costs_redis_per_node_not_per_room() {
    let redis = Redis::start().await;
    report(&redis, "chat-0", 0, 0.0).await;
    report(&redis, "chat-1", 0, 0.0).await;
    let rooms: Vec<ChatRoom> = (0..60)
        .map(|n| {
            let node = format!("chat-{}", n % 2);
            let mut room = room(placed_on(&node));
            room.metadata = meta(&format!("case-{n}"));
            room.metadata.finalizers = Some(vec![FINALIZER.into()]);
            room
        })
        .collect();
    for (n, room) in rooms.iter().enumerate() {
        let load = r#"{"members":1,"msg_rate":0.0}"#;
        let _: () = redis
            .conn()
            .await
            .hset(
                keys::node_rooms(&format!("chat-{}", n % 2)),
                format!("support/{}", room.metadata.name.as_deref().unwrap()),
                load,
            )
            .await
            .unwrap();
    }
    let (client, _api) = MockApi::start(api_server(Some(fleet(&redis)), rooms[0].clone()));
    let ctx = context(
        client,
        vec![pod("chat", "chat-0", true), pod("chat", "chat-1", true)],
    );
    // The first pass reserves each room's seats on its node.
    for room in &rooms {
        reconcile(Arc::new(room.clone()), ctx.clone())
            .await
            .unwrap();
    }
    for n in 0..2 {
        let held: std::collections::HashMap<String, u32> = redis
            .conn()
            .await
            .hgetall(keys::node_reserved(&format!("chat-{n}")))
            .await
            .unwrap();
        assert_eq!(held.len(), 30, "chat-{n} holds its rooms' reservations");
    }

    let before = redis.command_calls().await;
    for room in &rooms {
        reconcile(Arc::new(room.clone()), ctx.clone())
            .await
            .unwrap();
    }
    let calls = redis.command_calls().await - before;
    println!("checking 60 unchanged rooms again: {calls} Redis calls");
    // At most one snapshot read (3 commands) per node, should a snapshot have aged meanwhile.
    assert!(calls <= 6, "{calls} Redis calls for 60 unchanged rooms");
}
