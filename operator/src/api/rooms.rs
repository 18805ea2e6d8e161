//! The room API served by the operator: the same routes as a standalone node
//! (`chatfleet_api::rooms::router`), backed by `ChatRoom` resources. Opening a room creates a ChatRoom
//! and waits a bounded time for the operator to place it; a token is signed with the key of the
//! room's fleet. Every replica serves it: the writes are the Kubernetes API's, not ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chatfleet_api::ApiError;
use chatfleet_api::history::{self, HistoryQuery, HistoryView};
use chatfleet_api::rooms::{
    CreateRoom, CreatedRoom, RoomDirectory, RoomFilter, RoomView, TokenRequest, TokenView,
};
use chatfleet_api::tokens::mint_token_view;
use chatfleet_api::transcript::{self, TranscriptReader};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Moderation, ServerFrame};
use chatfleet_wire::token::TokenKeys;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::crd::{CLOSE_REASON_ANNOTATION, ChatFleet, ChatRoom, ChatRoomSpec};
use crate::fleet_redis::{FleetRedis, RedisPool};
use crate::secrets::{self, SecretError};

/// Settings of the Kubernetes-backed directory.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    /// Namespace of rooms opened without one.
    pub namespace: String,
    /// Fleet of rooms opened without one.
    pub fleet: Option<String>,
    /// How long opening a room waits for its placement.
    pub placement_wait: Duration,
}

pub struct KubeDirectory {
    client: Client,
    settings: DirectorySettings,
    /// The fleets' Redis, for room history.
    redis: Arc<RedisPool>,
    /// Reflectors of rooms and fleets; without them every read asks the API server.
    caches: Option<DirectoryCaches>,
    /// Fleets' token keys, read from their Secrets a short while ago.
    token_keys: Mutex<HashMap<String, (Instant, Arc<TokenKeys>)>>,
}

/// How long a fleet's token key is reused before its Secret is read again: opening a room
/// mints a token per participant, and a rotated key is in use within this long.
const TOKEN_KEY_REUSE: Duration = Duration::from_secs(10);

/// What the directory reads instead of asking the API server: kept current by reflectors
/// (`controllers::room_watch`, `controllers::fleet_cache`).
#[derive(Clone)]
pub struct DirectoryCaches {
    pub rooms: Store<ChatRoom>,
    pub fleets: Store<ChatFleet>,
}

impl KubeDirectory {
    pub fn new(client: Client, settings: DirectorySettings, redis: Arc<RedisPool>) -> Self {
        Self {
            client,
            settings,
            redis,
            caches: None,
            token_keys: Mutex::default(),
        }
    }

    /// Reads rooms and fleets from `caches`, asking the API server only for one not cached
    /// yet; waiting for a placement then costs no request at all.
    pub fn with_caches(self, caches: DirectoryCaches) -> Self {
        Self {
            caches: Some(caches),
            ..self
        }
    }

    fn rooms(&self, namespace: &str) -> Api<ChatRoom> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn fleet(&self, namespace: &str, name: &str) -> Result<ChatFleet, ApiError> {
        let cached = self.caches.as_ref().and_then(|c| {
            c.fleets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|fleet| (*fleet).clone())
        });
        if let Some(fleet) = cached {
            return Ok(fleet);
        }
        Api::<ChatFleet>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_error)?
            .ok_or_else(|| ApiError::invalid(format!("fleet {namespace}/{name} does not exist")))
    }

    /// The room from the cache, if there is a cache and it has the room.
    fn cached_room(&self, id: &RoomId) -> Option<ChatRoom> {
        let caches = self.caches.as_ref()?;
        let key = ObjectRef::new(id.name()).within(id.namespace());
        caches.rooms.get(&key).map(|room| (*room).clone())
    }

    async fn room(&self, id: &RoomId) -> Result<ChatRoom, ApiError> {
        if let Some(room) = self.cached_room(id) {
            return Ok(room);
        }
        self.rooms(id.namespace())
            .get_opt(id.name())
            .await
            .map_err(kube_error)?
            .ok_or_else(|| ApiError::not_found(id))
    }

    /// Waits until the operator has written the room's endpoint: watching the cache when there
    /// is one (the room arrives there within moments of its creation), else polling the API.
    async fn placed(&self, id: &RoomId) -> Result<ChatRoom, ApiError> {
        let deadline = tokio::time::Instant::now() + self.settings.placement_wait;
        let every = if self.caches.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(200)
        };
        loop {
            let cached = self.cached_room(id);
            let last_look = tokio::time::Instant::now() >= deadline;
            if cached.is_none() && self.caches.is_some() && !last_look {
                tokio::time::sleep(every).await;
                continue;
            }
            let room = match cached {
                Some(room) => room,
                None => self.room(id).await?,
            };
            if endpoint_of(&room).is_some() {
                return Ok(room);
            }
            if tokio::time::Instant::now() >= deadline {
                let reason = room
                    .status
                    .and_then(|s| s.reason)
                    .unwrap_or_else(|| "not reconciled yet".to_owned());
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_placed",
                    format!(
                        "room {id} is not placed yet ({reason}); retry with the same Idempotency-Key"
                    ),
                ));
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl RoomDirectory for KubeDirectory {
    async fn create_room(&self, request: CreateRoom) -> Result<CreatedRoom, ApiError> {
        let name = request.room_name();
        let namespace = request
            .namespace
            .clone()
            .unwrap_or_else(|| self.settings.namespace.clone());
        let id = RoomId::new(&namespace, &name).map_err(|e| ApiError::invalid(e.to_string()))?;
        let fleet_name = request
            .fleet
            .clone()
            .or_else(|| self.settings.fleet.clone())
            .ok_or_else(|| ApiError::invalid("fleet is required (the operator has no default)"))?;
        let fleet = self.fleet(&namespace, &fleet_name).await?;
        let limit = fleet.spec.limits.members_per_room;
        if request
            .max_members
            .is_some_and(|max| max < 2 || max > limit)
        {
            return Err(ApiError::invalid(format!(
                "max_members must be between 2 and {limit}"
            )));
        }
        let expected = request
            .expected_members
            .unwrap_or(request.participants.len() as u32)
            .max(2);
        let spec = ChatRoomSpec {
            fleet: fleet_name,
            expected_members: expected,
            max_members: request.max_members,
            purpose: request.purpose.clone(),
            ttl_seconds_after_empty: None,
        };
        let mut room = ChatRoom::new(&name, spec);
        room.metadata.labels = Some(request.labels.clone()).filter(|l| !l.is_empty());
        // Created with its finalizer, the room needs no second write before its placement:
        // an ad-hoc room costs two (this create, and the status that places it).
        room.metadata.finalizers = Some(vec![crate::reconcile::room::FINALIZER.to_owned()]);
        let created = match self
            .rooms(&namespace)
            .create(&PostParams::default(), &room)
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(kube::Error::Api(status)) if status.code == 422 => {
                return Err(ApiError::invalid(status.message));
            }
            Err(error) => return Err(kube_error(error)),
        };
        let room = self.placed(&id).await?;
        Ok(CreatedRoom {
            room: view(&room, limit),
            created,
            tokens: Vec::new(),
        })
    }

    async fn list_rooms(&self, filter: &RoomFilter) -> Result<Vec<RoomView>, ApiError> {
        let rooms: Vec<Arc<ChatRoom>> = match &self.caches {
            Some(caches) => caches.rooms.state(),
            None => Api::<ChatRoom>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(kube_error)?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        let fleets = self.all_fleets().await?;
        let mut views: Vec<RoomView> = rooms
            .iter()
            .filter(|room| filter.matches(Some(&room.spec.fleet), room.labels()))
            .map(|room| {
                let limit = fleets
                    .iter()
                    .find(|f| f.name_any() == room.spec.fleet && f.namespace() == room.namespace())
                    .map_or(0, |f| f.spec.limits.members_per_room);
                view(room, limit)
            })
            .collect();
        // The cache has no order; the API's lists are by namespace and name.
        views.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(views)
    }

    async fn get_room(&self, id: &RoomId) -> Result<RoomView, ApiError> {
        let room = self.room(id).await?;
        let limit = self
            .fleet(id.namespace(), &room.spec.fleet)
            .await
            .map_or(0, |f| f.spec.limits.members_per_room);
        Ok(view(&room, limit))
    }

    async fn close_room(&self, id: &RoomId, reason: &str) -> Result<(), ApiError> {
        // The finalizer tells the members; the annotation tells it why.
        let annotate = serde_json::json!({
            "metadata": { "annotations": { CLOSE_REASON_ANNOTATION: reason } }
        });
        let rooms = self.rooms(id.namespace());
        let patched = rooms
            .patch(id.name(), &PatchParams::default(), &Patch::Merge(&annotate))
            .await;
        match patched {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(ApiError::not_found(id));
            }
            Err(error) => return Err(kube_error(error)),
        }
        match rooms.delete(id.name(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(ApiError::not_found(id)),
            Err(error) => Err(kube_error(error)),
        }
    }

    async fn moderate(&self, id: &RoomId, moderation: Moderation) -> Result<(), ApiError> {
        let redis = self.room_state(id).await?;
        let frame = ServerFrame::Moderation(moderation.clone()).to_json();
        Ok(redis.rooms.moderate(id, &moderation, &frame).await?)
    }

    async fn mint_token(&self, id: &RoomId, request: TokenRequest) -> Result<TokenView, ApiError> {
        let room = self.room(id).await?;
        let Some(endpoint) = endpoint_of(&room) else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_placed",
                format!("room {id} is not placed yet"),
            ));
        };
        let fleet = self.fleet(id.namespace(), &room.spec.fleet).await?;
        let keys = self.token_keys(&fleet).await?;
        let incarnation = room.uid().unwrap_or_default();
        mint_token_view(&keys, id, &incarnation, request, &endpoint)
    }

    async fn history(&self, id: &RoomId, query: HistoryQuery) -> Result<HistoryView, ApiError> {
        let redis = self.room_state(id).await?;
        Ok(history::read_page(&redis.rooms, id, query).await?)
    }

    async fn transcript(
        &self,
        id: &RoomId,
        incarnation: Option<&str>,
    ) -> Result<TranscriptReader, ApiError> {
        for redis in self.transcript_stores(id).await? {
            let reader = transcript::open_in_redis(&redis.rooms, id, incarnation).await?;
            if let Some(reader) = reader {
                return Ok(reader);
            }
        }
        Err(ApiError::not_found(id))
    }
}

impl KubeDirectory {
    /// The shared state of the fleet that hosts the room; `not_found` for an unknown room.
    async fn room_state(&self, id: &RoomId) -> Result<FleetRedis, ApiError> {
        let room = self.room(id).await?;
        let fleet = self.fleet(id.namespace(), &room.spec.fleet).await?;
        self.redis
            .for_fleet(&self.client, &fleet)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// Every fleet, from the cache when there is one.
    async fn all_fleets(&self) -> Result<Vec<Arc<ChatFleet>>, ApiError> {
        Ok(match &self.caches {
            Some(caches) => caches.fleets.state(),
            None => Api::<ChatFleet>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(kube_error)?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        })
    }

    /// Where a room's transcript may be: its fleet's Redis while the ChatRoom exists; once it
    /// is deleted (the transcript outlives the room), the Redis of every fleet in its
    /// namespace.
    async fn transcript_stores(&self, id: &RoomId) -> Result<Vec<FleetRedis>, ApiError> {
        match self.room_state(id).await {
            Ok(redis) => return Ok(vec![redis]),
            Err(error) if error.status != StatusCode::NOT_FOUND => return Err(error),
            Err(_) => {}
        }
        let mut stores = Vec::new();
        for fleet in self
            .all_fleets()
            .await?
            .iter()
            .filter(|f| f.namespace().as_deref() == Some(id.namespace()))
        {
            match self.redis.for_fleet(&self.client, fleet).await {
                Ok(redis) => stores.push(redis),
                Err(error) => tracing::debug!(fleet = %fleet.name_any(), %error, "no Redis"),
            }
        }
        Ok(stores)
    }

    /// The fleet's join-token key, read from its Secret (at most every [`TOKEN_KEY_REUSE`]).
    async fn token_keys(&self, fleet: &ChatFleet) -> Result<Arc<TokenKeys>, ApiError> {
        let namespace = fleet.namespace().unwrap_or_default();
        let secret = &fleet.spec.token_secret;
        let cache_key = format!("{namespace}/{}/{}", secret.name, secret.key);
        let cached = self
            .token_keys
            .lock()
            .expect("token key lock")
            .get(&cache_key)
            .cloned();
        if let Some((_, keys)) = cached.filter(|(at, _)| at.elapsed() < TOKEN_KEY_REUSE) {
            return Ok(keys);
        }
        let key = secrets::read_key(&self.client, &namespace, secret)
            .await
            .map_err(|error| match error {
                SecretError::Kube(error) => kube_error(error),
                other => ApiError::unavailable(other.to_string()),
            })?;
        let keys = Arc::new(TokenKeys::from_secret(&key));
        self.token_keys
            .lock()
            .expect("token key lock")
            .insert(cache_key, (Instant::now(), keys.clone()));
        Ok(keys)
    }
}

fn endpoint_of(room: &ChatRoom) -> Option<String> {
    room.status.as_ref().and_then(|s| s.endpoint.clone())
}

/// A ChatRoom as the API shows it; an unplaced room has no node or endpoint yet.
fn view(room: &ChatRoom, fleet_limit: u32) -> RoomView {
    let namespace = room.namespace().unwrap_or_default();
    let name = room.name_any();
    let status = room.status.clone().unwrap_or_default();
    RoomView {
        id: RoomId::new(&namespace, &name)
            .unwrap_or_else(|_| RoomId::new("invalid", "invalid").expect("a valid placeholder id")),
        namespace,
        name,
        members: status.members,
        max_members: room.spec.max_members.unwrap_or(fleet_limit),
        node: status.node.unwrap_or_default(),
        endpoint: status.endpoint.unwrap_or_default(),
        fleet: Some(room.spec.fleet.clone()),
        incarnation: room.uid(),
        labels: room.labels().clone(),
    }
}

pub(crate) fn kube_error(error: kube::Error) -> ApiError {
    ApiError::unavailable(format!("Kubernetes API: {error}"))
}
