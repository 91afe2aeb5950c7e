//! The gateway in a `ledger` process: its role (top-up endpoints and the
//! reconciliation poller), the top-up read every process serves, its
//! migrations, and its part of the OpenAPI document.

use ledger::api::openapi::{Doc, JSON, Op, account_param, param};
use ledger::config::Config;
use ledger::serve::Process;
use ledger_schemas::views::*;
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
/// the reconciliation poller, and `GET /v1/topups/{id}`. Returns the
/// gateway, for the pages of the same process.
pub fn gateway(
    p: &mut Process,
    ledger: &Config,
    config: &GatewayConfig,
) -> anyhow::Result<Gateway> {
    // Every top-up event is signed: refuse to start without the key.
    p.store
        .signer()
        .map_err(|_| anyhow::anyhow!("{}", ledger::serve::NO_SIGNING_KEY))?;
    let state = state(p, ledger, config)?;
    let gateway = state.gateway.clone();
    p.route(crate::http::router(state.clone()));
    p.route(crate::http::read_router(state.clone()));
    // Only a process that can reach Razorpay reconciles: another would
    // claim open top-ups it cannot check and push them back.
    if state.gateway.configured() {
        let token = p.shutdown.clone();
        p.spawn(crate::poller::run(state.gateway.clone(), token));
    } else {
        tracing::warn!(
            "Razorpay is not configured (LEDGER_RAZORPAY_KEY_ID, LEDGER_RAZORPAY_KEY_SECRET, \
             LEDGER_RAZORPAY_WEBHOOK_SECRET): this process creates no top-ups, takes no \
             webhooks (they answer unavailable, so Razorpay retries elsewhere) and runs no \
             reconciliation"
        );
    }
    Ok(gateway)
}

/// `GET /v1/topups/{id}` alone, for a process without the gateway role
/// (every process serves the read API).
pub fn reads(p: &mut Process, ledger: &Config, config: &GatewayConfig) -> anyhow::Result<Gateway> {
    let state = state(p, ledger, config)?;
    let gateway = state.gateway.clone();
    p.route(crate::http::read_router(state));
    Ok(gateway)
}

/// The gateway's endpoints in the OpenAPI document, with the top-up range
/// this process accepts.
pub fn openapi_paths(d: &mut Doc, config: &GatewayConfig) {
    use ErrorCode::*;
    let usd_max = config
        .topup_usd_max
        .parse::<rust_decimal::Decimal>()
        .unwrap_or(rust_decimal::Decimal::from(10_000));
    d.set_schema(
        "TopupUsd",
        json!({"type": "string",
        "pattern": TopupUsd::pattern(rust_decimal::Decimal::ONE, usd_max),
        "description": format!("USD from 1.00 to {usd_max} (topup_usd_max), cents at most")}),
    );
    let account = account_param;
    let topup = || {
        param(
            "topup_id",
            "path",
            true,
            json!({"$ref": "#/components/schemas/Id"}),
            "The top-up id (UUID v7); any other value names no top-up",
        )
    };
    let view = d.schema::<TopupView>();
    let topup_links = json!({
        "Topup": {"operationId": "topup", "parameters": {"topup_id": "$response.body#/topup_id"}},
        "Checkout": {"operationId": "checkout",
            "parameters": {"topup_id": "$response.body#/topup_id"}},
    });

    let mut op = Op::new(
        "post",
        "/v1/accounts/{id}/topups",
        "create_topup",
        "Start a top-up: quote, then create the Razorpay order (answers once the order exists)",
    );
    op.params = vec![
        account(),
        param(
            "Idempotency-Key",
            "header",
            false,
            d.schema::<IdempotencyKey>(),
            "Printable ASCII, 1 to 128 characters",
        ),
    ];
    op.body = Some(d.schema::<CreateTopupRequest>());
    op.ok = (201, JSON, view.clone());
    op.errors = vec![
        UnknownAccount,
        UnknownService,
        IdempotencyConflict,
        ConflictRetry,
    ];
    op.links = topup_links;
    d.add(op);

    let mut op = Op::new(
        "post",
        "/v1/topups/{topup_id}/checkout",
        "checkout",
        "Razorpay Checkout's success handler: the status after re-fetching the payment",
    );
    op.params = vec![topup()];
    op.body = Some(d.schema::<CheckoutRequest>());
    op.ok = (200, JSON, view);
    op.errors = vec![UnknownTopup, InvalidSignature, ConflictRetry];
    d.add(op);

    let mut op = Op::new(
        "get",
        "/v1/topups/{topup_id}",
        "topup",
        "A top-up's status (read model; from its log until the projector reaches it)",
    );
    op.params = vec![topup()];
    op.ok = (200, JSON, d.schema::<TopupRow>());
    op.errors = vec![UnknownTopup];
    d.add(op);

    let mut op = Op::new(
        "post",
        "/v1/webhooks/razorpay",
        "razorpay_webhook",
        "Razorpay webhooks: X-Razorpay-Signature over the raw body, de-duplicated on \
         x-razorpay-event-id; unavailable where Razorpay is not configured",
    );
    op.auth = false;
    op.params = vec![
        param(
            crate::webhook::SIGNATURE_HEADER,
            "header",
            true,
            json!({"type": "string", "minLength": 1}),
            "HMAC-SHA256 of the body, hex",
        ),
        param(
            crate::webhook::EVENT_ID_HEADER,
            "header",
            true,
            json!({"type": "string", "minLength": 1}),
            "Razorpay's event id",
        ),
    ];
    op.body = Some(json!({"type": "object"}));
    op.ok = (200, JSON, d.schema::<WebhookReply>());
    op.errors = vec![InvalidSignature];
    d.add(op);
}
