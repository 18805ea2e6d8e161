//! The chatfleet operator: reconciles `ChatFleet` and `ChatRoom` resources against the current
//! kube context (in a cluster: its service account). Every replica serves health, metrics and
//! the room API; only the holder of the Lease reconciles.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chatfleet_api::ApiKeys;
use clap::Parser;
use kube::Client;
use operator::api::rooms::{DirectoryCaches, DirectorySettings};
use operator::config::Config;
use operator::context::{Context, Settings};
use operator::controllers;
use operator::fleet_redis::RedisPool;
use operator::http::{HttpState, RoomApi};
use operator::leader::{self, Lease};
use operator::metrics::Metrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_json);
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let settings = Settings {
        room_resync: Duration::from_secs(config.room_resync_seconds),
        fleet_resync: Duration::from_secs(config.fleet_resync_seconds),
        ..Settings::default()
    };

    // The room API reads rooms and fleets from reflectors, on every replica; the room
    // controller, once this replica leads, reads the same room watch.
    let (room_watch, room_task) = controllers::room_watch(&client);
    tokio::spawn(room_task);
    let (fleets, fleet_task) = controllers::fleet_cache(&client);
    tokio::spawn(fleet_task);
    let http = HttpState {
        metrics: metrics.clone(),
        ready: Default::default(),
    };
    let room_api = RoomApi {
        client: client.clone(),
        keys: ApiKeys::scoped(config.api_keys.clone(), config.admin_api_keys.clone()),
        directory: DirectorySettings {
            namespace: config.room_namespace.clone(),
            fleet: config.default_fleet.clone(),
            placement_wait: Duration::from_secs(config.placement_wait_seconds),
        },
        redis: Arc::new(RedisPool::new(settings.room_ttl)),
        caches: Some(DirectoryCaches {
            rooms: room_watch.store.clone(),
            fleets: fleets.clone(),
        }),
    };
    let app = operator::http::app(http.clone(), Some(room_api));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %config.listen, "serving /healthz, /readyz and /metrics");
    tokio::spawn(axum::serve(listener, app).into_future());

    let identity = config
        .identity
        .clone()
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));
    let (pods, pod_task) = controllers::pod_cache(&client);
    tokio::spawn(pod_task);
    let ctx = Context::new(
        client.clone(),
        pods,
        metrics,
        settings,
        Some(identity.clone()),
    )
    .with_fleet_cache(fleets)
    .with_room_watch(room_watch);
    let ctx = Arc::new(ctx);
    // Ready (for the room API) and a candidate for the Lease only once every cache is filled:
    // a new leader then places a new room at once, rather than after listing every room.
    ctx.pods.wait_until_ready().await?;
    ctx.fleets.wait_until_ready().await?;
    ctx.rooms.wait_until_ready().await?;
    http.ready.store(true, Ordering::Relaxed);

    if config.no_leader_election {
        tracing::warn!("leader election is off: run only one replica like this");
        controllers::run(ctx).await;
        return Ok(());
    }
    let lease = Lease {
        name: config.lease_name.clone(),
        namespace: config.lease_namespace.clone(),
        identity,
        seconds: config.lease_seconds,
        renew_margin_seconds: config.lease_renew_margin_seconds,
    };
    leader::reconcile_while_leading(client, lease, ctx).await
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
