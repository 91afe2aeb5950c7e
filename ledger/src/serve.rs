//! `ledger serve`: connects to NATS and PostgreSQL and runs the roles asked for.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Tokens;
use crate::api::http::{AppState, ReadyCheck};
use crate::config::Config;
use crate::engine::Engine;
use crate::intake::{self, IntakeSettings};
use crate::metrics::Metrics;
use crate::store::{EventStore, StreamSettings};

/// The parts of the system one process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Commands (NATS and HTTP), usage intake, reservation expiry.
    Command,
    /// Projectors into PostgreSQL and the query API.
    Projections,
    /// The Razorpay boundary.
    Gateway,
    /// Every role in one process.
    All,
}

/// How long start-up waits for NATS and PostgreSQL to answer.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Connects to NATS, retrying while the server comes up.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    let started = std::time::Instant::now();
    loop {
        match async_nats::ConnectOptions::new()
            .name("ledger")
            .connect(url)
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if started.elapsed() < CONNECT_WAIT => {
                tracing::info!(error = %e, url, "waiting for NATS");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to NATS at {url}")),
        }
    }
}

/// Opens the pool and applies migrations, retrying while PostgreSQL comes up.
pub async fn connect_db(url: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    let pool = crate::db::pool(url)?;
    let started = std::time::Instant::now();
    loop {
        match crate::db::migrate(&pool).await {
            Ok(()) => return Ok(pool),
            Err(e) if started.elapsed() < CONNECT_WAIT => {
                tracing::info!(error = %e, "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
    }
}

/// A running command side, for tests and for `serve`.
#[derive(Debug)]
pub struct Running {
    pub engine: Engine,
    pub http_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Stops every task and waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        while let Some(r) = self.tasks.join_next().await {
            r??;
        }
        Ok(())
    }

    /// Waits until a task ends (an error, or shutdown).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(r) => r?,
            None => Ok(()),
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Starts the command role: engine, HTTP, NATS service, usage intake, maintenance.
pub async fn start_command(config: &Config) -> anyhow::Result<Running> {
    let client = connect_nats(&config.nats_url).await?;
    let settings = StreamSettings {
        name: config.stream_name.clone(),
        prefix: format!("{}.events", config.subject_prefix),
        ..StreamSettings::default()
    };
    let store = EventStore::open(client.clone(), settings).await?;
    let pool = connect_db(&config.database_url).await?;
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(
        store,
        pool.clone(),
        config.catalog()?,
        config.limits.clone(),
        metrics,
    );
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    let ready: ReadyCheck = {
        let client = client.clone();
        let pool = pool.clone();
        Arc::new(move || {
            let client = client.clone();
            let pool = pool.clone();
            async move {
                if client.connection_state() != async_nats::connection::State::Connected {
                    return Err("NATS is not connected".to_owned());
                }
                let conn = pool.get().await.map_err(|e| format!("PostgreSQL: {e}"))?;
                conn.simple_query("SELECT 1")
                    .await
                    .map_err(|e| format!("PostgreSQL: {e}"))?;
                Ok(())
            }
            .boxed()
        })
    };
    let state = AppState {
        engine: engine.clone(),
        tokens: Tokens::from_config(config),
        ready,
    };
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("binding HTTP to {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let router = crate::api::http::router(state);
    let token = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("HTTP server")
    });

    let serving = crate::api::nats::start(client, engine.clone(), &config.subject_prefix).await?;
    let token = shutdown.clone();
    tasks.spawn(async move { serving.run(token.cancelled_owned()).await });

    let intake_settings = IntakeSettings {
        stream: config.usage_stream_name.clone(),
        dead_stream: format!("{}_DEAD", config.usage_stream_name),
        prefix: config.subject_prefix.clone(),
        duplicate_window: Duration::from_secs(120),
        ack_pending_max: config.limits.usage_ack_pending_max,
    };
    let token = shutdown.clone();
    let e = engine.clone();
    tasks.spawn(async move { intake::run(e, intake_settings, token.cancelled_owned()).await });

    let token = shutdown.clone();
    let e = engine.clone();
    let sweep = Duration::from_millis(config.reservation_sweep_interval_ms);
    let retention = Duration::from_secs(config.idempotency_retention_s);
    tasks.spawn(async move {
        e.run_maintenance(sweep, retention, token.cancelled_owned())
            .await;
        Ok(())
    });

    tracing::info!(%http_addr, "command side running");
    Ok(Running {
        engine,
        http_addr,
        shutdown,
        tasks,
    })
}
