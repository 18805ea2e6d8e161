//! Every failure of the API as one type: an HTTP status, a stable code, a message, sent as
//! JSON `{"error":{"code","message"}}`. Clients branch on the code, never on the message.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chatfleet_state::StateError;
use chatfleet_wire::RoomId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An API failure: an HTTP status and a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn not_found(room: &RoomId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no room {room}"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key may not use the admin routes",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid X-API-Key header is required",
        )
    }
}

/// Every error's body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthorized`, `forbidden`, `bad_request`, `invalid_request`, `not_found`,
    /// `room_closed`, `not_placed`, `unavailable`.
    #[schema(example = "not_found")]
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Gives unknown routes and wrong methods the JSON error every other failure has. Call it
/// last, on the whole app: axum refuses to merge two routers that both have fallbacks.
pub fn with_json_fallbacks(app: Router) -> Router {
    app.fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

impl From<StateError> for ApiError {
    fn from(error: StateError) -> Self {
        match error {
            StateError::RoomClosed => {
                Self::new(StatusCode::CONFLICT, "room_closed", "the room was closed")
            }
            error => Self::unavailable(format!("shared state unreachable: {error}")),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(rejection.status(), "bad_request", rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), "bad_request", rejection.body_text())
    }
}
