//! The operator's room API backend against a mocked API server: opening a room creates a
//! ChatRoom and waits for its placement, retries are idempotent, tokens use the fleet's key.

use std::sync::Arc;
use std::time::Duration;

use chatfleet_api::rooms::{CreateRoom, RoomDirectory, RoomFilter, TokenRequest};
use chatfleet_wire::frames::Role;
use chatfleet_wire::token::TokenKeys;
use http::{Method, StatusCode};
use operator::api::rooms::{DirectoryCaches, DirectorySettings, KubeDirectory};
use operator::crd::{ChatFleet, ChatRoom, ChatRoomSpec, ChatRoomStatus, RoomPhase};
use operator::fleet_redis::RedisPool;
use serde_json::json;

use crate::mock::{self, Call, MockApi, Reply, meta, not_found};

const ROOMS: &str = "/apis/chatfleet.dev/v1alpha1/namespaces/support/chatrooms";
const SECRET: &str = "fleet-token-key";

fn fleet() -> ChatFleet {
    let mut fleet = mock::fleet("redis://127.0.0.1:1");
    fleet.spec.limits.members_per_room = 50;
    fleet
}

fn placed_room(name: &str) -> ChatRoom {
    ChatRoom {
        metadata: meta(name),
        spec: ChatRoomSpec {
            fleet: "chat".into(),
            expected_members: 3,
            max_members: None,
            purpose: None,
            ttl_seconds_after_empty: None,
        },
        status: Some(ChatRoomStatus {
            phase: RoomPhase::Placed,
            node: Some("chat-1".into()),
            endpoint: Some(format!(
                "ws://chat-1.chat.support.svc:8080/v1/rooms/support/{name}/ws"
            )),
            ..ChatRoomStatus::default()
        }),
    }
}

/// An API server with the fleet, its token Secret, and `room` (already there or not).
fn api_server(room: Option<ChatRoom>, exists: bool) -> impl Fn(&Call) -> Reply {
    move |call| {
        let path = call.path();
        match (&call.method, path) {
            (&Method::GET, p) if p.ends_with("/chatfleets/chat") => {
                (StatusCode::OK, serde_json::to_value(fleet()).unwrap())
            }
            (&Method::GET, p) if p.ends_with("/secrets/tokens") => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tokens"},
                       "data": {"secret": "ZmxlZXQtdG9rZW4ta2V5Cg=="}}), // "fleet-token-key\n"
            ),
            (&Method::POST, ROOMS) if exists => (
                StatusCode::CONFLICT,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "AlreadyExists", "code": 409, "message": "already exists"}),
            ),
            (&Method::POST, ROOMS) => (StatusCode::CREATED, call.body.clone()),
            (&Method::GET, p) if p.starts_with(ROOMS) => match &room {
                Some(room) => (StatusCode::OK, serde_json::to_value(room).unwrap()),
                None => not_found(),
            },
            _ => not_found(),
        }
    }
}

fn directory(client: kube::Client) -> KubeDirectory {
    KubeDirectory::new(
        client,
        DirectorySettings {
            namespace: "support".into(),
            fleet: Some("chat".into()),
            placement_wait: Duration::from_millis(300),
        },
        Arc::new(RedisPool::new(Duration::from_secs(60))),
    )
}

fn open(key: &str, participants: usize) -> CreateRoom {
    CreateRoom {
        participants: (0..participants)
            .map(|i| TokenRequest {
                user: format!("u{i}"),
                name: None,
                role: Role::Agent,
                ttl_seconds: None,
            })
            .collect(),
        idempotency_key: Some(key.into()),
        ..CreateRoom::default()
    }
}

#[tokio::test]
async fn opening_a_room_creates_a_chatroom_and_waits_for_its_placement() {
    let name = open("ticket-1", 4).room_name();
    let (client, api) = MockApi::start(api_server(Some(placed_room(&name)), false));

    let created = directory(client)
        .create_room(open("ticket-1", 4))
        .await
        .unwrap();

    assert!(created.created);
    assert_eq!(created.room.node, "chat-1");
    assert_eq!(created.room.max_members, 50, "the fleet's limit");
    assert!(
        created
            .room
            .endpoint
            .ends_with(&format!("/v1/rooms/support/{name}/ws"))
    );
    let posted = api.find(Method::POST, ROOMS).pop().unwrap().body;
    assert_eq!(posted["metadata"]["name"], name.as_str());
    assert_eq!(posted["spec"]["fleet"], "chat");
    assert_eq!(
        posted["spec"]["expectedMembers"], 4,
        "one seat per participant"
    );
    // Created with its finalizer: the reconciler's next write is the placement itself.
    assert_eq!(
        posted["metadata"]["finalizers"],
        serde_json::json!([operator::reconcile::room::FINALIZER])
    );
}

#[tokio::test]
async fn a_retry_with_the_same_key_finds_the_same_room() {
    let name = open("ticket-2", 2).room_name();
    let (client, _api) = MockApi::start(api_server(Some(placed_room(&name)), true));

    let again = directory(client)
        .create_room(open("ticket-2", 2))
        .await
        .unwrap();

    assert!(!again.created);
    assert_eq!(again.room.name, name);
}

#[tokio::test]
async fn a_room_not_placed_in_time_says_so() {
    let mut room = placed_room(&open("ticket-3", 2).room_name());
    room.status = None;
    let (client, _api) = MockApi::start(api_server(Some(room), false));

    let error = directory(client)
        .create_room(open("ticket-3", 2))
        .await
        .unwrap_err();

    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error.code, "not_placed");
}

#[tokio::test]
async fn tokens_are_signed_with_the_fleets_key_and_point_at_the_rooms_node() {
    let (client, _api) = MockApi::start(api_server(Some(placed_room("case-5")), true));
    let request = TokenRequest {
        user: "cust-9".into(),
        name: Some("Dana".into()),
        role: Role::Customer,
        ttl_seconds: Some(600),
    };
    let id = "support/case-5".parse().unwrap();

    let token = directory(client).mint_token(&id, request).await.unwrap();

    assert!(
        token
            .ws_url
            .starts_with("ws://chat-1.chat.support.svc:8080/v1/rooms/support/case-5/ws?token=")
    );
    assert!(
        token
            .chat_url
            .starts_with("http://chat-1.chat.support.svc:8080/?room=support/case-5")
    );
    let claims = TokenKeys::from_secret(SECRET.as_bytes())
        .verify(&token.token, &id)
        .expect("the node, which trims the Secret the same way, accepts it");
    assert_eq!(claims.sub, "cust-9");
    assert_eq!(claims.room, id);
}

#[tokio::test]
async fn rooms_are_opened_with_labels_and_listed_by_fleet_and_label() {
    let name = open("ticket-6", 2).room_name();
    let (client, api) = MockApi::start(api_server(Some(placed_room(&name)), false));
    let mut request = open("ticket-6", 2);
    request.labels = [("ticket".to_owned(), "4711".to_owned())].into();
    directory(client).create_room(request).await.unwrap();
    let posted = api.find(Method::POST, ROOMS).pop().unwrap().body;
    assert_eq!(posted["metadata"]["labels"], json!({"ticket": "4711"}));

    let labelled = |name: &str, fleet: &str, ticket: &str| {
        let mut room = placed_room(name);
        room.spec.fleet = fleet.into();
        room.metadata.labels = Some([("ticket".to_owned(), ticket.to_owned())].into());
        room
    };
    let rooms = vec![
        labelled("a", "chat", "1"),
        labelled("b", "chat", "2"),
        labelled("c", "other", "2"),
    ];
    let list = json!({"apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatRoomList",
                      "metadata": {}, "items": rooms});
    let (client, _api) = MockApi::start(move |call: &crate::mock::Call| match call.path() {
        "/apis/chatfleet.dev/v1alpha1/chatrooms" => (StatusCode::OK, list.clone()),
        "/apis/chatfleet.dev/v1alpha1/chatfleets" => (
            StatusCode::OK,
            json!({"apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatFleetList",
                       "metadata": {}, "items": [fleet()]}),
        ),
        _ => not_found(),
    });
    let directory = directory(client);
    let names = |views: Vec<chatfleet_api::rooms::RoomView>| -> Vec<String> {
        views.into_iter().map(|v| v.name).collect()
    };
    let by = |fleet: Option<&str>, label: Option<&str>| RoomFilter {
        fleet: fleet.map(str::to_owned),
        label: label.map(str::to_owned),
    };
    assert_eq!(
        names(directory.list_rooms(&by(None, None)).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(directory.list_rooms(&by(Some("chat"), None)).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(
            directory
                .list_rooms(&by(None, Some("ticket=2")))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    assert_eq!(
        names(
            directory
                .list_rooms(&by(Some("chat"), Some("ticket=2")))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let view = directory
        .list_rooms(&by(None, Some("ticket=1")))
        .await
        .unwrap();
    assert_eq!(view[0].fleet.as_deref(), Some("chat"));
    assert_eq!(view[0].labels["ticket"], "1");
}

/// With reflectors, opening a room waits on the cache and listing reads it: the API server
/// gets the room's creation and nothing else.
#[tokio::test]
async fn with_caches_the_room_api_asks_the_api_server_only_to_create() {
    let name = open("ticket-9", 2).room_name();
    let (client, api) = MockApi::start(api_server(Some(placed_room(&name)), false));
    let mut cached_fleet = fleet();
    cached_fleet.metadata.namespace = Some("support".into());
    let mut cached_room = placed_room(&name);
    cached_room.metadata.namespace = Some("support".into());
    let caches = DirectoryCaches {
        rooms: mock::store(vec![cached_room]),
        fleets: mock::fleet_store(vec![cached_fleet]),
    };
    let directory = directory(client).with_caches(caches);

    let created = directory.create_room(open("ticket-9", 2)).await.unwrap();
    let listed = directory.list_rooms(&RoomFilter::default()).await.unwrap();

    assert_eq!(created.room.node, "chat-1");
    assert_eq!(created.room.max_members, 50, "the cached fleet's limit");
    assert_eq!(listed.len(), 1);
    let calls: Vec<String> = api
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.method, c.path()))
        .collect();
    assert_eq!(calls, [format!("POST {ROOMS}")], "{calls:?}");
}

#[tokio::test]
async fn closing_a_room_annotates_its_reason_then_deletes_it() {
    let room = placed_room("case-9");
    let (client, api) = MockApi::start(move |call: &Call| match (&call.method, call.path()) {
        (&Method::PATCH, p) | (&Method::DELETE, p) if p.ends_with("/chatrooms/case-9") => {
            (StatusCode::OK, serde_json::to_value(&room).unwrap())
        }
        _ => not_found(),
    });
    let directory = directory(client);
    let id = "support/case-9".parse().unwrap();
    directory.close_room(&id, "order found").await.unwrap();

    let calls: Vec<(Method, serde_json::Value)> = api
        .calls()
        .into_iter()
        .map(|call| (call.method.clone(), call.body.clone()))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, Method::PATCH, "the reason first");
    assert_eq!(
        calls[0].1["metadata"]["annotations"]["chatfleet.dev/close-reason"],
        "order found"
    );
    assert_eq!(calls[1].0, Method::DELETE);

    let unknown = directory
        .close_room(&"support/nowhere".parse().unwrap(), "x")
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.status, unknown.code),
        (StatusCode::NOT_FOUND, "not_found")
    );
}
