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
use super::gather::Gather;

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

type Found = Vec<(IdempotencyKey, Remembered)>;

/// Looks up (account, key) pairs in one query.
async fn lookup_pairs(
    pool: &Pool,
    pairs: &[(&AccountId, &IdempotencyKey)],
) -> anyhow::Result<Vec<(AccountId, IdempotencyKey, Remembered)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<&str> = pairs.iter().map(|(a, _)| a.as_str()).collect();
    let keys: Vec<&str> = pairs.iter().map(|(_, k)| k.as_str()).collect();
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT i.account_id, i.key, i.request_hash, i.outcome, i.refused \
             FROM unnest($1::text[], $2::text[]) AS q(a, k) \
             JOIN ledger_cmd.idempotency i ON i.account_id = q.a AND i.key = q.k",
        )
        .await?;
    let rows = client.query(&statement, &[&accounts, &keys]).await?;
    rows.iter()
        .map(|r| {
            let account = AccountId::parse(r.get::<_, String>(0))?;
            let key = IdempotencyKey::parse(r.get::<_, String>(1))?;
            let text: String = r.get(3);
            let outcome = Outcome::from_json(&text, r.get(4))?;
            let remembered = Remembered {
                request_hash: r.get(2),
                outcome,
            };
            Ok((account, key, remembered))
        })
        .collect()
}

struct Lookup {
    account: AccountId,
    keys: Vec<IdempotencyKey>,
    done: tokio::sync::oneshot::Sender<Result<Found, String>>,
}

/// Coalesces the lookups of many account writers into one query per burst:
/// a command whose key is not in memory costs a share of one round trip to
/// PostgreSQL, not a round trip of its own.
#[derive(Debug, Clone)]
pub struct Lookups {
    tx: mpsc::Sender<Lookup>,
}

/// Keys one coalesced lookup asks for at most.
const LOOKUP_KEYS_MAX: usize = 2000;
/// Coalesced lookups running at once.
const LOOKUPS_IN_FLIGHT_MAX: usize = 4;

impl Lookups {
    pub fn spawn(pool: Pool) -> Self {
        let (tx, rx) = mpsc::channel::<Lookup>(LOOKUP_KEYS_MAX);
        tokio::spawn(async move {
            let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(LOOKUPS_IN_FLIGHT_MAX));
            let mut queue = Gather::new(rx);
            while let Some(first) = queue.first().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let group = queue.fill(first, LOOKUP_KEYS_MAX, |l| l.keys.len());
                let pool = pool.clone();
                tokio::spawn(async move {
                    let pairs: Vec<(&AccountId, &IdempotencyKey)> = group
                        .iter()
                        .flat_map(|l| l.keys.iter().map(move |k| (&l.account, k)))
                        .collect();
                    let result = lookup_pairs(&pool, &pairs).await.map_err(|e| e.to_string());
                    drop(pairs);
                    match result {
                        Ok(rows) => {
                            let mut by_account: HashMap<AccountId, Found> = HashMap::new();
                            for (a, k, r) in rows {
                                by_account.entry(a).or_default().push((k, r));
                            }
                            for l in group {
                                let found = by_account.remove(&l.account).unwrap_or_default();
                                let _ = l.done.send(Ok(found));
                            }
                        }
                        Err(e) => {
                            for l in group {
                                let _ = l.done.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// The remembered outcomes of `keys` of `account` (those PostgreSQL has).
    pub async fn lookup(
        &self,
        account: &AccountId,
        keys: Vec<IdempotencyKey>,
    ) -> anyhow::Result<Found> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send(Lookup {
                account: account.clone(),
                keys,
                done,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the idempotency lookup task stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("the idempotency lookup was dropped"))?
            .map_err(|e| anyhow::anyhow!(e))
    }
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
    let statement = client
        .prepare_cached(
            "INSERT INTO ledger_cmd.idempotency (account_id, key, request_hash, outcome, refused, stream_seq) \
             SELECT a, k, h, o, r, s FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int8[]) \
               AS t(a, k, h, o, r, s) \
             ON CONFLICT (account_id, key) DO NOTHING",
        )
        .await?;
    client
        .execute(
            &statement,
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
