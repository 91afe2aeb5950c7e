//! The NATS service `ledger`: request/reply on `ledger.cmd.<name>`, found by
//! `nats micro ls` (it answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`).

use async_nats::Client;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use ledger_schemas::{Actor, ErrorBody, ErrorCode};

use super::{CommandName, parse, run};
use crate::engine::Engine;

/// Header a caller may set to name itself in the events it causes.
pub const ACTOR_HEADER: &str = "Ledger-Actor";

/// The service, subscribed and answering, until [`Serving::run`] ends.
#[derive(Debug)]
pub struct Serving {
    service: async_nats::service::Service,
    tasks: tokio::task::JoinSet<()>,
}

impl Serving {
    /// Answers requests until `shutdown` resolves, then leaves the service.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        shutdown.await;
        self.tasks.abort_all();
        self.service
            .stop()
            .await
            .map_err(|e| anyhow::anyhow!("stopping the NATS service: {e}"))?;
        Ok(())
    }
}

/// Subscribes every command endpoint; returns once the server knows them.
pub async fn start(client: Client, engine: Engine, prefix: &str) -> anyhow::Result<Serving> {
    let service = client
        .service_builder()
        .description("Credit ledger: commands on accounts")
        .start("ledger", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the NATS service: {e}"))?;
    let group = service.group(format!("{prefix}.cmd"));
    let mut tasks = tokio::task::JoinSet::new();
    for name in CommandName::ALL {
        let mut endpoint = group
            .endpoint(name.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("adding endpoint {}: {e}", name.as_str()))?;
        let engine = engine.clone();
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let body = handle(&engine, name, &request.message).await;
                    if let Err(e) = request.respond(Ok(body.into())).await {
                        tracing::debug!(error = %e, "reply not sent");
                    }
                });
            }
        });
    }
    client.flush().await?;
    Ok(Serving { service, tasks })
}

async fn handle(engine: &Engine, name: CommandName, message: &async_nats::Message) -> Vec<u8> {
    let error = |e: &ErrorBody| serde_json::to_vec(e).expect("errors serialise");
    let limits = engine.limits();
    let (body_max, limit) = match name {
        CommandName::ConsumeBatch => (limits.batch_body_bytes_max, "batch_body_bytes_max"),
        _ => (limits.request_body_bytes_max, "request_body_bytes_max"),
    };
    if message.payload.len() > body_max {
        return error(
            &ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("The request is larger than {body_max} bytes."),
            )
            .with_detail("limit", limit),
        );
    }
    let actor = message
        .headers
        .as_ref()
        .and_then(|h| h.get(ACTOR_HEADER))
        .and_then(|v| Actor::parse(v.as_str()).ok())
        .unwrap_or_else(|| Actor::parse("service:nats").expect("a valid actor"));
    let parsed = match parse(name, &message.payload, &actor, limits.batch_items_max) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    match run(engine, parsed).await {
        Ok(body) => body,
        Err(e) => error(&e),
    }
}
