//! The OpenAPI document matches the routes a node really serves: every documented operation
//! answers (secured ones with the documented 401 when the key is missing), and every route is
//! documented.

use serde_json::Value;

use crate::support::in_process;

/// Every route a node serves, as `METHOD path`. Adding a route means adding it here and to
/// the document; this list is the check that none is forgotten.
const ROUTES: &[&str] = &[
    "GET /",
    "GET /api",
    "GET /admin",
    "GET /openapi.json",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/node",
    "GET /v1/rooms/{namespace}/{room}/ws",
    "POST /v1/rooms",
    "GET /v1/rooms",
    "GET /v1/rooms/{namespace}/{room}",
    "DELETE /v1/rooms/{namespace}/{room}",
    "POST /v1/rooms/{namespace}/{room}/tokens",
    "GET /v1/rooms/{namespace}/{room}/history",
    "GET /v1/rooms/{namespace}/{room}/transcript",
    "POST /v1/rooms/{namespace}/{room}/members/{user}/mute",
    "DELETE /v1/rooms/{namespace}/{room}/members/{user}/mute",
    "DELETE /v1/rooms/{namespace}/{room}/members/{user}",
    "GET /v1/users/{user}/sessions",
    "DELETE /v1/users/{user}/sessions",
    "DELETE /v1/users/{user}/sessions/{id}",
    "GET /v1/admin/fleet",
    "POST /v1/admin/nodes/{node}/drain",
    "POST /v1/admin/broadcast",
    "GET /v1/admin/webhooks/dead-letters",
];

fn concrete(path: &str) -> String {
    path.replace("{namespace}", "support")
        .replace("{room}", "case-1")
        .replace("{user}", "u1")
        .replace("{id}", "chat-0%2F1")
        .replace("{node}", "chat-0")
}

#[tokio::test]
async fn the_document_lists_every_route_and_every_listed_route_is_served() {
    let node = in_process(&[]).await;
    let response = node.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();

    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut expected: Vec<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);

    let http = reqwest::Client::new();
    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let op = &doc["paths"][path][method.to_lowercase()];
        let response = http
            .request(method.parse().unwrap(), node.http(&concrete(path)))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            assert_eq!(status, 401, "{route} without a key");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{route}");
        } else {
            // Served (a plain GET of the WebSocket route is refused for want of an upgrade
            // or a token, with a documented status).
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{route} answered {status}, which the document does not list"
            );
        }
    }
}

#[tokio::test]
async fn the_api_page_renders_the_document() {
    let node = in_process(&[]).await;
    let response = node.get("/api").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("fetch(\"/openapi.json\")"));
}
