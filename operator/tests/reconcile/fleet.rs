//! The ChatFleet reconciler: the StatefulSet, Service and PDB it applies, and its status.

use std::sync::Arc;

use chatnode::wire::keys;
use chatnode::wire::load::{Limits, LoadReport};
use http::{Method, StatusCode};
use operator::crd::{ChatFleet, ChatFleetSpec};
use operator::fleet::reconcile;
use redis::AsyncCommands;
use serde_json::json;
use testkit::Redis;

use crate::mock::{MockApi, context, meta, pod};

const NS: &str = "/namespaces/support";

#[tokio::test]
async fn a_fleet_becomes_a_stateful_set_a_headless_service_and_a_budget() {
    let redis = Redis::start().await;
    let report = LoadReport {
        node: "chat-0".into(),
        advertise_url: "ws://chat-0.chat.support.svc:8080".into(),
        users: 40,
        rooms: 7,
        msg_rate: 1.0,
        limits: Limits {
            max_node_users: 300,
            max_room_members: 300,
        },
        draining: false,
        version: "test".into(),
        ts_ms: 1,
    };
    let _: () = redis
        .conn()
        .await
        .set_ex(
            keys::node_report("chat-0"),
            serde_json::to_string(&report).unwrap(),
            60,
        )
        .await
        .unwrap();
    let spec: ChatFleetSpec = serde_json::from_value(json!({
        "replicas": 2,
        "image": "chatnode:dev",
        "redis": {"url": redis.url()},
        "tokenSecret": {"name": "tokens", "key": "secret"},
    }))
    .unwrap();
    let fleet = ChatFleet {
        metadata: meta("chat"),
        spec,
        status: None,
    };
    let answer = serde_json::to_value(&fleet).unwrap();
    // Applies echo what was applied; reads and status patches of the fleet return the fleet.
    let (client, api) = MockApi::start(move |call| {
        if call.path().contains("/chatfleets/") {
            (StatusCode::OK, answer.clone())
        } else {
            (StatusCode::OK, call.body.clone())
        }
    });
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
    let spec: ChatFleetSpec = serde_json::from_value(json!({
        "image": "chatnode:dev",
        "redis": {"url": nowhere},
        "tokenSecret": {"name": "tokens", "key": "secret"},
    }))
    .unwrap();
    let fleet = ChatFleet {
        metadata: meta("chat"),
        spec,
        status: None,
    };
    let answer = serde_json::to_value(&fleet).unwrap();
    let (client, api) = MockApi::start(move |call| {
        if call.path().contains("/chatfleets/") {
            (StatusCode::OK, answer.clone())
        } else {
            (StatusCode::OK, call.body.clone())
        }
    });
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
