//! The chat page a person opens: served from the binary, no build step.

use axum::response::Html;

const CHAT_PAGE: &str = include_str!("../../web/index.html");

/// The chat page: join with a token link (or a name under dev auth), talk, see who is there.
#[utoipa::path(get, path = "/", tag = "node", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub async fn chat_page() -> Html<&'static str> {
    Html(CHAT_PAGE)
}
