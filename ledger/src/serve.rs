//! Running the ledger's parts in one process.
//!
//! A [`Process`] holds what every role shares (the NATS connection, the
//! event store, the PostgreSQL pool, metrics, tokens, the shutdown token,
//! the HTTP routes and the background tasks). Each role adds its routes and
//! tasks to it: [`command`] and [`projections`] here, the gateway's in
//! `ledger-gateway-adapter`; [`Process::serve`] then adds what every process
//! serves (the read API, health, readiness, metrics, the OpenAPI document)
//! and starts HTTP. The `ledger` binary chooses the roles.

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

/// How long start-up waits for NATS and PostgreSQL to answer.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Connects to NATS as the configuration says (user and password, or a
/// credentials file), retrying while the server comes up. `nats_url` may
/// name several servers, comma-separated (a cluster's members): the client
/// moves between them.
pub async fn connect_nats(config: &Config) -> anyhow::Result<async_nats::Client> {
    let url = config.nats_url.as_str();
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let started = std::time::Instant::now();
    loop {
        let mut options = async_nats::ConnectOptions::new().name("ledger");
        if let Some(ca) = &config.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some(path) = &config.nats_creds {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials {}", path.display()))?;
        } else if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        match options.connect(servers.as_slice()).await {
            Ok(c) => return Ok(c),
            Err(e) if started.elapsed() < CONNECT_WAIT => {
                tracing::info!(error = %e, url, "waiting for NATS");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to NATS at {url}")),
        }
    }
}

/// The TLS settings of HTTPS from PEM files: the certificate chain and the
/// private key (rustls with ring; TLS 1.2 and 1.3).
fn https_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the HTTPS certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the HTTPS key {}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the HTTPS certificate and key")?;
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        std::sync::Arc::new(config),
    ))
}

/// Opens the pool and applies migrations (the command side's, `others`, and
/// the read models'), retrying while PostgreSQL comes up.
pub async fn connect_db(
    url: &str,
    others: &[refinery::Migration],
) -> anyhow::Result<deadpool_postgres::Pool> {
    let pool = crate::db::pool(url)?;
    let started = std::time::Instant::now();
    loop {
        match crate::db::migrate(&pool, others).await {
            Ok(()) => return Ok(pool),
            Err(e) if started.elapsed() < CONNECT_WAIT => {
                tracing::info!(error = format!("{e:#}"), "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
    }
}

/// Why a role that appends will not start without a key.
pub const NO_SIGNING_KEY: &str = "signing_key is not set: every event the ledger appends is signed. \
     Make a key with `ledger audit keys --generate <key id>` and set it as signing_key \
     (LEDGER_SIGNING_KEY)";

/// Opens stream `LEDGER` as the configuration names it.
pub async fn open_store(client: async_nats::Client, config: &Config) -> anyhow::Result<EventStore> {
    let settings = StreamSettings {
        name: config.stream_name.clone(),
        prefix: format!("{}.events", config.subject_prefix),
        checkpoint_subject: config.checkpoint_subject(),
        replication: config.replication(),
        ..StreamSettings::default()
    };
    crate::store::check_sync_always(
        &settings.replication,
        &config.nats_monitor_urls,
        config.stream_sync_unchecked,
    )
    .await?;
    EventStore::open(client, settings, config.keys()?).await
}

/// A process being assembled: shared connections, routes and tasks.
pub struct Process {
    pub client: async_nats::Client,
    pub store: EventStore,
    pub pool: deadpool_postgres::Pool,
    pub metrics: Arc<Metrics>,
    pub tokens: Tokens,
    pub shutdown: CancellationToken,
    /// Set when the process runs the command role.
    pub engine: Option<Engine>,
    routes: Vec<axum::Router>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("command", &self.engine.is_some())
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Connects to NATS and PostgreSQL and applies the migrations (the
    /// command side's, `migrations`, and the read models').
    pub async fn connect(
        config: &Config,
        migrations: &[refinery::Migration],
    ) -> anyhow::Result<Self> {
        let client = connect_nats(config).await?;
        let store = open_store(client.clone(), config).await?;
        let pool = connect_db(&config.database_url, migrations).await?;
        Ok(Process {
            client,
            store,
            pool,
            metrics: Arc::new(Metrics::default()),
            tokens: Tokens::from_config(config),
            shutdown: CancellationToken::new(),
            engine: None,
            routes: Vec::new(),
            tasks: tokio::task::JoinSet::new(),
        })
    }

    /// Serves `router`'s routes on the process's HTTP address.
    pub fn route(&mut self, router: axum::Router) {
        self.routes.push(router);
    }

    /// Runs `task` until shutdown; an error ends the process.
    pub fn spawn(
        &mut self,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.spawn(task);
    }

    /// Adds what every process serves (reads, health, readiness, metrics,
    /// `openapi`) and starts HTTP.
    pub async fn serve(
        mut self,
        config: &Config,
        openapi: serde_json::Value,
    ) -> anyhow::Result<Running> {
        let catalog = config.catalog()?;
        let pool = self.pool.clone();
        let stream = self.store.stream().clone();
        self.route(crate::api::reads::router(ReadState {
            pool: pool.clone(),
            stream: stream.clone(),
            tokens: self.tokens.clone(),
            services: catalog.services().map(|s| s.to_string()).collect(),
            history_page_size_max: config.limits.history_page_size_max,
            as_of_wait: Duration::from_millis(config.limits.as_of_wait_ms_max),
        }));
        let ready: ReadyCheck = {
            let client = self.client.clone();
            let pool = pool.clone();
            Arc::new(move || {
                let client = client.clone();
                let pool = pool.clone();
                async move {
                    if client.connection_state() != async_nats::connection::State::Connected {
                        return Err("NATS is not connected".to_owned());
                    }
                    let conn = pool.get().await.map_err(|e| format!("PostgreSQL: {e}"))?;
                    let rows = ledger_projections::query::checkpoints(&**conn)
                        .await
                        .map_err(|e| format!("PostgreSQL: {e}"))?;
                    Ok(rows
                        .into_iter()
                        .filter_map(|c| {
                            let stopped = c.stopped?;
                            Some(ledger_schemas::views::StoppedProjector {
                                projector: c.projection,
                                stream_seq: stopped.stream_seq as u64,
                                reason: stopped.reason,
                            })
                        })
                        .collect())
                }
                .boxed()
            })
        };
        let refresh: ReadyCheck = {
            let metrics = self.metrics.clone();
            Arc::new(move || {
                let (pool, stream, metrics) = (pool.clone(), stream.clone(), metrics.clone());
                async move {
                    let list = crate::api::reads::projection_status(&pool, &stream)
                        .await
                        .map_err(|e| format!("{:?}", e.0))?;
                    for p in list {
                        let labels = crate::metrics::ProjectionLabels {
                            projection: p.projection,
                        };
                        metrics
                            .projection_lag
                            .get_or_create(&labels)
                            .set(p.lag as i64);
                        metrics.quarantined.set(p.quarantined as i64);
                    }
                    Ok(Vec::new())
                }
                .boxed()
            })
        };
        self.route(crate::api::http::base_router(BaseState {
            ready,
            metrics: self.metrics.clone(),
            refresh: Some(refresh),
            openapi: Arc::new(openapi),
        }));

        let listener = tokio::net::TcpListener::bind(&config.http_addr)
            .await
            .with_context(|| format!("binding HTTP to {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        let app = crate::api::http::app(
            std::mem::take(&mut self.routes),
            config.limits.request_body_bytes_max,
        );
        let token = self.shutdown.clone();
        match (&config.http_tls_cert, &config.http_tls_key) {
            (Some(cert), Some(key)) => {
                let tls = https_config(cert, key)?;
                let listener = listener.into_std()?;
                let handle = axum_server::Handle::new();
                let stop = handle.clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    stop.graceful_shutdown(Some(Duration::from_secs(10)));
                });
                self.spawn(async move {
                    axum_server::from_tcp_rustls(listener, tls)
                        .handle(handle)
                        .serve(app.into_make_service())
                        .await
                        .context("HTTPS server")
                });
            }
            (None, None) => {
                self.spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(token.cancelled_owned())
                        .await
                        .context("HTTP server")
                });
            }
            _ => anyhow::bail!("HTTPS needs both http_tls_cert and http_tls_key"),
        }
        Ok(Running {
            engine: self.engine,
            http_addr,
            shutdown: self.shutdown,
            tasks: self.tasks,
        })
    }
}

/// The command role: commands over NATS and HTTP, the usage intake, the
/// key indexer, and reservation expiry with idempotency-key retention.
pub async fn command(p: &mut Process, config: &Config) -> anyhow::Result<()> {
    let key = p
        .store
        .signer()
        .map_err(|_| anyhow::anyhow!("{}", NO_SIGNING_KEY))?
        .clone();
    let appends = connect_nats(config).await?;
    let engine = Engine::new(
        p.store.clone(),
        appends,
        key.clone(),
        p.pool.clone(),
        config.catalog()?,
        config.limits.clone(),
        p.metrics.clone(),
    );
    p.route(crate::api::http::command_router(AppState {
        engine: engine.clone(),
        tokens: p.tokens.clone(),
    }));
    let serving = crate::api::nats::start(
        p.client.clone(),
        engine.clone(),
        &config.subject_prefix,
        Arc::new(config.nats_callers.clone()),
    )
    .await?;
    let token = p.shutdown.clone();
    p.spawn(async move { serving.run(token.cancelled_owned()).await });
    let partitions = crate::api::partitions::PartitionSettings {
        partitions: config.command_partitions,
        lease: Duration::from_secs(config.partition_lease_s),
        prefix: config.subject_prefix.clone(),
        replication: config.replication(),
    };
    p.spawn(crate::api::partitions::run(
        p.client.clone(),
        engine.clone(),
        Arc::new(config.nats_callers.clone()),
        partitions,
        p.shutdown.clone(),
    ));

    let intake_settings = IntakeSettings {
        stream: config.usage_stream_name.clone(),
        dead_stream: format!("{}_DEAD", config.usage_stream_name),
        prefix: config.subject_prefix.clone(),
        duplicate_window: Duration::from_secs(120),
        ack_pending_max: config.limits.usage_ack_pending_max,
        batch_items_max: config.limits.batch_items_max,
        replication: config.replication(),
    };
    let token = p.shutdown.clone();
    let e = engine.clone();
    p.spawn(async move { intake::run(e, intake_settings, token.cancelled_owned()).await });

    let checkpoints = crate::engine::checkpointer::CheckpointSettings {
        key,
        subject: config.checkpoint_subject(),
        interval: Duration::from_secs(config.checkpoint_interval_s),
        events_max: config.checkpoint_events_max,
    };
    let indexer = engine.indexer(&config.database_url, config.key_indexer, Some(checkpoints));
    let token = p.shutdown.clone();
    p.spawn(async move { indexer.run(token).await });

    let token = p.shutdown.clone();
    let e = engine.clone();
    let sweep = Duration::from_millis(config.reservation_sweep_interval_ms);
    let retention = Duration::from_secs(config.idempotency_retention_s);
    p.spawn(async move {
        e.run_maintenance(sweep, retention, token.cancelled_owned())
            .await;
        Ok(())
    });
    p.engine = Some(engine);
    Ok(())
}

/// The projections role: one projector per read model (each takes its
/// advisory lock, so a second process stands by), and the alert dispatcher.
pub fn projections(p: &mut Process, config: &Config) {
    let dispatcher = crate::alerts::Dispatcher {
        database_url: config.database_url.clone(),
        stream: p.store.stream().clone(),
        trust: p.store.trust(),
        client: p.client.clone(),
        settings: crate::alerts::AlertSettings {
            subject_prefix: config.subject_prefix.clone(),
            // Checked when the configuration was loaded.
            webhook: config.alert_webhook().ok().flatten(),
            backoff_max: Duration::from_secs(config.alert_webhook_backoff_max_s),
            timeout: Duration::from_millis(config.alert_webhook_timeout_ms),
            retention: Duration::from_secs(config.alert_outbox_retention_s),
        },
    };
    let token = p.shutdown.clone();
    p.spawn(async move { dispatcher.run(token).await });
    let board = ledger_projections::projector::StatusBoard::default();
    for projection in ledger_projections::projector::Projection::ALL {
        let projector = ledger_projections::projector::Projector {
            projection,
            database_url: config.database_url.clone(),
            stream: p.store.stream().clone(),
            trust: p.store.trust(),
            status: board.clone(),
        };
        let token = p.shutdown.clone();
        p.spawn(async move { projector.run(token).await });
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

/// The command role alone, with the command side's migrations only (for the
/// benchmark and tools on a fresh database; the `ledger` binary applies the
/// gateway's too).
pub async fn start_command(config: &Config) -> anyhow::Result<Running> {
    let mut p = Process::connect(config, &[]).await?;
    command(&mut p, config).await?;
    let accepts = crate::api::openapi::Accepts::of(config)?;
    p.serve(config, crate::api::openapi::document(&accepts))
        .await
}

/// `ledger projections rebuild`: one projection, or all of them.
pub async fn rebuild(
    config: &Config,
    projection: Option<&str>,
    migrations: &[refinery::Migration],
) -> anyhow::Result<()> {
    use ledger_projections::projector::Projection;
    let chosen: Vec<Projection> =
        match projection {
            Some(name) => vec![Projection::parse(name).with_context(|| {
                format!("no projection '{name}'; there are accounts and topups")
            })?],
            None => Projection::ALL.to_vec(),
        };
    let client = connect_nats(config).await?;
    let store = open_store(client, config).await?;
    connect_db(&config.database_url, migrations).await?;
    for p in chosen {
        let report = ledger_projections::rebuild::rebuild(
            &config.database_url,
            store.stream(),
            &store.trust(),
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
