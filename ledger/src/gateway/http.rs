//! The gateway's HTTP endpoints: create a top-up, the checkout callback, and
//! Razorpay's webhooks. (`GET /v1/topups/{id}` is the read API's.)

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ledger_gateway_adapter::signature::webhook_valid;
use ledger_gateway_adapter::webhook::{EVENT_ID_HEADER, SIGNATURE_HEADER, Webhook};
use ledger_schemas::*;
use serde_json::json;

use super::{Gateway, Hints};
use crate::api::auth::{Action, Tokens};
use crate::api::http::{ApiError, authenticate, body_or_error, idempotency_key, path_account};

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

/// A delivery claimed this long ago and still unprocessed is claimed again
/// by a repeat (reconciliation would complete the top-up anyway).
const WEBHOOK_RECLAIM_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

fn unknown_topup(id: &str) -> ApiError {
    ApiError(Box::new(
        ErrorBody::new(ErrorCode::UnknownTopup, format!("No top-up has id '{id}'."))
            .with_detail("field", "topup_id"),
    ))
}

async fn create(
    State(state): State<GatewayState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state.tokens, &headers)?;
    let account = path_account(&account)?;
    principal.check(Action::TopUp, Some(&account))?;
    let body = body_or_error(body, state.body_max)?;
    let request: CreateTopupRequest = decode_request(&body)?;
    let key = idempotency_key(&headers)?;
    let view = state
        .gateway
        .create(&account, request, &principal.actor(), key)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn checkout(
    State(state): State<GatewayState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state.tokens, &headers)?;
    let topup_id = Id::parse(&id).map_err(|_| unknown_topup(&id))?;
    let body = body_or_error(body, state.body_max)?;
    let request: CheckoutRequest = decode_request(&body)?;
    let topup = state
        .gateway
        .get(topup_id)
        .await?
        .ok_or_else(|| unknown_topup(&id))?;
    principal.check(Action::TopUp, Some(&topup.account))?;
    let view = state.gateway.checkout(&topup, &request).await?;
    Ok(axum::Json(view).into_response())
}

/// Razorpay's webhooks: authenticated by the signature over the raw body,
/// de-duplicated on the event id, answered at once and processed after.
async fn webhook(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body, state.body_max)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = state.gateway.razorpay()?.webhook_secret.clone();
    let signature = header(SIGNATURE_HEADER).unwrap_or_default();
    if !webhook_valid(&body, signature, secret.expose()) {
        state.gateway.metrics().webhook("invalid_signature");
        return Err(ApiError(Box::new(
            ErrorBody::new(
                ErrorCode::InvalidSignature,
                "X-Razorpay-Signature does not match the body.",
            )
            .with_detail("field", "X-Razorpay-Signature"),
        )));
    }
    let event_id = header(EVENT_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .ok_or_else(|| {
            ApiError(Box::new(
                ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "The x-razorpay-event-id header is required.",
                )
                .with_detail("field", EVENT_ID_HEADER),
            ))
        })?
        .to_owned();
    let hook = Webhook::parse(&body).map_err(|e| {
        state.gateway.metrics().webhook("invalid");
        ApiError(Box::new(ErrorBody::new(ErrorCode::InvalidRequest, e)))
    })?;
    let conn = state
        .gateway
        .pool()
        .get()
        .await
        .map_err(|e| ApiError(super::unavailable(e)))?;
    // A new event is claimed and processed. A repeat is only acknowledged,
    // unless its first delivery was claimed long ago and never finished (the
    // process died): then this delivery claims it again.
    let row = conn
        .query_one(
            "INSERT INTO ledger_cmd.webhook_events (event_id, event) VALUES ($1, $2) \
             ON CONFLICT (event_id) DO UPDATE SET received_at = CASE \
                 WHEN webhook_events.processed_at IS NULL \
                  AND webhook_events.received_at < now() - $3 * interval '1 second' \
                 THEN now() ELSE webhook_events.received_at END \
             RETURNING received_at = now()",
            &[&event_id, &hook.event, &WEBHOOK_RECLAIM_AFTER.as_secs_f64()],
        )
        .await
        .map_err(|e| ApiError(super::unavailable(e)))?;
    if !row.get::<_, bool>(0) {
        state.gateway.metrics().webhook("duplicate");
        return Ok(axum::Json(json!({"status": "duplicate"})).into_response());
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
            tracing::warn!(event_id, event = hook.event, error = %e.error.message,
                "webhook not processed; reconciliation will pick it up");
        }
    });
    Ok(axum::Json(json!({"status": "accepted"})).into_response())
}

/// Finds the webhook's top-up and brings it up to date with Razorpay.
async fn process(gateway: &Gateway, event_id: &str, hook: &Webhook) -> Result<(), Box<ErrorBody>> {
    let mut topup = hook.receipt.as_deref().and_then(|r| Id::parse(r).ok());
    if topup.is_none() {
        let mut order_id = hook.order_id.clone();
        if order_id.is_none() {
            if let Some(p) = &hook.payment_id {
                let payment = gateway
                    .razorpay()?
                    .client
                    .payment(p)
                    .await
                    .map_err(super::from_razorpay)?;
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
    let conn = gateway.pool().get().await.map_err(super::unavailable)?;
    conn.execute(
        "UPDATE ledger_cmd.webhook_events SET processed_at = now(), topup_id = $2, outcome = $3 \
         WHERE event_id = $1",
        &[&event_id, &topup.map(|t| t.uuid()), &outcome],
    )
    .await
    .map_err(super::unavailable)?;
    Ok(())
}

pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/v1/accounts/{id}/topups", post(create))
        .route("/v1/topups/{id}/checkout", post(checkout))
        .route("/v1/webhooks/razorpay", post(webhook))
        .with_state(state)
}
