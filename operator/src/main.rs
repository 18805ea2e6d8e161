//! The chatfleet operator: reconciles `ChatFleet` and `ChatRoom` resources against the current
//! kube context (in a cluster: its service account). Every replica serves health and metrics;
//! only the holder of the Lease reconciles.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chatnode::api::ApiKeys;
use clap::Parser;
use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use operator::config::Config;
use operator::context::{Context, Settings};
use operator::controllers;
use operator::fleet_admin::KubeFleetAdmin;
use operator::http::{HttpState, router};
use operator::metrics::Metrics;
use operator::redis_pool::RedisPool;
use operator::room_api::{DirectorySettings, KubeDirectory};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_json);
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let http = HttpState {
        metrics: metrics.clone(),
        ready: Default::default(),
    };
    let mut app = router(http.clone());
    let keys = ApiKeys::scoped(config.api_keys.clone(), config.admin_api_keys.clone());
    let redis = Arc::new(RedisPool::new(Settings::default().room_ttl));
    if keys.any() {
        let directory = KubeDirectory::new(
            client.clone(),
            DirectorySettings {
                namespace: config.room_namespace.clone(),
                fleet: config.default_fleet.clone(),
                placement_wait: Duration::from_secs(config.placement_wait_seconds),
            },
            redis.clone(),
        );
        app = app.merge(chatnode::api::router(Arc::new(directory), keys.clone()));
        tracing::info!("serving the room API at /v1/rooms");
        let mut doc = chatnode::openapi::api_document();
        match &config.default_fleet {
            Some(fleet) => {
                let admin =
                    KubeFleetAdmin::new(client.clone(), &config.room_namespace, fleet, redis);
                app = app.merge(chatnode::admin_api::router(Arc::new(admin), keys));
                tracing::info!(%fleet, "serving the admin routes at /v1/users and /v1/admin");
            }
            None => {
                tracing::warn!("no --default-fleet: the admin routes are off");
                doc.paths.paths.retain(|path, _| {
                    !path.starts_with("/v1/admin")
                        && !path.starts_with("/v1/users")
                        && path != "/admin"
                });
            }
        }
        app = app.merge(chatnode::openapi::router(doc));
    } else {
        tracing::warn!("no --api-keys or --admin-api-keys: the room API is off");
    }
    let app = chatnode::api::with_json_fallbacks(app);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %config.listen, "serving /healthz, /readyz and /metrics");
    tokio::spawn(axum::serve(listener, app).into_future());

    let identity = config
        .identity
        .clone()
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));
    let (pods, pod_task) = controllers::pod_cache(&client);
    tokio::spawn(pod_task);
    let settings = Settings {
        room_resync: Duration::from_secs(config.room_resync_seconds),
        fleet_resync: Duration::from_secs(config.fleet_resync_seconds),
        ..Settings::default()
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        redis: RedisPool::new(settings.room_ttl),
        pods,
        reporter: Reporter {
            controller: "chatfleet-operator".into(),
            instance: Some(identity.clone()),
        },
        metrics,
        settings,
        backoff: Default::default(),
    });
    ctx.pods.wait_until_ready().await?;
    http.ready.store(true, Ordering::Relaxed);

    if config.no_leader_election {
        tracing::warn!("leader election is off: run only one replica like this");
        controllers::run(ctx).await;
        return Ok(());
    }
    let lease = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, _lease_task) = lease.watch().await;
    tracing::info!(%identity, lease = %config.lease_name, "waiting for the Lease");
    while !*leader.borrow_and_update() {
        leader.changed().await?;
    }
    tracing::info!(%identity, "holding the Lease; reconciling");
    tokio::select! {
        _ = controllers::run(ctx) => Ok(()),
        _ = lost(&mut leader) => {
            // Another replica may already be writing: stop at once, the Deployment restarts us.
            tracing::error!("lost the Lease; exiting");
            std::process::exit(1);
        }
    }
}

async fn lost(leader: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if leader.changed().await.is_err() || !*leader.borrow() {
            return;
        }
    }
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
