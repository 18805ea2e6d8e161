//! One connection per fleet Redis, made on first use. Fleets name their Redis in the spec (a
//! URL, or a Secret holding it), so the operator follows each fleet to its own.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatfleet_state::reports::NodeSnapshot;
use chatfleet_state::transcripts::TranscriptSettings;
use chatfleet_state::{ConnectionSettings, FleetState, Redis, RedisTls, StateError};
use chatfleet_wire::RoomId;
use kube::{Client, ResourceExt};

use crate::crd::{ChatFleet, RedisTlsSource, SecretKeyRef};
use crate::error::{Error, Result};
use crate::node_views::NodeViews;
use crate::secrets::{self, SecretError};

/// How long a fleet's Redis must answer again, after failing, before the operator judges the
/// nodes by their reports: a few heartbeats, so every live node has written one.
pub const REDIS_GRACE: Duration = Duration::from_secs(5);

/// How a fleet's Redis is doing, as far as the operator can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisHealth {
    /// It does not answer.
    Down,
    /// It answers again, for less than [`REDIS_GRACE`]: reports may still be missing.
    Recovering,
    /// It has answered for the grace period at least.
    Up,
}

/// One fleet's Redis, with what the operator saw of its health and of its nodes.
#[derive(Clone)]
pub struct FleetRedis {
    state: FleetState,
    /// Since when it has answered, if it does.
    answering_since: Arc<Mutex<Option<Instant>>>,
    /// Snapshots of its nodes, shared by the rooms placed on them.
    views: Arc<NodeViews>,
    /// When each placed room's settings are next refreshed in Redis.
    settings_due_at: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Deref for FleetRedis {
    type Target = FleetState;

    fn deref(&self) -> &FleetState {
        &self.state
    }
}

impl FleetRedis {
    /// `node`'s snapshot, as fresh as [`NodeViews`] keeps it.
    pub async fn node(&self, node: &str) -> std::result::Result<Arc<NodeSnapshot>, StateError> {
        self.views.get(&self.state.reports, node).await
    }

    /// Whether `room`'s settings are due for a refresh (once per `every`); schedules the next
    /// one when they are. An empty placed room's settings live in Redis only as long as
    /// someone refreshes them, but refreshing them on every check would cost Redis a call per
    /// room per check. A room this process has not seen yet (every room, after a takeover)
    /// was refreshed by the previous leader within `every`: its first refresh here falls at a
    /// point of the period fixed by its name, so a new leader does not refresh thousands at
    /// once.
    pub fn settings_due(&self, room: &RoomId, every: Duration) -> bool {
        let mut due_at = self.settings_due_at.lock().expect("refresh lock");
        let room = room.to_string();
        let now = Instant::now();
        match due_at.get(&room) {
            Some(at) if *at > now => false,
            Some(_) => {
                due_at.insert(room, now + every);
                true
            }
            None => {
                let first = now + spread(&room, every);
                due_at.insert(room, first);
                false
            }
        }
    }

    /// Forgets a room that is gone.
    pub fn forget_room(&self, room: &RoomId) {
        let mut due_at = self.settings_due_at.lock().expect("refresh lock");
        due_at.remove(&room.to_string());
    }

    /// A reservation of `seats` for `room` on `node` was just written.
    pub async fn noted_reservation(&self, node: &str, room: &RoomId, seats: u32) {
        self.views.reserved(node, &room.to_string(), seats).await;
    }

    /// Pings Redis and says how it is doing.
    pub async fn health(&self) -> RedisHealth {
        let answers = self.state.redis.ping().await.is_ok();
        let mut since = self.answering_since.lock().expect("health lock");
        match (answers, *since) {
            (false, _) => {
                *since = None;
                RedisHealth::Down
            }
            (true, None) => {
                *since = Some(Instant::now());
                RedisHealth::Recovering
            }
            (true, Some(at)) if at.elapsed() < REDIS_GRACE => RedisHealth::Recovering,
            (true, Some(_)) => RedisHealth::Up,
        }
    }
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
        let namespace = fleet.namespace().unwrap_or_default();
        let url = match (&fleet.spec.redis.url, &fleet.spec.redis.secret_ref) {
            (Some(url), _) => url.clone(),
            (None, Some(secret)) => read_text(client, &namespace, secret).await?,
            (None, None) => return Err(Error::Config("the fleet names no Redis".into())),
        };
        let url = match &fleet.spec.redis.password_secret_ref {
            Some(secret) => {
                let password = read_text(client, &namespace, secret).await?;
                chatfleet_state::with_password(&url, &password)?
            }
            None => url,
        };
        let mut redis = match &fleet.spec.redis.tls {
            None => self.for_url(&url)?,
            Some(tls) => {
                let tls = read_tls(client, &namespace, tls).await?;
                self.open(&url, &tls)?
            }
        };
        // Fleets sharing a Redis share its connection, not their transcript settings.
        let kept = fleet.spec.transcripts;
        redis.state = redis.state.with_transcripts(TranscriptSettings {
            max_entries: kept.max_entries as usize,
            retention: Duration::from_secs(kept.retention_seconds.into()),
        });
        Ok(redis)
    }

    pub fn for_url(&self, url: &str) -> Result<FleetRedis> {
        self.open(url, &RedisTls::default())
    }

    /// The Redis at `url`, reached with `tls`: one connection per URL and TLS material (a
    /// rotated certificate opens a new one).
    fn open(&self, url: &str, tls: &RedisTls) -> Result<FleetRedis> {
        let key = match (&tls.ca, &tls.client) {
            (None, None) => url.to_owned(),
            (ca, client) => {
                use std::hash::{DefaultHasher, Hash, Hasher};
                let mut hasher = DefaultHasher::new();
                (ca, client).hash(&mut hasher);
                format!("{url}#tls-{:x}", hasher.finish())
            }
        };
        let mut by_url = self.by_url.lock().expect("redis pool lock");
        if let Some(found) = by_url.get(&key) {
            return Ok(found.clone());
        }
        let redis = Redis::open_with_tls(url, ConnectionSettings::OPERATOR, tls)?;
        let fleet = FleetRedis {
            state: FleetState::new(redis, self.room_ttl),
            // Trusted from the start: an operator starting during an outage sees it fail.
            answering_since: Arc::new(Mutex::new(Some(Instant::now() - REDIS_GRACE))),
            views: Arc::default(),
            settings_due_at: Arc::default(),
        };
        by_url.insert(key, fleet.clone());
        Ok(fleet)
    }
}

/// A point within `every` fixed by `name` (the same in every process: std's `DefaultHasher`
/// is unkeyed), spreading periodic work over the period.
fn spread(name: &str, every: Duration) -> Duration {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    let millis = every.as_millis().max(1) as u64;
    Duration::from_millis(hasher.finish() % millis)
}

/// The CA (and client certificate) in a fleet's Redis TLS Secret.
async fn read_tls(client: &Client, namespace: &str, tls: &RedisTlsSource) -> Result<RedisTls> {
    let key = |key: &str| SecretKeyRef {
        name: tls.secret_name.clone(),
        key: key.to_owned(),
    };
    let read = |key: SecretKeyRef| async move {
        secrets::read_key(client, namespace, &key)
            .await
            .map_err(secret_error)
    };
    let client_certificate = if tls.client_certificate {
        Some((read(key("tls.crt")).await?, read(key("tls.key")).await?))
    } else {
        None
    };
    Ok(RedisTls {
        ca: Some(read(key("ca.crt")).await?),
        client: client_certificate,
    })
}

/// A Secret the fleet names that cannot be read: the API's error, or the fleet's mistake.
fn secret_error(error: SecretError) -> Error {
    match error {
        SecretError::Kube(error) => Error::Kube(error),
        other => Error::Config(other.to_string()),
    }
}

/// A Secret's key as text, trimmed (a URL or a password written with a trailing newline).
async fn read_text(client: &Client, namespace: &str, secret: &SecretKeyRef) -> Result<String> {
    let bytes = secrets::read_key(client, namespace, secret)
        .await
        .map_err(secret_error)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("secret {} is not UTF-8", secret.name)))?;
    Ok(text.trim().to_owned())
}
