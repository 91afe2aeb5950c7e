//! Reads for dashboards and the console: balances, history, top-ups, and
//! where each projector is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger_schemas::views::{BalancesView, HistoryItem, HistoryPage, ServiceView, TopupRow};
use ledger_schemas::{AccountId, SignedCredits, Timestamp, TopupStatus};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A row holds what the ledger never writes.
    #[error("a read-model row is out of range: {0}")]
    Corrupt(String),
}

fn signed(d: Decimal) -> Result<SignedCredits, QueryError> {
    SignedCredits::new(d).map_err(|e| QueryError::Corrupt(e.to_string()))
}

/// The accounts projector's checkpoint as a one-row relation `c(as_of_seq)`:
/// read in the same statement as the rows, so both come from one snapshot
/// (a batch's rows and its checkpoint commit together).
const AS_OF: &str = "(SELECT coalesce((SELECT stream_seq FROM ledger.projection_checkpoints \
                     WHERE projection = 'accounts'), 0) AS as_of_seq) c";

/// The stream seq the read models reflect, and the balances of `account`
/// (every service in `services` shown) as of it, or `None` when the read
/// model has not seen the account: both from one snapshot.
pub async fn balances(
    c: &impl GenericClient,
    account: &AccountId,
    services: &[String],
) -> Result<(u64, Option<BalancesView>), QueryError> {
    let rows = c
        .query(
            &format!(
                "SELECT c.as_of_seq, b.bucket, b.balance, b.reserved FROM {AS_OF} \
                 LEFT JOIN ledger.service_balances b ON b.account_id = $1"
            ),
            &[&account.as_str()],
        )
        .await?;
    // The checkpoint relation has one row: so has the join, at least.
    let as_of_seq = rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64;
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<_, Option<String>>(1).is_some())
        .collect();
    if rows.is_empty() {
        return Ok((as_of_seq, None));
    }
    let mut buckets: BTreeMap<String, Decimal> = std::iter::once("general".to_owned())
        .chain(services.iter().cloned())
        .map(|b| (b, Decimal::ZERO))
        .collect();
    let mut reserved: BTreeMap<String, Decimal> = BTreeMap::new();
    for r in &rows {
        let bucket: String = r.get(1);
        let balance: Decimal = r.get(2);
        reserved.insert(bucket.clone(), r.get(3));
        buckets.insert(bucket, balance.normalize());
    }
    let in_debt = buckets
        .values()
        .any(|b| b.is_sign_negative() && !b.is_zero());
    let general = buckets["general"].max(Decimal::ZERO);
    let mut views = BTreeMap::new();
    for s in services {
        let own = buckets
            .get(s)
            .copied()
            .unwrap_or_default()
            .max(Decimal::ZERO);
        let spendable = if in_debt {
            Decimal::ZERO
        } else {
            own + general
        };
        let reserved = reserved.get(s).copied().unwrap_or_default();
        let view = ServiceView {
            spendable: spendable.max(Decimal::ZERO).normalize().to_string(),
            reserved: reserved.max(Decimal::ZERO).normalize().to_string(),
        };
        views.insert(s.clone(), view);
    }
    let mut signed_buckets = BTreeMap::new();
    for (b, v) in buckets {
        signed_buckets.insert(b, signed(v)?);
    }
    Ok((
        as_of_seq,
        Some(BalancesView {
            account_id: account.clone(),
            buckets: signed_buckets,
            services: views,
            as_of_seq,
        }),
    ))
}

/// History filters; a cursor carries them, so every page has the same ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

impl HistoryFilter {
    pub fn is_empty(&self) -> bool {
        *self == HistoryFilter::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    seq: i64,
    line: i16,
    filter: HistoryFilter,
}

fn encode_cursor(c: &Cursor) -> String {
    hex::encode(serde_json::to_vec(c).expect("cursors serialise"))
}

fn decode_cursor(s: &str) -> Result<Cursor, QueryError> {
    let invalid = || QueryError::Invalid {
        field: "cursor",
        rule: "must be a next_cursor returned by this endpoint".into(),
    };
    let bytes = hex::decode(s).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// One page of `account`'s history, newest first (keyset on stream order).
pub async fn history(
    c: &impl GenericClient,
    account: &str,
    filter: HistoryFilter,
    limit: u32,
    cursor: Option<&str>,
) -> Result<HistoryPage, QueryError> {
    let (filter, after) = match cursor {
        Some(raw) => {
            let cur = decode_cursor(raw)?;
            if !filter.is_empty() && filter != cur.filter {
                return Err(QueryError::Invalid {
                    field: "cursor",
                    rule: "the filters must stay those of the first page".into(),
                });
            }
            (cur.filter, Some((cur.seq, cur.line)))
        }
        None => (filter, None),
    };
    let (after_seq, after_line) = (after.map(|a| a.0), after.map(|a| a.1));
    let fetch = i64::from(limit) + 1;
    let rows = c
        .query(
            &format!(
                "SELECT h.stream_seq, h.line, h.event_id, h.occurred_at, h.kind, h.service, \
                 h.bucket, h.credits_delta, h.balance_after, h.reference, h.topup_id, h.details, \
                 c.as_of_seq FROM {AS_OF} LEFT JOIN LATERAL ( \
                 SELECT * FROM ledger.credit_history \
                 WHERE account_id = $1 \
                   AND ($2::text IS NULL OR service = $2) \
                   AND ($3::text IS NULL OR kind = $3) \
                   AND ($4::timestamptz IS NULL OR occurred_at >= $4) \
                   AND ($5::timestamptz IS NULL OR occurred_at < $5) \
                   AND ($6::int8 IS NULL OR (stream_seq, line) < ($6, $7::int2)) \
                 ORDER BY stream_seq DESC, line DESC LIMIT $8) h ON true \
                 ORDER BY h.stream_seq DESC, h.line DESC"
            ),
            &[
                &account,
                &filter.service,
                &filter.kind,
                &filter.from,
                &filter.to,
                &after_seq,
                &after_line,
                &fetch,
            ],
        )
        .await?;
    let as_of_seq = rows.first().map_or(0, |r| r.get::<_, i64>(12));
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<_, Option<i64>>(0).is_some())
        .collect();
    let more = rows.len() as i64 > i64::from(limit);
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in rows.iter().take(limit as usize) {
        let seq: i64 = r.get(0);
        let line: i16 = r.get(1);
        last = Some((seq, line));
        let occurred: DateTime<Utc> = r.get(3);
        items.push(HistoryItem {
            stream_seq: seq as u64,
            line: line as u16,
            event_id: r.get::<_, uuid::Uuid>(2).to_string(),
            occurred_at: Timestamp::from_datetime(occurred),
            kind: r.get(4),
            service: r.get(5),
            bucket: r.get(6),
            credits_delta: signed(r.get(7))?,
            balance_after: signed(r.get(8))?,
            reference: r.get(9),
            topup_id: r.get::<_, Option<uuid::Uuid>>(10).map(|t| t.to_string()),
            details: r.get(11),
        });
    }
    let next_cursor = match (more, last) {
        (true, Some((seq, line))) => Some(encode_cursor(&Cursor { seq, line, filter })),
        _ => None,
    };
    Ok(HistoryPage {
        items,
        next_cursor,
        as_of_seq: as_of_seq as u64,
    })
}

/// A top-up's read-model row.
pub async fn topup(
    c: &impl GenericClient,
    topup_id: uuid::Uuid,
) -> Result<Option<TopupRow>, QueryError> {
    let row = c
        .query_opt(
            "SELECT topup_id, account_id, status, bucket, amount_usd, amount_inr_paise, fx_rate, \
             credits, order_id, payment_id, method, created_at, updated_at \
             FROM ledger.topups WHERE topup_id = $1",
            &[&topup_id],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let dec = |i: usize| {
        r.get::<_, Option<Decimal>>(i)
            .map(|d| d.normalize().to_string())
    };
    let t = |i: usize| Timestamp::from_datetime(r.get::<_, DateTime<Utc>>(i));
    let status: String = r.get(2);
    let status = TopupStatus::parse(&status)
        .ok_or_else(|| QueryError::Corrupt(format!("top-up status '{status}'")))?;
    Ok(Some(TopupRow {
        topup_id: r.get::<_, uuid::Uuid>(0).to_string(),
        account_id: r.get(1),
        status,
        bucket: r.get(3),
        amount_usd: dec(4),
        amount_inr_paise: r.get(5),
        fx_rate: dec(6),
        credits: dec(7),
        order_id: r.get(8),
        transaction_id: r.get(9),
        method: r.get(10),
        created_at: t(11),
        updated_at: t(12),
    }))
}

/// Where a projector is (from PostgreSQL, whichever process runs it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRow {
    pub projection: String,
    pub stream_seq: i64,
    pub updated_at: DateTime<Utc>,
    /// Set when it stopped on a genuine event it cannot read.
    pub stopped: Option<Stopped>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stopped {
    pub stream_seq: i64,
    pub reason: String,
}

/// Each projector's checkpoint, and whether it stopped.
pub async fn checkpoints(c: &impl GenericClient) -> Result<Vec<CheckpointRow>, QueryError> {
    let rows = c
        .query(
            "SELECT projection, stream_seq, updated_at, stopped_at_seq, stopped_reason \
             FROM ledger.projection_checkpoints ORDER BY projection",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| CheckpointRow {
            projection: r.get(0),
            stream_seq: r.get(1),
            updated_at: r.get(2),
            stopped: r.get::<_, Option<i64>>(3).map(|seq| Stopped {
                stream_seq: seq,
                reason: r.get::<_, Option<String>>(4).unwrap_or_default(),
            }),
        })
        .collect())
}

/// Messages on `LEDGER` the projectors skipped as not the ledger's.
pub async fn quarantined(c: &impl GenericClient) -> Result<i64, QueryError> {
    Ok(c.query_one("SELECT count(*) FROM ledger.quarantine", &[])
        .await?
        .get(0))
}
