//! A real `etcd` and `kube-apiserver` on loopback, from the folder `KUBEBUILDER_ASSETS` names
//! (controller-runtime's envtest convention), with a static admin token and a self-signed
//! serving certificate; on request also the real `kube-controller-manager` and
//! `kube-scheduler`. No kubelet runs: tests play it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use testkit::free_port;

const TOKEN: &str = "envtest-admin-token";

pub struct ApiServer {
    pub client: kube::Client,
    /// A kubeconfig file for processes (an operator binary) to reach this server.
    pub kubeconfig: PathBuf,
    etcd: Child,
    apiserver: Child,
    /// The controller-manager and the scheduler, when started.
    controllers: Vec<Child>,
    /// The service-account signing key, for the controller-manager.
    sa_key: String,
    _dir: TempDir,
}

impl ApiServer {
    /// Starts both from `assets`, waiting until the API server answers.
    pub async fn start(assets: &Path) -> ApiServer {
        let dir = TempDir::new();
        let etcd_port = free_port();
        let etcd = Command::new(assets.join("etcd"))
            .args(["--data-dir", &dir.path("etcd")])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", free_port()),
            ])
            .args(["--unsafe-no-fsync"])
            .stdout(Stdio::null())
            .stderr(logs())
            .spawn()
            .expect("etcd starts");

        let key = dir.path("sa.key");
        let made = Command::new("openssl")
            .args(["genrsa", "-out", &key, "2048"])
            .stderr(Stdio::null())
            .status()
            .expect("openssl makes the service-account key");
        assert!(made.success());
        std::fs::write(
            dir.path("tokens.csv"),
            format!("{TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();
        let port = free_port();
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--cert-dir={}", dir.path("certs")))
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg(format!("--service-account-issuer=https://127.0.0.1:{port}"))
            .arg(format!("--service-account-key-file={key}"))
            .arg(format!("--service-account-signing-key-file={key}"))
            .arg(format!("--token-auth-file={}", dir.path("tokens.csv")))
            .arg("--authorization-mode=AlwaysAllow")
            // No controller-manager makes default service accounts for pods.
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(Stdio::null())
            .stderr(logs())
            .spawn()
            .expect("kube-apiserver starts");

        let kubeconfig = format!(
            r#"apiVersion: v1
kind: Config
clusters: [{{name: envtest, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: admin, user: {{token: {TOKEN}}}}}]
contexts: [{{name: envtest, context: {{cluster: envtest, user: admin}}}}]
current-context: envtest
"#
        );
        let kubeconfig_path = PathBuf::from(dir.path("kubeconfig"));
        std::fs::write(&kubeconfig_path, &kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&kubeconfig).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let started = Instant::now();
        loop {
            match client.apiserver_version().await {
                Ok(_) => break,
                Err(error) if started.elapsed() > Duration::from_secs(60) => {
                    panic!("kube-apiserver did not come up: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        ApiServer {
            client,
            kubeconfig: kubeconfig_path,
            etcd,
            apiserver,
            controllers: Vec::new(),
            sa_key: key,
            _dir: dir,
        }
    }

    /// Write requests the API server has answered so far, by `VERB resource[/subresource]`
    /// and status code, from its `apiserver_request_total` metric.
    pub async fn writes(&self) -> BTreeMap<String, u64> {
        self.requests(&["POST", "PUT", "PATCH", "DELETE"]).await
    }

    /// Reads (watches aside) the API server has answered so far, as [`ApiServer::writes`]
    /// counts writes.
    pub async fn reads(&self) -> BTreeMap<String, u64> {
        self.requests(&["GET", "LIST"]).await
    }

    /// Requests with one of `verbs` answered so far, by `VERB resource[/subresource]` and
    /// status code.
    async fn requests(&self, verbs: &[&str]) -> BTreeMap<String, u64> {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = self.client.request_text(request).await.unwrap();
        let mut writes = BTreeMap::new();
        for line in text.lines() {
            let Some(labels) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let label = |name: &str| {
                let start = labels
                    .find(&format!("{name}=\""))
                    .map(|at| at + name.len() + 2)?;
                let end = labels[start..].find('"')? + start;
                Some(labels[start..end].to_owned())
            };
            let verb = label("verb").unwrap_or_default();
            if !verbs.contains(&verb.as_str()) {
                continue;
            }
            let mut resource = label("resource").unwrap_or_default();
            if let Some(sub) = label("subresource").filter(|s| !s.is_empty()) {
                resource = format!("{resource}/{sub}");
            }
            let code = label("code").unwrap_or_default();
            let count: u64 = line
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *writes
                .entry(format!("{verb} {resource} {code}"))
                .or_default() += count;
        }
        writes
    }

    /// The sum of every series of the API server's metric `name` (its `/metrics`).
    pub async fn metric(&self, name: &str) -> f64 {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = self.client.request_text(request).await.unwrap();
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// CPU seconds the API server and etcd have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.apiserver.id()) + cpu_seconds(self.etcd.id())
    }

    /// Starts the API server with the real controller-manager (StatefulSets make pods, the
    /// garbage collector, service accounts, ...) and scheduler (pods are bound to Nodes).
    pub async fn start_with_controllers(assets: &Path) -> ApiServer {
        let mut server = Self::start(assets).await;
        let kubeconfig = server.kubeconfig.to_string_lossy().into_owned();
        let manager = Command::new(assets.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--controllers=*")
            .arg(format!(
                "--service-account-private-key-file={}",
                server.sa_key
            ))
            .arg("--use-service-account-credentials=false")
            .stdout(Stdio::null())
            .stderr(logs())
            .spawn()
            .expect("kube-controller-manager starts");
        let scheduler = Command::new(assets.join("kube-scheduler"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .stdout(Stdio::null())
            .stderr(logs())
            .spawn()
            .expect("kube-scheduler starts");
        server.controllers = vec![manager, scheduler];
        server
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for child in &mut self.controllers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.apiserver.kill();
        let _ = self.etcd.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.wait();
    }
}

/// Set CHATFLEET_TEST_LOGS=1 to see the servers' logs.
fn logs() -> Stdio {
    if std::env::var_os("CHATFLEET_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("chatfleet-envtest-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU seconds (user and system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    chatfleet_load::procfs::sample(pid)
        .expect("the process's /proc entry is readable")
        .cpu_seconds
}

/// What changed between two counts of [`ApiServer::writes`], one line each, per `per` units.
pub fn writes_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    per: usize,
) -> String {
    after
        .iter()
        .filter_map(|(key, &count)| {
            let delta = count - before.get(key).copied().unwrap_or(0);
            (delta > 0).then(|| format!("  {key}: {delta} ({:.2} each)", delta as f64 / per as f64))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
