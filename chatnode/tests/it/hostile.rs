//! Hostile and broken clients, spoken to byte by byte: every connection ends with a close frame
//! carrying the right code and a clean end of stream (no reset), and none can hold the node.

use std::time::{Duration, Instant};

use chatfleet_wire::frames::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpSocket;

use crate::support::{API_KEY, Node, PATIENCE, RawClient, RawFrame, in_process, opcode, token};

/// A raw client joined to `room` under dev auth, past its `welcome`.
async fn joined(node: &Node, room: &str) -> RawClient {
    let mut client = RawClient::connect(&node.ws(room, "user=raw")).await;
    let (op, welcome) = client.frame().await.expect("a welcome");
    assert_eq!(op, opcode::TEXT);
    assert!(String::from_utf8_lossy(&welcome).contains("\"welcome\""));
    client
}

/// Sends `frames`, then expects a close with `code` and a clean end of the stream.
async fn expect_close(node: &Node, what: &str, frames: &[RawFrame], code: u16) {
    let mut client = joined(node, "support/hostile").await;
    for frame in frames {
        client.send(frame).await;
    }
    assert_eq!(client.close_code().await, Some(code), "{what}");
    assert!(client.ends_cleanly().await, "{what}: the stream was reset");
}

fn text(payload: impl Into<Vec<u8>>) -> RawFrame {
    RawFrame::new(opcode::TEXT, payload)
}

fn fragment(opcode: u8, payload: impl Into<Vec<u8>>, fin: bool) -> RawFrame {
    RawFrame {
        fin,
        ..RawFrame::new(opcode, payload)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_above_the_limit_get_1009() {
    let node = in_process(&["--insecure-dev-auth"]).await;
    for size in [64 * 1024 + 1, 300_000, 1 << 20, 16 << 20] {
        let frame = text(vec![b'a'; size]);
        expect_close(
            &node,
            &format!("a text frame of {size} bytes"),
            &[frame],
            1009,
        )
        .await;
    }
    let binary = RawFrame::new(opcode::BINARY, vec![0u8; 1 << 20]);
    expect_close(&node, "a 1 MiB binary frame", &[binary], 1009).await;
    let mut fragments = vec![fragment(opcode::TEXT, vec![b'a'; 1024], false)];
    fragments.extend((0..98).map(|_| fragment(opcode::CONTINUATION, vec![b'a'; 1024], false)));
    fragments.push(fragment(opcode::CONTINUATION, vec![b'a'; 1024], true));
    expect_close(&node, "100 fragments of 1 KiB", &fragments, 1009).await;
    let huge = RawFrame {
        declared_len: Some(1 << 62),
        ..text(b"x".to_vec())
    };
    expect_close(&node, "a length header of 2^62", &[huge], 1009).await;
}

#[tokio::test]
async fn protocol_violations_get_1002_and_bad_utf8_1007() {
    let node = in_process(&["--insecure-dev-auth"]).await;
    expect_close(
        &node,
        "invalid UTF-8",
        &[text(vec![0xff, 0xfe, 0xfd])],
        1007,
    )
    .await;
    let cases: Vec<(&str, Vec<RawFrame>)> = vec![
        (
            "a continuation without a start",
            vec![fragment(opcode::CONTINUATION, "x", true)],
        ),
        (
            "a text frame inside a fragmented message",
            vec![fragment(opcode::TEXT, "x", false), text("y")],
        ),
        (
            "a fragmented ping",
            vec![fragment(opcode::PING, "x", false)],
        ),
        (
            "a 126-byte ping",
            vec![RawFrame::new(opcode::PING, vec![0u8; 126])],
        ),
        (
            "RSV1 set",
            vec![RawFrame {
                rsv1: true,
                ..text("{}")
            }],
        ),
        ("opcode 0x3", vec![RawFrame::new(0x3, "x")]),
        ("opcode 0xB", vec![RawFrame::new(0xB, "x")]),
        (
            "an unmasked frame",
            vec![RawFrame {
                masked: false,
                ..text("{}")
            }],
        ),
        (
            "a close frame with a one-byte payload",
            vec![RawFrame::new(opcode::CLOSE, vec![3u8])],
        ),
    ];
    for (what, frames) in cases {
        expect_close(&node, what, &frames, 1002).await;
    }
}

#[tokio::test]
async fn a_clients_close_is_answered() {
    let node = in_process(&["--insecure-dev-auth"]).await;
    for code in [1000u16, 1001, 4000] {
        let close = RawFrame::new(opcode::CLOSE, code.to_be_bytes().to_vec());
        expect_close(&node, &format!("a close {code}"), &[close], code).await;
    }
    let bare = RawFrame::new(opcode::CLOSE, Vec::new());
    let mut client = joined(&node, "support/hostile").await;
    client.send(&bare).await;
    assert_eq!(
        client.close_code().await,
        Some(1005),
        "an empty close is echoed empty"
    );
    assert!(client.ends_cleanly().await);
    // A close code no one may send is a protocol error.
    let reserved = RawFrame::new(opcode::CLOSE, 999u16.to_be_bytes().to_vec());
    expect_close(&node, "a close 999", &[reserved], 1002).await;
}

/// Open sessions on the node, from its metrics.
async fn connections(node: &Node) -> u64 {
    let text = node.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("chatnode_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the connections gauge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_bad_frames_and_never_reads_is_cut_off() {
    let node = in_process(&["--insecure-dev-auth", "--ping-seconds", "1"]).await;
    let mut client = joined(&node, "support/hostile").await;
    assert_eq!(connections(&node).await, 1);
    let junk: Vec<u8> = (0..20_000).flat_map(|_| text("{").encode()).collect();
    client.send_bytes(&junk).await;
    let deadline = Instant::now() + PATIENCE;
    while connections(&node).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the flooding client still holds its seat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        client.close_code().await,
        Some(1008),
        "cut off for flooding"
    );
}

/// Every ping asks for a pong: a client that sends pings and never reads must not make the
/// node queue pongs without end. Its pongs count against its queue's byte cap like any frame,
/// and once its socket is full the session stops reading it and gives up on the write at the
/// next ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_and_never_reads_is_cut_off() {
    let node = in_process(&[
        "--insecure-dev-auth",
        "--outbound-queue-bytes",
        "65536",
        "--ping-seconds",
        "2",
    ])
    .await;
    let mut client = joined(&node, "support/hostile").await;
    let ping: Vec<u8> = RawFrame::new(opcode::PING, vec![b'p'; 125]).encode();
    let started = Instant::now();
    // Far more pongs than the sockets' kernel buffers (megabytes on loopback) and the 64 KiB
    // cap hold together, though the node answers only the latest of the pings it read at once.
    for _ in 0..400 {
        let burst: Vec<u8> = (0..1_000).flat_map(|_| ping.clone()).collect();
        // A node that already closed refuses the bytes; a stalled write ends the bursts too.
        let sent = tokio::time::timeout(Duration::from_secs(1), client.send_bytes(&burst)).await;
        if sent.is_err() || connections(&node).await == 0 {
            break;
        }
    }
    while connections(&node).await > 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "the pinging client still holds its seat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP connection from `source` that sends `bytes` (half a request head, or nothing) and
/// stops.
async fn stalled(node: &Node, source: &str, bytes: &[u8]) -> Option<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(node.addr).await.ok()?;
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, bytes).await;
    Some(stream)
}

/// Whether the node has closed `stream` (end of stream or reset), waiting up to `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_shed_and_real_clients_still_join() {
    let node = in_process(&[
        "--header-timeout-seconds",
        "1",
        "--max-pending-per-address",
        "50",
    ])
    .await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..500 {
        let bytes: &[u8] = if i % 2 == 0 {
            b"GET / HTTP/1.1\r\nHost: x\r\n"
        } else {
            b""
        };
        if let Some(stream) = stalled(&node, "127.0.0.1", bytes).await {
            idle.push(stream);
        }
    }
    let opening = started.elapsed();
    // A real client from another address joins while they wait.
    let url = node.ws(
        "support/real",
        &format!("token={}", token("support/real", "ann", Role::Customer)),
    );
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (mut real, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let welcome = futures_util::StreamExt::next(&mut real)
        .await
        .unwrap()
        .unwrap();
    assert!(welcome.to_text().unwrap().contains("\"welcome\""));

    let mut open = 0;
    for stream in &mut idle {
        if !closed_within(stream, PATIENCE).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "every idle connection is closed");
    println!(
        "{} idle or half-sent connections from one address: all shed after {:?}",
        idle.len(),
        started.elapsed()
    );
    let text = node.get("/metrics").await.text().await.unwrap();
    let shed: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("chatnode_shed_connections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    // An accepted connection holds one of the address's 50 places until its 1 s header
    // timeout, so while they were being opened at most this many could be let in.
    let admitted_at_most = 50 * (1 + opening.as_secs() as usize);
    assert!(
        shed as usize + admitted_at_most >= idle.len(),
        "past its share of 50, an address is shed at accept ({shed} shed in {opening:?})"
    );
}

#[tokio::test]
async fn bad_queries_and_plain_requests_get_json_errors() {
    let node = in_process(&["--insecure-dev-auth"]).await;
    let http = reqwest::Client::new();
    let upgrade = |query: &str| {
        http.get(node.http(&format!("/v1/rooms/support/a/ws?{query}")))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    for query in [
        "user=a&user=b",
        "user=a&since=-1",
        "user=a&since=abc",
        "user=a&since=18446744073709551616",
    ] {
        let response = upgrade(query).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
    let plain = http
        .get(node.http("/v1/rooms/support/a/ws?user=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_websocket");
}

#[tokio::test]
async fn names_are_bounded_where_they_enter() {
    let node = in_process(&["--insecure-dev-auth"]).await;
    let long = "n".repeat(60_000);
    let http = reqwest::Client::new();
    let response = http
        .get(node.http(&format!("/v1/rooms/support/a/ws?user=u&name={long}")))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_member");

    let (status, _) = node
        .call(
            API_KEY,
            reqwest::Method::POST,
            "/v1/rooms",
            Some(json!({"namespace": "support", "name": "b"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = node
        .call(
            API_KEY,
            reqwest::Method::POST,
            "/v1/rooms/support/b/tokens",
            Some(json!({"user": "u", "name": "n".repeat(100_000)})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let node = in_process(&[]).await;
    let http = reqwest::Client::new();
    let token = token("support/a", "ann", Role::Customer);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = tokio_tungstenite::tungstenite::http::Request::builder()
            .uri(node.ws("support/a", ""))
            .header("host", node.addr.to_string())
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("authorization", format!("{scheme} {token}"))
            .body(())
            .unwrap();
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let welcome = futures_util::StreamExt::next(&mut socket)
            .await
            .unwrap()
            .unwrap();
        assert!(
            welcome.to_text().unwrap().contains("\"welcome\""),
            "{scheme}"
        );
    }
    let _ = http;
}

#[tokio::test]
async fn an_unreadable_path_gets_a_json_error() {
    let node = in_process(&[]).await;
    for path in ["/v1/rooms/support/%FF", "/v1/users/%FF/sessions"] {
        let (status, body) = node.call(API_KEY, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{path}");
    }
}
