//! Folding events into read-model rows, without I/O.
//!
//! Balances move by postings: every posting whose debit or credit is a
//! customer bucket is one history row (one bucket movement) and one change to
//! that bucket's balance. Reserved credits, totals, daily usage and top-up
//! status come from the events' data. The projector runtime loads the rows a
//! batch touches, folds the batch here, and writes the rows back in the same
//! transaction as its checkpoint.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use ledger_schemas::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The schema versions this code can fold.
pub const SCHEMA_VERSIONS: [u32; 1] = [SCHEMA_VERSION];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BalanceRow {
    pub balance: Decimal,
    pub reserved: Decimal,
    pub granted_total: Decimal,
    pub consumed_total: Decimal,
    pub last_stream_seq: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub stream_seq: i64,
    pub line: i16,
    pub event_id: uuid::Uuid,
    pub account_id: String,
    pub occurred_at: DateTime<Utc>,
    pub kind: &'static str,
    pub service: Option<String>,
    pub bucket: String,
    pub credits_delta: Decimal,
    pub balance_after: Decimal,
    pub reference: Option<String>,
    pub topup_id: Option<uuid::Uuid>,
    pub details: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UsageDelta {
    pub quantity: i64,
    pub credits: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopupRow {
    pub account_id: String,
    /// What the row's `status` is derived from.
    pub progress: ledger_schemas::TopupProgress,
    pub bucket: Option<String>,
    pub amount_usd: Option<Decimal>,
    pub amount_inr_paise: Option<i64>,
    pub fx_rate: Option<Decimal>,
    pub credits: Option<Decimal>,
    pub order_id: Option<String>,
    pub payment_id: Option<String>,
    pub method: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_stream_seq: i64,
}

pub type BalanceKey = (String, String);
pub type UsageKey = (String, String, NaiveDate);

/// Why an event cannot be folded. The projector stops on it rather than
/// skip it: a read model that silently misses events is worse than one that lags.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FoldError {
    #[error(
        "stream seq {seq}: schema_version {version} is not one this projector knows ({known:?})"
    )]
    SchemaVersion {
        seq: u64,
        version: u32,
        known: [u32; 1],
    },
    #[error("stream seq {seq}: the event cannot be read ({reason}); unknown type or shape")]
    Unreadable { seq: u64, reason: String },
    #[error("stream seq {seq}: {reason}")]
    Inconsistent { seq: u64, reason: String },
}

impl FoldError {
    /// The stream seq of the event it is about.
    pub fn seq(&self) -> u64 {
        match self {
            FoldError::SchemaVersion { seq, .. }
            | FoldError::Unreadable { seq, .. }
            | FoldError::Inconsistent { seq, .. } => *seq,
        }
    }
}

/// Decodes one stored event, refusing versions this code does not know.
pub fn decode(seq: u64, payload: &[u8]) -> Result<EventEnvelope, FoldError> {
    // Check the version before the shape: a future version may have changed
    // it. Reading only this field skips the rest without building a value.
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        schema_version: u32,
    }
    let unreadable = |e: serde_json::Error| FoldError::Unreadable {
        seq,
        reason: e.to_string(),
    };
    let version = serde_json::from_slice::<Version>(payload)
        .map_err(unreadable)?
        .schema_version;
    if !SCHEMA_VERSIONS.contains(&version) {
        return Err(FoldError::SchemaVersion {
            seq,
            version,
            known: SCHEMA_VERSIONS,
        });
    }
    serde_json::from_slice(payload).map_err(unreadable)
}

/// The (account, bucket) rows an event's fold reads and writes.
pub fn balance_keys(e: &EventEnvelope, out: &mut Vec<BalanceKey>) {
    for p in &e.postings {
        for side in [&p.debit, &p.credit] {
            if let LedgerAccount::Customer(a, b) = side {
                out.push((a.to_string(), b.to_string()));
            }
        }
    }
    let account = e.account_id.to_string();
    match &e.body {
        EventData::AccountOpened(_) => out.push((account, Bucket::general().to_string())),
        EventData::CreditsReserved(r) => out.push((account, r.service.to_string())),
        EventData::ReservationCaptured(r) => out.push((account, r.service.to_string())),
        EventData::ReservationReleased(r) => out.push((account, r.service.to_string())),
        _ => {}
    }
}

/// The accounts read models: balances, history, daily usage.
#[derive(Debug, Default)]
pub struct AccountsFold {
    /// Every row the batch touches, loaded before folding.
    pub balances: HashMap<BalanceKey, BalanceRow>,
    /// Rows changed by this batch.
    pub dirty: std::collections::BTreeSet<BalanceKey>,
    pub history: Vec<HistoryRow>,
    pub usage: HashMap<UsageKey, UsageDelta>,
}

fn service_of(data: &EventData) -> Option<String> {
    match data {
        EventData::CreditsConsumed(e) => Some(e.service.to_string()),
        EventData::CreditsReserved(e) => Some(e.service.to_string()),
        EventData::ReservationCaptured(e) => Some(e.service.to_string()),
        EventData::ReservationReleased(e) => Some(e.service.to_string()),
        EventData::UsageRejected(e) => Some(e.service.to_string()),
        _ => None,
    }
}

fn reference_of(data: &EventData) -> (Option<String>, Option<uuid::Uuid>, Value) {
    match data {
        EventData::CreditsGranted(e) => (
            e.payment_id.clone(),
            e.topup_id.map(|t| t.uuid()),
            json!({"source": e.source, "reason": e.reason}),
        ),
        EventData::CreditsConsumed(e) => (
            Some(e.usage_id.to_string()),
            None,
            json!({"quantity": e.quantity, "unit_price": e.unit_price,
                   "rate_card_version": e.rate_card_version}),
        ),
        EventData::CreditsReserved(e) => (
            Some(e.reservation_id.to_string()),
            None,
            json!({"expires_at": e.expires_at}),
        ),
        EventData::ReservationCaptured(e) => (
            Some(e.reservation_id.to_string()),
            None,
            json!({"captured": e.credits}),
        ),
        EventData::ReservationReleased(e) => (
            Some(e.reservation_id.to_string()),
            None,
            json!({"reason": e.reason}),
        ),
        EventData::CreditsTransferred(e) => (
            None,
            None,
            json!({"from_bucket": e.from_bucket, "to_bucket": e.to_bucket}),
        ),
        EventData::CreditsReversed(e) => (
            Some(e.refund_id.clone()),
            Some(e.topup_id.uuid()),
            json!({"payment_id": e.payment_id}),
        ),
        EventData::CreditsAdjusted(e) => (None, None, json!({"reason": e.reason})),
        _ => (None, None, Value::Null),
    }
}

impl AccountsFold {
    fn row(&mut self, key: &BalanceKey) -> &mut BalanceRow {
        self.dirty.insert(key.clone());
        self.balances.entry(key.clone()).or_default()
    }

    /// Folds one event (its rows must be in `balances`, or be new).
    pub fn apply(&mut self, seq: u64, e: &EventEnvelope) -> Result<(), FoldError> {
        let seq_i = seq as i64;
        let at = e.recorded_at.datetime();
        let account = e.account_id.to_string();
        let service = service_of(&e.body);
        let (reference, topup_id, details) = reference_of(&e.body);
        let mut line: i16 = 0;
        for p in &e.postings {
            for (side, sign) in [(&p.debit, -Decimal::ONE), (&p.credit, Decimal::ONE)] {
                let LedgerAccount::Customer(a, b) = side else {
                    continue;
                };
                if a != &e.account_id {
                    return Err(FoldError::Inconsistent {
                        seq,
                        reason: format!(
                            "a posting names account {a} on an event of {}",
                            e.account_id
                        ),
                    });
                }
                let key = (account.clone(), b.to_string());
                let delta = sign * p.amount.get();
                let row = self.row(&key);
                row.balance += delta;
                row.last_stream_seq = seq_i;
                row.updated_at = at;
                let balance_after = row.balance;
                self.history.push(HistoryRow {
                    stream_seq: seq_i,
                    line,
                    event_id: e.event_id.uuid(),
                    account_id: account.clone(),
                    occurred_at: e.occurred_at.datetime(),
                    kind: e.event_type().as_str(),
                    service: service.clone(),
                    bucket: b.to_string(),
                    credits_delta: delta,
                    balance_after,
                    reference: reference.clone(),
                    topup_id,
                    details: details.clone(),
                });
                line += 1;
            }
        }
        let bump = |fold: &mut Self, bucket: &str, f: &dyn Fn(&mut BalanceRow)| {
            let row = fold.row(&(account.clone(), bucket.to_owned()));
            f(row);
            row.last_stream_seq = seq_i;
            row.updated_at = at;
        };
        match &e.body {
            // An opened account has a `general` row at once, so its
            // balances read as zero rather than unknown.
            EventData::AccountOpened(_) => bump(self, "general", &|_| {}),
            EventData::CreditsGranted(g) => {
                let c = g.credits.get();
                bump(self, g.bucket.as_str(), &|r| r.granted_total += c);
            }
            EventData::CreditsConsumed(c) => {
                for d in &c.drawn {
                    let v = d.credits.get();
                    bump(self, d.bucket.as_str(), &|r| r.consumed_total += v);
                }
                let day = e.occurred_at.datetime().date_naive();
                let u = self
                    .usage
                    .entry((account.clone(), c.service.to_string(), day))
                    .or_default();
                u.quantity += c.quantity.get() as i64;
                u.credits += c.credits.get();
            }
            EventData::CreditsReserved(r) => {
                let v = r.credits.get();
                bump(self, r.service.as_str(), &|row| row.reserved += v);
            }
            EventData::ReservationCaptured(r) => {
                let returned: Decimal = r.returned.iter().map(|d| d.credits.get()).sum();
                let held = r.credits.get() + returned;
                bump(self, r.service.as_str(), &|row| row.reserved -= held);
                for d in &r.drawn {
                    let v = d.credits.get();
                    bump(self, d.bucket.as_str(), &|row| row.consumed_total += v);
                }
                let day = e.occurred_at.datetime().date_naive();
                let u = self
                    .usage
                    .entry((account.clone(), r.service.to_string(), day))
                    .or_default();
                u.credits += r.credits.get();
            }
            EventData::ReservationReleased(r) => {
                let v = r.credits.get();
                bump(self, r.service.as_str(), &|row| row.reserved -= v);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The top-ups read model.
#[derive(Debug, Default)]
pub struct TopupsFold {
    pub rows: HashMap<uuid::Uuid, TopupRow>,
    pub dirty: std::collections::BTreeSet<uuid::Uuid>,
}

/// The top-up an event concerns, if any: every event on a top-up subject.
pub fn topup_of(e: &EventEnvelope) -> Option<uuid::Uuid> {
    e.body.topup_id().map(|t| t.uuid())
}

impl TopupsFold {
    pub fn apply(&mut self, seq: u64, e: &EventEnvelope) -> Result<(), FoldError> {
        let Some(id) = topup_of(e) else {
            return Ok(());
        };
        let at = e.recorded_at.datetime();
        if let EventData::TopupQuoted(q) = &e.body {
            let rate = q.fx_rate.parse::<Decimal>().ok();
            self.rows.insert(
                id,
                TopupRow {
                    account_id: e.account_id.to_string(),
                    progress: Default::default(),
                    bucket: Some(q.bucket.to_string()),
                    amount_usd: Some(q.amount_usd.get()),
                    amount_inr_paise: Some(q.amount_inr_paise.get()),
                    fx_rate: rate,
                    credits: Some(q.credits.get()),
                    order_id: None,
                    payment_id: None,
                    method: None,
                    created_at: at,
                    updated_at: at,
                    last_stream_seq: seq as i64,
                },
            );
            self.dirty.insert(id);
            return Ok(());
        }
        let Some(row) = self.rows.get_mut(&id) else {
            return Err(FoldError::Inconsistent {
                seq,
                reason: format!("{} for top-up {id}, which was never quoted", e.event_type()),
            });
        };
        match &e.body {
            EventData::GatewayOrderCreated(o) => row.order_id = Some(o.order_id.clone()),
            EventData::PaymentObserved(p) if row.payment_id.is_none() => {
                row.method = p.method.clone().or(row.method.take());
            }
            EventData::PaymentFailed(p) if row.payment_id.is_none() => {
                row.method = p.method.clone().or(row.method.take());
            }
            EventData::PaymentCaptured(p) => {
                row.payment_id = Some(p.payment_id.clone());
                row.method = Some(p.method.clone());
            }
            _ => {}
        }
        row.progress.apply(&e.body);
        row.updated_at = at;
        row.last_stream_seq = seq as i64;
        self.dirty.insert(id);
        Ok(())
    }
}
