//! What both servers share: free ports, child processes, signals, log tails.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a server may take to become ready before the start fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean stop may take before the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A loopback port nobody listens on right now. Another process could take it
/// before the server binds it; callers retry a failed first start.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Spawns `cmd` with its output appended to `log`.
pub fn spawn(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    cmd.spawn().context("starting the server process")
}

/// Sends `signal` and waits for the process to end, killing it after
/// [`STOP_TIMEOUT`].
pub async fn signal_and_wait(child: &mut Child, signal: Signal) -> Result<()> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => {
            status?;
            Ok(())
        }
        Err(_) => {
            child.kill().await?;
            bail!("the server did not stop within {STOP_TIMEOUT:?} of {signal}; killed it")
        }
    }
}

/// Sends `signal` and waits, blocking, at most `limit` (for `Drop`).
pub fn signal_and_wait_blocking(child: &mut Child, signal: Signal, limit: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.start_kill();
}

/// The last lines of a server log, for start-up errors.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `ready` until it answers true, the child exits, or time runs out.
pub async fn wait_ready<F, Fut>(
    child: &mut Child,
    log: &Path,
    what: &str,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited during start-up ({status}):\n{}",
                log_tail(log)
            );
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > until {
            bail!(
                "{what} was not ready within {READY_TIMEOUT:?}:\n{}",
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
