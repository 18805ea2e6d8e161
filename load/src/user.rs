//! One simulated user: connect from a chosen loopback address, wait for the start, then chat
//! at its rate (or flood) and time every message it receives.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chatfleet_wire::frames::ClientFrame;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::stats::{Class, Stats};

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Connecting,
    /// Chat until this instant, then stop sending.
    Chatting {
        until: Instant,
    },
    Stopped,
}

/// What one user does.
pub struct Plan {
    pub index: usize,
    pub url: String,
    pub node: SocketAddr,
    pub source: IpAddr,
    pub class: Class,
    pub room_members: u64,
    pub send_every: Option<Duration>,
    pub body_bytes: usize,
}

/// Shared by every user of a run.
pub struct Shared {
    pub stats: Stats,
    pub epoch: Instant,
    pub connecting: Semaphore,
}

impl Shared {
    fn now_micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

fn config() -> WebSocketConfig {
    // Small buffers: the tool holds as many connections as the node and shares its machine.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

pub async fn run(plan: Plan, shared: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    let counters = &shared.stats.counters;
    let permit = shared.connecting.acquire().await.expect("semaphore open");
    let Ok(mut ws) = connect(&plan).await else {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // The first frame says whether the node took us.
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.starts_with(r#"{"type":"welcome""#) => {}
        _ => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    drop(permit);
    counters.connected.fetch_add(1, Ordering::Relaxed);

    let mut next_send: Option<tokio::time::Instant> = None;
    loop {
        let current = *phase.borrow();
        let sending = match current {
            Phase::Chatting { until } => Instant::now() < until,
            Phase::Stopped => break,
            Phase::Connecting => false,
        };
        if sending && next_send.is_none() {
            // Spread the first sends over one interval, so users do not send in lockstep.
            let offset = plan
                .send_every
                .map(|every| every.mul_f64((plan.index as f64 * 0.618_034) % 1.0))
                .unwrap_or_default();
            next_send = Some(tokio::time::Instant::now() + offset);
        }
        let flood_now = sending && plan.class == Class::Flood && plan.send_every.is_none();
        let timer = async {
            match (sending, next_send, plan.send_every) {
                (true, Some(at), Some(_)) => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => on_text(&plan, &shared, &text),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    if !matches!(*phase.borrow(), Phase::Stopped) {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            changed = phase.changed() => if changed.is_err() { break },
            _ = timer => {
                if send(&mut ws, &plan, &shared).await.is_err() { continue; }
                if let (Some(at), Some(every)) = (next_send, plan.send_every) {
                    next_send = Some(at + every);
                }
            }
            _ = std::future::ready(()), if flood_now => {
                let _ = send(&mut ws, &plan, &shared).await;
            }
        }
    }
    let _ = ws.close(None).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(plan: &Plan) -> Result<Ws, Box<dyn std::error::Error + Send + Sync>> {
    let socket = match plan.source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(plan.source, 0))?;
    let stream = socket.connect(plan.node).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(plan.url.as_str(), stream, Some(config()))
            .await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, plan: &Plan, shared: &Shared) -> Result<(), ()> {
    let mut body = format!("lt{}:", shared.now_micros());
    while body.len() < plan.body_bytes {
        body.push('x');
    }
    let frame = ClientFrame::Send {
        body,
        client_id: None,
    };
    let json = serde_json::to_string(&frame).expect("client frames serialize");
    ws.send(Message::Text(json.into())).await.map_err(|_| ())?;
    let counters = &shared.stats.counters;
    counters.sent.fetch_add(1, Ordering::Relaxed);
    match plan.class {
        Class::Quiet => counters
            .expected_quiet
            .fetch_add(plan.room_members, Ordering::Relaxed),
        Class::Flood => counters.sent_flood.fetch_add(1, Ordering::Relaxed),
    };
    Ok(())
}

/// Times a delivered message by the send time in its body; counts errors.
fn on_text(plan: &Plan, shared: &Shared, text: &str) {
    const MARK: &str = r#""body":"lt"#;
    if text.starts_with(r#"{"type":"message""#) {
        let Some(start) = text.find(MARK).map(|i| i + MARK.len()) else {
            return;
        };
        let digits: &str = text[start..].split(':').next().unwrap_or("");
        if let Ok(sent) = digits.parse::<u64>() {
            let latency = shared.now_micros().saturating_sub(sent);
            shared.stats.delivered(plan.class, plan.index, latency);
        }
    } else if text.starts_with(r#"{"type":"error""#) {
        let counters = &shared.stats.counters;
        if text.contains(r#""code":"rate_limited""#) {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.other_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
