//! One Redis connection per fleet Redis, made on first use. Fleets name their Redis in the
//! spec (a URL, or a Secret holding it), so the operator follows each fleet to its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chatnode::store::RedisStore;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use redis::aio::ConnectionManagerConfig;

use crate::crd::ChatFleet;
use crate::error::{Error, Result};
use crate::seats::SeatStore;

/// The Redis of one fleet, seen two ways.
#[derive(Clone)]
pub struct FleetRedis {
    /// Seats and load reports.
    pub seats: SeatStore,
    /// Room state (settings, close, notices), through the same code the nodes use.
    pub rooms: RedisStore,
}

pub struct RedisPool {
    room_ttl: Duration,
    by_url: Mutex<HashMap<String, FleetRedis>>,
}

impl RedisPool {
    pub fn new(room_ttl: Duration) -> Self {
        Self {
            room_ttl,
            by_url: Mutex::new(HashMap::new()),
        }
    }

    /// The fleet's Redis, reading its URL from the fleet's Secret when it names one.
    pub async fn for_fleet(&self, client: &Client, fleet: &ChatFleet) -> Result<FleetRedis> {
        let url = match (&fleet.spec.redis.url, &fleet.spec.redis.secret_ref) {
            (Some(url), _) => url.clone(),
            (None, Some(secret)) => {
                let namespace = fleet.namespace().unwrap_or_default();
                let found = Api::<Secret>::namespaced(client.clone(), &namespace)
                    .get(&secret.name)
                    .await?;
                let bytes = found
                    .data
                    .and_then(|mut data| data.remove(&secret.key))
                    .ok_or_else(|| {
                        Error::Config(format!("secret {} has no key {}", secret.name, secret.key))
                    })?;
                String::from_utf8(bytes.0)
                    .map_err(|_| Error::Config(format!("secret {} is not UTF-8", secret.name)))?
                    .trim()
                    .to_owned()
            }
            (None, None) => return Err(Error::Config("the fleet names no Redis".into())),
        };
        self.for_url(&url)
    }

    pub fn for_url(&self, url: &str) -> Result<FleetRedis> {
        let mut by_url = self.by_url.lock().expect("redis pool lock");
        if let Some(found) = by_url.get(url) {
            return Ok(found.clone());
        }
        let client = redis::Client::open(url)?;
        // Fail fast: a failed reconcile is retried with its own backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config)?;
        let (rooms, _live) = RedisStore::new(url, 1, self.room_ttl)?;
        let redis = FleetRedis {
            seats: SeatStore::new(conn),
            rooms,
        };
        by_url.insert(url.to_owned(), redis.clone());
        Ok(redis)
    }
}
