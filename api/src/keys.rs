//! API keys and their scopes: room keys open rooms and mint tokens; admin keys can do that
//! and also use the admin routes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The API keys the routers accept, in two scopes: room keys open rooms and mint tokens;
/// admin keys can do that and also use the admin routes.
#[derive(Clone)]
pub struct ApiKeys {
    room: Arc<Vec<String>>,
    admin: Arc<Vec<String>>,
}

/// What a presented key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Room,
    Admin,
}

impl ApiKeys {
    /// Room-scope keys only.
    pub fn new(keys: Vec<String>) -> Self {
        Self::scoped(keys, Vec::new())
    }

    pub fn scoped(room: Vec<String>, admin: Vec<String>) -> Self {
        let clean =
            |keys: Vec<String>| Arc::new(keys.into_iter().filter(|k| !k.is_empty()).collect());
        Self {
            room: clean(room),
            admin: clean(admin),
        }
    }

    /// Whether any key is configured at all.
    pub fn any(&self) -> bool {
        !self.room.is_empty() || !self.admin.is_empty()
    }

    /// The scope of `presented`, if it is a key at all.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        let matches = |keys: &[String]| {
            keys.iter()
                .any(|key| constant_time_eq::constant_time_eq(key.as_bytes(), presented.as_bytes()))
        };
        if matches(&self.admin) {
            Some(Scope::Admin)
        } else if matches(&self.room) {
            Some(Scope::Room)
        } else {
            None
        }
    }
}

/// Lets a request through when its `X-API-Key` has the `needed` scope: 401 for no key or a
/// wrong one, 403 for a room key on an admin route.
pub async fn require_scope(
    State((keys, needed)): State<(ApiKeys, Scope)>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (keys.scope_of(presented), needed) {
        (None, _) => ApiError::unauthorized().into_response(),
        (Some(Scope::Room), Scope::Admin) => ApiError::forbidden().into_response(),
        _ => next.run(request).await,
    }
}
