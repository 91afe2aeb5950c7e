//! The query API over the read models (HTTP, same auth as the commands):
//! balances, credit history, and where each projector is. (A top-up's
//! status is the gateway's: `ledger-gateway-adapter`.)

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use ledger_projections::query::{self, HistoryFilter, QueryError};
use ledger_schemas::views::{ProjectionStatus, ProjectionsView, ProjectorStop};
use ledger_schemas::{ErrorBody, ErrorCode, EventType, Timestamp};
use serde::Deserialize;

use super::auth::{Action, Tokens};
use super::http::{AccountPath, ApiError, Caller, Params};

#[derive(Clone)]
pub struct ReadState {
    pub pool: Pool,
    pub stream: async_nats::jetstream::stream::Stream,
    pub tokens: Tokens,
    /// Service names, for the per-service balance view.
    pub services: Vec<String>,
    pub history_page_size_max: u32,
    /// How long a read with `as_of_seq` waits (`as_of_wait_ms_max`).
    pub as_of_wait: std::time::Duration,
}

impl axum::extract::FromRef<ReadState> for Tokens {
    fn from_ref(s: &ReadState) -> Tokens {
        s.tokens.clone()
    }
}

impl std::fmt::Debug for ReadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadState").finish_non_exhaustive()
    }
}

fn invalid(field: &'static str, rule: impl Into<String>) -> ApiError {
    let rule = rule.into();
    ApiError(Box::new(
        ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!("'{field}' is invalid: {rule}."),
        )
        .with_detail("field", field)
        .with_detail("rule", rule),
    ))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError(Box::new(ErrorBody::new(
        ErrorCode::Unavailable,
        format!("The read models are unavailable: {e}."),
    )))
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid { field, rule } => invalid(field, rule),
            QueryError::Db(d) => unavailable(d),
            QueryError::Corrupt(m) => ApiError(Box::new(ErrorBody::new(
                ErrorCode::Internal,
                format!("The read models hold what the ledger never writes: {m}."),
            ))),
        }
    }
}

fn unknown_account() -> ApiError {
    ApiError(Box::new(ErrorBody::new(
        ErrorCode::UnknownAccount,
        "The account is not known (or not yet projected).",
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BalancesParams {
    as_of_seq: Option<u64>,
}

async fn balances(
    State(s): State<ReadState>,
    Caller(principal): Caller,
    AccountPath(account): AccountPath,
    Params(p): Params<BalancesParams>,
) -> Result<Response, ApiError> {
    principal.check(Action::ReadAccount, Some(&account))?;
    let want = p.as_of_seq.unwrap_or(0);
    if want > 0 {
        let head = stream_head(&s.stream).await?;
        if want > head {
            return Err(invalid(
                "as_of_seq",
                format!("must not be past the log's head (stream seq {head})"),
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + s.as_of_wait;
    loop {
        let client = s.pool.get().await.map_err(unavailable)?;
        let (at, view) = query::balances(&**client, &account, &s.services).await?;
        drop(client);
        if at >= want {
            return match view {
                Some(v) => Ok(Json(v).into_response()),
                None => Err(unknown_account()),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError(Box::new(
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    format!(
                        "The read model reflects stream seq {at}, not yet {want} \
                         (as_of_wait_ms_max); retry."
                    ),
                )
                .with_detail("as_of_seq", at),
            )));
        }
        tokio::time::sleep(AS_OF_POLL).await;
    }
}

/// How often a read with `as_of_seq` looks at the checkpoint again.
const AS_OF_POLL: std::time::Duration = std::time::Duration::from_millis(20);

async fn stream_head(stream: &async_nats::jetstream::stream::Stream) -> Result<u64, ApiError> {
    Ok(stream
        .clone()
        .info()
        .await
        .map_err(unavailable)?
        .state
        .last_sequence)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    service: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn history(
    State(s): State<ReadState>,
    Caller(principal): Caller,
    AccountPath(account): AccountPath,
    Params(p): Params<HistoryParams>,
) -> Result<Response, ApiError> {
    principal.check(Action::ReadAccount, Some(&account))?;
    let time = |field: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|t| {
                Timestamp::parse(t)
                    .map(|t| t.datetime())
                    .map_err(|e| invalid(field, e.rule))
            })
            .transpose()
    };
    if let Some(service) = &p.service {
        if !s.services.contains(service) {
            let known = s.services.join(", ");
            return Err(invalid(
                "service",
                format!("must be a configured service ({known})"),
            ));
        }
    }
    if let Some(kind) = &p.kind {
        if EventType::parse(kind).is_none() {
            return Err(invalid("kind", "must be an event type"));
        }
    }
    let filter = HistoryFilter {
        service: p.service,
        kind: p.kind,
        from: time("from", &p.from)?,
        to: time("to", &p.to)?,
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=s.history_page_size_max).contains(&limit) {
        return Err(invalid(
            "limit",
            format!(
                "must be from 1 to {} (history_page_size_max)",
                s.history_page_size_max
            ),
        ));
    }
    let client = s.pool.get().await.map_err(unavailable)?;
    let page = query::history(
        &**client,
        account.as_str(),
        filter,
        limit,
        p.cursor.as_deref(),
    )
    .await?;
    Ok(Json(page).into_response())
}

/// Each projector's checkpoint, the stream head, the lag between them, and
/// where and why it stopped, if it did.
pub async fn projection_status(
    pool: &Pool,
    stream: &async_nats::jetstream::stream::Stream,
) -> Result<Vec<ProjectionStatus>, ApiError> {
    let client = pool.get().await.map_err(unavailable)?;
    let checkpoints = query::checkpoints(&**client).await?;
    let quarantined = query::quarantined(&**client).await? as u64;
    let head = stream_head(stream).await?;
    Ok(ledger_projections::projector::Projection::ALL
        .iter()
        .map(|p| {
            let row = checkpoints.iter().find(|c| c.projection == p.name());
            let seq = row.map_or(0, |c| c.stream_seq as u64);
            ProjectionStatus {
                projection: p.name().to_owned(),
                checkpoint: seq,
                stream_head: head,
                lag: head.saturating_sub(seq),
                updated_at: row.map(|c| Timestamp::from_datetime(c.updated_at)),
                stopped: row.and_then(|c| c.stopped.as_ref()).map(|s| ProjectorStop {
                    stream_seq: s.stream_seq as u64,
                    reason: s.reason.clone(),
                }),
                quarantined,
            }
        })
        .collect())
}

async fn projections(
    State(s): State<ReadState>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    principal.check(Action::ReadOps, None)?;
    let projections = projection_status(&s.pool, &s.stream).await?;
    Ok(Json(ProjectionsView { projections }).into_response())
}

pub fn router(state: ReadState) -> axum::Router {
    axum::Router::new()
        .route("/v1/accounts/{id}/balances", get(balances))
        .route("/v1/accounts/{id}/history", get(history))
        .route("/v1/ops/projections", get(projections))
        .with_state(state)
}
