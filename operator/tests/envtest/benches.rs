//! Benchmarks of the operator against the real API server, ignored by default: run each by
//! name with `--ignored --nocapture` (the commands are in each doc comment and in
//! docs/benchmarks.md). They assert only that the work was done; the figures are printed.

use kube::runtime::watcher;

use super::apiserver::{self, ApiServer};
use super::*;

async fn big_fleet_pods(client: &kube::Client, redis: &Redis) {
    for n in 0..10 {
        let name = format!("chat-{n}");
        ready_pod(client, &name).await;
        redis
            .write_report(&testkit::load_report(&name, 0, 3000, 0.0))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Creates ChatRooms `r0`..`r{count}` (2 expected members each) from `clients` concurrent
/// clients, and returns when each was created.
async fn create_rooms_concurrently(
    client: kube::Client,
    count: usize,
    clients: usize,
) -> std::collections::HashMap<String, std::time::Instant> {
    let creators: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut created = Vec::new();
                for n in (c..count).step_by(clients) {
                    let name = format!("r{n}");
                    create_room(&client, &name, 2).await;
                    created.push((name, std::time::Instant::now()));
                }
                created
            })
        })
        .collect();
    let mut created_at = std::collections::HashMap::new();
    for creator in creators {
        created_at.extend(creator.await.unwrap());
    }
    created_at
}

/// The operator's own pace, without the API server's creation pace in the way: 1,000
/// ChatRooms created first, then the operator started, timed until every one is Placed.
///
///     KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture placement_backlog
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn placement_backlog() {
    const ROOMS: usize = 1000;
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    big_fleet_pods(&client, &redis).await;
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    // The API server's own pace, with no operator writing: the ceiling of any placement rate.
    let (creating, cpu_creating) = (std::time::Instant::now(), server.cpu_seconds());
    create_rooms_concurrently(client.clone(), ROOMS, 16).await;
    let created_in = creating.elapsed().as_secs_f64();
    println!(
        "created {ROOMS} rooms from 16 clients with no operator in {created_in:.2} s: {:.0} rooms/s; API server and etcd CPU per create {:.2} ms",
        ROOMS as f64 / created_in,
        (server.cpu_seconds() - cpu_creating) * 1000.0 / ROOMS as f64
    );

    let writes_before = server.writes().await;
    let cpu_before = apiserver::cpu_seconds(std::process::id());
    let started = std::time::Instant::now();
    start_operator_with(&client, Settings::default());
    let placed = eventually("every room placed", || async {
        (placed_rooms(&rooms).await? == ROOMS).then_some(started.elapsed())
    })
    .await;
    println!(
        "a backlog of {ROOMS} rooms placed in {:.2} s after the operator started: {:.0} rooms/s",
        placed.as_secs_f64(),
        ROOMS as f64 / placed.as_secs_f64()
    );
    println!(
        "operator CPU per placement (this process: the operator and the test's polling): {:.2} ms",
        (apiserver::cpu_seconds(std::process::id()) - cpu_before) * 1000.0 / ROOMS as f64
    );
    println!(
        "API writes per placement:\n{}",
        apiserver::writes_between(&writes_before, &server.writes().await, ROOMS)
    );
}

/// Placement throughput against the real API server: 1,000 ChatRooms created by 16 concurrent
/// clients on a fleet of 10 nodes of 300 seats, then deleted the same way. A benchmark, not a
/// test (it asserts only that every room was placed and deleted):
///
///     KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture placement_throughput
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn placement_throughput() {
    const ROOMS: usize = 1000;
    const CLIENTS: usize = 16;
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    // The operator's own defaults, as in a cluster.
    let metrics = start_operator_with(&client, Settings::default());
    create_fleet(&client, &redis).await;
    big_fleet_pods(&client, &redis).await;

    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let writes_before = server.writes().await;
    let cpu_before = (
        server.cpu_seconds(),
        apiserver::cpu_seconds(std::process::id()),
    );
    let started = std::time::Instant::now();
    let creating = tokio::spawn(create_rooms_concurrently(client.clone(), ROOMS, CLIENTS));
    // Watch the rooms' statuses and note when each was first Placed.
    let mut placed_at = std::collections::HashMap::new();
    let watch = kube::runtime::watcher(rooms.clone(), Default::default());
    let mut watch = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watch));
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while placed_at.len() < ROOMS {
        assert!(
            std::time::Instant::now() < deadline,
            "rooms were not all placed"
        );
        use futures_util::StreamExt;
        let Some(Ok(room)) = watch.next().await else {
            continue;
        };
        if room
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RoomPhase::Placed)
        {
            placed_at
                .entry(room.metadata.name.clone().unwrap())
                .or_insert_with(std::time::Instant::now);
        }
    }
    let all_placed = started.elapsed();
    let created_at = creating.await.unwrap();
    let last_created = created_at.values().max().copied().unwrap();
    println!(
        "created {ROOMS} rooms from {CLIENTS} clients in {:.2} s",
        last_created.duration_since(started).as_secs_f64()
    );
    let mut latencies: Vec<Duration> = placed_at
        .iter()
        .map(|(name, at)| at.saturating_duration_since(created_at[name]))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "placed {ROOMS} rooms from {CLIENTS} clients in {:.2} s: {:.0} rooms/s; created->Placed p50 {:?} p99 {:?} max {:?}",
        all_placed.as_secs_f64(),
        ROOMS as f64 / all_placed.as_secs_f64(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    let writes_placed = server.writes().await;
    let cpu_placed = (
        server.cpu_seconds(),
        apiserver::cpu_seconds(std::process::id()),
    );
    println!(
        "CPU per room, created and placed: API server and etcd {:.2} ms; this process (operator, clients, watch) {:.2} ms",
        (cpu_placed.0 - cpu_before.0) * 1000.0 / ROOMS as f64,
        (cpu_placed.1 - cpu_before.1) * 1000.0 / ROOMS as f64,
    );
    println!(
        "API writes per room, created and placed:\n{}",
        apiserver::writes_between(&writes_before, &writes_placed, ROOMS)
    );

    let started = std::time::Instant::now();
    let deleters: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let rooms = rooms.clone();
            tokio::spawn(async move {
                for n in (c..ROOMS).step_by(CLIENTS) {
                    rooms
                        .delete(&format!("r{n}"), &DeleteParams::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for deleter in deleters {
        deleter.await.unwrap();
    }
    eventually("every room to be gone", || async {
        let left = rooms.list(&Default::default()).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
    let deleted = started.elapsed();
    let errors: u64 = metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("chatfleet_operator_reconcile_errors_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    println!(
        "deleted {ROOMS} rooms in {:.2} s: {:.0} rooms/s; reconcile errors: {}",
        deleted.as_secs_f64(),
        ROOMS as f64 / deleted.as_secs_f64(),
        errors
    );
    println!(
        "API writes per room, deleted:\n{}",
        apiserver::writes_between(&writes_placed, &server.writes().await, ROOMS)
    );
}

/// How many of `rooms` are Placed now; None when the list fails.
async fn placed_rooms(rooms: &Api<ChatRoom>) -> Option<usize> {
    let list = rooms.list(&Default::default()).await.ok()?;
    let placed = |room: &&ChatRoom| {
        room.status
            .as_ref()
            .is_some_and(|s| s.phase == RoomPhase::Placed)
    };
    Some(list.items.iter().filter(placed).count())
}

/// Redis's CPU seconds and the commands it served (`INFO`s aside), so far.
async fn redis_cpu_and_calls(redis: &Redis) -> (f64, u64) {
    let mut conn = redis.conn().await;
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .unwrap();
    let field = |name: &str| -> f64 {
        cpu.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let calls = redis.command_calls().await;
    (field("used_cpu_sys") + field("used_cpu_user"), calls)
}

/// The operator with many rooms placed: `CHATFLEET_BENCH_ROOMS` ChatRooms (5,000 by default)
/// on a fleet of 3 nodes, created by 16 clients at the API server's pace, with the operator's
/// binary alone in its process. Measured: once every room is Placed and things settle, 30 s
/// of nothing happening (Redis CPU and calls, the operator's CPU and RSS per room, API
/// writes); then 100 new rooms created one at a time directly and 100 through the room API
/// (created→Placed, API writes and API server CPU per room) beside 100 rooms written by hand
/// the same way with no operator; then a cold start and a standby's takeover after a SIGKILL
/// (time to the Lease, from it to a new room's placement, writes meanwhile). A benchmark, not
/// a test:
///
///     CHATFLEET_BENCH_ROOMS=5000 KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture rooms_at_rest
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn rooms_at_rest() {
    let rooms_wanted: usize = std::env::var("CHATFLEET_BENCH_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    let nodes = ["chat-0", "chat-1", "chat-2"];
    for name in nodes {
        ready_pod(&client, name).await;
    }
    // The nodes' heartbeats: reports kept fresh for as long as the benchmark runs.
    let reports = redis.state().reports.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            for name in nodes {
                let report = testkit::load_report(name, 0, 100_000, 0.0);
                let _ = reports.write(&report, &[], Duration::from_secs(30)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    // The operator's binary, alone in its process, so its CPU and memory are its own.
    let operator = OperatorProcess::start(&server, "bench");
    let pid = operator.0.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_empty = chatfleet_load::procfs::sample(pid).unwrap().rss_kib;
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let started = std::time::Instant::now();
    create_rooms_concurrently(client.clone(), rooms_wanted, 16).await;
    println!(
        "created {rooms_wanted} rooms in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eventually_within("every room placed", Duration::from_secs(1800), || async {
        (placed_rooms(&rooms).await? == rooms_wanted).then_some(())
    })
    .await;
    println!(
        "all placed {:.1} s after the first create",
        started.elapsed().as_secs_f64()
    );
    // Settle: the last placements' writes and the first resyncs.
    tokio::time::sleep(Duration::from_secs(10)).await;

    const WINDOW: Duration = Duration::from_secs(30);
    let (cpu_before, calls_before) = redis_cpu_and_calls(&redis).await;
    let api_cpu_before = server.cpu_seconds();
    let writes_before = server.writes().await;
    let process_before = chatfleet_load::procfs::sample(pid).unwrap();
    tokio::time::sleep(WINDOW).await;
    let (cpu_after, calls_after) = redis_cpu_and_calls(&redis).await;
    let process_after = chatfleet_load::procfs::sample(pid).unwrap();
    let seconds = WINDOW.as_secs_f64();
    // What the API server and etcd spend with nothing happening, per second: taken out of
    // the series below, which last different times.
    let api_idle = (server.cpu_seconds() - api_cpu_before) / seconds;
    println!(
        "at rest with {rooms_wanted} placed rooms: Redis CPU {:.2} % of a core, {:.0} calls/s (the benchmark's own heartbeat included); \
         operator CPU {:.1} % of a core; operator RSS {} KiB above its empty start, {:.2} KiB per room",
        (cpu_after - cpu_before) * 100.0 / seconds,
        (calls_after - calls_before) as f64 / seconds,
        (process_after.cpu_seconds - process_before.cpu_seconds) * 100.0 / seconds,
        process_after.rss_kib.saturating_sub(rss_empty),
        process_after.rss_kib.saturating_sub(rss_empty) as f64 / rooms_wanted as f64,
    );
    // For sizes on paper: one placed room as the API server stores it, and etcd's database.
    let one_room = server
        .client
        .request_text(
            http::Request::get(format!(
                "/apis/chatfleet.dev/v1alpha1/namespaces/{NS}/chatrooms/r0"
            ))
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    println!(
        "a placed ChatRoom is {} bytes of JSON (managedFields included); etcd's database {:.1} MiB with {rooms_wanted} rooms",
        one_room.len(),
        server.metric("apiserver_storage_size_bytes").await / 1048576.0
    );
    println!(
        "API writes at rest:\n{}",
        apiserver::writes_between(&writes_before, &server.writes().await, 1)
    );

    // New rooms among the N: created one at a time, directly and through the room API.
    let direct = new_rooms_one_by_one(&server, 100, None, api_idle).await;
    println!(
        "{}",
        direct.summary(&format!(
            "created directly, one at a time, with {rooms_wanted} present"
        ))
    );
    let api = new_rooms_one_by_one(&server, 100, Some(&operator.url()), api_idle).await;
    println!(
        "{}",
        api.summary(&format!(
            "opened through the room API, one at a time, with {rooms_wanted} present"
        ))
    );

    // The same two writes by hand, with no operator running: the API server's floor.
    drop(operator);
    let bare = bare_writes(&server, 100, api_idle, "api-99", api.mean()).await;
    println!(
        "{}",
        bare.summary(
            "the bare writes (create with a finalizer, status) at the same pace, no operator"
        )
    );
    println!(
        "room API placement: {:.2} x the API server and etcd CPU of the bare writes",
        api.api_cpu_ms / bare.api_cpu_ms
    );

    // Takeovers: a new operator that starts cold (lists every room), then a warm standby
    // taking over from a leader killed with SIGKILL.
    let started = std::time::Instant::now();
    let cold = OperatorProcess::start(&server, "cold");
    let (held, placed) = takeover(&client, "cold", "after-cold-start").await;
    println!(
        "cold start with {} rooms: the Lease {:.2} s after the start, a new room placed {:.2} s after the Lease",
        rooms_wanted + 300,
        held.duration_since(started).as_secs_f64(),
        placed.as_secs_f64()
    );
    let standby = OperatorProcess::start(&server, "standby");
    // The standby fills its room watch meanwhile.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let standby_rss = chatfleet_load::procfs::sample(standby.0.id())
        .unwrap()
        .rss_kib;
    let writes_before = server.writes().await;
    cold.signal("KILL");
    let killed = std::time::Instant::now();
    let (held, placed) = takeover(&client, "standby", "after-failover").await;
    println!(
        "SIGKILL to the leader with {} rooms: the standby held the Lease {:.2} s later and placed a new room {:.2} s after the Lease; standby RSS before {} KiB",
        rooms_wanted + 301,
        held.duration_since(killed).as_secs_f64(),
        placed.as_secs_f64(),
        standby_rss
    );
    // The new leader's pass over every room is spread over one resync (5 s).
    tokio::time::sleep(Duration::from_secs(15)).await;
    println!(
        "API writes in the 15 s after the takeover (the new room's among them):\n{}",
        apiserver::writes_between(&writes_before, &server.writes().await, 1)
    );
    heartbeat.abort();
}

/// Waits for `identity` to hold the Lease, then creates room `room` at once; returns when the
/// Lease was seen held and how long after that the room was Placed.
async fn takeover(
    client: &kube::Client,
    identity: &str,
    room: &str,
) -> (std::time::Instant, Duration) {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    let held = eventually_within("the Lease", Duration::from_secs(600), || async {
        let holder = leases
            .get_opt("chatfleet-operator")
            .await
            .ok()??
            .spec?
            .holder_identity?;
        (holder == identity).then(std::time::Instant::now)
    })
    .await;
    create_room(client, room, 2).await;
    eventually_within("the new room placed", Duration::from_secs(600), || async {
        let status = Api::<ChatRoom>::namespaced(client.clone(), NS)
            .get(room)
            .await
            .ok()?
            .status?;
        (status.phase == RoomPhase::Placed).then_some(())
    })
    .await;
    (held, held.elapsed())
}

/// What a series of room creations cost: created→Placed, API writes, API server CPU.
struct Placements {
    latencies: Vec<Duration>,
    writes: String,
    /// Reads (watches aside) from anyone meanwhile.
    reads: String,
    /// API server and etcd CPU per room, beyond what they spend idle.
    api_cpu_ms: f64,
}

/// API server and etcd CPU per room since `before` and `started`, beyond `idle` (CPU
/// seconds per second).
fn api_cpu_per_room(
    server: &ApiServer,
    before: f64,
    started: std::time::Instant,
    idle: f64,
    rooms: usize,
) -> f64 {
    let spent = server.cpu_seconds() - before - idle * started.elapsed().as_secs_f64();
    spent.max(0.0) * 1000.0 / rooms as f64
}

impl Placements {
    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len().max(1) as u32
    }

    fn summary(&self, what: &str) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{} rooms {what}: created->Placed p50 {:?} p99 {:?}; API server and etcd CPU {:.2} ms per room (beyond idle); API writes per room:\n{}\nAPI reads per room:\n{}",
            self.latencies.len(),
            at(0.5),
            at(0.99),
            self.api_cpu_ms,
            self.writes,
            self.reads
        )
    }
}

const ROOM_API_KEY: &str = "bench-key";

/// Creates `count` rooms one after another, each once the last is Placed: directly as
/// ChatRooms, or through the room API at `room_api` (whose answer comes once it is placed).
async fn new_rooms_one_by_one(
    server: &ApiServer,
    count: usize,
    room_api: Option<&str>,
    api_idle: f64,
) -> Placements {
    use futures_util::StreamExt;
    let client = server.client.clone();
    let rooms: Api<ChatRoom> = Api::namespaced(client.clone(), NS);
    let prefix = if room_api.is_some() { "api" } else { "direct" };
    // Only this series' rooms: a watch of the N would cost this process, not the operator.
    // Rooms created directly are seen placed through a watch of their own (the room API
    // answers once its room is placed: no watch then, which would cost the API server as much
    // as the operator's own). Listed before the series starts, from the API server's watch
    // cache: the list is the test's cost, not the placements'.
    let selector = format!("bench={prefix}");
    let config = watcher::Config::default().labels(&selector).any_semantic();
    let mut watch = std::pin::pin!(kube::runtime::watcher(rooms.clone(), config));
    if room_api.is_none() {
        while !matches!(watch.next().await, Some(Ok(watcher::Event::InitDone))) {}
    }
    let http = reqwest::Client::new();
    let (writes_before, reads_before) = (server.writes().await, server.reads().await);
    let (cpu_before, started) = (server.cpu_seconds(), std::time::Instant::now());
    let mut latencies = Vec::new();
    for n in 0..count {
        let name = format!("{prefix}-{n}");
        let created = std::time::Instant::now();
        match room_api {
            Some(url) => {
                let answer = http
                    .post(format!("{url}/v1/rooms"))
                    .header("x-api-key", ROOM_API_KEY)
                    .json(&json!({"name": name, "labels": {"bench": prefix},
                                  "participants": [{"user": "cust"}, {"user": "agent", "role": "agent"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
                // The room API answers once the room is placed.
                latencies.push(created.elapsed());
            }
            None => {
                let room: ChatRoom = serde_json::from_value(json!({
                    "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatRoom",
                    "metadata": {"name": name, "labels": {"bench": prefix}},
                    "spec": {"fleet": "chat", "expectedMembers": 2}
                }))
                .unwrap();
                rooms.create(&PostParams::default(), &room).await.unwrap();
                loop {
                    let event = tokio::time::timeout(Duration::from_secs(60), watch.next())
                        .await
                        .expect("the room placed within a minute");
                    let Some(Ok(watcher::Event::Apply(room) | watcher::Event::InitApply(room))) =
                        event
                    else {
                        continue;
                    };
                    if room.metadata.name.as_deref() == Some(&name)
                        && room
                            .status
                            .as_ref()
                            .is_some_and(|s| s.phase == RoomPhase::Placed)
                    {
                        break;
                    }
                }
                latencies.push(created.elapsed());
            }
        }
    }
    Placements {
        latencies,
        writes: apiserver::writes_between(&writes_before, &server.writes().await, count),
        reads: apiserver::writes_between(&reads_before, &server.reads().await, count),
        api_cpu_ms: api_cpu_per_room(server, cpu_before, started, api_idle, count),
    }
}

/// `count` rooms written as the room API and the operator write them (created with the
/// finalizer, then the Placed status the operator wrote for room `template_name`), one room
/// every `pace` (the API server spends less per write on writes that come back to back), by
/// this process, with one watch of every ChatRoom open
/// as any controller of them has: the API server's cost of the writes themselves.
async fn bare_writes(
    server: &ApiServer,
    count: usize,
    api_idle: f64,
    template_name: &str,
    pace: Duration,
) -> Placements {
    use futures_util::StreamExt;
    let rooms: Api<ChatRoom> = Api::namespaced(server.client.clone(), NS);
    // The status exactly as the operator wrote it for a room like these.
    let template = serde_json::to_value(rooms.get(template_name).await.unwrap().status).unwrap();
    let (listed, mut first_list) = tokio::sync::mpsc::channel(1);
    let watch = watcher(
        Api::<ChatRoom>::all(server.client.clone()),
        Default::default(),
    );
    let watch = tokio::spawn(watch.for_each(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            let _ = listed.try_send(());
        }
        std::future::ready(())
    }));
    first_list.recv().await;
    let (writes_before, reads_before) = (server.writes().await, server.reads().await);
    let (cpu_before, started) = (server.cpu_seconds(), std::time::Instant::now());
    let mut latencies = Vec::new();
    for n in 0..count {
        let name = format!("bare-{n}");
        let created = std::time::Instant::now();
        let room: ChatRoom = serde_json::from_value(json!({
            "apiVersion": "chatfleet.dev/v1alpha1", "kind": "ChatRoom",
            "metadata": {"name": name, "finalizers": ["chatfleet.dev/room"]},
            "spec": {"fleet": "chat", "expectedMembers": 2}
        }))
        .unwrap();
        rooms.create(&PostParams::default(), &room).await.unwrap();
        let mut status = template.clone();
        status["endpoint"] = json!(
            status["endpoint"]
                .as_str()
                .unwrap_or_default()
                .replace(template_name, &name)
        );
        let status = json!({ "status": status });
        rooms
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
        latencies.push(created.elapsed());
        tokio::time::sleep_until((created + pace).into()).await;
    }
    let placements = Placements {
        latencies,
        writes: apiserver::writes_between(&writes_before, &server.writes().await, count),
        reads: apiserver::writes_between(&reads_before, &server.reads().await, count),
        api_cpu_ms: api_cpu_per_room(server, cpu_before, started, api_idle, count),
    };
    watch.abort();
    placements
}

/// An operator binary running as `identity` against `server`, killed when dropped.
struct OperatorProcess(std::process::Child, u16);

impl OperatorProcess {
    fn start(server: &ApiServer, identity: &str) -> Self {
        // target/<profile>/deps/<test> → target/<profile>/operator
        let binary = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|deps| deps.parent())
            .map(|profile| profile.join("operator"))
            .filter(|binary| binary.exists())
            .expect("build the operator binary first: cargo build [--release] -p operator");
        let port = testkit::free_port();
        let child = std::process::Command::new(binary)
            .env("KUBECONFIG", &server.kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--lease-namespace", NS, "--identity", identity])
            .args(["--api-keys", ROOM_API_KEY, "--room-namespace", NS])
            .args(["--default-fleet", "chat"])
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var_os("CHATFLEET_TEST_LOGS").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .unwrap();
        Self(child, port)
    }

    /// The base URL of its HTTP server (the room API, metrics).
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.1)
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Leader failover, with two operator processes on the real API server: the time from the
/// leader's death (SIGKILL), or its stop (SIGTERM), to the next room placed by the other. A
/// benchmark, not a test:
///
///     cargo build --release -p operator && KUBEBUILDER_ASSETS=$(../shared/k8s/envtest-assets) \
///       cargo test --release -p operator --test envtest -- --ignored --nocapture leader_failover
#[tokio::test]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn leader_failover() {
    let Some(assets) = assets() else { return };
    let (server, client, redis) = api_server_with_crds(&assets).await;
    create_fleet(&client, &redis).await;
    for name in ["chat-0", "chat-1"] {
        ready_pod(&client, name).await;
        redis
            .write_report(&testkit::load_report(name, 0, 3000, 0.0))
            .await;
    }
    let mut operators = std::collections::HashMap::new();
    for identity in ["a", "b"] {
        operators.insert(
            identity.to_owned(),
            OperatorProcess::start(&server, identity),
        );
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    let holder = || async {
        leases
            .get_opt("chatfleet-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    let placed = |name: &'static str| {
        let client = client.clone();
        async move {
            create_room(&client, name, 2).await;
            status_when(&client, name, "the room placed", |s| {
                s.phase == RoomPhase::Placed
            })
            .await;
        }
    };
    placed("warm-up").await;

    for (signal, room) in [("KILL", "after-kill"), ("TERM", "after-term")] {
        let leader = eventually("a leader", &holder).await;
        let stopped = std::time::Instant::now();
        operators[&leader].signal(signal);
        placed(room).await;
        let new_leader = holder().await.unwrap_or_default();
        println!(
            "SIG{signal} to leader {leader}: the next room was placed {:.2} s later, by {new_leader}",
            stopped.elapsed().as_secs_f64()
        );
        assert_ne!(new_leader, leader);
        // The stopped one comes back as a standby.
        operators.insert(leader.clone(), OperatorProcess::start(&server, &leader));
    }
}
