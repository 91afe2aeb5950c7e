//! The gateway's HTTP endpoints: create a top-up, read one, the checkout
//! callback, and Razorpay's webhooks. Every error is a [`GatewayError`] (or
//! the ledger's authentication error), in the contract's shape.

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ledger::api::auth::{Action, Tokens};
use ledger::api::http::{
    AccountPath, ApiError, Body, BodyMax, Caller, idempotency_key, path_segment,
};
use ledger_schemas::views::{WebhookOutcome, WebhookReply};
use ledger_schemas::*;

use crate::error::GatewayError;
use crate::service::{Gateway, Hints};
use crate::signature::webhook_valid;
use crate::webhook::{EVENT_ID_HEADER, SIGNATURE_HEADER, Webhook};

#[derive(Clone)]
pub struct GatewayState {
    pub gateway: Gateway,
    pub tokens: Tokens,
    pub body_max: usize,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState").finish_non_exhaustive()
    }
}

impl FromRef<GatewayState> for Tokens {
    fn from_ref(s: &GatewayState) -> Tokens {
        s.tokens.clone()
    }
}

impl FromRef<GatewayState> for BodyMax {
    fn from_ref(s: &GatewayState) -> BodyMax {
        BodyMax(s.body_max)
    }
}

/// A delivery claimed this long ago and still unprocessed is claimed again
/// by a repeat (reconciliation would complete the top-up anyway).
const WEBHOOK_RECLAIM_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The `{id}` path segment as a top-up id; anything else names no top-up.
#[derive(Debug)]
pub struct TopupPath(pub Id);

impl<S: Send + Sync> FromRequestParts<S> for TopupPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_segment(parts, state).await?;
        Id::parse(&raw)
            .map(TopupPath)
            .map_err(|_| GatewayError::UnknownTopup(raw).into())
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    decode_request(body).map_err(ApiError)
}

async fn create(
    State(state): State<GatewayState>,
    Caller(principal): Caller,
    AccountPath(account): AccountPath,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    principal.check(Action::TopUp, Some(&account))?;
    let request: CreateTopupRequest = decode(&body)?;
    let key = idempotency_key(&headers)?;
    let view = state
        .gateway
        .create(&account, request, &principal.actor(), key)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// `GET /v1/topups/{id}`: the read model's row, or, for a top-up the
/// projector has not reached yet, the top-up as its own log tells it.
async fn read(
    State(state): State<GatewayState>,
    Caller(principal): Caller,
    TopupPath(id): TopupPath,
) -> Result<Response, ApiError> {
    let view = match state.gateway.projected(id).await? {
        Some(row) => row,
        None => state
            .gateway
            .row_from_log(id)
            .await?
            .ok_or_else(|| GatewayError::UnknownTopup(id.to_string()))?,
    };
    let owner = AccountId::parse(&view.account_id).ok();
    principal.check(Action::ReadAccount, owner.as_ref())?;
    Ok(axum::Json(view).into_response())
}

async fn checkout(
    State(state): State<GatewayState>,
    Caller(principal): Caller,
    TopupPath(id): TopupPath,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let request: CheckoutRequest = decode(&body)?;
    let topup = state
        .gateway
        .get(id)
        .await?
        .ok_or_else(|| GatewayError::UnknownTopup(id.to_string()))?;
    principal.check(Action::TopUp, Some(&topup.account))?;
    let view = state.gateway.checkout(&topup, &request).await?;
    Ok(axum::Json(view).into_response())
}

/// Razorpay's webhooks: authenticated by the signature over the raw body,
/// de-duplicated on the event id, answered at once and processed after.
async fn webhook(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = state.gateway.razorpay()?.webhook_secret.clone();
    let signature = header(SIGNATURE_HEADER).unwrap_or_default();
    if !webhook_valid(&body, signature, secret.expose()) {
        state.gateway.metrics().webhook("invalid_signature");
        return Err(GatewayError::InvalidSignature {
            field: "X-Razorpay-Signature",
            what: "the body",
        }
        .into());
    }
    let event_id = header(EVENT_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .ok_or(GatewayError::Invalid {
            field: EVENT_ID_HEADER,
            message: "The x-razorpay-event-id header is required.".into(),
            rule: "required",
        })?
        .to_owned();
    let hook = Webhook::parse(&body).map_err(|e| {
        state.gateway.metrics().webhook("invalid");
        GatewayError::Invalid {
            field: "body",
            message: e.to_string(),
            rule: "razorpay_webhook",
        }
    })?;
    if !claim(&state.gateway, &event_id, &hook.event).await? {
        state.gateway.metrics().webhook("duplicate");
        let reply = WebhookReply {
            status: WebhookOutcome::Duplicate,
        };
        return Ok(axum::Json(reply).into_response());
    }
    state.gateway.metrics().webhook("accepted");
    let gateway = state.gateway.clone();
    tokio::spawn(async move {
        let processed = process(&gateway, &event_id, &hook).await;
        gateway.metrics().webhook(if processed.is_ok() {
            "processed"
        } else {
            "failed"
        });
        if let Err(e) = processed {
            tracing::warn!(event_id, event = hook.event, error = %e,
                "webhook not processed; reconciliation will pick it up");
        }
    });
    let reply = WebhookReply {
        status: WebhookOutcome::Accepted,
    };
    Ok(axum::Json(reply).into_response())
}

/// Claims a webhook delivery: `true` for a new event, or a repeat whose
/// first delivery was claimed long ago and never finished (the process
/// died); `false` for a repeat only to acknowledge.
async fn claim(gateway: &Gateway, event_id: &str, event: &str) -> Result<bool, GatewayError> {
    let conn = gateway.conn().await?;
    let row = conn
        .query_one(
            "INSERT INTO ledger_cmd.webhook_events (event_id, event) VALUES ($1, $2) \
             ON CONFLICT (event_id) DO UPDATE SET received_at = CASE \
                 WHEN webhook_events.processed_at IS NULL \
                  AND webhook_events.received_at < now() - $3 * interval '1 second' \
                 THEN now() ELSE webhook_events.received_at END \
             RETURNING received_at = now()",
            &[&event_id, &event, &WEBHOOK_RECLAIM_AFTER.as_secs_f64()],
        )
        .await
        .map_err(GatewayError::unavailable)?;
    Ok(row.get::<_, bool>(0))
}

/// Finds the webhook's top-up and brings it up to date with Razorpay.
async fn process(gateway: &Gateway, event_id: &str, hook: &Webhook) -> Result<(), GatewayError> {
    let mut topup = hook.receipt.as_deref().and_then(|r| Id::parse(r).ok());
    if topup.is_none() {
        let mut order_id = hook.order_id.clone();
        if order_id.is_none() {
            if let Some(p) = &hook.payment_id {
                let payment = gateway.razorpay()?.client.payment(p).await?;
                order_id = payment.order_id;
            }
        }
        if let Some(o) = order_id {
            topup = gateway.topup_of_order(&o).await?;
        }
    }
    let outcome = match topup {
        None => "not a top-up of this ledger".to_owned(),
        Some(id) => {
            let hints = Hints {
                dispute_ids: hook.dispute_id.iter().cloned().collect(),
            };
            match gateway
                .sync(id, &hints, &format!("webhook:{event_id}"))
                .await
            {
                Ok(Some(t)) => t.status().to_string(),
                Ok(None) => "no such top-up in the log".to_owned(),
                Err(e) => {
                    gateway.poll_soon(id).await.ok();
                    return Err(e);
                }
            }
        }
    };
    let conn = gateway.conn().await?;
    conn.execute(
        "UPDATE ledger_cmd.webhook_events SET processed_at = now(), topup_id = $2, outcome = $3 \
         WHERE event_id = $1",
        &[&event_id, &topup.map(|t| t.uuid()), &outcome],
    )
    .await
    .map_err(GatewayError::unavailable)?;
    Ok(())
}

/// `GET /v1/topups/{id}`, which every process serves (it needs no Razorpay).
pub fn read_router(state: GatewayState) -> Router {
    Router::new()
        .route("/v1/topups/{id}", get(read))
        .with_state(state)
}

/// The routes of the gateway role.
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/v1/accounts/{id}/topups", post(create))
        .route("/v1/topups/{id}/checkout", post(checkout))
        .route("/v1/webhooks/razorpay", post(webhook))
        .with_state(state)
}
