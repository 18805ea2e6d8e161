//! The ChatFleet reconciler: the StatefulSet, Service and PDB it applies, and its status.

use std::sync::Arc;
use std::time::Duration;

use chatfleet_state::ConnectionSettings;
use chatfleet_state::FleetState;
use chatfleet_wire::RoomId;
use chatfleet_wire::load::LoadReport;
use http::{Method, StatusCode};
use operator::context::{Context, Settings};
use operator::crd::{ChatFleet, ChatRoom};
use operator::metrics::Metrics;
use operator::reconcile::fleet::reconcile;
use testkit::Redis;

use crate::mock::{self, Call, MockApi, Reply, context, pod};

const NS: &str = "/namespaces/support";

/// Applies echo what was applied; reads and status patches of the fleet return `fleet`.
fn api_server(fleet: &ChatFleet) -> impl Fn(&Call) -> Reply + use<> {
    let answer = serde_json::to_value(fleet).unwrap();
    move |call| {
        if call.path().contains("/chatfleets/") {
            (StatusCode::OK, answer.clone())
        } else {
            (StatusCode::OK, call.body.clone())
        }
    }
}

#[tokio::test]
async fn a_fleet_becomes_a_stateful_set_a_headless_service_and_a_budget() {
    let redis = Redis::start().await;
    let report = LoadReport {
        rooms: 7,
        ..testkit::load_report("chat-0", 40, 300, 1.0)
    };
    redis.write_report(&report).await;
    let mut fleet = mock::fleet(&redis.url());
    fleet.spec.replicas = 2;
    let (client, api) = MockApi::start(api_server(&fleet));
    let ctx = context(
        client,
        vec![pod("chat", "chat-0", true), pod("chat", "chat-1", false)],
    );

    reconcile(Arc::new(fleet), ctx).await.unwrap();

    let applied = |path: &str| {
        let calls = api.find(Method::PATCH, path);
        assert_eq!(calls.len(), 1, "one apply of {path}: {:?}", api.calls());
        assert!(calls[0].uri.contains("fieldManager=chatfleet-operator"));
        assert!(calls[0].uri.contains("force=true"));
        calls[0].body.clone()
    };
    let set = applied(&format!("/apis/apps/v1{NS}/statefulsets/chat"));
    assert_eq!(set["kind"], "StatefulSet");
    assert_eq!(set["spec"]["replicas"], 2);
    assert_eq!(set["spec"]["serviceName"], "chat");
    assert_eq!(set["metadata"]["ownerReferences"][0]["kind"], "ChatFleet");
    let service = applied(&format!("/api/v1{NS}/services/chat"));
    assert_eq!(service["spec"]["clusterIP"], "None");
    let budget = applied(&format!("/apis/policy/v1{NS}/poddisruptionbudgets/chat"));
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    let status = api
        .find(Method::PATCH, "/chatfleets/chat/status")
        .pop()
        .expect("a status patch")
        .body["status"]
        .clone();
    assert_eq!(status["readyNodes"], 1);
    assert_eq!(status["users"], 40);
    assert_eq!(status["rooms"], 7);
    assert_eq!(status["freeSeats"], 260);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "False");
}

#[tokio::test]
async fn a_fleet_whose_redis_is_down_says_so_in_its_status() {
    let nowhere = format!("redis://127.0.0.1:{}", testkit::free_port());
    let fleet = mock::fleet(&nowhere);
    let (client, api) = MockApi::start(api_server(&fleet));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    let error = reconcile(Arc::new(fleet), ctx).await.unwrap_err();

    assert!(error.to_string().contains("Redis"), "{error}");
    let status = api
        .find(Method::PATCH, "/chatfleets/chat/status")
        .pop()
        .expect("a status patch")
        .body["status"]
        .clone();
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "RedisUnavailable");
    assert_eq!(status["readyNodes"], 0);
}

/// A placed room expecting more members than a node holds reserves one node's seats at home;
/// the rest it expects are not free for others: the fleet's free seats leave them out (so the
/// autoscaler grows before they arrive), less the members it already has elsewhere.
#[tokio::test]
async fn a_room_bigger_than_a_node_takes_its_expected_members_from_the_free_seats() {
    let redis = Redis::start().await;
    redis
        .write_report(&testkit::load_report("chat-0", 40, 300, 1.0))
        .await;
    let fleet = mock::fleet(&redis.url());
    let room = |name: &str, expected: u32| -> ChatRoom {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatRoom",
            "metadata": {"name": name, "namespace": "support"},
            "spec": {"fleet": "chat", "expectedMembers": expected},
            "status": {"phase": "Placed", "node": "chat-0"}
        }))
        .unwrap()
    };
    let rooms = mock::store(vec![room("big", 900), room("small", 40)]);
    let free_seats = || async {
        let (client, api) = MockApi::start(api_server(&fleet));
        let ctx = Context::new(
            client,
            mock::pod_store(vec![pod("chat", "chat-0", true)]),
            Arc::new(Metrics::new()),
            Settings::default(),
            None,
        )
        .with_room_cache(rooms.clone());
        reconcile(Arc::new(fleet.clone()), Arc::new(ctx))
            .await
            .unwrap();
        api.find(Method::PATCH, "/chatfleets/chat/status")
            .pop()
            .expect("a status patch")
            .body["status"]["freeSeats"]
            .clone()
    };
    // 260 free on chat-0; "big" still expects 600 beyond its home's 300.
    assert_eq!(free_seats().await, -340);

    // 450 of its members have come (300 at home, 150 elsewhere): 450 are still to come.
    let state = FleetState::new(
        chatfleet_state::Redis::open(&redis.url(), ConnectionSettings::OPERATOR).unwrap(),
        Duration::from_secs(60),
    );
    let id: RoomId = "support/big".parse().unwrap();
    for n in 0..450 {
        state
            .room_seats
            .claim(&id, &format!("chat-1/s{n}"), 900, Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(free_seats().await, 260 - 450);
}

/// Autoscaling switched off in the middle of a drain: the status loses the autoscaler's part
/// for good (a `null` in the merge patch; leaving it out would keep it, and the drain would be
/// called off again on every pass).
#[tokio::test]
async fn switching_autoscaling_off_removes_its_status() {
    let redis = Redis::start().await;
    redis
        .write_report(&testkit::load_report("chat-0", 0, 300, 0.0))
        .await;
    let mut fleet = mock::fleet(&redis.url());
    fleet.status = Some(
        serde_json::from_value(serde_json::json!({
            "readyNodes": 1, "users": 0, "rooms": 0, "freeSeats": 300,
            "autoscaling": {"desiredReplicas": 1, "drainingNode": "chat-1",
                            "drainingSince": "2026-12-03T10:00:00Z"}
        }))
        .unwrap(),
    );
    let (client, api) = MockApi::start(api_server(&fleet));
    let ctx = context(client, vec![pod("chat", "chat-0", true)]);

    reconcile(Arc::new(fleet), ctx).await.unwrap();

    let patch = api
        .find(Method::PATCH, "/chatfleets/chat/status")
        .pop()
        .expect("a status patch")
        .body;
    let status = patch["status"].as_object().unwrap();
    assert_eq!(status.get("autoscaling"), Some(&serde_json::Value::Null));
}
