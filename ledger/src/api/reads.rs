//! The query API over the read models (HTTP, same auth as the commands):
//! balances, credit history, and where each projector is. (A top-up's
//! status is the gateway's: `ledger-gateway-adapter`.)

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use ledger_projections::query::{self, HistoryFilter, QueryError};
use ledger_schemas::{ErrorBody, ErrorCode, Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Tokens};
use super::http::{AccountPath, ApiError, Caller};

#[derive(Clone)]
pub struct ReadState {
    pub pool: Pool,
    pub stream: async_nats::jetstream::stream::Stream,
    pub tokens: Tokens,
    /// Service names, for the per-service balance view.
    pub services: Vec<String>,
    pub history_page_size_max: u32,
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
        }
    }
}

async fn balances(
    State(s): State<ReadState>,
    Caller(principal): Caller,
    AccountPath(account): AccountPath,
) -> Result<Response, ApiError> {
    principal.check(Action::ReadAccount, Some(&account))?;
    let client = s.pool.get().await.map_err(unavailable)?;
    match query::balances(&**client, account.as_str(), &s.services).await? {
        Some(b) => Ok(Json(b).into_response()),
        None => Err(ApiError(Box::new(ErrorBody::new(
            ErrorCode::UnknownAccount,
            "The account is not known (or not yet projected).",
        )))),
    }
}

#[derive(Debug, Deserialize)]
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
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    principal.check(Action::ReadAccount, Some(&account))?;
    let Query(p) = params.map_err(|e| invalid("query", e.body_text()))?;
    let time = |field: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|t| {
                Timestamp::parse(t)
                    .map(|t| t.datetime())
                    .map_err(|e| invalid(field, e.rule))
            })
            .transpose()
    };
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
) -> Result<Vec<serde_json::Value>, ApiError> {
    let client = pool.get().await.map_err(unavailable)?;
    let checkpoints = query::checkpoints(&**client).await?;
    let quarantined = query::quarantined(&**client).await?;
    let head = stream
        .clone()
        .info()
        .await
        .map_err(unavailable)?
        .state
        .last_sequence;
    Ok(ledger_projections::projector::Projection::ALL
        .iter()
        .map(|p| {
            let row = checkpoints.iter().find(|c| c.projection == p.name());
            let seq = row.map_or(0, |c| c.stream_seq as u64);
            let at = row.map(|c| Timestamp::from_datetime(c.updated_at));
            let stopped = row.and_then(|c| c.stopped.clone());
            json!({"projection": p.name(), "checkpoint": seq, "stream_head": head,
                   "lag": head.saturating_sub(seq), "updated_at": at, "stopped": stopped,
                   "quarantined": quarantined})
        })
        .collect())
}

async fn projections(
    State(s): State<ReadState>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    principal.check(Action::ReadOps, None)?;
    let list = projection_status(&s.pool, &s.stream).await?;
    Ok(Json(json!({"projections": list})).into_response())
}

pub fn router(state: ReadState) -> axum::Router {
    axum::Router::new()
        .route("/v1/accounts/{id}/balances", get(balances))
        .route("/v1/accounts/{id}/history", get(history))
        .route("/v1/ops/projections", get(projections))
        .with_state(state)
}
