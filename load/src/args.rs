//! The load tool's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Opens N WebSocket users over rooms of a given size, has them chat, and reports delivery,
/// latency and the node's CPU and memory.
#[derive(Debug, Clone, Parser)]
#[command(name = "chatfleet-load", version, about, args_override_self = true)]
pub struct Args {
    /// Base URL of a chat node; repeat or separate with commas for several (rooms are spread
    /// over them). Nodes must run with --insecure-dev-auth.
    #[arg(
        long = "node",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080"
    )]
    pub nodes: Vec<String>,

    /// Users (WebSocket connections) to open.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,

    /// Members per room; the last room takes the remainder.
    #[arg(long, default_value_t = 300)]
    pub room_size: usize,

    /// Rooms each user joins (a user in several rooms holds one connection per room).
    #[arg(long, default_value_t = 1)]
    pub rooms_per_user: usize,

    /// Extra rooms whose members send as fast as they can (the node's rate limit still
    /// applies), to see whether a flood slows the other rooms.
    #[arg(long, default_value_t = 0)]
    pub flood_rooms: usize,

    /// Messages per second each flood member sends; 0 means as fast as it can.
    #[arg(long, default_value_t = 0.0)]
    pub flood_rate: f64,

    /// Members of each flooded room (in addition to --users).
    #[arg(long, default_value_t = 300)]
    pub flood_room_size: usize,

    /// Spread each room's members over the nodes (member i on node i mod nodes) instead of
    /// keeping a room on one node: rooms that span nodes.
    #[arg(long)]
    pub spread_members: bool,

    /// Seconds between one user's messages; 0 means users never send (idle connections).
    #[arg(long, default_value_t = 30.0)]
    pub send_every: f64,

    /// Seconds of measured chatting, after every user connected.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,

    /// Seconds to wait after the last send for deliveries still on their way.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,

    /// Message body size in bytes (at least what the send time needs).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,

    /// Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, ...), so
    /// the ephemeral ports of one address do not limit the count.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,

    /// The node's process id, to read its CPU time and memory from /proc.
    #[arg(long)]
    pub node_pid: Option<u32>,

    /// Namespace of the rooms the tool uses.
    #[arg(long, default_value = "load")]
    pub namespace: String,

    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// A name for this run, carried into the report.
    #[arg(long, default_value = "custom")]
    pub scenario: String,
}

impl Args {
    /// Quiet rooms.
    pub fn rooms(&self) -> usize {
        self.users.div_ceil(self.room_size.max(1)) * self.rooms_per_user.max(1)
    }

    pub fn send_interval(&self) -> Option<Duration> {
        (self.send_every > 0.0).then(|| Duration::from_secs_f64(self.send_every))
    }
}
