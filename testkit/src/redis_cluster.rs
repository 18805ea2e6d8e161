//! A real Redis Cluster for tests: `redis-server --cluster-enabled yes` processes joined by
//! `redis-cli --cluster create`, with what the tests do to a cluster in production: kill a
//! primary (its replica takes over) and move a slot from one primary to another.

use std::process::{Command, Stdio};

use crate::{Redis, TlsFiles, eventually};

/// How long a cluster node may be silent before the others fail it over.
const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    /// The servers, primaries first as `redis-cli` assigned them; None once killed.
    pub nodes: Vec<Option<Redis>>,
    /// Each server's TLS port, when the cluster serves TLS too.
    tls_ports: Vec<u16>,
}

impl RedisCluster {
    /// `primaries` primaries, each with `replicas` replicas, every slot assigned.
    pub async fn start(primaries: usize, replicas: usize) -> RedisCluster {
        Self::start_serving(primaries, replicas, None).await
    }

    /// As [`RedisCluster::start`], every node also serving TLS on a port of its own (and
    /// the cluster bus and replication over TLS), with certificates `openssl` makes: clients
    /// on the TLS ports are told the others' TLS ports. The plain ports stay, for the tests'
    /// own look at the data.
    pub async fn start_tls(primaries: usize, replicas: usize) -> (RedisCluster, TlsFiles) {
        let files = TlsFiles::make(crate::free_port());
        let cluster = Self::start_serving(primaries, replicas, Some(&files)).await;
        (cluster, files)
    }

    async fn start_serving(
        primaries: usize,
        replicas: usize,
        tls: Option<&TlsFiles>,
    ) -> RedisCluster {
        let mut nodes = Vec::new();
        let mut tls_ports = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let port = crate::free_port();
            let conf = std::env::temp_dir().join(format!("chatfleet-cluster-{port}.conf"));
            let _ = std::fs::remove_file(&conf);
            let mut args = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                conf.to_string_lossy().into_owned(),
                "--cluster-node-timeout".into(),
                NODE_TIMEOUT_MS.to_string(),
            ];
            if let Some(files) = tls {
                let tls_port = crate::free_port();
                args.extend(files.server_flags(tls_port));
                for flag in ["--tls-cluster", "--tls-replication"] {
                    args.extend([flag.to_owned(), "yes".to_owned()]);
                }
                args.extend(["--tls-auth-clients".to_owned(), "optional".to_owned()]);
                tls_ports.push(tls_port);
            }
            nodes.push(Some(Redis::start_with(port, args).await));
        }
        let addresses: Vec<String> = nodes
            .iter()
            .flatten()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("redis-cli must be installed (scripts/test installs redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, tls_ports };
        cluster.settled().await;
        cluster
    }

    /// `rediss+cluster://` naming every node's TLS port as a seed.
    pub fn tls_url(&self) -> String {
        let seeds: Vec<String> = self
            .tls_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("rediss+cluster://{}", seeds.join(","))
    }

    /// `redis+cluster://` naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .flatten()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The fleet's shared state in this cluster, as chatfleet's components see it.
    pub fn state(&self) -> chatfleet_state::FleetState {
        crate::redis_servers::fleet_state(&self.url())
    }

    /// Waits until every live node says the cluster is ok and they agree on who serves
    /// every slot.
    pub async fn settled(&self) {
        eventually("the cluster is ok on every node", || async {
            let mut maps = Vec::new();
            for node in self.nodes.iter().flatten() {
                let mut conn = node.conn().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                maps.push(slot_owners(&mut conn).await);
            }
            maps.windows(2).all(|pair| pair[0] == pair[1])
        })
        .await;
    }

    /// The index in `nodes` of the primary serving `key` now.
    pub async fn primary_of(&self, key: &str) -> usize {
        let slot = self.slot_of(key).await;
        self.owner_of(slot).await
    }

    pub async fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.any().conn().await)
            .await
            .unwrap()
    }

    /// Kills node `index` with SIGKILL; its replica is promoted once the others notice.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut node) = self.nodes[index].take() {
            node.kill();
        }
    }

    /// Moves `slot` and its keys to the primary `to`, as `redis-cli --cluster reshard` does:
    /// the slot importing and migrating, its keys moved with MIGRATE, then the slot handed
    /// over on every primary.
    pub async fn move_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of(slot).await;
        assert_ne!(from, to, "slot {slot} is already there");
        let (source, target) = (self.node(from), self.node(to));
        let mut source_conn = source.conn().await;
        let mut target_conn = target.conn().await;
        let source_id = my_id(&mut source_conn).await;
        let target_id = my_id(&mut target_conn).await;
        set_slot(&mut target_conn, slot, "IMPORTING", &source_id).await;
        set_slot(&mut source_conn, slot, "MIGRATING", &target_id).await;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut source_conn)
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(target.port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source_conn)
                .await
                .unwrap();
        }
        // The target first, then the source (which drops the slot's sharded subscribers),
        // then everyone else.
        set_slot(&mut target_conn, slot, "NODE", &target_id).await;
        set_slot(&mut source_conn, slot, "NODE", &target_id).await;
        for node in self.nodes.iter().flatten() {
            if node.port != source.port && node.port != target.port {
                let mut conn = node.conn().await;
                let _: Result<(), _> = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&target_id)
                    .query_async(&mut conn)
                    .await;
            }
        }
        self.settled().await;
    }

    /// The index in `nodes` of the primary serving `slot` now.
    async fn owner_of(&self, slot: u16) -> usize {
        let mut conn = self.any().conn().await;
        let port = slot_owners(&mut conn)
            .await
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("every slot is served");
        self.index_of(port)
    }

    fn any(&self) -> &Redis {
        self.nodes.iter().flatten().next().expect("a node runs")
    }

    fn node(&self, index: usize) -> &Redis {
        self.nodes[index].as_ref().expect("the node runs")
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| node.as_ref().is_some_and(|node| node.port == port))
            .expect("a node of this cluster")
    }
}

/// Who serves which slots: (first slot, last slot, primary's port), from `CLUSTER SLOTS`.
async fn slot_owners(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(u16, u16, u16)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let mut owners: Vec<(u16, u16, u16)> = slots
        .into_iter()
        .filter_map(|range| {
            let redis::Value::Array(parts) = range else {
                return None;
            };
            let start: u16 = redis::from_redis_value_ref(parts.first()?).ok()?;
            let end: u16 = redis::from_redis_value_ref(parts.get(1)?).ok()?;
            let redis::Value::Array(primary) = parts.get(2)? else {
                return None;
            };
            let port: u16 = redis::from_redis_value_ref(primary.get(1)?).ok()?;
            Some((start, end, port))
        })
        .collect();
    owners.sort();
    owners
}

async fn my_id(conn: &mut redis::aio::MultiplexedConnection) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(conn)
        .await
        .unwrap()
}

async fn set_slot(
    conn: &mut redis::aio::MultiplexedConnection,
    slot: u16,
    state: &str,
    node: &str,
) {
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(state)
        .arg(node)
        .query_async(conn)
        .await
        .unwrap();
}
