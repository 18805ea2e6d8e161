//! The operator's admin routes and room history: the ChatFleet (from a mocked API server) leads
//! to the fleet's real Redis, where a real chat node reports and keeps the room's history.

use std::sync::Arc;
use std::time::Duration;

use chatfleet_api::admin::{BroadcastRequest, FleetAdmin};
use chatfleet_api::history::HistoryQuery;
use chatfleet_api::rooms::RoomDirectory;
use chatfleet_wire::frames::{ErrorCode, ServerFrame};
use http::{Method, StatusCode};
use operator::api::admin::KubeFleetAdmin;
use operator::api::rooms::{DirectorySettings, KubeDirectory};
use operator::crd::{ChatRoom, ChatRoomSpec};
use operator::fleet_redis::RedisPool;
use testkit::{Client, Node, Redis, assert_error, eventually};

use crate::mock::{self, MockApi, Reply, meta, not_found};

/// An API server holding fleet `support/chat` on `redis_url` and room `support/case-1`.
fn api_server(redis_url: String) -> impl Fn(&mock::Call) -> Reply {
    move |call| match (&call.method, call.path()) {
        (&Method::GET, p) if p.ends_with("/chatfleets/chat") => (
            StatusCode::OK,
            serde_json::to_value(mock::fleet(&redis_url)).unwrap(),
        ),
        (&Method::GET, p) if p.ends_with("/chatrooms/case-1") => {
            let room = ChatRoom {
                metadata: meta("case-1"),
                spec: ChatRoomSpec {
                    fleet: "chat".into(),
                    expected_members: 2,
                    max_members: None,
                    purpose: None,
                    ttl_seconds_after_empty: None,
                },
                status: None,
            };
            (StatusCode::OK, serde_json::to_value(room).unwrap())
        }
        _ => not_found(),
    }
}

async fn fleet_node(redis: &Redis) -> Node {
    Node::in_fleet(redis, "chat-0", &[]).await
}

fn pool() -> Arc<RedisPool> {
    Arc::new(RedisPool::new(Duration::from_secs(60)))
}

#[tokio::test]
async fn history_is_read_from_the_rooms_fleet_redis() {
    let redis = Redis::start().await;
    let node = fleet_node(&redis).await;
    let (mut ann, _) = Client::join(&node.ws_as("support/case-1", "ann", "")).await;
    for body in ["one", "two", "three"] {
        ann.say(body).await;
        ann.message().await;
    }
    let (client, _api) = MockApi::start(api_server(redis.url()));
    let settings = DirectorySettings {
        namespace: "support".into(),
        fleet: Some("chat".into()),
        placement_wait: Duration::from_millis(100),
    };
    let directory = KubeDirectory::new(client, settings, pool());

    let id = "support/case-1".parse().unwrap();
    let query = HistoryQuery {
        since: 1,
        ..Default::default()
    };
    let page = directory.history(&id, query.clone()).await.unwrap();
    let bodies: Vec<&str> = page
        .messages
        .iter()
        .map(|m| m.content.body.as_str())
        .collect();
    assert_eq!(bodies, ["two", "three"]);
    assert!(page.complete);

    let missing = "support/other".parse().unwrap();
    let error = directory.history(&missing, query).await.unwrap_err();
    assert_eq!(error.code, "not_found");
}

#[tokio::test]
async fn the_admin_routes_command_the_default_fleet_through_its_redis() {
    let redis = Redis::start().await;
    let node = fleet_node(&redis).await;
    let (mut dana, _) = Client::join(&node.ws_as("support/case-1", "dana", "")).await;
    let (client, _api) = MockApi::start(api_server(redis.url()));
    let admin = KubeFleetAdmin::new(client, "support", "chat", pool());

    eventually("the node and its room in the fleet view", || async {
        let view = admin.fleet().await.unwrap();
        view.nodes.len() == 1
            && view.nodes[0].node == "chat-0"
            && view.nodes[0]
                .rooms
                .iter()
                .any(|r| r.room.to_string() == "support/case-1")
    })
    .await;

    let notice = BroadcastRequest {
        body: "we are here".into(),
        room: None,
    };
    admin.broadcast(notice).await.unwrap();
    match dana.recv_skip_presence().await {
        ServerFrame::System { body, .. } => assert_eq!(body, "we are here"),
        other => panic!("expected a system notice, got {other:?}"),
    }

    assert_eq!(admin.user_sessions("dana").await.unwrap().count, 1);
    admin.end_sessions("dana", None).await.unwrap();
    assert_error(&dana.recv_skip_presence().await, ErrorCode::SessionEnded);
    assert_eq!(admin.user_sessions("dana").await.unwrap().count, 0);
}

#[tokio::test]
async fn a_fleet_that_does_not_exist_is_a_clear_error() {
    let (client, _api) = MockApi::start(|_: &mock::Call| not_found());
    let admin = KubeFleetAdmin::new(client, "support", "chat", pool());
    let error = admin.fleet().await.unwrap_err();
    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        error.message.contains("support/chat does not exist"),
        "{}",
        error.message
    );
}
