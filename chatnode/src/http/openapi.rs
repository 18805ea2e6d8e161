//! The OpenAPI document a chat node serves: the API every server has, and the node's own
//! routes (the WebSocket join, health, metrics, the chat page).

use utoipa::OpenApi;

use super::{join, ops, pages};

#[derive(OpenApi)]
#[openapi(paths(
    join::join_room,
    pages::chat_page,
    ops::healthz,
    ops::readyz,
    ops::metrics,
    ops::node_info,
))]
struct NodeRoutes;

pub fn node_document() -> utoipa::openapi::OpenApi {
    let mut doc = chatfleet_api::openapi::api_document();
    doc.merge(NodeRoutes::openapi());
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_the_node_routes_refer_to_is_in_the_document() {
        let (found, missing) = chatfleet_api::openapi::schema_refs(&node_document());
        assert!(
            found.len() > 20,
            "the routes refer to their schemas: {found:?}"
        );
        assert!(missing.is_empty(), "not in components.schemas: {missing:?}");
    }
}
