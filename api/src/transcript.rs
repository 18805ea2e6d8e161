//! A room's transcript through the room API: JSON for tools, plain text for people. It stays
//! readable for the transcript retention after the room closes (see
//! `chatfleet_wire::transcript`).

use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chatfleet_wire::frames::Role;
use chatfleet_wire::transcript::{Transcript, TranscriptEntry};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::extract::ApiPath;
use crate::rooms::{RoomDirectory, room_id};
use crate::{ApiError, ErrorBody};

/// How the transcript comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptFormat {
    Json,
    Text,
}

/// `?format=` of `GET /v1/rooms/{namespace}/{room}/transcript`.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// `json` or `text`; without it, `text` when `Accept` asks for `text/plain`, else `json`.
    #[serde(default)]
    #[param(inline)]
    pub format: Option<TranscriptFormat>,
}

/// A room's transcript: every message in order with names and roles, who joined and left
/// when, and the close. Kept for the retention after the room closes.
#[utoipa::path(get, path = "/v1/rooms/{namespace}/{room}/transcript", tag = "rooms", security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), TranscriptQuery),
    responses((status = 200, description = "the transcript (JSON, or text/plain)", body = Transcript),
        (status = 401, body = ErrorBody), (status = 404, description = "no transcript: unknown room, or closed longer ago than the retention", body = ErrorBody),
        (status = 400, description = "an unknown `format`", body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn transcript<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room)): ApiPath<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<TranscriptQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let transcript = directory.transcript(&room_id(&namespace, &room)?).await?;
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain"));
    let format = query.format.unwrap_or(if wants_text {
        TranscriptFormat::Text
    } else {
        TranscriptFormat::Json
    });
    Ok(match format {
        TranscriptFormat::Json => Json(transcript).into_response(),
        TranscriptFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            to_text(&transcript),
        )
            .into_response(),
    })
}

/// The transcript for people: one line per entry, times in UTC.
pub fn to_text(transcript: &Transcript) -> String {
    let mut out = format!("Transcript of {}", transcript.room);
    if !transcript.complete {
        out.push_str(" (incomplete: some messages are missing)");
    }
    out.push('\n');
    for entry in &transcript.entries {
        let line = match entry {
            TranscriptEntry::Message(m) => format!(
                "{}  {} ({}): {}",
                time(m.content.ts),
                m.content.name,
                role(m.content.role),
                m.content.body
            ),
            TranscriptEntry::Joined(e) => {
                format!("{}  {} ({}) joined", time(e.ts), e.name, role(e.role))
            }
            TranscriptEntry::Left(e) => {
                format!("{}  {} ({}) left", time(e.ts), e.name, role(e.role))
            }
            TranscriptEntry::Closed { reason, ts } => {
                format!("{}  The room was closed: {reason}", time(*ts))
            }
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || ms.to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Customer => "customer",
        Role::Agent => "agent",
        Role::Observer => "observer",
    }
}

#[cfg(test)]
mod tests {
    use chatfleet_wire::frames::{MessageContent, message_json, message_tail};
    use chatfleet_wire::transcript::MemberEvent;

    use super::*;

    #[test]
    fn the_text_shows_who_said_what_when() {
        let room: chatfleet_wire::RoomId = "support/case-7".parse().unwrap();
        let content = MessageContent {
            room: room.clone(),
            from: "dana".into(),
            name: "Dana".into(),
            role: Role::Agent,
            body: "On it.".into(),
            ts: 1_764_755_146_000,
            client_id: None,
        };
        let joined = TranscriptEntry::Joined(MemberEvent {
            user: "dana".into(),
            name: "Dana".into(),
            role: Role::Agent,
            ts: 1_764_755_145_000,
            after: 0,
        })
        .to_json();
        let message = message_json(2, &message_tail(&content));
        let transcript = Transcript::assemble(room, [joined.as_str(), message.as_str()]);
        assert_eq!(
            to_text(&transcript),
            "Transcript of support/case-7 (incomplete: some messages are missing)\n\
             2025-12-03 09:45:45 UTC  Dana (agent) joined\n\
             2025-12-03 09:45:46 UTC  Dana (agent): On it.\n"
        );
    }
}
