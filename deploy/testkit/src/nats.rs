//! A real `nats-server` with JetStream on free loopback ports.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::process::{free_port, signal_and_wait, signal_and_wait_blocking, spawn, wait_ready};

/// The oldest server the ledger accepts (design, decision 2).
pub const NATS_VERSION_MIN: (u32, u32) = (2, 12);
/// Attempts at a first start, each on fresh ports, in case a port was taken.
const START_ATTEMPTS_MAX: u32 = 5;

#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `sync_interval: always`: fsync every write before acknowledging it.
    /// Off by default, as in nats-server (which fsyncs every 2 minutes).
    pub sync_always: bool,
    /// The shipped accounts, users and permissions
    /// (`deploy/nats/accounts.conf`, development passwords) instead of an
    /// open server.
    pub accounts: bool,
    /// TLS for clients: the server's certificate and key (PEM files);
    /// clients must then speak TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running (or stopped) nats-server owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    dir: TempDir,
    port: u16,
    monitor_port: u16,
    options: NatsOptions,
    /// Set for a member of a [`NatsCluster`].
    cluster: Option<ClusterNode>,
    child: Option<Child>,
}

/// A server's place in a cluster.
#[derive(Debug, Clone)]
struct ClusterNode {
    server_name: String,
    route_port: u16,
    /// Every member's route port (its own included, as nats-server allows).
    routes: Vec<u16>,
    /// Placement tags (`az:a`, ...).
    tags: Vec<String>,
}

/// Servers in a cluster the tests start: each `nats-server` a process of
/// its own on loopback, routed to the others, JetStream clustered (R3
/// streams keep working with one member down).
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// `size` servers (`n1`, `n2`, ... tagged `az:1`, `az:2`, ...) with
    /// `options` each.
    pub async fn start(size: usize, options: NatsOptions) -> Result<Self> {
        let binary = binary()?;
        check_version(&binary).await?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS_MAX {
            let routes: Vec<u16> = (0..size).map(|_| free_port()).collect::<Result<_>>()?;
            let mut nodes = Vec::with_capacity(size);
            for (i, route_port) in routes.iter().enumerate() {
                nodes.push(NatsServer {
                    dir: tempfile::Builder::new().prefix("ledger-nats-").tempdir()?,
                    port: free_port()?,
                    monitor_port: free_port()?,
                    options: options.clone(),
                    cluster: Some(ClusterNode {
                        server_name: format!("n{}", i + 1),
                        route_port: *route_port,
                        routes: routes.clone(),
                        tags: vec![format!("az:{}", i + 1)],
                    }),
                    child: None,
                });
            }
            // Together: JetStream is ready only once a quorum has met.
            let started =
                futures::future::join_all(nodes.iter_mut().map(|n| n.start_again())).await;
            match started.into_iter().find_map(|r| r.err()) {
                None => return Ok(NatsCluster { nodes }),
                Some(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Every member's client URL, comma-separated (what clients connect to).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every member's monitoring URL.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.monitor_url()).collect()
    }

    /// The member named `server_name` (`n1`, ...).
    pub fn node_mut(&mut self, server_name: &str) -> Option<&mut NatsServer> {
        self.nodes
            .iter_mut()
            .find(|n| n.server_name() == server_name)
    }
}

impl NatsServer {
    pub async fn start() -> Result<Self> {
        Self::start_with(NatsOptions::default()).await
    }

    pub async fn start_with(options: NatsOptions) -> Result<Self> {
        let binary = binary()?;
        check_version(&binary).await?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS_MAX {
            let mut server = NatsServer {
                dir: tempfile::Builder::new().prefix("ledger-nats-").tempdir()?,
                port: free_port()?,
                monitor_port: free_port()?,
                options: options.clone(),
                cluster: None,
                child: None,
            };
            match server.start_again().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// `server_name` in its configuration (`n1`, ... in a cluster).
    pub fn server_name(&self) -> &str {
        self.cluster
            .as_ref()
            .map(|c| c.server_name.as_str())
            .unwrap_or("ledger_test")
    }

    /// Stops the server cleanly (SIGTERM: lame-duck-free shutdown, data flushed).
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, Signal::SIGTERM).await?;
        }
        Ok(())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, Signal::SIGKILL).await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same data.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("nats-server is already running");
        }
        let config = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("jetstream");
        let sync = if self.options.sync_always {
            "\n  sync_interval: always"
        } else {
            ""
        };
        // nats-server reads includes relative to the including file: the
        // shipped accounts are copied beside it; their passwords are
        // variables the server takes from its environment.
        let mut passwords = Vec::new();
        let accounts = if self.options.accounts {
            let shipped = crate::workspace_root().join("deploy/nats");
            std::fs::copy(
                shipped.join("accounts.conf"),
                self.dir.path().join("accounts.conf"),
            )?;
            let env = std::fs::read_to_string(shipped.join("dev-passwords.env"))?;
            passwords = env
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            "include \"accounts.conf\"\n".to_owned()
        } else {
            String::new()
        };
        let tls = match &self.options.tls {
            Some((cert, key)) => format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
            None => String::new(),
        };
        let cluster = match &self.cluster {
            Some(c) => format!(
                "server_tags: [{}]\ncluster {{\n  name: ledger_test\n  listen: 127.0.0.1:{}\n  \
                 routes: [{}]\n}}\n",
                c.tags
                    .iter()
                    .map(|t| format!("{t:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                c.route_port,
                c.routes
                    .iter()
                    .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 jetstream {{\n  store_dir: {:?}{sync}\n}}\n{cluster}{accounts}{tls}",
                self.server_name(),
                self.port,
                self.monitor_port,
                store.display().to_string()
            ),
        )?;
        let log = self.dir.path().join("nats.log");
        let mut cmd = Command::new(binary()?);
        cmd.arg("-c").arg(&config).envs(passwords);
        let mut child = spawn(cmd, &log)?;
        let monitor = self.monitor_port;
        wait_ready(&mut child, &log, "nats-server", || healthy(monitor)).await?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops cleanly and starts again on the same port and data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait_blocking(&mut child, Signal::SIGKILL, Duration::from_secs(5));
        }
    }
}

/// JetStream is up once `/healthz` answers 200.
async fn healthy(monitor_port: u16) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", monitor_port)).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `NATS_SERVER_BIN`, else the project's installed copy, else `PATH`.
fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let local = crate::tools_dir().join("bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .find(|p| p.exists());
    on_path.context("nats-server not found: run deploy/install.sh (or set NATS_SERVER_BIN)")
}

/// Refuses servers older than [`NATS_VERSION_MIN`]: they ignore the headers
/// the ledger's safety rests on.
async fn check_version(binary: &PathBuf) -> Result<()> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .context("no version in nats-server --version")?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < NATS_VERSION_MIN {
        bail!(
            "{} is nats-server {version}; the ledger needs {}.{} or newer (run deploy/install.sh)",
            binary.display(),
            NATS_VERSION_MIN.0,
            NATS_VERSION_MIN.1
        );
    }
    Ok(())
}
