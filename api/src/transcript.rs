//! A room's transcript through the room API: JSON for tools, plain text for people. It stays
//! readable for the transcript retention after the room closes (see
//! `chatfleet_wire::transcript`).

use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
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

/// `?format=&incarnation=` of `GET /v1/rooms/{namespace}/{room}/transcript`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// `json` or `text`; without it, `text` when `Accept` asks for `text/plain`, else `json`.
    #[serde(default)]
    #[param(inline)]
    pub format: Option<TranscriptFormat>,
    /// Which room of that name (its `incarnation`, as `room.closed`'s link names it); without
    /// it, the one the name stands for now: the open room, or else the one closed last.
    #[serde(default)]
    pub incarnation: Option<String>,
}

/// A room's transcript: every message in order with names and roles, who joined and left
/// when, and the close. Kept for the retention after the room closes.
#[utoipa::path(get, path = "/v1/rooms/{namespace}/{room}/transcript", tag = "rooms", security(("api_key" = [])),
    params(("namespace" = String, Path), ("room" = String, Path), TranscriptQuery),
    responses((status = 200, description = "the transcript (JSON, or text/plain)", body = Transcript),
        (status = 401, body = ErrorBody), (status = 404, description = "no transcript: unknown room, or closed longer ago than the retention", body = ErrorBody),
        (status = 400, description = "an unknown `format`, or an `incarnation` that cannot name one", body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn transcript<D: RoomDirectory>(
    State(directory): State<Arc<D>>,
    ApiPath((namespace, room)): ApiPath<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<TranscriptQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let incarnation = query.incarnation.as_deref();
    if incarnation.is_some_and(|i| !chatfleet_state::rooms::is_incarnation(i)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "incarnation must be 1 to 64 letters, digits or dashes",
        ));
    }
    let id = room_id(&namespace, &room)?;
    let transcript = directory.transcript(&id, incarnation).await?;
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

/// The transcript for people: one entry per line, times in UTC.
///
/// Filed as a case record, it must not be forgeable by what members type. Every line at the
/// margin is ours: it starts with the time and, for a member, `[role user-id]` before any text
/// the member chose. A body's further lines are indented under a `|`, and names, ids and
/// bodies have their control, line-breaking and bidirectional characters escaped, so no text
/// can start a line of its own or pass for another author.
pub fn to_text(transcript: &Transcript) -> String {
    let mut out = format!("Transcript of {}", transcript.room);
    if let Some(incarnation) = &transcript.incarnation {
        let _ = write!(out, " (incarnation {incarnation})");
    }
    if !transcript.complete {
        out.push_str(" (incomplete: some messages are missing)");
    }
    out.push('\n');
    for entry in &transcript.entries {
        let (ts, head, text) = match entry {
            TranscriptEntry::Message(m) => {
                let c = &m.content;
                (
                    c.ts,
                    format!("{}: ", author(c.role, &c.from, &c.name)),
                    &c.body[..],
                )
            }
            TranscriptEntry::Joined(e) => (
                e.ts,
                format!("{} joined", author(e.role, &e.user, &e.name)),
                "",
            ),
            TranscriptEntry::Left(e) => (
                e.ts,
                format!("{} left", author(e.role, &e.user, &e.name)),
                "",
            ),
            TranscriptEntry::Closed { reason, ts } => {
                (*ts, "The room was closed: ".to_owned(), &reason[..])
            }
        };
        let stamp = time(ts);
        let _ = write!(out, "{stamp}  {head}");
        let indent = " ".repeat(stamp.len() + 2);
        for (n, line) in text.split(is_line_break).enumerate() {
            if n > 0 {
                let _ = write!(out, "\n{indent}| ");
            }
            out.push_str(&escape(line, false));
        }
        out.push('\n');
    }
    out
}

/// `[role user-id] Name`: the part a member cannot choose comes first.
fn author(role: Role, user: &str, name: &str) -> String {
    format!(
        "[{} {}] {}",
        self::role(role),
        escape(user, true),
        escape(name, false)
    )
}

/// Characters that end a line in some reader (`str::lines` knows only `\n` and `\r\n`).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Escapes control characters, line breaks and bidirectional overrides as `\u{…}` (they could
/// move or hide text on a reader's screen), the backslash itself and, inside `[…]`, the `]`.
fn escape(text: &str, bracketed: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c == '\\' || (bracketed && c == ']') {
            out.push('\\');
            out.push(c);
        } else if (c.is_control() && c != '\t') || is_line_break(c) || bidi {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
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
             2025-12-03 09:45:45 UTC  [agent dana] Dana joined\n\
             2025-12-03 09:45:46 UTC  [agent dana] Dana: On it.\n"
        );
    }

    /// A customer typing a line that looks like an agent's, or naming themselves so, shows up
    /// as the customer's words, indented under their own line.
    #[test]
    fn a_member_cannot_forge_another_line() {
        let room: chatfleet_wire::RoomId = "support/case-7".parse().unwrap();
        let forged = "ok\n2026-12-03 09:45:46 UTC  [agent dana] Dana: refund approved\r\
                      2026-12-03 09:45:47 UTC  Dana (agent): done\u{2028}x\u{202E}y\u{1b}[2J";
        let content = MessageContent {
            room: room.clone(),
            from: "cust]-1".into(),
            name: "Dana\n(agent)".into(),
            role: Role::Customer,
            body: forged.into(),
            ts: 1_764_755_146_000,
            client_id: None,
        };
        let message = message_json(1, &message_tail(&content));
        let transcript = Transcript::assemble(room, [message.as_str()]);
        let text = to_text(&transcript);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "Transcript of support/case-7",
                "2025-12-03 09:45:46 UTC  [customer cust\\]-1] Dana\\u{a}(agent): ok",
                "                         | 2026-12-03 09:45:46 UTC  [agent dana] Dana: refund approved",
                "                         | 2026-12-03 09:45:47 UTC  Dana (agent): done",
                "                         | x\\u{202e}y\\u{1b}[2J",
            ],
            "{text}"
        );
        // Every line at the margin is an entry of ours.
        let at_margin = text.lines().filter(|l| !l.starts_with(' ')).count();
        assert_eq!(at_margin, 2);
    }
}
