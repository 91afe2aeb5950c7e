//! The NATS service `ledger`: request/reply on `ledger.cmd.<name>`, found by
//! `nats micro ls` (it answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`).

use async_nats::Client;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use ledger_schemas::{Actor, ErrorBody, ErrorCode};

use super::auth::Principal;
use super::{CommandName, authorize, parse, run};
use crate::config::Role;
use crate::engine::Engine;

/// Header a client of the ledger's own NATS account (an operator's tool)
/// may set to name itself in the events it causes. From any other account
/// it is ignored: the server's `Nats-Request-Info` names the caller.
pub const ACTOR_HEADER: &str = "Ledger-Actor";

/// The header nats-server sets on a request that crossed a service import
/// (`share: true` adds the user); clients cannot set it.
pub const REQUEST_INFO_HEADER: &str = "Nats-Request-Info";

/// The roles of the NATS accounts that import the command service.
pub type Callers = std::sync::Arc<std::collections::BTreeMap<String, Role>>;

#[derive(serde::Deserialize)]
struct RequestInfo {
    acc: String,
    #[serde(default)]
    user: Option<String>,
}

/// Who sent `message`: `Some` for a caller the server vouches for (its
/// account's role, named by its user), `None` for a client of the ledger's
/// own account (no service import crossed), or the refusal of an account
/// with no role.
fn vouched(
    message: &async_nats::Message,
    callers: &Callers,
) -> Result<Option<Principal>, ErrorBody> {
    let Some(info) = message
        .headers
        .as_ref()
        .and_then(|h| h.get(REQUEST_INFO_HEADER))
    else {
        return Ok(None);
    };
    let info: RequestInfo = serde_json::from_str(info.as_str()).map_err(|_| {
        ErrorBody::new(
            ErrorCode::Forbidden,
            "The caller's identity cannot be read.",
        )
    })?;
    let role = callers.get(&info.acc).ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::Forbidden,
            format!("NATS account '{}' may not request commands.", info.acc),
        )
    })?;
    Ok(Some(Principal::vouched(
        *role,
        info.user.as_deref().unwrap_or(&info.acc),
    )))
}

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
pub async fn start(
    client: Client,
    engine: Engine,
    prefix: &str,
    callers: Callers,
) -> anyhow::Result<Serving> {
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
        let callers = callers.clone();
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let engine = engine.clone();
                let callers = callers.clone();
                tokio::spawn(async move {
                    let body = handle(&engine, &callers, name, &request.message).await;
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

/// Answers one command request (size limit, the caller's identity and
/// rights, then the command).
pub(crate) async fn handle(
    engine: &Engine,
    callers: &Callers,
    name: CommandName,
    message: &async_nats::Message,
) -> Vec<u8> {
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
    let principal = match vouched(message, callers) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let actor = match &principal {
        Some(p) => p.actor(),
        None => message
            .headers
            .as_ref()
            .and_then(|h| h.get(ACTOR_HEADER))
            .and_then(|v| Actor::parse(v.as_str()).ok())
            .unwrap_or_else(|| Actor::parse("service:nats").expect("a valid actor")),
    };
    let mut parsed = match parse(name, &message.payload, &actor, limits.batch_items_max) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    if let Some(p) = &principal {
        if let Err(e) = authorize(p, name, &mut parsed) {
            return error(&e);
        }
    }
    match run(engine, parsed).await {
        Ok(body) => body,
        Err(e) => error(&e),
    }
}
