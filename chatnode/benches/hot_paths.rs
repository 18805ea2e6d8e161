//! The node's hot paths: encoding a message once and writing it into a room of 300 sockets, and
//! verifying a join token. Run with `cargo bench -p chatnode`; figures in docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Member, MessageContent, Role, message_json, message_tail};
use chatfleet_wire::token::TokenKeys;
use chatnode::node::outbox::{Outbox, WsFrame, outbox_for};
use criterion::{Criterion, criterion_group, criterion_main};

fn content(room: &RoomId) -> MessageContent {
    MessageContent {
        room: room.clone(),
        from: "agent-7".into(),
        name: "Sam".into(),
        role: Role::Agent,
        body: "Thanks for waiting, I can see the order now and am fixing it.".into(),
        ts: 1_795_414_288_725,
        client_id: Some("c-17".into()),
    }
}

/// What a room does per message: encode it once and write the same bytes into every
/// member's socket (300 real loopback sockets, read by tasks on another thread). A socket
/// that is full queues the frame for its session, as on a node.
fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let members: Vec<Outbox> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut members = Vec::new();
        for _ in 0..300 {
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
            let mut client = client.unwrap();
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut client, &mut sink).await;
            });
            let socket = Arc::new(accepted.unwrap().0);
            let (out, queue) = outbox_for(256 * 1024, Some(socket));
            // What the session does: write out what a full socket left queued.
            tokio::spawn(async move {
                loop {
                    queue.queued().await;
                    queue.flush().await.unwrap();
                }
            });
            members.push(out);
        }
        members
    });
    let room: RoomId = "support/case-1".parse().unwrap();
    let mut id = 0;
    let _entered = runtime.enter();
    c.bench_function("encode once and write to 300 sockets", |b| {
        b.iter(|| {
            id += 1;
            let frame = WsFrame::text(message_json(id, &message_tail(&content(&room))));
            for out in &members {
                out.push(frame.clone()).unwrap();
            }
        });
    });
}

fn token_verification(c: &mut Criterion) {
    let keys = TokenKeys::from_secret(b"a-shared-fleet-secret-of-decent-length");
    let room: RoomId = "support/case-1".parse().unwrap();
    let member = Member {
        user: "cust-42".into(),
        name: "Dana".into(),
        role: Role::Customer,
    };
    let (token, _) = keys.mint(&room, &member, Duration::from_secs(3600));
    c.bench_function("verify a join token", |b| {
        b.iter(|| black_box(keys.verify(black_box(&token), &room).unwrap()));
    });
}

criterion_group!(benches, fan_out, token_verification);
criterion_main!(benches);
