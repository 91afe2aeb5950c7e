//! A throwaway PostgreSQL cluster on a free loopback port.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User, chown};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::process::{free_port, signal_and_wait, signal_and_wait_blocking, spawn, wait_ready};

const START_ATTEMPTS_MAX: u32 = 5;

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// fsync WAL and data to disk. Off by default: tests kill processes, not
    /// machines, and the operating system keeps written data across a process
    /// crash. Commits always write their WAL before returning
    /// (`synchronous_commit=on`), so a killed server loses nothing committed.
    /// Benchmarks that compare durability turn it on.
    pub durable: bool,
    pub shared_buffers: &'static str,
    pub max_connections: u32,
    /// A certificate and its key (PEM files): the server then speaks TLS
    /// with them and refuses plain TCP connections (`hostnossl ... reject`);
    /// the Unix socket stays open for the test's own setup.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            durable: false,
            shared_buffers: "32MB",
            max_connections: 100,
            tls: None,
        }
    }
}

/// A running (or stopped) PostgreSQL cluster owned by a test.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    options: PostgresOptions,
    /// Set when running as root: the cluster runs as this user instead.
    run_as: Option<(Uid, Gid)>,
    child: Option<Child>,
}

impl Postgres {
    pub async fn start() -> Result<Self> {
        Self::start_with(PostgresOptions::default()).await
    }

    pub async fn start_with(options: PostgresOptions) -> Result<Self> {
        let bin = bin_dir()?;
        let run_as = unprivileged_user()?;
        let dir = tempfile::Builder::new().prefix("ledger-pg-").tempdir()?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid))
                .context("handing the cluster folder to nobody")?;
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            options,
            run_as,
            child: None,
        };
        pg.initdb().await?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS_MAX {
            pg.port = free_port()?;
            match pg.start_again().await {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `tokio-postgres` connection string for database `postgres`.
    pub fn connection_string(&self) -> String {
        self.connection_string_for("postgres")
    }

    pub fn connection_string_for(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            self.port
        )
    }

    /// The same over the cluster's Unix socket (open whatever TCP allows).
    pub fn socket_connection_string_for(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.dir.path().display(),
            self.port
        )
    }

    /// A login role `role` owning a new database of the same name, as a
    /// real deployment has (made over the Unix socket: TCP may need TLS).
    pub async fn create_owned_database(&self, role: &str) -> Result<()> {
        let (admin, conn) = tokio_postgres::connect(
            &self.socket_connection_string_for("postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .context("connecting as postgres")?;
        let task = tokio::spawn(conn);
        // One statement each: CREATE DATABASE refuses a transaction block.
        admin
            .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{role}\" OWNER \"{role}\""))
            .await?;
        task.abort();
        Ok(())
    }

    /// A `postgres://` URL for database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Fast shutdown (SIGINT): sessions ended, a checkpoint written.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, Signal::SIGINT).await?;
        }
        Ok(())
    }

    /// Immediate shutdown (SIGQUIT), as a crash: the next start recovers from WAL.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, Signal::SIGQUIT).await?;
        }
        Ok(())
    }

    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Starts the cluster again on the same port with the same data.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("postgres is already running");
        }
        let log = self.dir.path().join("postgres.log");
        let durable = if self.options.durable { "on" } else { "off" };
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .arg("-c")
            .arg(format!("fsync={durable}"))
            .args(["-c", "synchronous_commit=on"])
            .arg("-c")
            .arg(format!("full_page_writes={durable}"))
            .arg("-c")
            .arg(format!("shared_buffers={}", self.options.shared_buffers))
            .arg("-c")
            .arg(format!("max_connections={}", self.options.max_connections));
        if self.options.tls.is_some() {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ));
        }
        let mut child = spawn(cmd, &log)?;
        let isready = self.bin.join("pg_isready");
        let port = self.port;
        wait_ready(&mut child, &log, "postgres", || {
            let isready = isready.clone();
            async move {
                Command::new(&isready)
                    .args([
                        "-q",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-U",
                        "postgres",
                    ])
                    .status()
                    .await
                    .is_ok_and(|s| s.success())
            }
        })
        .await?;
        self.child = Some(child);
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for one of the cluster's programs, as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    async fn initdb(&self) -> Result<()> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .await
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some((cert, key)) = &self.options.tls {
            self.install_tls(cert, key)?;
        }
        Ok(())
    }

    /// The server's certificate and key where it reads them (the key
    /// readable by the cluster's user alone, as PostgreSQL demands), and
    /// client authentication that refuses TCP without TLS.
    fn install_tls(&self, cert: &std::path::Path, key: &std::path::Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir.path();
        for (from, to, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let to = dir.join(to);
            std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = self.run_as {
                chown(&to, Some(uid), Some(gid))?;
            }
        }
        std::fs::write(
            self.data().join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )?;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT ends the backends with the postmaster; SIGKILL would
            // leave them holding shared memory.
            signal_and_wait_blocking(&mut child, Signal::SIGQUIT, Duration::from_secs(5));
        }
    }
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<n>/bin`, else the
/// folder of `initdb` on `PATH`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(p));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .context("PostgreSQL server binaries not found: run deploy/install.sh (or set PG_BIN_DIR)")
}

/// PostgreSQL will not run as root; under root, use `nobody`.
fn unprivileged_user() -> Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("nobody")?
        .context("running as root and no 'nobody' user to run PostgreSQL as")?;
    Ok(Some((user.uid, user.gid)))
}
