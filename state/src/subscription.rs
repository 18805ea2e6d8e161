//! A subscription to the fleet's channels: rooms' live channels and the control channel.
//!
//! On one server (or the master the sentinels name) it is one pub/sub connection. On a Redis
//! Cluster, rooms' channels are sharded channels, each subscribed on the primary that owns its
//! slot; the control channel stays a classic channel, which every node of a cluster relays.
//!
//! Either way the subscription ends (see [`Subscription::next`]) whenever messages may have
//! been missed: the connection dropped, or the sentinels named a new master. The caller then
//! subscribes anew and reads what it missed from the rooms' logs. When a room's slot moves
//! to another shard of a cluster, only that room's channel is lost: [`Event::Moved`] says
//! which, for the caller to subscribe to it again (on its new shard) and catch that room up.

use std::collections::HashSet;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind, RedisError};
use tokio::sync::{mpsc, watch};

use crate::Redis;
use crate::connection::Mode;

pub struct Subscription {
    inner: Inner,
}

/// What a subscription receives.
pub enum Event {
    Message(Msg),
    /// The server dropped this channel's subscription: its slot moved to another shard.
    Moved(String),
}

enum Inner {
    Server {
        sink: PubSubSink,
        stream: PubSubStream,
        /// Changes when the sentinels name a new master: this connection is then to the old one.
        master: watch::Receiver<u64>,
    },
    Cluster {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Every channel subscribed, to tell a loss the server announces from our own
        /// unsubscribing.
        channels: HashSet<Vec<u8>>,
    },
}

impl Subscription {
    /// A new subscription connection, subscribed to nothing yet.
    pub async fn open(redis: &Redis) -> Result<Self, RedisError> {
        let inner = match redis.mode() {
            Mode::Server { current, master } => {
                // The master first: a change after this is noticed, even one that happens
                // before the connection below is made.
                let mut master = master.clone();
                master.borrow_and_update();
                let client = current.read().expect("redis lock").client.clone();
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Inner::Server {
                    sink,
                    stream,
                    master,
                }
            }
            Mode::Cluster(cluster) => {
                let (sender, pushes) = mpsc::unbounded_channel();
                Inner::Cluster {
                    conn: cluster.subscriber(sender).await?,
                    pushes,
                    channels: HashSet::new(),
                }
            }
        };
        Ok(Self { inner })
    }

    /// Subscribes to a classic channel (the control channel).
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        match &mut self.inner {
            Inner::Server { sink, .. } => sink.subscribe(channel).await,
            Inner::Cluster { conn, channels, .. } => {
                channels.insert(channel.as_bytes().to_vec());
                conn.subscribe(channel).await
            }
        }
    }

    /// Subscribes to a room's live channel: sharded on a cluster.
    pub async fn subscribe_room(&mut self, channel: &str) -> Result<(), RedisError> {
        match &mut self.inner {
            Inner::Server { sink, .. } => sink.subscribe(channel).await,
            Inner::Cluster { conn, channels, .. } => {
                channels.insert(channel.as_bytes().to_vec());
                conn.ssubscribe(channel).await
            }
        }
    }

    pub async fn unsubscribe_room(&mut self, channel: &str) -> Result<(), RedisError> {
        match &mut self.inner {
            Inner::Server { sink, .. } => sink.unsubscribe(channel).await,
            Inner::Cluster { conn, channels, .. } => {
                channels.remove(channel.as_bytes());
                conn.sunsubscribe(channel).await
            }
        }
    }

    /// The next message, or None once this subscription may have missed messages and must
    /// be made anew.
    pub async fn next(&mut self) -> Option<Event> {
        match &mut self.inner {
            Inner::Server { stream, master, .. } => tokio::select! {
                message = stream.next() => message.map(Event::Message),
                Ok(()) = master.changed() => {
                    tracing::info!("Redis has a new master; subscribing there");
                    None
                }
            },
            Inner::Cluster {
                pushes, channels, ..
            } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(message) = Msg::from_push_info(push) {
                            return Some(Event::Message(message));
                        }
                    }
                    PushKind::Disconnection => {
                        tracing::warn!("lost a connection to a cluster node; subscribing anew");
                        return None;
                    }
                    PushKind::SUnsubscribe => {
                        // Ours were forgotten when asked for; one still wanted was dropped by
                        // the server, as its slot moved to another shard.
                        if let Some(channel) = wanted_channel(&push, channels) {
                            return Some(Event::Moved(channel));
                        }
                    }
                    PushKind::Unsubscribe if wanted_channel(&push, channels).is_some() => {
                        return None;
                    }
                    _ => {}
                }
            },
        }
    }
}

/// The channel an unsubscribe push names, if it is still wanted.
fn wanted_channel(push: &PushInfo, wanted: &HashSet<Vec<u8>>) -> Option<String> {
    match push.data.first() {
        Some(redis::Value::BulkString(channel)) if wanted.contains(channel) => {
            String::from_utf8(channel.clone()).ok()
        }
        _ => None,
    }
}
