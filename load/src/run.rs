//! One run: plan the users, connect them all, measure the node at rest, chat for the set
//! duration, let deliveries settle, and report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use crate::args::Args;
use crate::report::Report;
use crate::stats::{Class, Stats, get};
use crate::user::{self, Phase, Plan, Shared};
use chatfleet_load::procfs::{self, ProcSample};

/// The longest the connect phase may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(args: &Args) -> Result<Report, String> {
    let nodes = resolve_nodes(&args.nodes).await?;
    let shared = Arc::new(Shared {
        stats: Stats::new(),
        epoch: Instant::now(),
        connecting: Semaphore::new(args.connect_concurrency.max(1)),
    });
    let sample = |label: &str| -> Option<ProcSample> {
        let pid = args.node_pid?;
        procfs::sample(pid)
            .map_err(|e| eprintln!("cannot read /proc/{pid} ({label}): {e}"))
            .ok()
    };
    let before = sample("before");
    let plans = plan(args, &nodes);
    let connections = plans.len() as u64;
    eprintln!(
        "opening {connections} connections in {} rooms on {} node(s)...",
        args.rooms(),
        nodes.len()
    );

    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(plans.len());
    for plan in plans {
        tasks.push(tokio::spawn(user::run(
            plan,
            shared.clone(),
            phase_rx.clone(),
        )));
    }
    let counters = &shared.stats.counters;
    while get(&counters.connected) + get(&counters.refused) + get(&counters.dropped) < connections {
        if connect_started.elapsed() > CONNECT_LIMIT {
            return Err("the connect phase took longer than ten minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    eprintln!(
        "{} connected, {} refused in {connect_seconds:.1} s",
        get(&counters.connected),
        get(&counters.refused)
    );
    // Let the node settle before reading its memory at rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_rest = sample("at rest");
    let tool_at_rest = procfs::sample(std::process::id()).ok();

    let chat = Duration::from_secs_f64(args.duration);
    let chat_started = Instant::now();
    let _ = phase_tx.send(Phase::Chatting {
        until: chat_started + chat,
    });
    tokio::time::sleep(chat).await;
    let after_chat = sample("after chat");
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after_settle = sample("after settle");
    let tool_after = procfs::sample(std::process::id()).ok();
    let tool_cpu_seconds = match (tool_at_rest, tool_after) {
        (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
        _ => 0.0,
    };
    let _ = phase_tx.send(Phase::Stopped);
    for task in tasks {
        let _ = task.await;
    }

    Ok(Report::new(
        args,
        &shared.stats,
        connect_seconds,
        chat.as_secs_f64(),
        [before, at_rest, after_chat, after_settle],
        tool_cpu_seconds,
    ))
}

async fn resolve_nodes(urls: &[String]) -> Result<Vec<(String, std::net::SocketAddr)>, String> {
    let mut nodes = Vec::new();
    for url in urls {
        let url = url.trim_end_matches('/');
        let host_port = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// node URLs are supported"))?;
        let addr = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        nodes.push((url.to_owned(), addr));
    }
    if nodes.is_empty() {
        return Err("at least one --node is needed".into());
    }
    Ok(nodes)
}

/// Quiet users fill rooms of `room_size` in order (a user in several rooms opens one
/// connection per room); flood rooms come on top. Room r lives on node r mod nodes, or with
/// `--spread-members` user u connects to node u mod nodes.
fn plan(args: &Args, nodes: &[(String, std::net::SocketAddr)]) -> Vec<Plan> {
    let room_size = args.room_size.max(1);
    let base_rooms = args.users.div_ceil(room_size).max(1);
    let mut plans = Vec::new();
    let flood_every =
        (args.flood_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.flood_rate));
    let mut add = |room: String, slot: usize, user: String, class: Class, members: usize| {
        let (base_url, addr) = &nodes[slot % nodes.len()];
        let index = plans.len();
        plans.push(Plan {
            index,
            url: format!(
                "{base_url}/v1/rooms/{}/{room}/ws?user={user}",
                args.namespace
            ),
            node: *addr,
            source: std::net::Ipv4Addr::new(
                127,
                0,
                0,
                2 + (index % args.sources.max(1) as usize) as u8,
            )
            .into(),
            class,
            room_members: members as u64,
            send_every: match class {
                Class::Quiet => args.send_interval(),
                Class::Flood => flood_every,
            },
            body_bytes: args.body_bytes,
        });
    };
    for flood in 0..args.flood_rooms {
        for member in 0..args.flood_room_size {
            add(
                format!("flood-{flood}"),
                flood,
                format!("f{flood}-{member}"),
                Class::Flood,
                args.flood_room_size,
            );
        }
    }
    for user in 0..args.users {
        for k in 0..args.rooms_per_user.max(1) {
            let base = user / room_size;
            let members = args.users.min((base + 1) * room_size) - base * room_size;
            let room = base + k * base_rooms;
            let node = if args.spread_members {
                user
            } else {
                room + args.flood_rooms
            };
            add(
                format!("room-{room}"),
                node,
                format!("u{user}"),
                Class::Quiet,
                members,
            );
        }
    }
    plans
}
