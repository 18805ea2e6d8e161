//! One client's WebSocket connection: admission, then a loop that reads the client's frames,
//! flushes what its rooms could not write at once, pings it, and ends it cleanly on drain, overflow or silence.
//! Every write is bounded in time, and every end goes through [`closing`](super::closing).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatfleet_wire::RoomId;
use chatfleet_wire::clock::unix_millis;
use chatfleet_wire::frames::{
    ClientFrame, ErrorCode, Member, Message as WireMessage, MessageContent, ServerFrame,
    TYPING_INTERVAL_MS, bounds, close, message_tail,
};
use chatfleet_wire::webhook::{EventBody, WebhookEvent};

use crate::fleet::elsewhere::{self, Elsewhere};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::admission::Refusal;
use super::client_socket::ClientSocket;
use super::closing::{self, End};
use super::hub::Hub;
use super::hub::Seat;
use super::outbox::{OutboxReceiver, outbox_for};

use super::room::{ConnId, JoinRequest, RoomHandle};
use super::user_sessions::SessionSlot;
use crate::store::{Backend, StateError};

/// Limits one connection enforces on its client.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_message_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub outbound_queue_bytes: usize,
    pub ping_interval: Duration,
}

/// Who is joining which room.
#[derive(Debug, Clone)]
pub struct Admission {
    pub room: RoomId,
    pub member: Member,
    pub since: Option<u64>,
    /// The epoch of `since`, when the client knows it.
    pub epoch: Option<String>,
    /// The room incarnation the client's token was minted for, if it names one.
    pub incarnation: Option<String>,
}

/// Rate-limit rejections per second, in bursts, after which a client counts as flooding.
const FLOOD_REJECTIONS_PER_BURST: u32 = 4;
/// Close reason for a client cut off for reading too slowly.
const SLOW_CONSUMER: &str = "slow_consumer";

/// The client's socket once upgraded: the TCP stream, the bytes already read past the HTTP
/// request, and the WebSocket settings.
pub struct Upgraded {
    pub stream: TcpStream,
    pub read_ahead: Vec<u8>,
    pub config: WebSocketConfig,
}

/// Runs the session until the client leaves or is sent away.
///
/// Admission runs in its own (boxed, short-lived) future and the session's loop over one boxed
/// [`Session`]: an idle session's task then holds only what the loop needs (872 bytes, from
/// 2,168 when one `async fn` held every step's locals). Thousands of idle connections make
/// that matter.
pub fn run(
    upgraded: Upgraded,
    hub: Arc<Hub>,
    limits: ConnectionLimits,
    who: Admission,
) -> impl Future<Output = ()> + Send {
    Session::serve(Box::pin(admit(upgraded, hub, limits, who)))
}

/// Opens the WebSocket and takes a seat, a session slot and a place in the room; refuses the
/// client (and returns `None`) when any of them cannot be had.
async fn admit(
    upgraded: Upgraded,
    hub: Arc<Hub>,
    limits: ConnectionLimits,
    who: Admission,
) -> Option<Box<Session>> {
    // Rooms write into the socket through the outbox; the session reads it through `socket`.
    let stream = Arc::new(upgraded.stream);
    let (out, queue) = outbox_for(limits.outbound_queue_bytes, Some(stream.clone()));
    let socket = WebSocketStream::from_partially_read(
        ClientSocket::new(stream, out.clone()),
        upgraded.read_ahead,
        WsRole::Server,
        Some(upgraded.config),
    )
    .await;
    let seat = match hub.take_seat() {
        Ok(seat) => seat,
        Err(refusal @ (Refusal::NodeFull | Refusal::Draining)) => {
            // The room goes on elsewhere: send the client to a node with a seat.
            match hub.redirect(&who.room).await {
                Some(endpoint) => redirect(socket, &hub, &who.room, endpoint, refusal).await,
                None => refuse(socket, &hub, refusal).await,
            }
            return None;
        }
        Err(refusal) => {
            refuse(socket, &hub, refusal).await;
            return None;
        }
    };
    // Held for the whole session; dropping it frees the user's slot.
    let slot = match hub.user_sessions().claim(&who.member.user).await {
        Ok(slot) => slot,
        Err(refusal) => {
            refuse(socket, &hub, refusal).await;
            return None;
        }
    };
    // In a fleet the room's limit holds across every node its members are on.
    let default_max = hub.limits().max_room_members;
    if let Err(refusal) = hub
        .user_sessions()
        .claim_room_seat(&slot, &who.room, default_max)
        .await
    {
        refuse(socket, &hub, refusal).await;
        return None;
    }
    let elsewhere = match hub.backend() {
        // Best effort: the welcome then lists this node's members only.
        Backend::Redis(redis) => elsewhere::read(redis.state(), &who.room, hub.node_name())
            .await
            .unwrap_or_default(),
        Backend::Memory(_) => Elsewhere::default(),
    };
    let conn = hub.next_conn_id();
    let request = JoinRequest {
        conn,
        member: who.member.clone(),
        outbox: out,
        since: who.since,
        epoch: who.epoch.clone(),
        incarnation: who.incarnation.clone(),
        elsewhere,
    };
    let room = match hub.rooms().join(&who.room, request).await {
        Ok(room) => room,
        Err(refusal) => {
            refuse(socket, &hub, refusal).await;
            return None;
        }
    };
    tracing::debug!(room = %who.room, user = %who.member.user, conn, "joined");
    let limiter = RateLimiter::direct(quota(&limits));
    Some(Box::new(Session {
        socket,
        queue,
        seat,
        slot,
        conn,
        client: Connection {
            hub,
            room,
            member: who.member,
            limits,
            limiter,
            rejections: (0, Instant::now()),
            flooding: false,
            last_typing: None,
            last_read: 0,
        },
    }))
}

/// Everything an admitted session holds while it runs.
struct Session {
    socket: WebSocketStream<ClientSocket>,
    queue: OutboxReceiver,
    /// Held for the session; dropping them frees the node's seat and the user's slot.
    seat: Seat,
    slot: SessionSlot,
    conn: ConnId,
    client: Connection,
}

impl Session {
    /// Admits the client, then runs the session's loop: reads the client's frames, flushes
    /// what its rooms could not write at once, pings, and ends on drain, overflow, silence or
    /// an ended slot.
    ///
    /// The session lives in one box the loop uses in place, so no step of this future keeps a
    /// second copy of it.
    async fn serve(admitting: Pin<Box<dyn Future<Output = Option<Box<Session>>> + Send>>) {
        let Some(mut this) = admitting.await else {
            return;
        };
        let limits = &this.client.limits;
        let write_limit = limits.ping_interval;
        let overflow = this.queue.overflow_token();
        let drain = this.client.hub.drain_token();
        let ended = this.slot.ended().clone();
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.tick().await;
        let mut awaiting_pong = false;
        let socket = &mut this.socket;
        let end: End = loop {
            tokio::select! {
                _ = overflow.cancelled() => break End::Close(close::GOING_AWAY, SLOW_CONSUMER),
                _ = ended.cancelled() => {
                    let frame = ServerFrame::error(ErrorCode::SessionEnded, "this session was ended: by an administrator, or its slot expired while its node could not reach Redis");
                    if let Err(end) = Box::pin(send(socket, frame, write_limit)).await {
                        break end;
                    }
                    break End::Close(close::POLICY, "session ended");
                }
                _ = drain.cancelled() => {
                    let frame = ServerFrame::Draining { reason: "the node is shutting down; reconnect with since".into() };
                    if let Err(end) = Box::pin(send(socket, frame, write_limit)).await {
                        break end;
                    }
                    break End::Close(close::SERVICE_RESTART, "draining");
                }
                _ = this.queue.queued() => {
                    // The socket did not take everything at once. A client that stops
                    // reading must not hold its session forever: the flush gives up on
                    // overflow, or when it has not finished by the next ping.
                    match Box::pin(flush_within(&this.queue, &overflow, write_limit)).await {
                        Ok(()) => {}
                        Err(end) => break end,
                    }
                }
                inbound = socket.next() => {
                    let message = match inbound {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => break closing::on_read_error(&error),
                        None => break End::Gone,
                    };
                    awaiting_pong = false;
                    let client = &mut this.client;
                    let reply = match message {
                        // Boxed: the append's future is large and only lives for this
                        // call, so it should not widen every idle session's task.
                        Message::Text(text_frame) => Box::pin(client.on_text(&text_frame)).await,
                        Message::Binary(_) => Some(client.refuse_frame(ServerFrame::error(
                            ErrorCode::BadFrame,
                            "binary frames are not part of the protocol; send JSON text",
                        ))),
                        Message::Close(_) => break End::ClosedByClient,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
                    };
                    if let Some(reply) = reply
                        && let Err(end) = Box::pin(send(socket, reply, write_limit)).await
                    {
                        break end;
                    }
                    if client.flooding {
                        break End::Close(close::POLICY, "flooding");
                    }
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        break End::Close(close::GOING_AWAY, "ping timeout");
                    }
                    let ping = tokio::time::timeout(write_limit, socket.send(Message::Ping(Default::default())));
                    match Box::pin(ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::Gone,
                        Err(_) => break End::Close(close::GOING_AWAY, "write timeout"),
                    }
                    awaiting_pong = true;
                }
            }
        };
        // The session is over: its room, seat and slot go now, not after the closing
        // handshake.
        Box::pin(this.client.room.leave(this.conn)).await;
        drop(this.seat);
        drop(this.slot);
        tracing::debug!(room = %this.client.room.id(), conn = this.conn, ?end, "left");
        let Session { socket, queue, .. } = *this;
        Box::pin(finish(socket, &queue, end)).await;
    }
}

/// Writes out what a full socket left queued, within `limit`; the end to take when the
/// client overflowed, the write failed or took too long, or a close was asked for.
async fn flush_within(
    queue: &OutboxReceiver,
    overflow: &CancellationToken,
    limit: Duration,
) -> Result<(), End> {
    tokio::select! {
        flushed = tokio::time::timeout(limit, queue.flush()) => match flushed {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some((code, reason)))) => Err(End::Close(code, reason)),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(close::GOING_AWAY, "write timeout")),
        },
        _ = overflow.cancelled() => Err(End::Close(close::TRY_AGAIN_LATER, SLOW_CONSUMER)),
    }
}

/// Says goodbye (when there is something to say) and closes.
async fn finish<S>(mut socket: WebSocketStream<S>, queue: &OutboxReceiver, mut end: End)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if end == End::Close(close::TRY_AGAIN_LATER, SLOW_CONSUMER) {
        end = tell_slow_consumer(&mut socket, queue).await;
    }
    closing::finish(&mut socket, end).await;
}

/// How long a client that fell behind has to take the end of the frame it was reading, its
/// `slow_consumer` error and the close frame; past it, the connection is cut.
const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(2);

/// Tells a client that fell behind why it is cut off: the frames it will not get are dropped,
/// but the one partly written finishes first, so the error and the close frame (1013: come
/// back and resume with `since`) arrive whole. A client that does not read within the grace
/// gets a FIN instead.
async fn tell_slow_consumer<S>(socket: &mut WebSocketStream<S>, queue: &OutboxReceiver) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    queue.keep_only_partial_front();
    let deadline = tokio::time::Instant::now() + SLOW_CONSUMER_GRACE;
    let flushed = tokio::time::timeout_at(deadline, queue.flush()).await;
    if !matches!(flushed, Ok(Ok(_))) {
        tracing::debug!(
            ?flushed,
            "a slow consumer did not take the rest of its frame"
        );
        return End::Gone;
    }
    let frame = ServerFrame::error(
        ErrorCode::SlowConsumer,
        "you read too slowly and missed messages; reconnect with since",
    );
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match send(socket, frame, left.max(Duration::from_millis(100))).await {
        Ok(()) => End::Close(close::TRY_AGAIN_LATER, SLOW_CONSUMER),
        Err(_) => End::Gone,
    }
}

/// Sends one frame within `limit`; the end to take when that fails.
async fn send<S>(
    socket: &mut WebSocketStream<S>,
    frame: ServerFrame,
    limit: Duration,
) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, socket.send(text(frame.to_json()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Close(close::GOING_AWAY, "write timeout")),
    }
}

fn quota(limits: &ConnectionLimits) -> Quota {
    let rate = NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

fn text(json: String) -> Message {
    Message::Text(json.into())
}

/// Sends the client to `endpoint`, where the room goes on, and closes with 1013.
async fn redirect<S>(
    mut socket: WebSocketStream<S>,
    hub: &Hub,
    room: &RoomId,
    endpoint: String,
    refusal: Refusal,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.metrics().redirected.inc();
    tracing::debug!(%endpoint, "join redirected");
    let frame = ServerFrame::Redirect {
        room: room.clone(),
        endpoint,
        reason: refusal.code(),
    };
    if let Err(end) = send(&mut socket, frame, Duration::from_secs(1)).await {
        return closing::finish(&mut socket, end).await;
    }
    closing::finish(&mut socket, End::Close(close::TRY_AGAIN_LATER, "redirect")).await;
}

/// Sends the refusal and closes.
async fn refuse<S>(mut socket: WebSocketStream<S>, hub: &Hub, refusal: Refusal)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let code = refusal.code();
    hub.metrics().refused(code);
    tracing::debug!(%code, "join refused");
    let frame = ServerFrame::error(code, refusal.to_string());
    if let Err(end) = send(&mut socket, frame, Duration::from_secs(1)).await {
        return closing::finish(&mut socket, end).await;
    }
    let close_code = match refusal {
        Refusal::Draining => close::SERVICE_RESTART,
        Refusal::RoomClosed => close::NORMAL,
        Refusal::SessionLimit | Refusal::Removed => close::POLICY,
        Refusal::NodeFull | Refusal::RoomFull | Refusal::Unavailable => close::TRY_AGAIN_LATER,
    };
    closing::finish(&mut socket, End::Close(close_code, code.as_str())).await;
}

/// What a connection knows to handle its client's frames.
struct Connection {
    hub: Arc<Hub>,
    room: RoomHandle,
    member: Member,
    limits: ConnectionLimits,
    limiter: DefaultDirectRateLimiter,
    /// Rate-limit rejections in the current one-second window, and when it began.
    rejections: (u32, Instant),
    /// Set when the client keeps sending far past its rate limit.
    flooding: bool,
    /// When the last `typing` frame was passed on.
    last_typing: Option<Instant>,
    /// The highest read position passed on.
    last_read: u64,
}

impl Connection {
    /// A client that ignores its errors (`rate_limited`, `bad_frame`, ...) and keeps sending
    /// costs the node a reply per frame; past a few bursts' worth in a second it is
    /// disconnected instead.
    fn count_rejection(&mut self) {
        let (count, since) = &mut self.rejections;
        if since.elapsed() >= Duration::from_secs(1) {
            *count = 0;
            *since = Instant::now();
        }
        *count += 1;
        if *count > FLOOD_REJECTIONS_PER_BURST * self.limits.rate_burst.max(1) {
            self.flooding = true;
        }
    }

    /// Handles one text frame; returns the error to send back, if any. Errors never end the
    /// session and never reach the room, but a client that keeps causing them is cut off.
    async fn on_text(&mut self, frame: &str) -> Option<ServerFrame> {
        let reply = self.accept_text(frame).await?;
        let clients_fault = matches!(
            &reply,
            ServerFrame::Error(e) if matches!(
                e.code,
                ErrorCode::BadFrame
                    | ErrorCode::MessageTooLarge
                    | ErrorCode::RateLimited
                    | ErrorCode::ReadOnly
                    | ErrorCode::Muted
            )
        );
        Some(if clients_fault {
            self.refuse_frame(reply)
        } else {
            reply
        })
    }

    /// Counts a frame the client should not have sent, and returns the reply to it.
    fn refuse_frame(&mut self, reply: ServerFrame) -> ServerFrame {
        self.count_rejection();
        reply
    }

    async fn accept_text(&mut self, frame: &str) -> Option<ServerFrame> {
        // A frame much larger than any valid send is refused before parsing it.
        if frame.len() > self.limits.max_message_bytes + 1024 {
            return Some(too_large(self.limits.max_message_bytes));
        }
        match serde_json::from_str::<ClientFrame>(frame) {
            Ok(ClientFrame::Send { body, client_id }) => self.send(body, client_id).await,
            Ok(ClientFrame::Typing {}) => self.typing().await,
            Ok(ClientFrame::Read { up_to }) => {
                self.read(up_to).await;
                None
            }
            Err(error) => Some(ServerFrame::error(
                ErrorCode::BadFrame,
                format!("not a valid client frame: {error}"),
            )),
        }
    }

    /// Passes on that the member is typing: at most once per [`TYPING_INTERVAL_MS`], within
    /// the room's delivery budget, never for a muted member. Dropped, not refused, past
    /// those: clients send it on every keystroke.
    async fn typing(&mut self) -> Option<ServerFrame> {
        if !self.member.role.may_send() {
            return Some(ServerFrame::error(
                ErrorCode::ReadOnly,
                "observers may not type",
            ));
        }
        let interval = Duration::from_millis(TYPING_INTERVAL_MS);
        if self.last_typing.is_some_and(|at| at.elapsed() < interval)
            || self.room.muted_until(&self.member.user).is_some()
            || !self.room.take_budget()
        {
            return None;
        }
        self.last_typing = Some(Instant::now());
        let frame = ServerFrame::Typing {
            room: self.room.id().clone(),
            user: self.member.user.clone(),
            name: self.member.name.clone(),
        }
        .to_json();
        let backend = self.hub.backend();
        if !backend.relays() {
            self.room.typing(self.member.user.clone(), frame.into());
        } else if let Err(error) = backend.publish(self.room.id(), &frame).await {
            tracing::debug!(%error, "a typing frame was lost");
        }
        None
    }

    /// Records how far the member has read: never beyond what its room delivered, never
    /// back. The room coalesces reads and tells the others once per second.
    async fn read(&mut self, up_to: u64) {
        let up_to = up_to.min(self.room.last_id());
        if up_to <= self.last_read {
            return;
        }
        self.last_read = up_to;
        self.room.read(self.member.user.clone(), up_to).await;
    }

    async fn send(&mut self, body: String, client_id: Option<String>) -> Option<ServerFrame> {
        if body.len() > self.limits.max_message_bytes {
            return Some(too_large(self.limits.max_message_bytes));
        }
        if body.trim().is_empty() {
            return Some(ServerFrame::error(
                ErrorCode::BadFrame,
                "the message body is empty",
            ));
        }
        if client_id
            .as_ref()
            .is_some_and(|id| id.len() > bounds::CLIENT_ID_BYTES)
        {
            return Some(ServerFrame::error(
                ErrorCode::BadFrame,
                format!("client_id is longer than {} bytes", bounds::CLIENT_ID_BYTES),
            ));
        }
        if !self.member.role.may_send() {
            return Some(ServerFrame::error(
                ErrorCode::ReadOnly,
                "observers may not send",
            ));
        }
        if let Some(until) = self.room.muted_until(&self.member.user) {
            return Some(ServerFrame::error(
                ErrorCode::Muted,
                format!(
                    "a moderator muted you for {} s more",
                    until.saturating_sub(unix_millis()).div_ceil(1000)
                ),
            ));
        }
        if self.limiter.check().is_err() {
            return Some(ServerFrame::error(
                ErrorCode::RateLimited,
                "too many messages; slow down",
            ));
        }
        if !self.room.take_budget() {
            return Some(ServerFrame::error(
                ErrorCode::RateLimited,
                "the room is over its message budget; slow down",
            ));
        }
        let content = MessageContent {
            room: self.room.id().clone(),
            from: self.member.user.clone(),
            name: self.member.name.clone(),
            role: self.member.role,
            body,
            ts: unix_millis(),
            client_id,
        };
        if !self.hub.backend().is_ready() {
            // Known down (the heartbeat or the live channel failed): nothing is attempted, so
            // the message is certainly not sent.
            return Some(not_sent());
        }
        let tail = message_tail(&content);
        // A send's client id is its idempotency key, within its room and sender.
        let dedup = content
            .client_id
            .as_ref()
            .map(|id| format!("{}\n{id}", self.member.user));
        let appended = self
            .hub
            .backend()
            .append(
                self.room.id(),
                self.room.incarnation(),
                &tail,
                self.room.last_id(),
                dedup.as_deref(),
            )
            .await;
        match appended {
            Ok(appended) => {
                let Some(frame) = appended.frame else {
                    // A retry of a send already appended: the first one is (or will be)
                    // delivered. Its event may have been lost with the first reply (the
                    // `unconfirmed` case), so it is emitted again, from the stored message.
                    self.emit_stored_message(appended.id, &appended.epoch).await;
                    return None;
                };
                self.hub.count_message_in();
                let webhooks = self.hub.webhooks();
                if webhooks.messages() {
                    let message = WireMessage {
                        id: appended.id,
                        content,
                    };
                    webhooks.emit(message_event(&self.room, &appended.epoch, message));
                }
                if appended.renewed {
                    // Redis lost messages (or the room is new): the room rereads its epoch.
                    self.room.mark_lagged();
                }
                // Deliver at once; a fleet's live channel brings the same id again, and the
                // room drops the duplicate.
                self.room.deliver((appended.id, frame));
                None
            }
            Err(StateError::RoomClosed) => Some(ServerFrame::error(
                ErrorCode::RoomClosed,
                "the room was closed",
            )),
            Err(StateError::Redis(error)) if !error.is_connection_refusal() => {
                // The script may have run, or may still run when Redis answers: the client
                // must not be told "not sent", or its retry would be a duplicate.
                tracing::warn!(%error, "could not confirm an append");
                Some(ServerFrame::error(
                    ErrorCode::Unconfirmed,
                    "the node could not confirm the message was sent; retry with the same client_id",
                ))
            }
            Err(error) => {
                tracing::warn!(%error, "could not append a message");
                Some(not_sent())
            }
        }
    }
}

impl Connection {
    /// Emits the `message` event of a message already stored, as read back from the log (a
    /// message past the history has gone out already: its first event was queued then).
    async fn emit_stored_message(&self, id: u64, epoch: &str) {
        let webhooks = self.hub.webhooks();
        if !webhooks.messages() {
            return;
        }
        let room = self.room.id();
        let stored = self.hub.backend().read_range(room, id - 1, id).await;
        let Ok(Some((_, frame))) = stored.map(|frames| frames.into_iter().next()) else {
            return;
        };
        if let Ok(ServerFrame::Message(message)) = serde_json::from_str(frame.as_str()) {
            webhooks.emit(message_event(&self.room, epoch, message));
        }
    }
}

/// The `message` event of a stored message. Its id derives from the room's incarnation, the
/// log's epoch and the message id, so emitting it again (a retried send) queues nothing new.
fn message_event(room: &RoomHandle, epoch: &str, message: WireMessage) -> WebhookEvent {
    let identity = [epoch, &message.id.to_string()];
    let (id, incarnation, ts) = (room.id().clone(), room.incarnation(), message.content.ts);
    WebhookEvent::in_incarnation(id, incarnation, ts, EventBody::Message(message), &identity)
}

fn not_sent() -> ServerFrame {
    ServerFrame::error(
        ErrorCode::Unavailable,
        "the message was not sent: shared state is unreachable; retry shortly",
    )
}

fn too_large(max: usize) -> ServerFrame {
    ServerFrame::error(
        ErrorCode::MessageTooLarge,
        format!("message bodies are limited to {max} bytes"),
    )
}
