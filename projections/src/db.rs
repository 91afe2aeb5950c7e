//! PostgreSQL side of the projections: the pool, migrations, loading the rows
//! a batch touches, and writing a folded batch (history by binary COPY).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::pin_mut;
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::fold::{AccountsFold, BalanceKey, BalanceRow, TopupRow, TopupsFold};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Connections a pool holds at most.
pub const POOL_CONNECTIONS_MAX: usize = 16;

/// A connection of its own, outside the pool: a session advisory lock taken
/// on it lasts exactly as long as it. The connection closes when the guard
/// drops. `url` is read as [`crate::pg::Target::parse`] reads it (TLS too).
pub async fn own_connection(
    url: &str,
) -> anyhow::Result<(tokio_postgres::Client, ConnectionGuard)> {
    crate::pg::connect(url).await
}

pub use crate::pg::ConnectionGuard;

/// Takes the session advisory lock `key` when no other session holds it.
pub async fn try_advisory_lock(
    c: &tokio_postgres::Client,
    key: i64,
) -> Result<bool, tokio_postgres::Error> {
    Ok(c.query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .get(0))
}

/// A pool for `url` (a `postgres://` URL or a `key=value` string, with
/// libpq's `sslmode` and `sslrootcert`: see [`crate::pg`]).
/// A read-only transaction that sees one snapshot throughout.
pub async fn snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

pub fn pool(url: &str) -> anyhow::Result<Pool> {
    let target = crate::pg::Target::parse(url)?;
    let manager = Manager::from_config(
        target.config().clone(),
        target.tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(POOL_CONNECTIONS_MAX)
        .build()?)
}

/// Applies the read models' migrations (versioned; safe to run again).
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    migrate_on(&mut conn).await
}

/// The same on a given connection (the caller may hold a lock on it).
pub async fn migrate_on(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    embedded::migrations::runner()
        // Schema-qualified, for the reason given in the command side's migrate.
        .set_migration_table_name("public.ledger_read_model_migrations")
        .run_async(client)
        .await?;
    Ok(())
}

/// The tables one fold writes: the live ones, or a rebuild's shadows.
#[derive(Debug, Clone)]
pub struct Tables {
    pub balances: String,
    pub history: String,
    pub usage: String,
    pub topups: String,
}

impl Tables {
    pub fn live() -> Self {
        Self::with_suffix("")
    }

    pub fn shadow() -> Self {
        Self::with_suffix("_rebuild")
    }

    fn with_suffix(s: &str) -> Self {
        Self {
            balances: format!("ledger.service_balances{s}"),
            history: format!("ledger.credit_history{s}"),
            usage: format!("ledger.usage_daily{s}"),
            topups: format!("ledger.topups{s}"),
        }
    }
}

/// Creates the checkpoint row at 0 if missing, so that its row lock always
/// orders a projector's batches against a rebuild's swap.
pub async fn ensure_checkpoint(
    c: &impl GenericClient,
    projection: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO ledger.projection_checkpoints (projection, stream_seq) VALUES ($1, 0) \
         ON CONFLICT (projection) DO NOTHING",
        &[&projection],
    )
    .await?;
    Ok(())
}

/// The checkpoint of `projection`, locking its row until the transaction ends.
pub async fn checkpoint_for_update(
    c: &impl GenericClient,
    projection: &str,
) -> Result<i64, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT stream_seq FROM ledger.projection_checkpoints WHERE projection = $1 FOR UPDATE",
            &[&projection],
        )
        .await?;
    Ok(row.map(|r| r.get(0)).unwrap_or(0))
}

pub async fn set_checkpoint(
    c: &impl GenericClient,
    projection: &str,
    seq: i64,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO ledger.projection_checkpoints (projection, stream_seq, updated_at) \
         VALUES ($1, $2, now()) ON CONFLICT (projection) \
         DO UPDATE SET stream_seq = EXCLUDED.stream_seq, updated_at = now(), \
         stopped_at_seq = NULL, stopped_reason = NULL",
        &[&projection, &seq],
    )
    .await?;
    Ok(())
}

/// Records that `projection` stopped on the genuine event `seq`, which it
/// cannot read (cleared by the next [`set_checkpoint`]).
pub async fn set_stopped(
    c: &impl GenericClient,
    projection: &str,
    seq: u64,
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE ledger.projection_checkpoints SET stopped_at_seq = $2, stopped_reason = $3 \
         WHERE projection = $1",
        &[&projection, &(seq as i64), &reason],
    )
    .await?;
    Ok(())
}

/// Loads the balance rows of `keys` that exist.
pub async fn load_balances(
    c: &impl GenericClient,
    t: &Tables,
    keys: &[BalanceKey],
) -> Result<HashMap<BalanceKey, BalanceRow>, tokio_postgres::Error> {
    let accounts: Vec<&str> = keys.iter().map(|(a, _)| a.as_str()).collect();
    let buckets: Vec<&str> = keys.iter().map(|(_, b)| b.as_str()).collect();
    let rows = c
        .query(
            &format!(
                "SELECT s.account_id, s.bucket, s.balance, s.reserved, s.granted_total, \
                 s.consumed_total, s.last_stream_seq, s.updated_at \
                 FROM unnest($1::text[], $2::text[]) AS q(a, b) \
                 JOIN {} s ON s.account_id = q.a AND s.bucket = q.b",
                t.balances
            ),
            &[&accounts, &buckets],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                BalanceRow {
                    balance: r.get(2),
                    reserved: r.get(3),
                    granted_total: r.get(4),
                    consumed_total: r.get(5),
                    last_stream_seq: r.get(6),
                    updated_at: r.get(7),
                },
            )
        })
        .collect())
}

/// Writes a folded batch of the accounts models.
pub async fn write_accounts(
    c: &tokio_postgres::Transaction<'_>,
    t: &Tables,
    fold: &AccountsFold,
) -> Result<(), tokio_postgres::Error> {
    copy_history(c, t, &fold.history).await?;
    if !fold.dirty.is_empty() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut bal: Vec<Decimal> = Vec::new();
        let mut res: Vec<Decimal> = Vec::new();
        let mut gra: Vec<Decimal> = Vec::new();
        let mut con: Vec<Decimal> = Vec::new();
        let mut seq: Vec<i64> = Vec::new();
        let mut upd: Vec<DateTime<Utc>> = Vec::new();
        for key in &fold.dirty {
            let r = &fold.balances[key];
            a.push(key.0.as_str());
            b.push(key.1.as_str());
            bal.push(r.balance);
            res.push(r.reserved);
            gra.push(r.granted_total);
            con.push(r.consumed_total);
            seq.push(r.last_stream_seq);
            upd.push(r.updated_at);
        }
        c.execute(
            &format!(
                "INSERT INTO {} (account_id, bucket, balance, reserved, granted_total, \
                 consumed_total, last_stream_seq, updated_at) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], \
                 $5::numeric[], $6::numeric[], $7::int8[], $8::timestamptz[]) \
                 ON CONFLICT (account_id, bucket) DO UPDATE SET balance = EXCLUDED.balance, \
                 reserved = EXCLUDED.reserved, granted_total = EXCLUDED.granted_total, \
                 consumed_total = EXCLUDED.consumed_total, \
                 last_stream_seq = EXCLUDED.last_stream_seq, updated_at = EXCLUDED.updated_at",
                t.balances
            ),
            &[&a, &b, &bal, &res, &gra, &con, &seq, &upd],
        )
        .await?;
    }
    if !fold.usage.is_empty() {
        let mut a = Vec::new();
        let mut s = Vec::new();
        let mut d = Vec::new();
        let mut q: Vec<i64> = Vec::new();
        let mut cr: Vec<Decimal> = Vec::new();
        for ((acct, svc, day), u) in &fold.usage {
            a.push(acct.as_str());
            s.push(svc.as_str());
            d.push(*day);
            q.push(u.quantity);
            cr.push(u.credits);
        }
        c.execute(
            &format!(
                "INSERT INTO {t} AS u (account_id, service, day, quantity, credits) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::int8[], $5::numeric[]) \
                 ON CONFLICT (account_id, service, day) DO UPDATE SET \
                 quantity = u.quantity + EXCLUDED.quantity, credits = u.credits + EXCLUDED.credits",
                t = t.usage
            ),
            &[&a, &s, &d, &q, &cr],
        )
        .await?;
    }
    Ok(())
}

const HISTORY_COLUMNS: &str = "stream_seq, line, event_id, account_id, occurred_at, kind, \
    service, bucket, credits_delta, balance_after, reference, topup_id, details";
const HISTORY_TYPES: [Type; 13] = [
    Type::INT8,
    Type::INT2,
    Type::UUID,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::TEXT,
    Type::UUID,
    Type::JSONB,
];

/// History rows by binary COPY (the bulk path of both live batches and rebuilds).
pub async fn copy_history(
    c: &tokio_postgres::Transaction<'_>,
    t: &Tables,
    rows: &[crate::fold::HistoryRow],
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = c
        .copy_in(&format!(
            "COPY {} ({HISTORY_COLUMNS}) FROM STDIN (FORMAT binary)",
            t.history
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &HISTORY_TYPES);
    pin_mut!(writer);
    for r in rows {
        let values: [&(dyn ToSql + Sync); 13] = [
            &r.stream_seq,
            &r.line,
            &r.event_id,
            &r.account_id,
            &r.occurred_at,
            &r.kind,
            &r.service,
            &r.bucket,
            &r.credits_delta,
            &r.balance_after,
            &r.reference,
            &r.topup_id,
            &r.details,
        ];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}

pub async fn load_topups(
    c: &impl GenericClient,
    t: &Tables,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, TopupRow>, tokio_postgres::Error> {
    let rows = c
        .query(
            &format!(
                "SELECT topup_id, account_id, bucket, amount_usd, amount_inr_paise, \
                 fx_rate, credits, order_id, payment_id, method, created_at, updated_at, \
                 last_stream_seq, progress FROM {} WHERE topup_id = ANY($1)",
                t.topups
            ),
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                TopupRow {
                    account_id: r.get(1),
                    bucket: r.get(2),
                    amount_usd: r.get(3),
                    amount_inr_paise: r.get(4),
                    fx_rate: r.get(5),
                    credits: r.get(6),
                    order_id: r.get(7),
                    payment_id: r.get(8),
                    method: r.get(9),
                    created_at: r.get(10),
                    updated_at: r.get(11),
                    last_stream_seq: r.get(12),
                    progress: serde_json::from_value(r.get(13)).unwrap_or_default(),
                },
            )
        })
        .collect())
}

pub async fn write_topups(
    c: &impl GenericClient,
    t: &Tables,
    fold: &TopupsFold,
) -> Result<(), tokio_postgres::Error> {
    for id in &fold.dirty {
        let r = &fold.rows[id];
        c.execute(
            &format!(
                "INSERT INTO {} (topup_id, account_id, status, bucket, amount_usd, \
                 amount_inr_paise, fx_rate, credits, order_id, payment_id, method, created_at, \
                 updated_at, last_stream_seq, progress) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (topup_id) DO UPDATE SET status = EXCLUDED.status, \
                 order_id = EXCLUDED.order_id, payment_id = EXCLUDED.payment_id, \
                 method = EXCLUDED.method, updated_at = EXCLUDED.updated_at, \
                 last_stream_seq = EXCLUDED.last_stream_seq, progress = EXCLUDED.progress",
                t.topups
            ),
            &[
                id,
                &r.account_id,
                &r.progress.status().as_str(),
                &r.bucket,
                &r.amount_usd,
                &r.amount_inr_paise,
                &r.fx_rate,
                &r.credits,
                &r.order_id,
                &r.payment_id,
                &r.method,
                &r.created_at,
                &r.updated_at,
                &r.last_stream_seq,
                &serde_json::to_value(&r.progress).expect("progress serialises"),
            ],
        )
        .await?;
    }
    Ok(())
}
