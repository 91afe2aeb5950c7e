//! Idempotency: a repeated key returns the original outcome, never a second
//! effect, for the configured retention (7 days by default), across restarts
//! and processes.
//!
//! The log is the only record. Every keyed outcome worth remembering is an
//! event carrying its key and request hash: a success's events, or a
//! `command_refused` event for a domain refusal on an existing account.
//! Lookups are exact whatever the index's lag:
//! 1. each account writer holds in memory the keys of its account's events
//!    after the index checkpoint it loaded with, and every key it appends
//!    since; entries at or below the current checkpoint may be dropped;
//! 2. `ledger_cmd.key_index`, folded from the log by the
//!    [`indexer`](super::indexer) (never written on the command path), holds
//!    the rest for the retention; a hit's outcome is rebuilt from the log;
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
    /// The stream seq of the event that holds the outcome.
    pub seq: u64,
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

/// One account's keys in memory: every key after the index checkpoint the
/// account was loaded with, and the ones recalled from the index. Past the
/// bound, the oldest entries the index already holds are dropped; entries
/// the index does not hold yet stay, however many (exactness first).
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
        }
    }

    /// Drops the oldest entries past the bound whose events the index holds
    /// (stream seq at most `indexed`); whether any went.
    pub fn trim(&mut self, indexed: u64) -> bool {
        let mut dropped = false;
        while self.order.len() > self.max {
            let Some(oldest) = self.order.front() else {
                break;
            };
            if self.map.get(oldest).is_some_and(|r| r.seq > indexed) {
                break;
            }
            let oldest = self.order.pop_front().expect("a front entry");
            self.map.remove(&oldest);
            dropped = true;
        }
        dropped
    }
}

/// A key the index holds: the event with its outcome, and the request hash.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub key: IdempotencyKey,
    pub seq: u64,
    pub request_hash: String,
}

type Found = Vec<Indexed>;

/// Looks up (account, key) pairs in one query.
async fn lookup_pairs(
    pool: &Pool,
    pairs: &[(&AccountId, &IdempotencyKey)],
) -> anyhow::Result<Vec<(AccountId, Indexed)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<&str> = pairs.iter().map(|(a, _)| a.as_str()).collect();
    let keys: Vec<&str> = pairs.iter().map(|(_, k)| k.as_str()).collect();
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT i.account_id, i.key, i.stream_seq, i.request_hash \
             FROM unnest($1::text[], $2::text[]) AS q(a, k) \
             JOIN ledger_cmd.key_index i ON i.account_id = q.a AND i.key = q.k",
        )
        .await?;
    let rows = client.query(&statement, &[&accounts, &keys]).await?;
    rows.iter()
        .map(|r| {
            let account = AccountId::parse(r.get::<_, String>(0))?;
            let found = Indexed {
                key: IdempotencyKey::parse(r.get::<_, String>(1))?,
                seq: r.get::<_, i64>(2) as u64,
                request_hash: r.get(3),
            };
            Ok((account, found))
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
                            for (a, found) in rows {
                                by_account.entry(a).or_default().push(found);
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

    /// The keys of `account` among `keys` that the index holds.
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

/// Deletes index entries older than the retention; returns how many went.
pub async fn purge(pool: &Pool, retention: Duration) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let secs = retention.as_secs_f64();
    Ok(client
        .execute(
            "DELETE FROM ledger_cmd.key_index WHERE recorded_at < now() - make_interval(secs => $1)",
            &[&secs],
        )
        .await?)
}
