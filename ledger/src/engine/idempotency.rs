//! Idempotency: a repeated key returns the original outcome, never a second
//! effect, for the configured retention (7 days by default), across restarts
//! and processes.
//!
//! Three layers, checked in order:
//! 1. each account writer's recent keys in memory (bounded), rebuilt from the
//!    log when the account is loaded: every event carries its key and the
//!    hash of its request, and its reply is recomputed by replay;
//! 2. `ledger_cmd.idempotency` in PostgreSQL, which holds every outcome for
//!    the retention, and is the only home of refusals (they leave no event);
//! 3. the expected-sequence check: two processes deciding the same key
//!    concurrently cannot both append, the loser reloads and finds the key.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use ledger_schemas::{AccountId, ErrorBody, ErrorCode, IdempotencyKey};
use tokio::sync::mpsc;

use super::Outcome;

/// An outcome remembered under a key, with the hash of the request that made it.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub request_hash: String,
    pub outcome: Outcome,
}

impl Remembered {
    /// The answer to a repeat of the key with a request hashing to `hash`.
    pub fn answer(&self, hash: &str) -> Outcome {
        if self.request_hash == hash {
            self.outcome.clone()
        } else {
            Outcome::Refused(Arc::new(ErrorBody::new(
                ErrorCode::IdempotencyConflict,
                "This idempotency key was already used for a different request.",
            )))
        }
    }
}

/// One account's recent keys, oldest dropped first past the bound.
#[derive(Debug)]
pub struct KeyCache {
    map: HashMap<IdempotencyKey, Remembered>,
    order: VecDeque<IdempotencyKey>,
    max: usize,
}

impl KeyCache {
    pub fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    pub fn get(&self, key: &IdempotencyKey) -> Option<&Remembered> {
        self.map.get(key)
    }

    pub fn insert(&mut self, key: IdempotencyKey, r: Remembered) {
        if self.map.insert(key.clone(), r).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.max {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// A row of `ledger_cmd.idempotency`.
#[derive(Debug, Clone)]
pub struct Row {
    pub account_id: AccountId,
    pub key: IdempotencyKey,
    pub request_hash: String,
    pub outcome: Outcome,
    pub stream_seq: Option<u64>,
}

/// Looks up `keys` of one account.
pub async fn lookup(
    pool: &Pool,
    account: &AccountId,
    keys: &[&IdempotencyKey],
) -> anyhow::Result<Vec<(IdempotencyKey, Remembered)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let rows = client
        .query(
            "SELECT key, request_hash, outcome::text, refused FROM ledger_cmd.idempotency \
             WHERE account_id = $1 AND key = ANY($2)",
            &[&account.as_str(), &names],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let key = IdempotencyKey::parse(r.get::<_, String>(0))?;
            let text: String = r.get(2);
            let outcome = Outcome::from_json(&text, r.get(3))?;
            Ok((
                key,
                Remembered {
                    request_hash: r.get(1),
                    outcome,
                },
            ))
        })
        .collect()
}

/// Inserts rows; a key already there keeps its first outcome.
pub async fn insert(pool: &Pool, rows: &[Row]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut accounts = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut refused = Vec::with_capacity(rows.len());
    let mut seqs: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    for r in rows {
        accounts.push(r.account_id.as_str());
        keys.push(r.key.as_str());
        hashes.push(r.request_hash.as_str());
        outcomes.push(r.outcome.to_json());
        refused.push(r.outcome.is_refusal());
        seqs.push(r.stream_seq.map(|s| s as i64));
    }
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO ledger_cmd.idempotency (account_id, key, request_hash, outcome, refused, stream_seq) \
             SELECT a, k, h, o::jsonb, r, s FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int8[]) \
               AS t(a, k, h, o, r, s) \
             ON CONFLICT (account_id, key) DO NOTHING",
            &[&accounts, &keys, &hashes, &outcomes, &refused, &seqs],
        )
        .await?;
    Ok(())
}

/// Rows written in the background: successes are already safe in the log,
/// so their replies need not wait for PostgreSQL.
#[derive(Debug, Clone)]
pub struct BackgroundWriter {
    tx: mpsc::Sender<Row>,
}

/// Rows one background insert carries at most.
const BACKGROUND_ROWS_MAX: usize = 5000;

impl BackgroundWriter {
    pub fn spawn(pool: Pool) -> Self {
        let (tx, mut rx) = mpsc::channel::<Row>(BACKGROUND_ROWS_MAX * 4);
        tokio::spawn(async move {
            let mut rows = Vec::with_capacity(BACKGROUND_ROWS_MAX);
            while rx.recv_many(&mut rows, BACKGROUND_ROWS_MAX).await > 0 {
                // PostgreSQL down: keep trying. Nothing is lost meanwhile, the
                // log holds every success; the rows only speed up lookups.
                let mut wait = Duration::from_millis(100);
                while let Err(e) = insert(&pool, &rows).await {
                    tracing::warn!(error = %e, rows = rows.len(), "idempotency rows not written yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                rows.clear();
            }
        });
        Self { tx }
    }

    pub async fn write(&self, row: Row) {
        let _ = self.tx.send(row).await;
    }
}

/// Deletes rows older than the retention; returns how many went.
pub async fn purge(pool: &Pool, retention: Duration) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let secs = retention.as_secs_f64();
    Ok(client
        .execute(
            "DELETE FROM ledger_cmd.idempotency WHERE created_at < now() - make_interval(secs => $1)",
            &[&secs],
        )
        .await?)
}
