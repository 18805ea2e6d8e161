//! The ChatFleet reconciler: the StatefulSet, Service and PDB it applies, and its status.

use std::sync::Arc;

use chatfleet_wire::load::LoadReport;
use http::{Method, StatusCode};
use operator::crd::ChatFleet;
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
