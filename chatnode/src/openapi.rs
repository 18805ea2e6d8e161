//! The OpenAPI document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations, and the page that renders it. [`ApiDoc`] covers the routes every server of
//! the API has (rooms, sessions, admin: the node and the operator); a node adds its own routes
//! (the WebSocket join, health, metrics, the chat page) in [`node_document`]. The pages
//! (`/api`, `/admin`) need no key: they ask for one and call the routes with it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin_api, api, http};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatfleet",
        description = "Open support rooms, invite people, read history, manage users' sessions \
                       and the fleet. Every route under /v1 except the WebSocket join needs \
                       `X-API-Key`: a room key, or an admin key for /v1/admin. Every error is \
                       JSON `{\"error\":{\"code\",\"message\"}}` with a stable code. The \
                       WebSocket protocol is in docs/protocol.md."
    ),
    paths(
        api::create, api::list, api::show, api::remove, api::token, api::history,
        admin_api::list_sessions, admin_api::end_all, admin_api::end_one,
        admin_api::fleet, admin_api::drain, admin_api::broadcast,
    ),
    modifiers(&ApiKeyHeader),
    tags(
        (name = "rooms", description = "Open, inspect and close rooms; invite people"),
        (name = "sessions", description = "A user's sessions across the fleet (room scope)"),
        (name = "admin", description = "The fleet's nodes, drains and broadcasts (admin scope)"),
        (name = "node", description = "Served by chat nodes only"),
        (name = "pages", description = "This document and the pages for people"),
    )
)]
pub struct ApiDoc;

/// The pages every server of the API has; none needs a key.
#[derive(OpenApi)]
#[openapi(paths(document, api_page, admin_api::admin_page))]
struct PageRoutes;

#[derive(OpenApi)]
#[openapi(paths(
    http::join_room,
    http::chat_page,
    http::healthz,
    http::readyz,
    http::metrics,
    http::node_info,
))]
struct NodeRoutes;

/// The document the operator serves: the API and its pages.
pub fn api_document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(PageRoutes::openapi());
    doc
}

/// The document a chat node serves: the API, its pages, and the node's own routes.
pub fn node_document() -> utoipa::openapi::OpenApi {
    let mut doc = api_document();
    doc.merge(NodeRoutes::openapi());
    doc
}

/// Declares the `X-API-Key` header the routes' `security(("api_key" = []))` refer to.
struct ApiKeyHeader;

impl Modify for ApiKeyHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

const API_PAGE: &str = include_str!("../web/api.html");

/// This document (no key needed).
#[utoipa::path(get, path = "/openapi.json", tag = "pages", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub(crate) async fn document(State(json): State<Arc<String>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.as_str().to_owned(),
    )
}

/// A page that renders this document (no key needed).
#[utoipa::path(get, path = "/api", tag = "pages", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub(crate) async fn api_page() -> Html<&'static str> {
    Html(API_PAGE)
}

/// `/openapi.json` serving `doc`, and `/api`.
pub fn router(doc: utoipa::openapi::OpenApi) -> Router {
    let json = Arc::new(doc.to_json().expect("the OpenAPI document serializes"));
    Router::new()
        .route("/openapi.json", get(document))
        .route("/api", get(api_page))
        .with_state(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` anywhere in `value`.
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_the_routes_refer_to_is_in_the_document() {
        let doc = serde_json::to_value(node_document()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(
            found.len() > 20,
            "the routes refer to their schemas: {found:?}"
        );
        for reference in found {
            let name = reference.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{reference} is not in components.schemas"
            );
        }
    }

    #[test]
    fn api_routes_declare_the_key_they_need() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"],
            serde_json::json!({"type": "apiKey", "in": "header", "name": "X-API-Key"})
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"api_key": []}]),
                    "{method} {path}"
                );
            }
        }
    }
}
