//! HTTP endpoints of the command side (JSON, `Authorization: Bearer <token>`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger_schemas::views::{Health, HealthStatus, Readiness, ReadyStatus, StoppedProjector};
use ledger_schemas::{
    AccountId, ConsumeBody, ErrorBody, ErrorCode, IdempotencyKey, OpenAccountBody, decode_request,
};
use serde_json::{Value, json};

use super::auth::{Action, Principal, Tokens};
use super::{CommandName, parse, run, status_of};
use crate::engine::Engine;

/// A check that the process's dependencies answer (for `/readyz`): what is
/// degraded but serving (a projector stopped on an event it cannot read),
/// or why the process is not ready.
pub type ReadyCheck = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, Result<Vec<StoppedProjector>, String>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub tokens: Tokens,
}

impl FromRef<AppState> for Tokens {
    fn from_ref(s: &AppState) -> Tokens {
        s.tokens.clone()
    }
}

impl FromRef<AppState> for BodyMax {
    fn from_ref(s: &AppState) -> BodyMax {
        BodyMax(s.engine.limits().request_body_bytes_max)
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// What every process serves: liveness, readiness, metrics.
#[derive(Clone)]
pub struct BaseState {
    pub ready: ReadyCheck,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Called before `/metrics` is encoded, to refresh gauges read elsewhere.
    pub refresh: Option<ReadyCheck>,
    /// The OpenAPI document of every endpoint the process serves.
    pub openapi: Arc<Value>,
}

impl std::fmt::Debug for BaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseState").finish_non_exhaustive()
    }
}

/// An error in the contract's shape, with its HTTP status.
#[derive(Debug)]
pub struct ApiError(pub Box<ErrorBody>);

impl From<Box<ErrorBody>> for ApiError {
    fn from(e: Box<ErrorBody>) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status_of(self.0.code()), Json(*self.0)).into_response()
    }
}

/// `request_body_bytes_max`, for the [`Body`] extractor's message.
#[derive(Debug, Clone, Copy)]
pub struct BodyMax(pub usize);

/// The caller, authenticated by `Authorization: Bearer`, or `unauthorized`.
/// (What the caller may do is checked by the handler, against the resource.)
#[derive(Debug)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Tokens: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        authenticate(&Tokens::from_ref(state), &parts.headers).map(Caller)
    }
}

/// The `{id}` path segment as an account id, or `invalid_request`.
#[derive(Debug)]
pub struct AccountPath(pub AccountId);

impl<S: Send + Sync> FromRequestParts<S> for AccountPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_segment(parts, state).await?;
        path_account(&raw).map(AccountPath)
    }
}

/// The one path segment of a route, as text.
pub async fn path_segment<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(raw)| raw)
        .map_err(|e| {
            ApiError(Box::new(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("The path is invalid: {e}."),
            )))
        })
}

/// The request body, or the contract's error when it is larger than
/// `request_body_bytes_max` or unreadable.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body
where
    BodyMax: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state).await;
        body_or_error(body, BodyMax::from_ref(state).0, "request_body_bytes_max").map(Body)
    }
}

fn json_body(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(tokens.authenticate(value)?)
}

/// The body, or the contract's error when it is too large or unreadable.
fn body_or_error(
    body: Result<Bytes, BytesRejection>,
    max: usize,
    limit: &'static str,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        let message = if too_large {
            format!("The request body is larger than {max} bytes.")
        } else {
            format!("The request body could not be read: {e}.")
        };
        ApiError(Box::new(
            ErrorBody::new(ErrorCode::InvalidRequest, message).with_detail("limit", limit),
        ))
    })
}

/// Query parameters as forms and clients send them: an empty value
/// (`?limit=`) is read as absent, and a parameter `T` does not name is
/// refused (`T` denies unknown fields), as is a repeated one.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let invalid = |e: &dyn std::fmt::Display| {
            ApiError(Box::new(
                ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!("The query string is invalid: {e}."),
                )
                .with_detail("field", "query")
                .with_detail("rule", e.to_string()),
            ))
        };
        let raw = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw).map_err(|e| invalid(&e))?;
        let given: Vec<(String, String)> =
            pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let kept = serde_urlencoded::to_string(&given).map_err(|e| invalid(&e))?;
        serde_urlencoded::from_str(&kept)
            .map(Params)
            .map_err(|e| invalid(&e))
    }
}

pub fn path_account(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| {
        ApiError(Box::new(
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("The account id is invalid: {e}."),
            )
            .with_detail("field", "account_id")
            .with_detail("rule", e.rule.to_string()),
        ))
    })
}

/// Merges fields the path and headers carry into a JSON object body.
fn with_fields(body: &[u8], fields: &[(&str, Value)]) -> Result<Vec<u8>, ApiError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError(Box::new(ErrorBody::new(
            ErrorCode::InvalidRequest,
            "The request body is not valid JSON.",
        )))
    })?;
    let obj = v.as_object_mut().ok_or_else(|| {
        ApiError(Box::new(ErrorBody::new(
            ErrorCode::InvalidRequest,
            "The request body must be a JSON object.",
        )))
    })?;
    for (k, val) in fields {
        match obj.get(*k) {
            Some(existing) if existing != val => {
                return Err(ApiError(Box::new(
                    ErrorBody::new(
                        ErrorCode::InvalidRequest,
                        format!("The body's '{k}' differs from the request's path or header."),
                    )
                    .with_detail("field", *k),
                )));
            }
            _ => {
                obj.insert((*k).to_owned(), val.clone());
            }
        }
    }
    Ok(serde_json::to_vec(&v).expect("values serialise"))
}

/// Parses, authorises (the command's action on the request's account, and
/// what the caller's role may ask) and runs a command.
async fn execute(
    state: &AppState,
    principal: &Principal,
    name: CommandName,
    body: &[u8],
    status: StatusCode,
) -> Result<Response, ApiError> {
    let mut parsed = parse(
        name,
        body,
        &principal.actor(),
        state.engine.limits().batch_items_max,
    )?;
    super::authorize(principal, name, &mut parsed)?;
    match run(&state.engine, parsed).await {
        Ok(reply) => Ok(json_body(status, reply)),
        Err(e) => Err(ApiError(Box::new((*e).clone()))),
    }
}

async fn open_account(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    principal.check(Action::OpenAccount, None)?;
    let open: OpenAccountBody = decode_request(&body).map_err(ApiError)?;
    // Opening is idempotent per account by nature: without a key, the
    // account id is the key.
    let key = match idempotency_key(&headers)? {
        Some(k) => k.to_string(),
        None => format!("open:{}", open.account_id),
    };
    let body = with_fields(&body, &[("idempotency_key", json!(key))])?;
    execute(
        &state,
        &principal,
        CommandName::OpenAccount,
        &body,
        StatusCode::CREATED,
    )
    .await
}

/// The `Idempotency-Key` header, if sent, checked by the contract's rule.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let refused = |message: String| {
        ApiError(Box::new(
            ErrorBody::new(ErrorCode::InvalidRequest, message)
                .with_detail("field", "Idempotency-Key"),
        ))
    };
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| refused("The Idempotency-Key header is not text.".into()))?;
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| refused(format!("The Idempotency-Key header {}.", e.rule)))
}

async fn consume(
    State(state): State<AppState>,
    Caller(principal): Caller,
    AccountPath(account): AccountPath,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    principal.check(Action::Spend, Some(&account))?;
    let _: ConsumeBody = decode_request(&body).map_err(ApiError)?;
    let key = idempotency_key(&headers)?.ok_or_else(|| {
        ApiError(Box::new(
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                "The Idempotency-Key header is required.",
            )
            .with_detail("field", "Idempotency-Key"),
        ))
    })?;
    let body = with_fields(
        &body,
        &[
            ("idempotency_key", json!(key.as_str())),
            ("account_id", json!(account.as_str())),
        ],
    )?;
    execute(
        &state,
        &principal,
        CommandName::Consume,
        &body,
        StatusCode::OK,
    )
    .await
}

/// `POST /v1/consumptions/batch`: the `consume_batch` command, with a body of
/// up to `batch_body_bytes_max`.
async fn consume_batch(
    State(state): State<AppState>,
    Caller(principal): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(
        body,
        state.engine.limits().batch_body_bytes_max,
        "batch_body_bytes_max",
    )?;
    execute(
        &state,
        &principal,
        CommandName::ConsumeBatch,
        &body,
        StatusCode::OK,
    )
    .await
}

/// `POST /v1/commands/{name}`: every NATS command over HTTP, same body and
/// reply, authorised by the token's role (and accounts, for console tokens).
async fn command(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let name = CommandName::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| {
            ApiError(Box::new(
                ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!("There is no command '{name}'."),
                )
                .with_detail("field", "name"),
            ))
        })?;
    // Refused before the body is read, as `POST /v1/accounts` does.
    if name == CommandName::OpenAccount {
        principal.check(Action::OpenAccount, None)?;
    }
    execute(&state, &principal, name, &body, StatusCode::OK).await
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

async fn readyz(State(state): State<BaseState>) -> Response {
    match (state.ready)().await {
        Ok(stopped) => {
            // Degraded is still serving: commands, reads and the other
            // projectors go on.
            let status = if stopped.is_empty() {
                ReadyStatus::Ready
            } else {
                ReadyStatus::Degraded
            };
            Json(Readiness { status, stopped }).into_response()
        }
        Err(e) => ApiError(Box::new(ErrorBody::new(
            ErrorCode::Unavailable,
            format!("Not ready: {e}."),
        )))
        .into_response(),
    }
}

async fn metrics(State(state): State<BaseState>) -> Response {
    if let Some(refresh) = &state.refresh {
        if let Err(e) = refresh().await {
            tracing::debug!(error = %e, "metrics refresh failed");
        }
    }
    (
        [(header::CONTENT_TYPE, super::openapi::OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn openapi(State(state): State<BaseState>) -> Json<Value> {
    Json(Value::clone(&state.openapi))
}

pub async fn not_found() -> ApiError {
    ApiError(Box::new(ErrorBody::new(
        ErrorCode::InvalidRequest,
        "No such endpoint.",
    )))
}

/// The command routes.
pub fn command_router(state: AppState) -> Router {
    let batch_body_max = state.engine.limits().batch_body_bytes_max;
    Router::new()
        .route("/v1/accounts", post(open_account))
        .route("/v1/accounts/{id}/consumptions", post(consume))
        .route(
            "/v1/consumptions/batch",
            post(consume_batch).layer(DefaultBodyLimit::max(batch_body_max)),
        )
        // The same command by name, with the same body limit.
        .route(
            "/v1/commands/consume_batch",
            post(consume_batch).layer(DefaultBodyLimit::max(batch_body_max)),
        )
        .route("/v1/commands/{name}", post(command))
        .with_state(state)
}

/// Liveness, readiness and metrics.
pub fn base_router(state: BaseState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

/// Every route of the process, with the contract's errors for unknown paths
/// and oversized bodies.
pub fn app(parts: Vec<Router>, body_max: usize) -> Router {
    parts
        .into_iter()
        .fold(Router::new(), Router::merge)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_max))
}
