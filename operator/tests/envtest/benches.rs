//! Benchmarks of the operator against the real API server, ignored by default: run each by
//! name with `--ignored --nocapture` (the commands are in each doc comment and in
//! docs/benchmarks.md). They assert only that the work was done; the figures are printed.

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
        let list = rooms.list(&Default::default()).await.ok()?;
        let placed = list
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == RoomPhase::Placed)
            })
            .count();
        (placed == ROOMS).then_some(started.elapsed())
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

/// The operator at rest with many rooms placed: `CHATFLEET_BENCH_ROOMS` ChatRooms (5,000 by
/// default) on a fleet of 3 nodes, created by 16 clients at the API server's pace; once every
/// one is Placed and things settle, 30 s of nothing happening, measured: Redis CPU and calls,
/// the test process's RSS per room (the operator, its caches and the test's own watch), API
/// writes. A benchmark, not a test:
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
        let placed = rooms
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == RoomPhase::Placed)
            })
            .count();
        (placed == rooms_wanted).then_some(())
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
    let writes_before = server.writes().await;
    let process_before = chatfleet_load::procfs::sample(pid).unwrap();
    tokio::time::sleep(WINDOW).await;
    let (cpu_after, calls_after) = redis_cpu_and_calls(&redis).await;
    let process_after = chatfleet_load::procfs::sample(pid).unwrap();
    let seconds = WINDOW.as_secs_f64();
    println!(
        "at rest with {rooms_wanted} placed rooms: Redis CPU {:.2} % of a core, {:.0} calls/s (the benchmark's own heartbeat included); \
         operator CPU {:.1} % of a core; operator RSS {} KiB above its empty start, {:.2} KiB per room",
        (cpu_after - cpu_before) * 100.0 / seconds,
        (calls_after - calls_before) as f64 / seconds,
        (process_after.cpu_seconds - process_before.cpu_seconds) * 100.0 / seconds,
        process_after.rss_kib.saturating_sub(rss_empty),
        process_after.rss_kib.saturating_sub(rss_empty) as f64 / rooms_wanted as f64,
    );
    println!(
        "API writes at rest:\n{}",
        apiserver::writes_between(&writes_before, &server.writes().await, 1)
    );
    heartbeat.abort();
}

/// An operator binary running as `identity` against `server`, killed when dropped.
struct OperatorProcess(std::process::Child);

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
        let child = std::process::Command::new(binary)
            .env("KUBECONFIG", &server.kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{}", testkit::free_port())])
            .args(["--lease-namespace", NS, "--identity", identity])
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var_os("CHATFLEET_TEST_LOGS").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .unwrap();
        Self(child)
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
