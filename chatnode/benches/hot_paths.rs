//! The node's hot paths: encoding a message once and fanning it out to a room of 300, and
//! verifying a join token. Run with `cargo bench -p chatnode`; figures in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use chatfleet_wire::RoomId;
use chatfleet_wire::frames::{Member, MessageContent, Role, message_json, message_tail};
use chatfleet_wire::token::TokenKeys;
use chatnode::node::outbox::{Outbound, outbox};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio_tungstenite::tungstenite::Utf8Bytes;

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

/// What a room does per message: encode it once and queue the same bytes to every member;
/// then each member's session takes it off its queue (without the socket write).
fn fan_out(c: &mut Criterion) {
    let room: RoomId = "support/case-1".parse().unwrap();
    let mut members: Vec<_> = (0..300).map(|_| outbox(256 * 1024)).collect();
    let mut id = 0;
    c.bench_function("encode once and fan out to 300", |b| {
        b.iter(|| {
            id += 1;
            let frame: Utf8Bytes = message_json(id, &message_tail(&content(&room))).into();
            for (out, _) in &members {
                out.push(frame.clone()).unwrap();
            }
            for (_, rx) in &mut members {
                if let Some(Outbound::Frame(f)) = rx.try_recv() {
                    rx.written(f.len());
                    black_box(f);
                }
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
