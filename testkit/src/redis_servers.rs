//! Real Redis processes for tests: a `redis-server` on a free port (optionally requiring a
//! password, optionally a replica), and sentinels watching one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatfleet_wire::load::LoadReport;

use crate::{PATIENCE, child_stderr, eventually, free_port};

/// Sentinels watching a primary under the master name `chat`, each a `redis-server
/// --sentinel` with its own config file (Sentinel rewrites it). Killed when dropped.
pub struct Sentinels {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
    /// The sentinels' own password, when they require one.
    password: Option<String>,
    /// The master's password (its replicas share it).
    master_password: Option<String>,
}

impl Sentinels {
    /// `count` sentinels, a quorum of a majority, declaring the master down after 1 s.
    pub async fn start(primary: &Redis, count: usize) -> Sentinels {
        Self::start_guarded(primary, count, None).await
    }

    /// As [`Sentinels::start`], the sentinels requiring `password` (as charts deploy them).
    pub async fn start_guarded(primary: &Redis, count: usize, password: Option<&str>) -> Sentinels {
        let dir = std::env::temp_dir().join(format!("chatfleet-sentinel-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let quorum = count / 2 + 1;
        let mut sentinels = Sentinels {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
            password: password.map(str::to_owned),
            master_password: primary.password.clone(),
        };
        for _ in 0..count {
            let port = free_port();
            let conf = sentinels.dir.join(format!("{port}.conf"));
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                 sentinel monitor chat 127.0.0.1 {} {quorum}\n\
                 sentinel down-after-milliseconds chat 1000\n\
                 sentinel failover-timeout chat 5000\n\
                 sentinel parallel-syncs chat 1\n",
                primary.port
            );
            if let Some(password) = &primary.password {
                text.push_str(&format!("sentinel auth-pass chat {password}\n"));
            }
            // Also what each sentinel presents to the others.
            if let Some(password) = password {
                text.push_str(&format!("requirepass {password}\n"));
            }
            std::fs::write(&conf, text).unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(child_stderr())
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            sentinels.ports.push(port);
            sentinels.children.push(child);
        }
        let deadline = Instant::now() + PATIENCE;
        for port in &sentinels.ports {
            loop {
                let url = sentinels.sentinel_url(*port);
                if let Ok(client) = redis::Client::open(url)
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "a sentinel did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        sentinels
    }

    /// Waits until every sentinel knows the others and `replicas` replicas: only then can
    /// they agree on a failover.
    pub async fn ready(&self, replicas: usize) {
        let others = self.ports.len() - 1;
        for port in &self.ports {
            let url = self.sentinel_url(*port);
            eventually("the sentinels know each other and the replicas", || {
                let url = url.clone();
                async move {
                    let Ok(conn) = redis::Client::open(url)
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                    else {
                        return false;
                    };
                    let count = |what: &'static str| {
                        let mut conn = conn.clone();
                        async move {
                            redis::cmd("SENTINEL")
                                .arg(what)
                                .arg("chat")
                                .query_async::<Vec<redis::Value>>(&mut conn)
                                .await
                                .map_or(0, |found| found.len())
                        }
                    };
                    count("sentinels").await == others && count("replicas").await == replicas
                }
            })
            .await;
        }
    }

    /// `redis+sentinel://` naming every sentinel and the master `chat`, with the passwords.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let master = self
            .master_password
            .as_ref()
            .map(|password| format!(":{password}@"))
            .unwrap_or_default();
        let query = self
            .password
            .as_ref()
            .map(|password| format!("?sentinel_password={password}"))
            .unwrap_or_default();
        format!("redis+sentinel://{master}{}/chat{query}", hosts.join(","))
    }

    /// One sentinel's own URL.
    fn sentinel_url(&self, port: u16) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// The port of the server the sentinels now name as master.
    pub async fn master_port(&self) -> Option<u16> {
        let url = self.sentinel_url(self.ports[0]);
        let mut conn = redis::Client::open(url)
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("chat")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(port)
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private `redis-server`, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Flags beside the defaults (such as `--replicaof`).
    extra: Vec<String>,
    /// What clients must authenticate with, when set.
    password: Option<String>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Redis {
        let mut redis = Redis {
            port,
            child: None,
            extra: Vec::new(),
            password: None,
        };
        redis.spawn().await;
        redis
    }

    /// A server on `port` with `extra` flags beside the defaults.
    pub async fn start_with(port: u16, extra: Vec<String>) -> Redis {
        let mut redis = Redis {
            port,
            child: None,
            extra,
            password: None,
        };
        redis.spawn().await;
        redis
    }

    /// A server that requires `password`, as production servers do.
    pub async fn start_guarded(password: &str) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
            extra: vec!["--requirepass".into(), password.into()],
            password: Some(password.into()),
        };
        redis.spawn().await;
        redis
    }

    /// A server that also listens with TLS on a port of its own, requiring a client
    /// certificate: a CA, a server certificate for 127.0.0.1 and a client certificate are made
    /// for it with `openssl`. The plain port stays, for the tests' own look at the data.
    pub async fn start_tls() -> (Redis, TlsFiles) {
        let files = TlsFiles::make(free_port());
        let mut extra = files.server_flags(files.port);
        extra.extend(["--tls-auth-clients".into(), "yes".into()]);
        let redis = Self::start_with(free_port(), extra).await;
        (redis, files)
    }

    /// A replica of `primary`, as Sentinel fails over to (with the primary's password).
    pub async fn start_replica_of(primary: &Redis) -> Redis {
        let mut extra = vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ];
        if let Some(password) = &primary.password {
            extra.extend(["--masterauth".into(), password.clone()]);
            extra.extend(["--requirepass".into(), password.clone()]);
        }
        let mut redis = Redis {
            port: free_port(),
            child: None,
            extra,
            password: primary.password.clone(),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        // `--save ''` stops saving, not loading: a replica's full sync writes an RDB file, and a
        // server started beside a stray one would begin with its data. Each port gets its own
        // file, removed before it starts.
        let rdb = format!("chatfleet-test-{}.rdb", self.port);
        let _ = std::fs::remove_file(std::env::temp_dir().join(&rdb));
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(["--dbfilename", &rdb])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(child_stderr())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Ours answers, not whatever else took the port meanwhile.
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(info) = redis::cmd("INFO")
                    .arg("server")
                    .query_async::<String>(&mut conn)
                    .await
            {
                assert!(
                    info.contains(&format!("process_id:{pid}\r")),
                    "port {} is taken by another redis-server",
                    self.port
                );
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Waits until `replicas` replicas have everything this server acknowledged.
    pub async fn replicated(&self, replicas: i64) {
        let conn = self.conn().await;
        eventually("the replicas have what was acknowledged", || {
            let mut conn = conn.clone();
            async move {
                let copies: i64 = redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(100)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(0);
                copies >= replicas
            }
        })
        .await;
    }

    /// SIGKILL: the server vanishes with everything in it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must run again to die.
            let _ = Command::new("kill")
                .args(["-s", "CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server stalls, holding every connection open, as a frozen or
    /// overloaded Redis does.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: the server answers again, running whatever was sent meanwhile.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts again on the same port (empty).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Writes `report` under its node's key, as the node's heartbeat would (expiring in 60 s).
    pub async fn write_report(&self, report: &LoadReport) {
        let _: () = redis::AsyncCommands::set_ex(
            &mut self.conn().await,
            chatfleet_wire::keys::node_report(&report.node),
            serde_json::to_string(report).unwrap(),
            60,
        )
        .await
        .unwrap();
    }

    /// Commands this server has served so far, `INFO`s aside (those asking here), as
    /// `INFO commandstats` counts them: commands a script runs count too.
    pub async fn command_calls(&self) -> u64 {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        stats
            .lines()
            .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Cuts this replica off its primary, as a network partition would: its link is closed,
    /// and it cannot authenticate to link again until [`Redis::restore_replication`].
    pub async fn cut_replication(&self) {
        let mut conn = self.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("masterauth")
            .arg("not-the-password")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("master")
            .query_async(&mut conn)
            .await
            .unwrap();
        eventually("the replica lost its link", || {
            let mut conn = conn.clone();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                info.contains("master_link_status:down")
            }
        })
        .await;
    }

    /// Lets this replica authenticate to a primary again.
    pub async fn restore_replication(&self) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("masterauth")
            .arg("")
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
    }

    /// The fleet's shared state in this server, as chatfleet's components see it.
    pub fn state(&self) -> chatfleet_state::FleetState {
        fleet_state(&self.url())
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The fleet's shared state in the Redis at `url`, as chatfleet's components see it.
pub(crate) fn fleet_state(url: &str) -> chatfleet_state::FleetState {
    let redis =
        chatfleet_state::Redis::open(url, chatfleet_state::ConnectionSettings::OPERATOR).unwrap();
    chatfleet_state::FleetState::new(redis, Duration::from_secs(86_400))
}

/// The TLS side of a server made by [`Redis::start_tls`]: its port and the PEM files a
/// client needs (and the server's own).
pub struct TlsFiles {
    pub port: u16,
    pub ca: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
}

impl TlsFiles {
    /// `rediss://` to the TLS port.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// `redis-server` flags that serve TLS on `port` with these files.
    pub(crate) fn server_flags(&self, port: u16) -> Vec<String> {
        [
            ("--tls-port", port.to_string()),
            ("--tls-cert-file", self.server_cert.display().to_string()),
            ("--tls-key-file", self.server_key.display().to_string()),
            ("--tls-ca-cert-file", self.ca.display().to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }

    /// A test CA, and certificates it signed for the server (127.0.0.1) and a client.
    pub(crate) fn make(port: u16) -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("chatfleet-tls-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl must be installed");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]);
        ca.extend(["-subj", "/CN=chatfleet test CA"]);
        openssl(&ca);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=chatnode")] {
            let (key, csr, cert, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let request: Vec<&str> = ["req"]
                .into_iter()
                .chain(ec)
                .chain(["-keyout", &key, "-out", &csr, "-subj", subject])
                .collect();
            openssl(&request);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        TlsFiles {
            port,
            ca: dir.join("ca.crt"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }
}
