//! The OpenAPI document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations, and the page that renders it. [`ApiDoc`] covers the routes every server of
//! the API has (rooms, sessions, admin: the node and the operator); a node merges its own
//! routes (the WebSocket join, health, metrics, the chat page) into [`api_document`]. The
//! pages (`/api`, `/admin`) need no key: they ask for one and call the routes with it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, moderation, rooms, transcript};

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
        rooms::create, rooms::list, rooms::show, rooms::remove, rooms::token, rooms::history,
        transcript::transcript,
        moderation::mute, moderation::unmute, moderation::remove,
        admin::list_sessions, admin::end_all, admin::end_one,
        admin::fleet, admin::drain, admin::broadcast, admin::dead_letters,
    ),
    modifiers(&ApiKeyHeader),
    tags(
        (name = "rooms", description = "Open, inspect and close rooms; invite people"),
        (name = "moderation", description = "Mute and remove members (room scope)"),
        (name = "sessions", description = "A user's sessions across the fleet (room scope)"),
        (name = "admin", description = "The fleet's nodes, drains and broadcasts (admin scope)"),
        (name = "node", description = "Served by chat nodes only"),
        (name = "pages", description = "This document and the pages for people"),
    )
)]
pub struct ApiDoc;

/// The pages every server of the API has; none needs a key.
#[derive(OpenApi)]
#[openapi(paths(document, api_page, admin::admin_page))]
struct PageRoutes;

/// The document of the API and its pages: what the operator serves, and what a node extends.
pub fn api_document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(PageRoutes::openapi());
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

/// Every schema `$ref` in `doc`, and those of them the document does not define. A merged
/// document must leave the second list empty.
pub fn schema_refs(doc: &utoipa::openapi::OpenApi) -> (Vec<String>, Vec<String>) {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    let mut found = Vec::new();
    walk(&doc, &mut found);
    let missing = found
        .iter()
        .filter(|r| {
            let name = r.trim_start_matches("#/components/schemas/");
            doc["components"]["schemas"].get(name).is_none()
        })
        .cloned()
        .collect();
    (found, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_the_routes_refer_to_is_in_the_document() {
        let (found, missing) = schema_refs(&api_document());
        assert!(
            found.len() > 20,
            "the routes refer to their schemas: {found:?}"
        );
        assert!(missing.is_empty(), "not in components.schemas: {missing:?}");
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
