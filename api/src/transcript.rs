//! A room's transcript through the room API: JSON for tools, plain text for people. It stays
//! readable for the transcript retention after the room closes (see
//! `chatfleet_wire::transcript`).

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chatfleet_state::StateError;
use chatfleet_state::rooms::RoomStore;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::Role;
use chatfleet_wire::keys::RoomKeys;
use chatfleet_wire::transcript::{Transcript, TranscriptEntry, TranscriptOrder};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
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

/// One incarnation's transcript as it is read: its recorded entries (JSON), a page at a time
/// in the order they were written. A directory hands this out rather than the whole
/// transcript, so a long one (up to `--transcript-max-entries`, 100,000) never sits whole in
/// memory per request.
pub struct TranscriptReader {
    pub room: RoomId,
    /// None for a room without one.
    pub incarnation: Option<String>,
    pub pages: BoxStream<'static, Result<Vec<String>, StateError>>,
}

/// Recorded entries read from Redis per round trip.
const PAGE: usize = 2048;

/// Opens one incarnation's transcript in a fleet's Redis (None: the one the name stands for
/// now) for reading a page at a time; None when it has none. The first page is read now, so
/// a missing transcript is known before anything is sent.
pub async fn open_in_redis(
    store: &RoomStore,
    room: &RoomId,
    incarnation: Option<&str>,
) -> Result<Option<TranscriptReader>, StateError> {
    let incarnation = match incarnation {
        Some(named) => named.to_owned(),
        None => store.current_incarnation(room).await?,
    };
    let key = RoomKeys::new(room).transcript_of(&incarnation);
    let first = store.transcript_page(&key, "-", PAGE).await?;
    let Some((cursor, _)) = first.last() else {
        return Ok(None);
    };
    // Then the pages after the last entry read, until one comes back short.
    let rest = (first.len() == PAGE).then(|| (store.clone(), key, format!("({cursor}")));
    let rest = futures_util::stream::unfold(rest, |state| async move {
        let (store, key, start) = state?;
        match store.transcript_page(&key, &start, PAGE).await {
            Ok(page) => {
                let next = match page.last() {
                    Some((cursor, _)) if page.len() == PAGE => {
                        Some((store, key, format!("({cursor}")))
                    }
                    _ => None,
                };
                let entries = page.into_iter().map(|(_, json)| json).collect();
                Some((Ok(entries), next))
            }
            Err(error) => Some((Err(error), None)),
        }
    });
    let first: Vec<String> = first.into_iter().map(|(_, json)| json).collect();
    Ok(Some(TranscriptReader {
        room: room.clone(),
        incarnation: (!incarnation.is_empty()).then_some(incarnation),
        pages: futures_util::stream::once(async { Ok(first) })
            .chain(rest)
            .boxed(),
    }))
}

/// Entries held back to put the transcript in order as it streams (see
/// `chatfleet_wire::transcript::TranscriptOrder`): about 1 MiB.
const ORDER_WINDOW: usize = 4096;

/// A room's transcript: every message in order with names and roles, who joined and left
/// when, and the close. Kept for the retention after the room closes. Streamed: the JSON
/// answer lists `entries` first and its summary (`messages`, `complete`, `closed`) after them;
/// the text answer notes an incomplete transcript on its last line.
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
    let reader = directory.transcript(&id, incarnation).await?;
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain"));
    let format = query.format.unwrap_or(if wants_text {
        TranscriptFormat::Text
    } else {
        TranscriptFormat::Json
    });
    let content_type = match format {
        TranscriptFormat::Json => "application/json",
        TranscriptFormat::Text => "text/plain; charset=utf-8",
    };
    let body = Body::from_stream(stream_transcript(reader, format));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Where a streamed transcript is.
enum Streaming {
    Start(TranscriptReader),
    Pages {
        pages: BoxStream<'static, Result<Vec<String>, StateError>>,
        order: Box<TranscriptOrder>,
        first: bool,
    },
    Done,
}

/// The transcript as chunks of the answer's body, a page of entries per chunk. A read that
/// fails midway ends the body early (the client sees a cut answer, never a wrong one).
fn stream_transcript(
    reader: TranscriptReader,
    format: TranscriptFormat,
) -> impl futures_util::Stream<Item = Result<String, StateError>> {
    futures_util::stream::unfold(Streaming::Start(reader), move |state| async move {
        match state {
            Streaming::Start(reader) => {
                let head = match format {
                    TranscriptFormat::Json => {
                        let mut head = format!("{{\"room\":{}", json(&reader.room));
                        if let Some(incarnation) = &reader.incarnation {
                            let _ = write!(head, ",\"incarnation\":{}", json(incarnation));
                        }
                        head.push_str(",\"entries\":[");
                        head
                    }
                    TranscriptFormat::Text => {
                        let mut head = format!("Transcript of {}", reader.room);
                        if let Some(incarnation) = &reader.incarnation {
                            let _ = write!(head, " (incarnation {incarnation})");
                        }
                        head.push('\n');
                        head
                    }
                };
                let next = Streaming::Pages {
                    pages: reader.pages,
                    order: Box::new(TranscriptOrder::new(ORDER_WINDOW)),
                    first: true,
                };
                Some((Ok(head), next))
            }
            Streaming::Pages {
                mut pages,
                mut order,
                mut first,
            } => {
                let (due, more) = match pages.next().await {
                    Some(Ok(page)) => {
                        let due: Vec<_> = page.iter().flat_map(|j| order.push_json(j)).collect();
                        (due, true)
                    }
                    Some(Err(error)) => return Some((Err(error), Streaming::Done)),
                    None => (order.finish(), false),
                };
                let mut chunk = String::new();
                for entry in &due {
                    match format {
                        TranscriptFormat::Json => {
                            if !first {
                                chunk.push(',');
                            }
                            chunk.push_str(&entry.to_json());
                        }
                        TranscriptFormat::Text => {
                            chunk.push_str(&text_line(entry));
                            chunk.push('\n');
                        }
                    }
                    first = false;
                }
                if more {
                    return Some((
                        Ok(chunk),
                        Streaming::Pages {
                            pages,
                            order,
                            first,
                        },
                    ));
                }
                match format {
                    TranscriptFormat::Json => {
                        let _ = write!(
                            chunk,
                            "],\"messages\":{},\"complete\":{},\"closed\":{}}}",
                            order.messages(),
                            order.complete(),
                            order.closed()
                        );
                    }
                    TranscriptFormat::Text if !order.complete() => {
                        chunk.push_str("(incomplete: some messages are missing)\n");
                    }
                    TranscriptFormat::Text => {}
                }
                Some((Ok(chunk), Streaming::Done))
            }
            Streaming::Done => None,
        }
    })
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("strings and room ids always encode")
}

/// The transcript for people: one entry per line, times in UTC, the header first and, for an
/// incomplete transcript, a note last (as the streamed answer has them).
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
    out.push('\n');
    for entry in &transcript.entries {
        out.push_str(&text_line(entry));
        out.push('\n');
    }
    if !transcript.complete {
        out.push_str("(incomplete: some messages are missing)\n");
    }
    out
}

/// One entry of the text transcript (its further lines indented), without the last newline.
fn text_line(entry: &TranscriptEntry) -> String {
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
    let mut out = format!("{stamp}  {head}");
    let indent = " ".repeat(stamp.len() + 2);
    for (n, line) in text.split(is_line_break).enumerate() {
        if n > 0 {
            let _ = write!(out, "\n{indent}| ");
        }
        out.push_str(&escape(line, false));
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
            "Transcript of support/case-7\n\
             2025-12-03 09:45:45 UTC  [agent dana] Dana joined\n\
             2025-12-03 09:45:46 UTC  [agent dana] Dana: On it.\n\
             (incomplete: some messages are missing)\n"
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
