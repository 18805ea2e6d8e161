//! The operator's HTTP surface, served by every replica whether or not it holds the Lease:
//! health and metrics, and (with API keys) the room API and admin routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chatfleet_api::ApiKeys;
use kube::Client;

use crate::api::admin::KubeFleetAdmin;
use crate::api::rooms::{DirectoryCaches, DirectorySettings, KubeDirectory};
use crate::fleet_redis::RedisPool;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the caches are filled and the controllers (or the standby wait) run.
    pub ready: Arc<AtomicBool>,
}

/// What the room API needs when it is on.
pub struct RoomApi {
    pub client: Client,
    pub keys: ApiKeys,
    pub directory: DirectorySettings,
    pub redis: Arc<RedisPool>,
    /// Reflectors to read rooms and fleets from (else every request asks the API server).
    pub caches: Option<DirectoryCaches>,
}

/// Health and metrics, the room API when `room_api` has keys, and the admin routes when it
/// also names a default fleet; unknown routes get JSON errors.
pub fn app(state: HttpState, room_api: Option<RoomApi>) -> Router {
    let mut app = router(state);
    match room_api {
        Some(api) if api.keys.any() => {
            let RoomApi {
                client,
                keys,
                directory,
                redis,
                caches,
            } = api;
            let fleet = directory.fleet.clone();
            let namespace = directory.namespace.clone();
            let mut rooms = KubeDirectory::new(client.clone(), directory, redis.clone());
            if let Some(caches) = caches {
                rooms = rooms.with_caches(caches);
            }
            app = app.merge(chatfleet_api::rooms::router(Arc::new(rooms), keys.clone()));
            tracing::info!("serving the room API at /v1/rooms");
            let mut doc = chatfleet_api::openapi::api_document();
            match fleet {
                Some(fleet) => {
                    let admin = KubeFleetAdmin::new(client, &namespace, &fleet, redis);
                    app = app.merge(chatfleet_api::admin::router(Arc::new(admin), keys));
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
            app = app.merge(chatfleet_api::openapi::router(doc));
        }
        _ => tracing::warn!("no --api-keys or --admin-api-keys: the room API is off"),
    }
    chatfleet_api::with_json_fallbacks(app)
}

/// Health and metrics alone.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(state): State<HttpState>) -> String {
    state.metrics.encode()
}
