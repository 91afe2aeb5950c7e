//! The command engine: one writer per account, group commit, idempotency.
//!
//! Every command for an account goes to that account's writer task (one per
//! account in a process), which drains its queue, decides the commands in
//! order against its in-memory state, and hands their events to the
//! `committer` as one append with the expected subject sequence. Several
//! `ledger` processes may serve the same account: the expected-sequence check
//! refuses the loser's append, which reloads and decides again (bounded).

pub mod checkpointer;
mod committer;
mod gather;
pub mod idempotency;
pub mod indexer;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use ledger_schemas::{
    AccountId, Actor, BalanceReply, CommandReply, ErrorBody, ErrorCode, IdempotencyKey, Timestamp,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::Limits;
use crate::domain::{Catalog, Command};
use crate::metrics::Metrics;
use crate::store::EventStore;

pub use committer::Committer;

/// A command with everything the log records about who asked and why.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub account: AccountId,
    /// `None` only for the service's own commands (reservation expiry).
    pub key: Option<IdempotencyKey>,
    /// SHA-256 (hex) of the request without its key: a repeated key with a
    /// different hash is an `idempotency_conflict`.
    pub request_hash: String,
    pub command: Command,
    pub actor: Actor,
    /// When the fact happened, if earlier than now (a usage's own time).
    pub occurred_at: Option<Timestamp>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

impl CommandRequest {
    /// Where the command's events come from.
    pub fn origin(&self) -> crate::store::Origin<'_> {
        crate::store::Origin {
            account: &self.account,
            idempotency_key: self.key.as_ref(),
            request_hash: &self.request_hash,
            correlation_id: self.correlation_id.as_deref(),
            causation_id: self.causation_id.as_deref(),
            actor: &self.actor,
            occurred_at: self.occurred_at,
        }
    }
}

/// What a command came to: the same answer every time its key is repeated.
#[derive(Debug, Clone)]
pub enum Outcome {
    Accepted(Arc<CommandReply>),
    Refused(Arc<ErrorBody>),
}

impl Outcome {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Outcome::Refused(_))
    }
}

/// Why a command got no outcome. Every variant is safe to retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("Too many commands are in flight; retry shortly.")]
    Busy,
    #[error("Concurrent writes to the account kept winning; retrying is safe.")]
    Conflict,
    #[error("A dependency is unavailable ({0}); retrying is safe.")]
    Unavailable(String),
    #[error("The account's log could not be read: {0}")]
    Corrupt(String),
}

impl EngineError {
    pub fn to_body(&self) -> ErrorBody {
        let code = match self {
            EngineError::Busy | EngineError::Unavailable(_) => ErrorCode::Unavailable,
            EngineError::Conflict => ErrorCode::ConflictRetry,
            EngineError::Corrupt(_) => ErrorCode::Internal,
        };
        ErrorBody::new(code, self.to_string())
    }
}

enum Msg {
    Command(
        Box<CommandRequest>,
        oneshot::Sender<Result<Option<Outcome>, EngineError>>,
    ),
    Balance(oneshot::Sender<Result<BalanceReply, ErrorBody>>),
}

struct Handle {
    tx: mpsc::Sender<Msg>,
    generation: u64,
}

struct Inner {
    store: EventStore,
    pool: Pool,
    catalog: Catalog,
    limits: Limits,
    committer: Committer,
    lookups: idempotency::Lookups,
    index_checkpoint: indexer::Checkpoint,
    metrics: Arc<Metrics>,
    writers: Mutex<(HashMap<AccountId, Handle>, u64)>,
    in_flight: Semaphore,
}

/// The command side's entry point. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// How long a command waits for an in-flight slot before `unavailable`.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);

impl Engine {
    /// `appends` is the NATS connection the committer appends on: a
    /// connection of its own keeps the batches' round trips from queueing
    /// behind the command requests and replies on the store's connection
    /// (each connection has one task reading and writing it).
    pub fn new(
        store: EventStore,
        appends: async_nats::Client,
        key: ledger_schemas::signing::SigningKey,
        pool: Pool,
        catalog: Catalog,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let committer = Committer::spawn(appends, key, &limits, metrics.clone());
        let lookups = idempotency::Lookups::spawn(pool.clone());
        let in_flight = Semaphore::new(limits.commands_in_flight_max);
        Engine {
            inner: Arc::new(Inner {
                store,
                pool,
                catalog,
                limits,
                committer,
                lookups,
                index_checkpoint: indexer::Checkpoint::default(),
                metrics,
                writers: Mutex::new((HashMap::new(), 0)),
                in_flight,
            }),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The key index's checkpoint as this process last saw it (never ahead
    /// of the index); the indexer task keeps it current.
    pub fn index_checkpoint(&self) -> u64 {
        self.inner.index_checkpoint.get()
    }

    /// The command side's indexer for this process: it leads when `lead`
    /// and no other process does, and otherwise follows the checkpoint.
    pub fn indexer(
        &self,
        database_url: &str,
        lead: bool,
        checkpoints: Option<checkpointer::CheckpointSettings>,
    ) -> indexer::Indexer {
        let store = &self.inner.store;
        indexer::Indexer {
            database_url: database_url.to_owned(),
            stream: store.stream().clone(),
            trust: store.trust(),
            checkpoint: self.inner.index_checkpoint.clone(),
            lead,
            checkpoints: checkpoints.map(|c| (c, store.jetstream().clone())),
        }
    }

    /// Runs one command: its outcome (accepted or refused), or a retryable error.
    pub async fn execute(&self, request: CommandRequest) -> Result<Outcome, EngineError> {
        self.run(request)
            .await?
            .ok_or_else(|| EngineError::Unavailable("the command decided nothing".into()))
    }

    /// Runs a command that may decide nothing (the service's own sweeps).
    async fn run(&self, request: CommandRequest) -> Result<Option<Outcome>, EngineError> {
        let _permit = tokio::time::timeout(IN_FLIGHT_WAIT, self.inner.in_flight.acquire())
            .await
            .map_err(|_| EngineError::Busy)?
            .map_err(|_| EngineError::Busy)?;
        let account = request.account.clone();
        let (tx, rx) = oneshot::channel();
        self.send(&account, Msg::Command(Box::new(request), tx))?;
        rx.await
            .map_err(|_| EngineError::Unavailable("the account writer stopped".into()))?
    }

    /// The account's balances as this process knows them.
    pub async fn balance(&self, account: &AccountId) -> Result<BalanceReply, ErrorBody> {
        let (tx, rx) = oneshot::channel();
        self.send(account, Msg::Balance(tx))
            .map_err(|e| e.to_body())?;
        rx.await
            .map_err(|_| EngineError::Unavailable("the account writer stopped".into()).to_body())?
    }

    /// Releases every reservation of `account` whose time is up.
    pub async fn expire_reservations(&self, account: &AccountId) -> Result<(), EngineError> {
        let request = CommandRequest {
            account: account.clone(),
            key: None,
            request_hash: String::new(),
            command: Command::ExpireReservations,
            actor: Actor::system(),
            occurred_at: None,
            correlation_id: None,
            causation_id: None,
        };
        let outcome = self.run(request).await?;
        if outcome.is_some() {
            self.inner.metrics.reservations_expired.inc();
        }
        Ok(())
    }

    /// Hands `msg` to the account's writer, starting one if needed.
    fn send(&self, account: &AccountId, msg: Msg) -> Result<(), EngineError> {
        let mut msg = Some(msg);
        // Twice at most: a writer that just stopped (idle) is replaced once.
        for _ in 0..2 {
            let tx = self.writer_for(account);
            match tx.try_send(msg.take().expect("a message to send")) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => return Err(EngineError::Busy),
                Err(mpsc::error::TrySendError::Closed(m)) => {
                    msg = Some(m);
                    self.forget_closed(account);
                }
            }
        }
        Err(EngineError::Unavailable(
            "the account writer could not start".into(),
        ))
    }

    fn writer_for(&self, account: &AccountId) -> mpsc::Sender<Msg> {
        let mut guard = self.inner.writers.lock().expect("writers map");
        let (map, next_generation) = &mut *guard;
        if let Some(h) = map.get(account) {
            return h.tx.clone();
        }
        if map.len() >= self.inner.limits.accounts_cached_max {
            // Drop a tenth of the cached accounts (their writers finish their
            // queues and stop). Approximate, but bounded and cheap.
            let victims: Vec<AccountId> =
                map.keys().take((map.len() / 10).max(1)).cloned().collect();
            for v in victims {
                map.remove(&v);
            }
        }
        *next_generation += 1;
        let generation = *next_generation;
        let (tx, rx) = mpsc::channel(self.inner.limits.account_queue_max);
        map.insert(
            account.clone(),
            Handle {
                tx: tx.clone(),
                generation,
            },
        );
        self.inner.metrics.accounts_loaded.set(map.len() as i64);
        let writer = writer::Writer::new(self.clone(), account.clone(), generation);
        tokio::spawn(writer.run(rx));
        tx
    }

    fn forget_closed(&self, account: &AccountId) {
        let mut guard = self.inner.writers.lock().expect("writers map");
        if guard.0.get(account).is_some_and(|h| h.tx.is_closed()) {
            guard.0.remove(account);
        }
    }

    /// Called by a writer that stops: forgets it unless a newer one replaced it.
    fn writer_stopped(&self, account: &AccountId, generation: u64) {
        let mut guard = self.inner.writers.lock().expect("writers map");
        if guard
            .0
            .get(account)
            .is_some_and(|h| h.generation == generation)
        {
            guard.0.remove(account);
        }
        self.inner.metrics.accounts_loaded.set(guard.0.len() as i64);
    }

    /// Releases expired reservations every `interval`, and purges idempotency
    /// rows past `retention` every hour, until `shutdown` resolves.
    pub async fn run_maintenance(
        self,
        interval: Duration,
        retention: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut sweep = tokio::time::interval(interval);
        let mut purge = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep_expired().await {
                        tracing::warn!(error = %e, "reservation expiry sweep failed");
                    }
                }
                _ = purge.tick() => {
                    match idempotency::purge(&self.inner.pool, retention).await {
                        Ok(n) if n > 0 => tracing::info!(keys = n, "purged expired idempotency keys from the index"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
                    }
                }
            }
        }
    }

    /// Accounts with a reservation past its time, at most this many a sweep.
    const SWEEP_ACCOUNTS_MAX: i64 = 1000;

    async fn sweep_expired(&self) -> anyhow::Result<()> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT DISTINCT account_id FROM ledger_cmd.open_reservations \
                 WHERE expires_at <= now() LIMIT $1",
                &[&Self::SWEEP_ACCOUNTS_MAX],
            )
            .await?;
        drop(client);
        let accounts: Vec<AccountId> = rows
            .iter()
            .filter_map(|r| AccountId::parse(r.get::<_, String>(0)).ok())
            .collect();
        let jobs = accounts.iter().map(|a| self.expire_reservations(a));
        for r in futures::future::join_all(jobs).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "expiring reservations failed; will retry");
            }
        }
        Ok(())
    }
}
