//! `ledger serve`: connects to NATS and PostgreSQL and runs the roles asked for.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Tokens;
use crate::api::http::{AppState, BaseState, ReadyCheck};
use crate::api::reads::ReadState;
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
                tracing::info!(error = format!("{e:#}"), "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
    }
}

/// A running process, for tests and for `serve`.
#[derive(Debug)]
pub struct Running {
    /// Set when the process runs the command role.
    pub engine: Option<Engine>,
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

/// Starts the command role only.
pub async fn start_command(config: &Config) -> anyhow::Result<Running> {
    start(config, Role::Command).await
}

/// Starts the roles asked for; every process also serves the read API,
/// health, readiness and metrics on `http_addr`.
pub async fn start(config: &Config, role: Role) -> anyhow::Result<Running> {
    let runs_command = matches!(role, Role::Command | Role::All);
    let runs_projections = matches!(role, Role::Projections | Role::All);
    let runs_gateway = matches!(role, Role::Gateway | Role::All);
    let client = connect_nats(&config.nats_url).await?;
    let settings = StreamSettings {
        name: config.stream_name.clone(),
        prefix: format!("{}.events", config.subject_prefix),
        ..StreamSettings::default()
    };
    let store = EventStore::open(client.clone(), settings).await?;
    let pool = connect_db(&config.database_url).await?;
    let metrics = Arc::new(Metrics::default());
    let tokens = Tokens::from_config(config);
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut routers = Vec::new();

    let engine = if runs_command {
        let engine = Engine::new(
            store.clone(),
            pool.clone(),
            config.catalog()?,
            config.limits.clone(),
            metrics.clone(),
        );
        routers.push(crate::api::http::command_router(AppState {
            engine: engine.clone(),
            tokens: tokens.clone(),
        }));
        let serving =
            crate::api::nats::start(client.clone(), engine.clone(), &config.subject_prefix).await?;
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
        Some(engine)
    } else {
        None
    };

    if runs_gateway {
        let gateway =
            crate::gateway::Gateway::new(config, store.clone(), pool.clone(), metrics.clone())?;
        routers.push(crate::gateway::http::router(
            crate::gateway::http::GatewayState {
                gateway: gateway.clone(),
                tokens: tokens.clone(),
                body_max: config.limits.request_body_bytes_max,
            },
        ));
        let token = shutdown.clone();
        tasks.spawn(crate::gateway::poller::run(gateway, token));
    }

    if runs_projections {
        let board = ledger_projections::projector::StatusBoard::default();
        for projection in ledger_projections::projector::Projection::ALL {
            let projector = ledger_projections::projector::Projector {
                projection,
                database_url: config.database_url.clone(),
                stream: store.stream().clone(),
                status: board.clone(),
            };
            let token = shutdown.clone();
            tasks.spawn(async move { projector.run(token).await });
        }
    }

    let catalog = config.catalog()?;
    routers.push(crate::api::reads::router(ReadState {
        pool: pool.clone(),
        stream: store.stream().clone(),
        tokens: tokens.clone(),
        services: catalog.services().map(|s| s.to_string()).collect(),
        history_page_size_max: config.limits.history_page_size_max,
    }));
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
    let refresh: ReadyCheck = {
        let pool = pool.clone();
        let stream = store.stream().clone();
        let metrics = metrics.clone();
        Arc::new(move || {
            let (pool, stream, metrics) = (pool.clone(), stream.clone(), metrics.clone());
            async move {
                let list = crate::api::reads::projection_status(&pool, &stream)
                    .await
                    .map_err(|e| format!("{:?}", e.0))?;
                for p in list {
                    let labels = crate::metrics::ProjectionLabels {
                        projection: p["projection"].as_str().unwrap_or_default().to_owned(),
                    };
                    metrics
                        .projection_lag
                        .get_or_create(&labels)
                        .set(p["lag"].as_i64().unwrap_or_default());
                }
                Ok(())
            }
            .boxed()
        })
    };
    routers.push(crate::api::http::base_router(BaseState {
        ready,
        metrics,
        refresh: Some(refresh),
    }));

    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("binding HTTP to {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let app = crate::api::http::app(routers, config.limits.request_body_bytes_max);
    let token = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("HTTP server")
    });

    tracing::info!(%http_addr, ?role, "ledger running");
    Ok(Running {
        engine,
        http_addr,
        shutdown,
        tasks,
    })
}

/// `ledger projections rebuild`: one projection, or all of them.
pub async fn rebuild(config: &Config, projection: Option<&str>) -> anyhow::Result<()> {
    use ledger_projections::projector::Projection;
    let chosen: Vec<Projection> =
        match projection {
            Some(name) => vec![Projection::parse(name).with_context(|| {
                format!("no projection '{name}'; there are accounts and topups")
            })?],
            None => Projection::ALL.to_vec(),
        };
    let client = connect_nats(&config.nats_url).await?;
    let settings = StreamSettings {
        name: config.stream_name.clone(),
        prefix: format!("{}.events", config.subject_prefix),
        ..StreamSettings::default()
    };
    let store = EventStore::open(client, settings).await?;
    connect_db(&config.database_url).await?;
    for p in chosen {
        let report = ledger_projections::rebuild::rebuild(
            &config.database_url,
            store.stream(),
            p,
            |done, head| tracing::info!(projection = p.name(), done, head, "rebuilding"),
        )
        .await?;
        println!(
            "rebuilt {}: {} events up to stream seq {} in {:.2}s ({:.0} events/s)",
            report.projection,
            report.events,
            report.position,
            report.seconds,
            report.events as f64 / report.seconds.max(1e-9)
        );
    }
    Ok(())
}
