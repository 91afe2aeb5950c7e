//! The command side's indexer: folds stream `LEDGER` into
//! `ledger_cmd.key_index` (every idempotency key, the stream seq of the
//! event holding its outcome, and its request hash) and
//! `ledger_cmd.open_reservations` (for the expiry sweep), a batch at a time,
//! with its checkpoint in the same transaction. Nothing on the command path
//! writes PostgreSQL: a crash anywhere leaves the index behind the log,
//! never ahead of it or wrong, and account writers stay exact meanwhile by
//! holding in memory the keys after the checkpoint they loaded with.
//!
//! One process at a time indexes (a session advisory lock); the others stand
//! by. Every process keeps [`Checkpoint`] up to date, so its writers know
//! which keys they may drop from memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use ledger_projections::fold::SCHEMA_VERSIONS;
use ledger_projections::projector::Reader;
use ledger_projections::sift::Sifter;
use ledger_schemas::signing::Trust;
use ledger_schemas::{AccountId, EventType, Id, Timestamp};
use tokio_util::sync::CancellationToken;

use super::checkpointer::{CheckpointSettings, Checkpointer};

/// Events folded in one transaction at most.
const BATCH_EVENTS_MAX: usize = 5000;
/// The advisory lock of the one active indexer.
const INDEXER_LOCK: i64 = 0x4c45_4447_0000_0101;
/// How often a standby (or an idle leader) reads the checkpoint.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// The shortest time between two commits of the index (its lag, at most,
/// when the log is quiet; memory covers the keys meanwhile).
const COMMIT_INTERVAL_MIN: Duration = Duration::from_millis(25);
/// The indexer's name among the readers that keep chain heads.
pub const SIFTER: &str = "key_index";
/// Wait after a failure before trying again.
const RETRY_WAIT: Duration = Duration::from_secs(1);

/// The index checkpoint as this process last saw it: every event up to it is
/// in the index. Only ever read from the database or set by the indexer
/// after a commit, so it is never ahead of the index.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint(Arc<AtomicU64>);

impl Checkpoint {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }
}

/// The indexer of one process.
#[derive(Debug, Clone)]
pub struct Indexer {
    /// A connection string for the leader's own connection (it holds the lock).
    pub database_url: String,
    pub stream: Stream,
    pub trust: Trust,
    pub checkpoint: Checkpoint,
    /// Whether this process may lead (else it only follows the checkpoint).
    pub lead: bool,
    /// Signed checkpoints, appended by the leader.
    pub checkpoints: Option<(CheckpointSettings, async_nats::jetstream::Context)>,
}

/// What one batch adds to the index.
#[derive(Debug, Default)]
struct Batch {
    /// (account, key) -> (stream seq, request hash, recorded at); a command's
    /// several events keep its last.
    keys: HashMap<(String, String), (i64, String, chrono::DateTime<chrono::Utc>)>,
    /// Reservations opened (account, id, expires at) and closed (account, id).
    opened: Vec<(String, uuid::Uuid, chrono::DateTime<chrono::Utc>)>,
    closed: Vec<(String, uuid::Uuid)>,
}

/// The fields of an event the index needs; serde skips the rest (the
/// indexer reads every event the command side writes, so it reads little).
#[derive(serde::Deserialize)]
struct Indexable {
    #[serde(default)]
    schema_version: u32,
    #[serde(rename = "type")]
    kind: String,
    account_id: AccountId,
    recorded_at: Timestamp,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    request_hash: Option<String>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
}

/// A reservation's id, and when it expires (opened ones).
#[derive(serde::Deserialize)]
struct ReservationFields {
    reservation_id: Id,
    #[serde(default)]
    expires_at: Option<Timestamp>,
}

impl Batch {
    /// Adds one event; an error when it is not one the ledger can read.
    fn add(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        let e: Indexable = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        if !SCHEMA_VERSIONS.contains(&e.schema_version) {
            return Err(format!("schema_version {}", e.schema_version));
        }
        let account = e.account_id.to_string();
        if let (Some(key), Some(hash)) = (e.idempotency_key, e.request_hash) {
            let k = (account.clone(), key);
            match self.keys.get(&k) {
                Some((earlier, _, _)) if *earlier > seq as i64 => {}
                _ => {
                    self.keys
                        .insert(k, (seq as i64, hash, e.recorded_at.datetime()));
                }
            }
        }
        let opens = e.kind == EventType::CreditsReserved.as_str();
        let closes = e.kind == EventType::ReservationCaptured.as_str()
            || e.kind == EventType::ReservationReleased.as_str();
        if opens || closes {
            let data = e.data.ok_or("a reservation event without data")?;
            let r: ReservationFields =
                serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
            match (opens, r.expires_at) {
                (true, Some(at)) => {
                    self.opened
                        .push((account, r.reservation_id.uuid(), at.datetime()));
                }
                (true, None) => return Err("a reservation without expires_at".into()),
                (false, _) => self.closed.push((account, r.reservation_id.uuid())),
            }
        }
        Ok(())
    }
}

impl Indexer {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let result = if self.lead {
                self.lead(&shutdown).await
            } else {
                self.follow(&shutdown).await
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "key indexer interrupted; resuming"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(RETRY_WAIT) => {}
                    }
                }
            }
        }
    }

    async fn connect(
        &self,
    ) -> anyhow::Result<(
        tokio_postgres::Client,
        ledger_projections::db::ConnectionGuard,
    )> {
        ledger_projections::db::own_connection(&self.database_url).await
    }

    /// Follows the checkpoint another process's indexer moves.
    async fn follow(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (client, _conn) = self.connect().await?;
        loop {
            self.checkpoint.set(read_checkpoint(&client).await?);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
            }
        }
    }

    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (mut client, _conn) = self.connect().await?;
        // Stand by, following the leader, until the lock is ours.
        loop {
            self.checkpoint.set(read_checkpoint(&client).await?);
            if ledger_projections::db::try_advisory_lock(&client, INDEXER_LOCK).await? {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
            }
        }
        let mut position = read_checkpoint(&client).await?;
        self.checkpoint.set(position);
        let mut reader = Reader::open(&self.stream, position + 1, &self.trust, None)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut sifter = Sifter::new(SIFTER, false);
        let mut last_commit = tokio::time::Instant::now();
        let mut checkpointer = self
            .checkpoints
            .clone()
            .map(|(settings, js)| Checkpointer::new(settings, js, self.stream.clone()));
        // The last event (not checkpoint) the index holds.
        let mut event_seq = position;
        loop {
            // At most one commit per COMMIT_INTERVAL_MIN: under light traffic
            // each event would otherwise cost PostgreSQL a commit (an fsync)
            // of its own, beside the command path's own fsyncs.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(last_commit + COMMIT_INTERVAL_MIN) => {}
            }
            let due = checkpointer.as_ref().and_then(|c| c.due_in(event_seq));
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                b = reader.batch(BATCH_EVENTS_MAX) => b,
                _ = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => {
                    if let Some(c) = checkpointer.as_mut() {
                        c.maybe(&mut client, position, event_seq).await;
                    }
                    continue;
                }
            };
            last_commit = tokio::time::Instant::now();
            let batch = batch.ok_or_else(|| anyhow::anyhow!("the event stream ended"))??;
            let batch: Vec<_> = batch.into_iter().filter(|r| r.seq > position).collect();
            let Some(last) = batch.last().map(|r| r.seq) else {
                continue;
            };
            let tx = client.transaction().await?;
            let stored = read_checkpoint_for_update(&tx).await?;
            if stored != position {
                // Reset by an operator (a reindex): start over from there.
                tx.rollback().await?;
                position = stored;
                self.checkpoint.set(position);
                sifter = Sifter::new(SIFTER, false);
                reader = Reader::open(&self.stream, position + 1, &self.trust, None)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                continue;
            }
            sifter
                .load(&tx, batch.iter().map(|r| r.subject.as_str()))
                .await?;
            let mut fold = Batch::default();
            for raw in &batch {
                if raw.is_checkpoint() {
                    continue;
                }
                event_seq = raw.seq;
                // What the ledger did not write holds no key it gave.
                if !sifter.sift(raw.seq, &raw.message()) {
                    continue;
                }
                // A genuine event the ledger cannot read (a newer version,
                // which its writers cannot read either) is skipped, so it
                // never stops the command side.
                if let Err(e) = fold.add(raw.seq, &raw.payload) {
                    tracing::warn!(seq = raw.seq, error = %e, "key indexer skips an event");
                }
            }
            sifter.save(&tx).await?;
            write(&tx, &fold).await?;
            tx.execute(
                "UPDATE ledger_cmd.key_index_checkpoint SET stream_seq = $1, updated_at = now()",
                &[&(last as i64)],
            )
            .await?;
            tx.commit().await?;
            position = last;
            self.checkpoint.set(position);
            if let Some(c) = checkpointer.as_mut() {
                c.maybe(&mut client, position, event_seq).await;
            }
        }
    }
}

async fn read_checkpoint(c: &impl tokio_postgres::GenericClient) -> anyhow::Result<u64> {
    checkpoint_row(c, "SELECT stream_seq FROM ledger_cmd.key_index_checkpoint").await
}

/// The checkpoint, locked until the transaction ends.
async fn read_checkpoint_for_update(c: &impl tokio_postgres::GenericClient) -> anyhow::Result<u64> {
    checkpoint_row(
        c,
        "SELECT stream_seq FROM ledger_cmd.key_index_checkpoint FOR UPDATE",
    )
    .await
}

async fn checkpoint_row(c: &impl tokio_postgres::GenericClient, sql: &str) -> anyhow::Result<u64> {
    Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0) as u64)
}

async fn write(tx: &tokio_postgres::Transaction<'_>, b: &Batch) -> anyhow::Result<()> {
    if !b.keys.is_empty() {
        let mut accounts = Vec::with_capacity(b.keys.len());
        let mut keys = Vec::with_capacity(b.keys.len());
        let mut seqs = Vec::with_capacity(b.keys.len());
        let mut hashes = Vec::with_capacity(b.keys.len());
        let mut times = Vec::with_capacity(b.keys.len());
        for ((a, k), (seq, hash, at)) in &b.keys {
            accounts.push(a.as_str());
            keys.push(k.as_str());
            seqs.push(*seq);
            hashes.push(hash.as_str());
            times.push(*at);
        }
        tx.execute(
            "INSERT INTO ledger_cmd.key_index (account_id, key, stream_seq, request_hash, recorded_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::timestamptz[]) \
             ON CONFLICT (account_id, key) DO UPDATE \
             SET stream_seq = greatest(key_index.stream_seq, EXCLUDED.stream_seq)",
            &[&accounts, &keys, &seqs, &hashes, &times],
        )
        .await?;
    }
    if !b.opened.is_empty() {
        let accounts: Vec<&str> = b.opened.iter().map(|(a, _, _)| a.as_str()).collect();
        let ids: Vec<uuid::Uuid> = b.opened.iter().map(|(_, id, _)| *id).collect();
        let times: Vec<chrono::DateTime<chrono::Utc>> =
            b.opened.iter().map(|(_, _, t)| *t).collect();
        tx.execute(
            "INSERT INTO ledger_cmd.open_reservations (account_id, reservation_id, expires_at) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) \
             ON CONFLICT DO NOTHING",
            &[&accounts, &ids, &times],
        )
        .await?;
    }
    if !b.closed.is_empty() {
        let accounts: Vec<&str> = b.closed.iter().map(|(a, _)| a.as_str()).collect();
        let ids: Vec<uuid::Uuid> = b.closed.iter().map(|(_, id)| *id).collect();
        tx.execute(
            "DELETE FROM ledger_cmd.open_reservations o \
             USING unnest($1::text[], $2::uuid[]) AS c(a, r) \
             WHERE o.account_id = c.a AND o.reservation_id = c.r",
            &[&accounts, &ids],
        )
        .await?;
    }
    Ok(())
}

/// Wipes the index and its checkpoint, so the indexer folds the whole log
/// again (`ledger audit reindex`). Run with the command side stopped: a
/// running writer may drop keys from memory against the old checkpoint.
pub async fn reset(pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT 1 FROM ledger_cmd.key_index_checkpoint FOR UPDATE; \
         TRUNCATE ledger_cmd.key_index, ledger_cmd.open_reservations; \
         UPDATE ledger_cmd.key_index_checkpoint SET stream_seq = 0, updated_at = now();",
    )
    .await?;
    ledger_projections::sift::reset(&*tx, SIFTER).await?;
    tx.commit().await?;
    Ok(())
}
