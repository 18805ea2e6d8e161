//! The admin routes (`chatfleet_api::admin::router`) served by the operator for one fleet: the
//! one named by `--default-fleet`. Everything goes through that fleet's Redis, exactly as a
//! fleet node would do it ([`RedisAdmin`]); the operator only finds the Redis from the
//! ChatFleet. Every replica serves it: the commands are Redis's, not the Lease holder's.

use std::sync::Arc;

use chatfleet_api::ApiError;
use chatfleet_api::admin::{BroadcastRequest, FleetAdmin, FleetView, SessionsView};
use chatfleet_api::redis_admin::RedisAdmin;
use chatfleet_state::webhooks::DeadLetter;
use kube::Client;
use kube::api::Api;

use super::rooms::kube_error;
use crate::crd::ChatFleet;
use crate::fleet_redis::RedisPool;

pub struct KubeFleetAdmin {
    client: Client,
    namespace: String,
    fleet: String,
    redis: Arc<RedisPool>,
}

impl KubeFleetAdmin {
    pub fn new(client: Client, namespace: &str, fleet: &str, redis: Arc<RedisPool>) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            fleet: fleet.to_owned(),
            redis,
        }
    }

    /// The fleet's Redis, looked up on every call so a changed spec takes effect.
    async fn admin(&self) -> Result<RedisAdmin, ApiError> {
        let fleet = Api::<ChatFleet>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&self.fleet)
            .await
            .map_err(kube_error)?
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "fleet {}/{} does not exist",
                    self.namespace, self.fleet
                ))
            })?;
        let redis = self
            .redis
            .for_fleet(&self.client, &fleet)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let key = format!("{}/{}", self.namespace, self.fleet);
        Ok(RedisAdmin::new((*redis).clone(), &key))
    }
}

impl FleetAdmin for KubeFleetAdmin {
    async fn user_sessions(&self, user: &str) -> Result<SessionsView, ApiError> {
        self.admin().await?.user_sessions(user).await
    }

    async fn end_sessions(&self, user: &str, session: Option<&str>) -> Result<(), ApiError> {
        self.admin().await?.end_sessions(user, session).await
    }

    async fn fleet(&self) -> Result<FleetView, ApiError> {
        self.admin().await?.fleet().await
    }

    async fn drain(&self, node: &str) -> Result<(), ApiError> {
        self.admin().await?.drain(node).await
    }

    async fn broadcast(&self, request: BroadcastRequest) -> Result<(), ApiError> {
        self.admin().await?.broadcast(request).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, ApiError> {
        self.admin().await?.dead_letters(limit).await
    }
}
