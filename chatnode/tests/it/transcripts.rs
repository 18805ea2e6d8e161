//! Transcripts through the room API: what two real nodes on a real Redis recorded matches what
//! the members received, joins and leaves included, and it outlives the room's close; the
//! same on a standalone node.

use chatfleet_wire::frames::Role;
use chatfleet_wire::transcript::{Transcript, TranscriptEntry};
use serde_json::json;

use crate::support::{API_KEY, Client, Node, Redis, eventually, in_process, token};

/// The transcript as JSON, or None on 404.
async fn transcript(node: &Node, room: &str) -> Option<Transcript> {
    let path = format!("/v1/rooms/{room}/transcript");
    let (status, body) = node.call(API_KEY, reqwest::Method::GET, &path, None).await;
    match status {
        200 => Some(serde_json::from_value(body).unwrap()),
        404 => None,
        other => panic!("{path}: {other} {body}"),
    }
}

/// The transcript for people, asked for with `Accept: text/plain`.
async fn transcript_text(node: &Node, room: &str) -> String {
    let response = reqwest::Client::new()
        .get(node.http(&format!("/v1/rooms/{room}/transcript")))
        .header("x-api-key", API_KEY)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// `+user` / `-user` for joins and leaves, `id:body` for messages, `closed: reason`.
fn outline(transcript: &Transcript) -> Vec<String> {
    transcript
        .entries
        .iter()
        .map(|e| match e {
            TranscriptEntry::Message(m) => format!("{}:{}", m.id, m.content.body),
            TranscriptEntry::Joined(e) => format!("+{}", e.user),
            TranscriptEntry::Left(e) => format!("-{}", e.user),
            TranscriptEntry::Closed { reason, .. } => format!("closed: {reason}"),
        })
        .collect()
}

#[tokio::test]
async fn a_fleet_transcript_matches_what_members_received_and_outlives_the_close() {
    let redis = Redis::start().await;
    let first = Node::in_fleet(&redis, "chat-0", &[]).await;
    let second = Node::in_fleet(&redis, "chat-1", &[]).await;
    let room = "support/case-tr";
    assert!(
        transcript(&first, room).await.is_none(),
        "no transcript yet"
    );

    let (mut ann, _) = Client::join(&first.ws_as(room, "ann", "")).await;
    let agent = format!("token={}", token(room, "dana", Role::Agent));
    let (mut dana, _) = Client::join(&second.ws(room, &agent)).await;
    // One after the other, so the order of the conversation is known.
    let mut received = Vec::new();
    for (speaker, body) in [
        (0, "my order is stuck"),
        (1, "looking at it"),
        (0, "thanks"),
    ] {
        if speaker == 0 {
            ann.say(body).await;
        } else {
            dana.say(body).await;
        }
        ann.message().await;
        received.push(dana.message().await);
    }
    dana.leave().await;

    // Joins and leaves are recorded on the rooms' next tick (a second).
    eventually("the transcript has dana's leave", || async {
        transcript(&first, room)
            .await
            .is_some_and(|t| outline(&t).contains(&"-dana".to_owned()))
    })
    .await;
    let open = transcript(&second, room).await.unwrap();
    assert_eq!(
        outline(&open),
        [
            "+ann",
            "+dana",
            "1:my order is stuck",
            "2:looking at it",
            "3:thanks",
            "-dana"
        ]
    );
    assert!(
        open.complete && !open.closed && open.messages == 3,
        "{open:?}"
    );
    let recorded: Vec<_> = open
        .entries
        .iter()
        .filter_map(|e| match e {
            TranscriptEntry::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, received, "exactly what the members received");

    let (status, body) = first
        .call(
            API_KEY,
            reqwest::Method::POST,
            "/v1/rooms",
            Some(json!({"namespace": "support", "name": "case-tr"})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let path = format!("/v1/rooms/{room}?reason=resolved");
    let (status, body) = first
        .call(API_KEY, reqwest::Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 204, "{body}");

    // Closed: the history is gone, the transcript stays, ending with the close.
    let closed = transcript(&second, room).await.unwrap();
    assert!(closed.closed && closed.complete, "{closed:?}");
    assert_eq!(outline(&closed).last().unwrap(), "closed: resolved");
    let (status, _) = first
        .call(
            API_KEY,
            reqwest::Method::GET,
            &format!("/v1/rooms/{room}/history"),
            None,
        )
        .await;
    assert_eq!(status, 404, "a closed room has no history");
    let text = transcript_text(&first, room).await;
    let lines: Vec<&str> = text.lines().collect();
    // Joined before the room API created it, the room kept no incarnation.
    assert_eq!(lines[0], "Transcript of support/case-tr", "{text}");
    assert!(
        lines[1].ends_with("[customer ann] ann name joined"),
        "{text}"
    );
    assert!(
        lines[4].ends_with("[agent dana] dana name: looking at it"),
        "{text}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("The room was closed: resolved"),
        "{text}"
    );

    let path = format!("/v1/rooms/{room}/transcript?format=yaml");
    let (status, _) = first.call(API_KEY, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 400, "an unknown format is refused");
    let (status, _) = first
        .call(
            "wrong",
            reqwest::Method::GET,
            &format!("/v1/rooms/{room}/transcript"),
            None,
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_standalone_transcript_keeps_messages_past_the_history_and_can_be_turned_off() {
    let node = in_process(&["--history-len", "2"]).await;
    let room = "support/case-ts";
    let (mut ann, _) = Client::join(&node.ws_as(room, "ann", "")).await;
    for body in ["a", "b", "c"] {
        ann.say(body).await;
        ann.message().await;
    }
    ann.leave().await;
    eventually("ann's leave is recorded", || async {
        transcript(&node, room)
            .await
            .is_some_and(|t| outline(&t).last().is_some_and(|e| e == "-ann"))
    })
    .await;
    let recorded = transcript(&node, room).await.unwrap();
    assert_eq!(outline(&recorded), ["+ann", "1:a", "2:b", "3:c", "-ann"]);
    assert!(
        recorded.complete,
        "the history kept 2, the transcript all 3"
    );

    let off = in_process(&["--transcript-max-entries", "0"]).await;
    let (mut bob, _) = Client::join(&off.ws_as(room, "bob", "")).await;
    bob.say("x").await;
    bob.message().await;
    bob.leave().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        transcript(&off, room).await.is_none(),
        "no transcripts kept"
    );
}
