//! One connection per fleet Redis, made on first use. Fleets name their Redis in the spec (a
//! URL, or a Secret holding it), so the operator follows each fleet to its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chatfleet_state::{ConnectionSettings, FleetState, Redis};
use kube::{Client, ResourceExt};

use crate::crd::ChatFleet;
use crate::error::{Error, Result};
use crate::secrets::{self, SecretError};

pub struct RedisPool {
    room_ttl: Duration,
    by_url: Mutex<HashMap<String, FleetState>>,
}

impl RedisPool {
    pub fn new(room_ttl: Duration) -> Self {
        Self {
            room_ttl,
            by_url: Mutex::new(HashMap::new()),
        }
    }

    /// The fleet's Redis, reading its URL from the fleet's Secret when it names one.
    pub async fn for_fleet(&self, client: &Client, fleet: &ChatFleet) -> Result<FleetState> {
        let url = match (&fleet.spec.redis.url, &fleet.spec.redis.secret_ref) {
            (Some(url), _) => url.clone(),
            (None, Some(secret)) => {
                let namespace = fleet.namespace().unwrap_or_default();
                let bytes = secrets::read_key(client, &namespace, secret)
                    .await
                    .map_err(|error| match error {
                        SecretError::Kube(error) => Error::Kube(error),
                        other => Error::Config(other.to_string()),
                    })?;
                String::from_utf8(bytes)
                    .map_err(|_| Error::Config(format!("secret {} is not UTF-8", secret.name)))?
                    .trim()
                    .to_owned()
            }
            (None, None) => return Err(Error::Config("the fleet names no Redis".into())),
        };
        self.for_url(&url)
    }

    pub fn for_url(&self, url: &str) -> Result<FleetState> {
        let mut by_url = self.by_url.lock().expect("redis pool lock");
        if let Some(found) = by_url.get(url) {
            return Ok(found.clone());
        }
        let redis = Redis::open(url, ConnectionSettings::OPERATOR)?;
        let state = FleetState::new(redis, self.room_ttl);
        by_url.insert(url.to_owned(), state.clone());
        Ok(state)
    }
}
