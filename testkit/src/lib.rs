//! Real parts for the integration tests of every crate: a `redis-server` on a free port,
//! chatnode processes, a WebSocket client speaking the protocol through the shared frame
//! types, and a webhook receiver.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};

mod redis_cluster;
mod redis_servers;
mod webhook_receiver;
pub use redis_cluster::RedisCluster;
pub use redis_servers::{Redis, Sentinels, TlsFiles};
use std::time::{Duration, Instant};
pub use webhook_receiver::{Delivery, WebhookReceiver};

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{ClientFrame, Member, Role, ServerFrame};
use chatfleet_wire::load::{Limits, LoadReport};
use chatfleet_wire::token::TokenKeys;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const API_KEY: &str = "test-api-key";
pub const ADMIN_KEY: &str = "test-admin-key";
pub const SECRET: &str = "test-token-secret";
/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A port nothing listens on now, and never handed out before in this process: a test that
/// restarts its redis-server on its port must not find another test's server there.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The chatnode binary cargo built beside the running test (`target/<profile>/chatnode`).
pub fn chatnode_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/chatnode
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("chatnode"))
        .expect("the test binary lives under target/");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p chatnode` (scripts/test does)",
        binary.display()
    );
    binary
}

/// Set CHATFLEET_TEST_LOGS=1 to see the processes' logs.
fn child_stderr() -> Stdio {
    if std::env::var_os("CHATFLEET_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A chat node: a `chatnode` process, killed when dropped, or a node served inside the test's
/// own runtime (see [`Node::in_process`]), stopped when dropped.
pub struct Node {
    pub addr: SocketAddr,
    running: Running,
}

enum Running {
    Process(Child),
    InProcess(tokio::task::JoinHandle<()>),
}

/// The flags every test node starts with: a free port, the test API keys and token secret.
fn base_args() -> [&'static str; 8] {
    [
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        API_KEY,
        "--admin-api-key",
        ADMIN_KEY,
        "--token-secret",
        SECRET,
    ]
}

impl Node {
    /// Starts a node process on a free port with the test API key and token secret, plus
    /// `args`. Use a process wherever the test kills, signals or restarts the node.
    pub async fn start(args: &[&str]) -> Node {
        let mut child = Command::new(chatnode_binary())
            .args(base_args())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(child_stderr())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(PATIENCE))
            .await
            .unwrap()
            .expect("chatnode did not print its address");
        Node {
            addr: addr.parse().unwrap(),
            running: Running::Process(child),
        }
    }

    /// Runs a node inside the test's runtime, with the same flags as [`Node::start`]: `serve`
    /// gets the whole command line (program name first) and a listener bound to a free port,
    /// and serves until it is dropped. The caller supplies it (the chat node's `serve`), so
    /// this crate links no node. For tests that never kill or signal the node.
    pub async fn in_process<F, Fut>(args: &[&str], serve: F) -> Node
    where
        F: FnOnce(Vec<String>, TcpListener) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let argv = std::iter::once("chatnode")
            .chain(base_args())
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        let task = tokio::spawn(serve(argv, listener));
        Node {
            addr,
            running: Running::InProcess(task),
        }
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.running {
            Running::Process(child) => child,
            Running::InProcess(_) => panic!("an in-process node has no process: use Node::start"),
        }
    }

    /// A node of the fleet sharing `redis`, named `name`, reporting every 200 ms, plus `args`.
    pub async fn in_fleet(redis: &Redis, name: &str, args: &[&str]) -> Node {
        Self::on_redis(&redis.url(), name, args).await
    }

    /// A fleet node named `name` on the Redis at `url` (any layout), heartbeat every 200 ms,
    /// ready (its Redis answered) when this returns.
    pub async fn on_redis(url: &str, name: &str, args: &[&str]) -> Node {
        let node = Self::start_on_redis(url, name, args).await;
        eventually("the node reaches its Redis and is ready", || async {
            node.get("/readyz").await.status() == 200
        })
        .await;
        node
    }

    /// As [`Node::on_redis`], without waiting for it to be ready (it may never be).
    pub async fn start_on_redis(url: &str, name: &str, args: &[&str]) -> Node {
        let mut all = vec![
            "--redis-url",
            url,
            "--node-name",
            name,
            "--heartbeat-ms",
            "200",
        ];
        all.extend_from_slice(args);
        Node::start(&all).await
    }

    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Process(child) => child.id(),
            Running::InProcess(_) => panic!("an in-process node has no process: use Node::start"),
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws(&self, room: &str, query: &str) -> String {
        format!("ws://{}/v1/rooms/{room}/ws?{query}", self.addr)
    }

    /// A WebSocket URL with a fresh token for `user` in `room`.
    pub fn ws_as(&self, room: &str, user: &str, extra: &str) -> String {
        self.ws(
            room,
            &format!("token={}{extra}", token(room, user, Role::Customer)),
        )
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.http(path)).await.unwrap()
    }

    /// Calls an HTTP API route with `key` in `X-API-Key`; returns the status and the JSON
    /// body (`Null` when empty).
    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .request(method, self.http(path))
            .header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
        };
        (status, body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess(task) => task.abort(),
        }
    }
}

/// A load report of `node` (at `ws://<node>.chat.support.svc:8080`) with `users` of
/// `max_users` seats taken, `msg_rate` messages a second, not draining.
pub fn load_report(node: &str, users: u32, max_users: u32, msg_rate: f64) -> LoadReport {
    LoadReport {
        node: node.into(),
        advertise_url: format!("ws://{node}.chat.support.svc:8080"),
        users,
        rooms: 0,
        msg_rate,
        limits: Limits {
            max_node_users: max_users,
            max_room_members: 300,
        },
        draining: false,
        version: "test".into(),
        ts_ms: 1,
        boot: String::new(),
    }
}

pub fn token(room: &str, user: &str, role: Role) -> String {
    token_with(SECRET, room, user, role, Duration::from_secs(600))
}

pub fn token_with(secret: &str, room: &str, user: &str, role: Role, ttl: Duration) -> String {
    let member = Member {
        user: user.into(),
        name: format!("{user} name"),
        role,
    };
    let room: RoomId = room.parse().unwrap();
    TokenKeys::from_secret(secret.as_bytes())
        .mint(&room, &member, ttl)
        .0
}

/// A token for `user` in one incarnation of `room`, as the room API mints them.
pub fn token_for_incarnation(room: &str, incarnation: &str, user: &str) -> String {
    let member = Member {
        user: user.into(),
        name: format!("{user} name"),
        role: Role::Customer,
    };
    let room: RoomId = room.parse().unwrap();
    TokenKeys::from_secret(SECRET.as_bytes())
        .mint_for(&room, Some(incarnation), &member, Duration::from_secs(600))
        .0
}

/// A WebSocket client that speaks chatfleet's frames.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn try_connect(url: &str) -> Result<Client, tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client { ws })
    }

    pub async fn connect(url: &str) -> Client {
        Self::try_connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Connects and reads the welcome.
    pub async fn join(url: &str) -> (Client, chatfleet_wire::frames::Welcome) {
        let mut client = Self::connect(url).await;
        match client.recv().await {
            ServerFrame::Welcome(welcome) => (client, welcome),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    /// The next frame, or `None` if the server closed.
    pub async fn next(&mut self) -> Option<Result<ServerFrame, Option<CloseFrame>>> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("no frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(Ok(serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("bad frame {text}: {e}"))));
                }
                Some(Ok(Message::Close(close))) => return Some(Err(close)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn recv(&mut self) -> ServerFrame {
        match self.next().await {
            Some(Ok(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame that is not presence.
    pub async fn recv_skip_presence(&mut self) -> ServerFrame {
        loop {
            match self.recv().await {
                ServerFrame::Presence(_) => continue,
                frame => return frame,
            }
        }
    }

    /// The next chat message, skipping presence.
    pub async fn message(&mut self) -> chatfleet_wire::frames::Message {
        match self.recv_skip_presence().await {
            ServerFrame::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next().await {
                Some(Ok(_)) => continue,
                Some(Err(close)) => return close,
                None => return None,
            }
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends `body` as a new message and returns the `client_id` it carries: unique, since a
    /// client id names one send (a retry with the same id is appended once).
    pub async fn say(&mut self, body: &str) -> String {
        static SENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client_id = format!("c-{}-{n}", &body[..body.len().min(20)]);
        self.say_as(body, &client_id).await;
        client_id
    }

    /// Sends `body` with the given `client_id` (a retry repeats the first one's).
    /// Every message received until none came for `quiet`: (id, body) in arrival order.
    pub async fn messages_until_quiet(&mut self, quiet: Duration) -> Vec<(u64, String)> {
        let mut messages = Vec::new();
        while let Ok(frame) = tokio::time::timeout(quiet, self.recv_skip_presence()).await {
            if let ServerFrame::Message(m) = frame {
                messages.push((m.id, m.content.body));
            }
        }
        messages
    }

    /// Sends `body` as a client told `unavailable` or `unconfirmed` does: the same send (same
    /// `client_id`) again until it is accepted, for at most `limit`. Returns the accepted
    /// message and how many sends were refused.
    pub async fn say_until_accepted(
        &mut self,
        body: &str,
        client_id: &str,
        limit: Duration,
    ) -> (chatfleet_wire::frames::Message, u32) {
        use chatfleet_wire::frames::ErrorCode;
        let started = Instant::now();
        let mut refusals = 0;
        loop {
            assert!(
                started.elapsed() < limit,
                "`{body}` not accepted within {limit:?} ({refusals} refusals)"
            );
            self.say_as(body, client_id).await;
            match tokio::time::timeout(Duration::from_secs(5), self.recv_skip_presence()).await {
                Ok(ServerFrame::Message(m)) if m.content.body == body => return (m, refusals),
                Ok(ServerFrame::Error(error)) => {
                    assert!(
                        matches!(error.code, ErrorCode::Unavailable | ErrorCode::Unconfirmed),
                        "{error:?}"
                    );
                    refusals += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {}
            }
        }
    }

    pub async fn say_as(&mut self, body: &str, client_id: &str) {
        let frame = ClientFrame::Send {
            body: body.into(),
            client_id: Some(client_id.to_owned()),
        };
        self.send_raw(&serde_json::to_string(&frame).unwrap()).await;
    }

    /// Sends a close and waits for the server's.
    pub async fn leave(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }

    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { ws }
    }

    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

/// Expects an `error` frame with `code`.
pub fn assert_error(frame: &ServerFrame, code: chatfleet_wire::frames::ErrorCode) {
    match frame {
        ServerFrame::Error(error) => assert_eq!(error.code, code, "{error:?}"),
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// Polls `check` until it holds or PATIENCE runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket client that writes frames byte by byte, to break the protocol on purpose.
pub struct RawClient {
    stream: TcpStream,
}

/// WebSocket opcodes.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
}

/// One frame as a raw client writes it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// A length to declare instead of the payload's.
    pub declared_len: Option<u64>,
}

impl RawFrame {
    /// A final, masked frame.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            fin: true,
            rsv1: false,
            opcode,
            masked: true,
            payload: payload.into(),
            declared_len: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push((u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | (self.opcode & 0x0f));
        let mask_bit = u8::from(self.masked) << 7;
        let len = self.declared_len.unwrap_or(self.payload.len() as u64);
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= u64::from(u16::MAX) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if self.masked {
            out.extend_from_slice(&key);
            out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(&self.payload);
        }
        out
    }
}

impl RawClient {
    /// Opens a WebSocket to `url` (`ws://host:port/path?query`) by hand; panics unless the node
    /// answers 101.
    pub async fn connect(url: &str) -> RawClient {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut stream = TcpStream::connect(host).await.unwrap();
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut byte)
                .await
                .unwrap();
            assert_eq!(n, 1, "the node closed during the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        RawClient { stream }
    }

    pub async fn send(&mut self, frame: &RawFrame) {
        self.send_bytes(&frame.encode()).await;
    }

    /// Writes bytes; a node that already closed may refuse some, which is fine here.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut self.stream, bytes).await;
    }

    /// The next frame from the node: (opcode, payload); None at the end of the stream.
    pub async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => u64::from(self.stream.read_u16().await.ok()?),
            127 => self.stream.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    }

    /// Reads until the node's close frame and returns its code, or None if the connection
    /// ended (or was reset) without one.
    pub async fn close_code(&mut self) -> Option<u16> {
        let read = async {
            while let Some((opcode, payload)) = self.frame().await {
                if opcode == opcode::CLOSE {
                    return Some(
                        payload
                            .get(..2)
                            .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                    );
                }
            }
            None
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a close in time")
    }

    /// Reads until the end of the stream; true if it ended cleanly (FIN), false on a reset.
    pub async fn ends_cleanly(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the end in time")
    }
}
