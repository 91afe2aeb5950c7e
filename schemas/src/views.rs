//! The replies of the HTTP read endpoints (balances, history, top-ups,
//! projectors, health), typed so that the OpenAPI document's schemas are
//! generated from what the handlers serialise.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::topup::TopupStatus;
use crate::values::*;

/// `GET /v1/accounts/{id}/balances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BalancesView {
    pub account_id: AccountId,
    /// Every configured bucket (zero when untouched), plus any other the
    /// account holds.
    pub buckets: BTreeMap<String, SignedCredits>,
    /// Per configured service: what it may spend (its bucket plus
    /// `general`, nothing while any bucket is in debt) and what it holds
    /// reserved.
    pub services: BTreeMap<String, ServiceView>,
    /// The stream seq the view reflects, read in the same snapshot as its
    /// rows: a write that landed at seq S is in it once `as_of_seq >= S`.
    pub as_of_seq: u64,
}

/// Amounts that may exceed one value's range (sums of buckets), as
/// decimal strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceView {
    #[schemars(pattern(DECIMAL_PATTERN))]
    pub spendable: String,
    #[schemars(pattern(DECIMAL_PATTERN))]
    pub reserved: String,
}

/// A non-negative decimal string, any size.
pub const DECIMAL_PATTERN: &str = "^(0|[1-9][0-9]*)(\\.[0-9]+)?$";

/// `GET /v1/accounts/{id}/history`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    /// The next (older) page's cursor; `null` on the last page.
    pub next_cursor: Option<String>,
    /// The stream seq the page reflects (same snapshot as its rows).
    pub as_of_seq: u64,
}

/// One movement of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryItem {
    pub stream_seq: u64,
    /// Which of the event's movements (an event may move several buckets).
    pub line: u16,
    pub event_id: String,
    pub occurred_at: Timestamp,
    /// The event type.
    pub kind: String,
    pub service: Option<String>,
    pub bucket: String,
    pub credits_delta: SignedCredits,
    pub balance_after: SignedCredits,
    /// The payment's id for a top-up's credits; otherwise what the caller
    /// named the movement by (a usage id, a reason).
    pub reference: Option<String>,
    pub topup_id: Option<String>,
    /// The event's own data, for whoever needs more.
    pub details: Option<serde_json::Value>,
}

/// `GET /v1/topups/{topup_id}`: the top-up's read-model row (or, before
/// the projector reached it, the same fields from its own log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopupRow {
    pub topup_id: String,
    pub account_id: String,
    pub status: TopupStatus,
    pub bucket: Option<String>,
    pub amount_usd: Option<String>,
    pub amount_inr_paise: Option<i64>,
    pub fx_rate: Option<String>,
    pub credits: Option<String>,
    pub order_id: Option<String>,
    /// The Razorpay payment id of the captured payment.
    pub transaction_id: Option<String>,
    /// Razorpay's method: `upi`, `card`, `netbanking`, `wallet`.
    pub method: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A top-up as creating it, or its checkout callback, answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopupView {
    pub topup_id: String,
    pub account_id: String,
    pub status: TopupStatus,
    pub bucket: String,
    pub amount_usd: UsdAmount,
    pub amount_inr_paise: i64,
    /// INR per USD actually used.
    pub fx_rate: String,
    pub fx_source: String,
    pub quote_id: String,
    pub quote_expires_at: Timestamp,
    pub credits: Credits,
    pub transaction_id: Option<String>,
    pub method: Option<String>,
    pub razorpay: RazorpayCheckout,
    pub created_at: Timestamp,
}

/// What Razorpay Checkout is opened with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RazorpayCheckout {
    pub key_id: Option<String>,
    pub order_id: Option<String>,
}

/// `POST /v1/webhooks/razorpay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookReply {
    pub status: WebhookOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    Accepted,
    /// Its `x-razorpay-event-id` was seen before.
    Duplicate,
}

/// `GET /v1/ops/projections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectionsView {
    pub projections: Vec<ProjectionStatus>,
}

/// Where one projector is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectionStatus {
    pub projection: String,
    pub checkpoint: u64,
    pub stream_head: u64,
    pub lag: u64,
    pub updated_at: Option<Timestamp>,
    /// Set when it stopped on a genuine event it cannot read.
    pub stopped: Option<ProjectorStop>,
    /// Messages on `LEDGER` the ledger did not write, skipped by every
    /// reader (rows of `ledger.quarantine`).
    pub quarantined: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectorStop {
    pub stream_seq: u64,
    pub reason: String,
}

/// `GET /readyz` when NATS and PostgreSQL answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    /// `degraded`: serving, but a projector stopped (named in `stopped`).
    pub status: ReadyStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<StoppedProjector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StoppedProjector {
    pub projector: String,
    pub stream_seq: u64,
    pub reason: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
}
