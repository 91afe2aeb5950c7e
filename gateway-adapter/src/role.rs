//! The gateway in a `ledger` process: its role (top-up endpoints and the
//! reconciliation poller), the top-up read every process serves, its
//! migrations, and its part of the OpenAPI document.

use ledger::api::openapi::{Doc, object, path_param};
use ledger::config::Config;
use ledger::serve::Process;
use ledger_schemas::*;
use serde_json::json;

use crate::config::GatewayConfig;
use crate::http::GatewayState;
use crate::metrics::GatewayMetrics;
use crate::service::Gateway;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The gateway's migrations (`V2`, `V3`): they share the command side's
/// history and version sequence (see `ledger::db`).
pub fn migrations() -> Vec<refinery::Migration> {
    embedded::migrations::runner().get_migrations().clone()
}

fn state(p: &Process, ledger: &Config, config: &GatewayConfig) -> anyhow::Result<GatewayState> {
    let gateway = Gateway::new(
        config,
        ledger.catalog()?,
        &ledger.subject_prefix,
        p.store.clone(),
        p.pool.clone(),
        GatewayMetrics::registered(&p.metrics),
    )?;
    Ok(GatewayState {
        gateway,
        tokens: p.tokens.clone(),
        body_max: ledger.limits.request_body_bytes_max,
    })
}

/// The gateway role: creating top-ups, the checkout callback, webhooks,
/// the reconciliation poller, and `GET /v1/topups/{id}`.
pub fn gateway(p: &mut Process, ledger: &Config, config: &GatewayConfig) -> anyhow::Result<()> {
    let state = state(p, ledger, config)?;
    p.route(crate::http::router(state.clone()));
    p.route(crate::http::read_router(state.clone()));
    // Only a process that can reach Razorpay reconciles: another would
    // claim open top-ups it cannot check and push them back.
    if state.gateway.configured() {
        let token = p.shutdown.clone();
        p.spawn(crate::poller::run(state.gateway, token));
    } else {
        tracing::warn!(
            "Razorpay is not configured (LEDGER_RAZORPAY_KEY_ID, LEDGER_RAZORPAY_KEY_SECRET, \
             LEDGER_RAZORPAY_WEBHOOK_SECRET): this process creates no top-ups, takes no \
             webhooks (they answer unavailable, so Razorpay retries elsewhere) and runs no \
             reconciliation"
        );
    }
    Ok(())
}

/// `GET /v1/topups/{id}` alone, for a process without the gateway role
/// (every process serves the read API).
pub fn reads(p: &mut Process, ledger: &Config, config: &GatewayConfig) -> anyhow::Result<()> {
    let state = state(p, ledger, config)?;
    p.route(crate::http::read_router(state));
    Ok(())
}

/// The gateway's endpoints in the OpenAPI document.
pub fn openapi_paths(d: &mut Doc) {
    let account = || path_param("id", "The account id");
    let topup = || path_param("topup_id", "The top-up id (UUID v7)");
    let topup_view = object(json!({
        "topup_id": {"type": "string"}, "account_id": {"type": "string"},
        "status": d.schema::<TopupStatus>(), "amount_usd": {"type": "string"},
        "amount_inr_paise": {"type": "integer"}, "fx_rate": {"type": "string"},
        "credits": {"type": "string"}, "transaction_id": {"type": ["string", "null"]},
        "method": {"type": ["string", "null"]},
        "razorpay": object(json!({"key_id": {"type": "string"}, "order_id": {"type": "string"}}))
    }));
    let create = d.schema::<CreateTopupRequest>();
    d.op(
        "post",
        "/v1/accounts/{id}/topups",
        "Start a top-up: quote, then create the Razorpay order",
        true,
        json!([account()]),
        Some(create),
        ("201", topup_view.clone()),
    );
    let checkout = d.schema::<CheckoutRequest>();
    d.op(
        "post",
        "/v1/topups/{topup_id}/checkout",
        "Razorpay Checkout's success handler; the status after re-fetching the payment",
        true,
        json!([topup()]),
        Some(checkout),
        ("200", topup_view.clone()),
    );
    d.op(
        "get",
        "/v1/topups/{topup_id}",
        "A top-up's status (read model; from its log until the projector reaches it)",
        true,
        json!([topup()]),
        None,
        ("200", topup_view),
    );
    d.op(
        "post",
        "/v1/webhooks/razorpay",
        "Razorpay webhooks: X-Razorpay-Signature over the raw body, de-duplicated on x-razorpay-event-id",
        false,
        json!([{"name": "X-Razorpay-Signature", "in": "header", "required": true, "schema": {"type": "string"}},
            {"name": "x-razorpay-event-id", "in": "header", "required": true, "schema": {"type": "string"}}]),
        Some(json!({"type": "object"})),
        ("200", object(json!({"status": {"enum": ["accepted", "duplicate"]}}))),
    );
}
