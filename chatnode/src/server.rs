//! Assembles a node from its configuration and runs it until it has drained.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatfleet_api::ApiKeys;
use chatfleet_state::webhooks::WebhookQueue;
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Member, Role};
use chatfleet_wire::token::TokenKeys;
use chatfleet_wire::urls::http_base;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::fleet::{heartbeat, live};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::node::connection::ConnectionLimits;
use crate::node::{Hub, HubSettings};
use crate::store::{Backend, FleetStore, MemoryStore, Retention};
use crate::webhooks::{Queue, Webhooks};

/// How long a stopping node waits for its last webhook events to be queued.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(5);
/// How long a stopping node waits for its rooms to write their last joins, leaves and reads.
const ROOM_FLUSH: Duration = Duration::from_secs(5);

/// Runs the node on `config.listen` until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(config: Config) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    // Installed before the node says it listens, so a signal that comes right after start is
    // a graceful shutdown too, not the default (abrupt) death.
    let shutdown = ShutdownSignal::install();
    serve(listener, config, shutdown.received()).await
}

/// Serves a node on `listener` until `shutdown` completes, then drains and returns. Tests that
/// need no process of their own run a node this way.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tokens = TokenKeys::from_secret(&token_secret(&config)?);
    let (api_key, generated_key) = given_or_random(&config.api_key);
    let (admin_key, generated_admin_key) = given_or_random(&config.admin_api_key);
    if config.insecure_dev_auth {
        tracing::warn!(
            "INSECURE DEV AUTH IS ON: anyone can join any room with ?user=NAME. Never use this in production."
        );
    }

    let bound = listener.local_addr().map_err(Error::Serve)?;
    let settings = HubSettings {
        node_name: config.node_name.clone(),
        fleet: config.fleet.clone(),
        advertise_url: config.advertise_url_for(bound),
        limits: config.limits(),
        room_deliveries_per_second: config.room_deliveries_per_second,
        max_user_sessions: config.max_user_sessions,
        session_ttl: Duration::from_secs(config.session_ttl_seconds.max(1)),
        report_ttl: config.report_ttl(),
    };

    let stop = CancellationToken::new();
    let room_ttl = Duration::from_secs(config.room_ttl_seconds.max(60));
    let (backend, live_requests) = match &config.redis_url {
        Some(url) => {
            let tls = config.redis_tls().map_err(Error::RedisTls)?;
            let url = match &config.redis_password {
                Some(password) => chatfleet_state::with_password(url, password)?,
                None => url.clone(),
            };
            let (store, requests) = FleetStore::new(
                &url,
                &tls,
                config.history_len,
                room_ttl,
                config.transcripts(),
            )?;
            (Backend::Redis(store), Some(requests))
        }
        None => {
            let retention = Retention {
                history_len: config.history_len,
                after_retire: room_ttl,
                max_bytes: config.memory_history_mb.saturating_mul(1 << 20),
                max_transcript_bytes: config.memory_transcripts_mb.saturating_mul(1 << 20),
                transcripts: config.transcripts(),
            };
            (Backend::Memory(MemoryStore::new(retention)), None)
        }
    };
    let metrics = Arc::new(Metrics::new());
    let webhooks = match config.webhooks()? {
        Some(hooks) => {
            let queue = match &backend {
                Backend::Redis(store) => Queue::Redis(WebhookQueue::new(
                    store.state().redis.clone(),
                    &config.fleet,
                )),
                Backend::Memory(_) => Queue::memory(),
            };
            Webhooks::start(hooks, queue, metrics.clone(), stop.clone())
        }
        None => Webhooks::off(),
    };
    let hub = Hub::new(settings, backend.clone(), tokens, metrics, webhooks);

    if let (Backend::Redis(store), Some(requests)) = (&backend, live_requests) {
        tokio::spawn(live::run(
            hub.clone(),
            store.clone(),
            requests,
            stop.clone(),
        ));
        heartbeat::report_now(&hub, config.report_ttl()).await;
    }
    tokio::spawn(heartbeat::run(
        hub.clone(),
        config.heartbeat(),
        config.report_ttl(),
        stop.clone(),
    ));

    let state = AppState {
        hub: hub.clone(),
        connection: ConnectionLimits {
            max_message_bytes: config.max_message_bytes,
            rate_per_second: config.rate_per_second,
            rate_burst: config.rate_burst,
            outbound_queue_bytes: config.outbound_queue_bytes,
            ping_interval: config.ping_interval(),
        },
        ws_buffer_bytes: config.ws_buffer_bytes,
        insecure_dev_auth: config.insecure_dev_auth,
    };
    let keys = ApiKeys::scoped(vec![api_key.clone()], vec![admin_key.clone()]);
    let app = http::router(state, keys);

    // Plain lines on stdout: what a person (and the test harness) needs to get going.
    println!("chatnode {} listening on http://{bound}", hub.node_name());
    println!("chat page: http://{bound}/");
    println!("admin page: http://{bound}/admin   API reference: http://{bound}/api");
    if generated_key {
        println!("room API key (generated for this run): {api_key}");
    }
    if generated_admin_key {
        println!("admin API key (generated for this run): {admin_key}");
    }
    match &config.redis_url {
        Some(_) => tracing::info!(
            node = hub.node_name(),
            "fleet mode: sharing state through Redis"
        ),
        None => {
            tracing::info!("standalone mode: in-memory history, one node");
            print_try_it_links(&hub);
        }
    }

    let drain_hub = hub.clone();
    let report_ttl = config.report_ttl();
    let notice = config.drain_notice();
    let deadline = config.drain_deadline();
    let shutdown = async move {
        shutdown.await;
        drain(&drain_hub, report_ttl, notice, deadline).await;
    };
    let metrics = hub.metrics_handle();
    http::accept::serve(listener, app, config.accept_limits(), metrics, shutdown).await;
    // The drain's leaves are part of the record: in the transcripts (rooms write them a tick
    // late, so now) and as events, before the node goes.
    let unflushed = hub.flush_rooms(ROOM_FLUSH).await;
    if unflushed > 0 {
        tracing::warn!(
            rooms = unflushed,
            "stopping with rooms whose last joins and leaves were not written"
        );
    }
    hub.webhooks().flush(WEBHOOK_FLUSH).await;
    stop.cancel();
    if let Backend::Redis(store) = hub.backend()
        && let Err(error) = store.state().reports.remove(hub.node_name()).await
    {
        tracing::warn!(%error, "could not remove the load report; it expires by itself");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Refuses new joins and says so, then tells every client to reconnect elsewhere and waits
/// for them to go, but never past the deadline (counted from the signal).
async fn drain(hub: &Arc<Hub>, report_ttl: Duration, notice: Duration, deadline: Duration) {
    tracing::info!(users = hub.users(), ?deadline, "draining");
    let started = tokio::time::Instant::now();
    hub.start_final_drain();
    heartbeat::report_now(hub, report_ttl).await;
    tokio::time::sleep(notice.min(deadline)).await;
    hub.send_everyone_away();
    let gone = async {
        while hub.users() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout_at(started + deadline, gone)
        .await
        .is_err()
    {
        tracing::warn!(
            users = hub.users(),
            "drain deadline reached; exiting with clients still connected"
        );
    }
}

/// SIGTERM or Ctrl-C.
struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> Self {
        Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn received(self) {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match self.term {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
}

/// Two ready-made chat links into a demo room, so a newcomer can chat in two tabs at once.
fn print_try_it_links(hub: &Hub) {
    let room: RoomId = "default/lobby".parse().expect("a valid room id");
    let base = http_base(hub.advertise_url());
    println!("try it: open these two links in two tabs and chat (valid for 24 hours):");
    for (user, name, role) in [
        ("customer-1", "Casey", Role::Customer),
        ("agent-1", "Alex", Role::Agent),
    ] {
        let member = Member {
            user: user.into(),
            name: name.into(),
            role,
        };
        let (token, _) = hub
            .tokens()
            .mint(&room, &member, Duration::from_secs(24 * 3600));
        println!("  {base}/?room={room}&token={token}");
    }
}

/// The key given, or a random one (and whether it was generated).
fn given_or_random(key: &Option<String>) -> (String, bool) {
    match key {
        Some(key) if !key.is_empty() => (key.clone(), false),
        _ => (random_secret(), true),
    }
}

fn token_secret(config: &Config) -> Result<Vec<u8>, Error> {
    let secret = if let Some(path) = &config.token_secret_file {
        std::fs::read(path).map_err(|source| Error::SecretFile {
            path: path.clone(),
            source,
        })?
    } else if let Some(secret) = &config.token_secret {
        secret.clone().into_bytes()
    } else {
        if config.redis_url.is_some() {
            tracing::warn!("no token secret given: tokens minted here work on this node only");
        }
        return Ok(random_secret().into_bytes());
    };
    let trimmed = secret.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(Error::EmptySecret);
    }
    Ok(trimmed)
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
