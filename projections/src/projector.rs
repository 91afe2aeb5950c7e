//! The projector runtime.
//!
//! Each projector reads stream `LEDGER` with an ordered consumer from its
//! checkpoint + 1 and applies events in batches, each in one PostgreSQL
//! transaction that also advances its checkpoint: a crash anywhere leaves the
//! tables as of the last committed batch, and the next run resumes after it.
//! One instance per projector is active, holding a session advisory lock on
//! its own connection; others wait and take over when it dies. A message
//! the ledger did not write is skipped and quarantined ([`crate::sift`]);
//! a genuine event the projector cannot fold (unknown type or schema
//! version) stops this projector alone, recorded with the event named for
//! readiness to report; PostgreSQL or NATS down makes it wait and resume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use ledger_schemas::EventEnvelope;
use ledger_schemas::signing::{Gate, Seal, Sealable, Trust};
use tokio_util::sync::CancellationToken;

use crate::db::{self, Tables};
use crate::fold::{self, AccountsFold, FoldError, TopupsFold};
use crate::sift::{Sifter, Verdict};

/// The projectors, one per group of read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// `service_balances`, `credit_history`, `usage_daily`.
    Accounts,
    /// `topups`.
    Topups,
}

impl Projection {
    pub const ALL: [Projection; 2] = [Projection::Accounts, Projection::Topups];

    pub fn name(self) -> &'static str {
        match self {
            Projection::Accounts => "accounts",
            Projection::Topups => "topups",
        }
    }

    pub fn parse(s: &str) -> Option<Projection> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The key of its advisory lock (one per projector, fixed).
    fn lock_key(self) -> i64 {
        match self {
            Projection::Accounts => 0x4c45_4447_0000_0001,
            Projection::Topups => 0x4c45_4447_0000_0002,
        }
    }

    /// The tables it owns (short names in schema `ledger`).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Accounts => &["service_balances", "credit_history", "usage_daily"],
            Projection::Topups => &["topups"],
        }
    }
}

/// A projection's folding state: rows cached across batches (the projector
/// is their only writer), and the current batch's changes.
#[derive(Debug)]
pub enum State {
    Accounts(AccountsFold),
    Topups(TopupsFold),
}

/// Cached rows kept at most; past it the cache starts over from the tables.
pub const CACHE_ROWS_MAX: usize = 500_000;

impl State {
    pub fn new(p: Projection) -> Self {
        match p {
            Projection::Accounts => State::Accounts(AccountsFold::default()),
            Projection::Topups => State::Topups(TopupsFold::default()),
        }
    }

    /// Folds `events` and writes them to `tables` through `c` (a transaction).
    pub async fn apply(
        &mut self,
        c: &tokio_postgres::Transaction<'_>,
        tables: &Tables,
        events: &[(u64, EventEnvelope)],
    ) -> Result<(), ApplyError> {
        match self {
            State::Accounts(f) => {
                if f.balances.len() > CACHE_ROWS_MAX {
                    f.balances.clear();
                }
                f.dirty.clear();
                f.history.clear();
                f.usage.clear();
                let mut keys = Vec::new();
                for (_, e) in events {
                    fold::balance_keys(e, &mut keys);
                }
                keys.sort();
                keys.dedup();
                keys.retain(|k| !f.balances.contains_key(k));
                if !keys.is_empty() {
                    f.balances
                        .extend(db::load_balances(c, tables, &keys).await?);
                }
                for (seq, e) in events {
                    f.apply(*seq, e)?;
                }
                db::write_accounts(c, tables, f).await?;
            }
            State::Topups(f) => {
                if f.rows.len() > CACHE_ROWS_MAX {
                    f.rows.clear();
                }
                f.dirty.clear();
                let mut ids: Vec<uuid::Uuid> = events
                    .iter()
                    .filter_map(|(_, e)| fold::topup_of(e))
                    .filter(|id| !f.rows.contains_key(id))
                    .collect();
                ids.sort();
                ids.dedup();
                if !ids.is_empty() {
                    f.rows.extend(db::load_topups(c, tables, &ids).await?);
                }
                for (seq, e) in events {
                    f.apply(*seq, e)?;
                }
                db::write_topups(c, tables, f).await?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// What the projector reports of itself, for operations.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub active: bool,
    pub checkpoint: u64,
    pub events_applied: u64,
    /// Messages skipped as not the ledger's.
    pub quarantined: u64,
    pub batches: u64,
    pub last_batch_ms: f64,
    pub stopped: Option<String>,
}

pub type StatusBoard = Arc<Mutex<HashMap<&'static str, Status>>>;

/// An ordered consumer's messages from stream seq `start` on, optionally
/// only those of `subject` (the one way every reader of the log starts).
pub async fn ordered_from(
    stream: &Stream,
    start: u64,
    subject: Option<&str>,
) -> Result<pull::Ordered, async_nats::Error> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.unwrap_or_default().to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// How long a bounded reader waits, past its end, for the rest of an
/// append before it judges the append foreign (it is stored whole: a
/// genuine append's rest comes at once).
pub const TAIL_STALL: Duration = Duration::from_secs(10);

/// Hands what the gate released from `start` on to the reader's caller,
/// each with its seal; false once the caller is gone.
async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Raw, String>>,
    released: &mut Vec<(Raw, Seal)>,
    start: u64,
) -> bool {
    for (mut raw, seal) in released.drain(..) {
        if raw.seq < start {
            continue;
        }
        raw.seal = seal;
        if tx.send(Ok(raw)).await.is_err() {
            return false;
        }
    }
    true
}

/// Events applied in one transaction at most.
pub const BATCH_EVENTS_MAX: usize = 2000;
/// Back-off after a passing failure.
const RETRY_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug)]
enum Stop {
    /// A genuine event cannot be folded: stop, do not skip.
    Fatal { seq: u64, reason: String },
    /// PostgreSQL or NATS failed: wait and resume.
    Passing(anyhow::Error),
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Passing(e.into())
    }
}

/// One projector.
#[derive(Debug, Clone)]
pub struct Projector {
    pub projection: Projection,
    /// A connection string for the leader's own connection.
    pub database_url: String,
    pub stream: Stream,
    /// The keys the ledger's appends are signed by.
    pub trust: Trust,
    pub status: StatusBoard,
}

impl Projector {
    fn report(&self, f: impl FnOnce(&mut Status)) {
        let mut board = self.status.lock().expect("status board");
        f(board.entry(self.projection.name()).or_default());
    }

    /// Runs until `shutdown`. A genuine event it cannot fold stops this
    /// projector alone (no other part of the process): it lets go of its
    /// lock (a process that can read the event may take over) and waits
    /// for shutdown, its stop recorded for readiness to report.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.lead(&shutdown).await {
                Ok(()) => return Ok(()),
                Err(Stop::Fatal { seq, reason }) => {
                    let message = format!(
                        "projector {} stopped at stream seq {seq}: {reason}",
                        self.projection.name()
                    );
                    tracing::error!("{message}");
                    self.report(|s| {
                        s.active = false;
                        s.stopped = Some(message.clone());
                    });
                    shutdown.cancelled().await;
                    return Ok(());
                }
                Err(Stop::Passing(e)) => {
                    tracing::warn!(projector = self.projection.name(), error = %e,
                        "projector interrupted; resuming");
                    self.report(|s| s.active = false);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(RETRY_WAIT) => {}
                    }
                }
            }
        }
    }

    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), Stop> {
        // The connection (and with it the advisory lock) lives as long as this run.
        let (mut client, _connection) = db::own_connection(&self.database_url)
            .await
            .map_err(Stop::Passing)?;
        loop {
            if db::try_advisory_lock(&client, self.projection.lock_key()).await? {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let name = self.projection.name();
        let tables = Tables::live();
        db::ensure_checkpoint(&client, name).await?;
        let mut position = db::checkpoint_for_update(&client, name).await? as u64;
        let mut state = State::new(self.projection);
        let mut sifter = Sifter::new(name, true);
        self.report(|s| {
            s.active = true;
            s.checkpoint = position;
            s.stopped = None;
        });
        let mut reader = self.open(position).await?;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                b = gather(&mut reader) => b?,
            };
            let started = Instant::now();
            let tx = client.transaction().await?;
            let checkpoint = db::checkpoint_for_update(&tx, name).await? as u64;
            if checkpoint != position {
                // Moved by someone else (a rebuild's swap): start over from there.
                tx.rollback().await?;
                position = checkpoint;
                state = State::new(self.projection);
                sifter = Sifter::new(name, true);
                reader = self.open(position).await?;
                continue;
            }
            // Sift out what the ledger did not write, and decode up to the
            // first genuine event this code cannot read: what comes before
            // it is applied, then the projector stops on it.
            let batch: Vec<Raw> = batch.into_iter().filter(|r| r.seq > position).collect();
            sifter
                .load(&tx, batch.iter().map(|r| r.subject.as_str()))
                .await?;
            let mut events: Vec<(u64, EventEnvelope)> = Vec::with_capacity(batch.len());
            let mut unreadable = None;
            let mut last = position;
            for mut raw in batch {
                let decoded = match raw.event.take() {
                    Some(d) => d,
                    None => fold::decode(raw.seq, &raw.payload),
                };
                if raw.is_checkpoint() {
                    last = raw.seq;
                    continue;
                }
                match sifter.verdict(&raw.message(), decoded) {
                    Verdict::Genuine(chain, event) => {
                        sifter.keep(raw.seq, &raw.subject, chain);
                        events.push((raw.seq, *event));
                        last = raw.seq;
                    }
                    Verdict::Foreign(why) => {
                        sifter.skip(raw.seq, &raw.subject, why);
                        last = raw.seq;
                    }
                    Verdict::Unreadable(e) => {
                        unreadable = Some((raw.seq, e));
                        break;
                    }
                }
            }
            if last == position {
                tx.rollback().await?;
                match unreadable {
                    Some((seq, e)) => return Err(self.stop_on(&client, seq, e).await),
                    None => continue,
                }
            }
            if !events.is_empty() {
                if let Err(e) = state.apply(&tx, &tables, &events).await {
                    // The caches may hold half a batch; they go with this run.
                    let _ = tx.rollback().await;
                    return Err(match e {
                        ApplyError::Fold(f) => self.stop_on(&client, f.seq(), f).await,
                        ApplyError::Db(d) => Stop::Passing(d.into()),
                    });
                }
            }
            let quarantined = sifter.foreign.len() as u64;
            sifter.save(&tx).await?;
            db::set_checkpoint(&tx, name, last as i64).await?;
            tx.commit().await?;
            position = last;
            let n = events.len() as u64;
            self.report(|s| {
                s.checkpoint = position;
                s.events_applied += n;
                s.quarantined += quarantined;
                s.batches += 1;
                s.last_batch_ms = started.elapsed().as_secs_f64() * 1000.0;
            });
            if let Some((seq, e)) = unreadable {
                return Err(self.stop_on(&client, seq, e).await);
            }
        }
    }

    /// Records in the checkpoint's row that the projector stopped on the
    /// genuine event `seq`, which it cannot read, for every process's
    /// readiness and operations pages to show.
    async fn stop_on(&self, client: &tokio_postgres::Client, seq: u64, e: FoldError) -> Stop {
        let reason = e.to_string();
        if let Err(db) = db::set_stopped(client, self.projection.name(), seq, &reason).await {
            tracing::warn!(error = %db, "recording the projector's stop failed");
        }
        Stop::Fatal { seq, reason }
    }

    /// Starts reading the stream after `position`, ahead of the batches.
    async fn open(&self, position: u64) -> Result<Reader, Stop> {
        Reader::open_decoded(&self.stream, position + 1, &self.trust)
            .await
            .map_err(|e| Stop::Passing(anyhow::anyhow!(e)))
    }
}

/// One message as read from the stream.
#[derive(Debug, Clone)]
pub struct Raw {
    pub seq: u64,
    pub subject: async_nats::Subject,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: bytes::Bytes,
    /// The payload decoded, when the reader decodes ahead.
    pub event: Option<Result<EventEnvelope, FoldError>>,
    /// What its append's signature says of it.
    pub seal: Seal,
}

impl Raw {
    /// The fields a reader judges it by.
    pub fn message(&self) -> ledger_schemas::genuine::Message<'_> {
        crate::sift::message(
            &self.subject,
            self.headers.as_ref(),
            &self.payload,
            crate::sift::signature(&self.seal),
        )
    }

    /// A checkpoint, not an event: readers pass over it.
    pub fn is_checkpoint(&self) -> bool {
        self.seal == Seal::Checkpoint
    }
}

impl Sealable for Raw {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn subject(&self) -> &str {
        &self.subject
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }
}

/// Messages read ahead from the stream, in order: the next batch is read
/// while the current one is applied.
pub struct Reader {
    rx: tokio::sync::mpsc::Receiver<Result<Raw, String>>,
    _task: AbortOnDrop<()>,
}

impl Reader {
    /// Starts reading at stream seq `start`, each append's messages held
    /// until its last one shows whether its signature covers them
    /// ([`Raw::seal`]). With `until` (the stream's head when the caller
    /// began, or a reader's checkpoint): an append `until` falls inside is
    /// read to its end, so what comes up to `until` is judged whole, and
    /// what comes after it is handed out too (the caller stops at
    /// `until`). Only when nothing more is stored for [`TAIL_STALL`] is
    /// what is still held released as unsigned: a foreign message at the
    /// stream's end claiming a place in an append that never ends.
    pub async fn open(
        stream: &Stream,
        start: u64,
        trust: &Trust,
        until: Option<u64>,
    ) -> Result<Reader, async_nats::Error> {
        Self::start(stream, start, trust, until, false).await
    }

    /// The same, decoding each payload as it reads ([`Raw::event`]), on
    /// the reader's task, ahead of the caller.
    pub async fn open_decoded(
        stream: &Stream,
        start: u64,
        trust: &Trust,
    ) -> Result<Reader, async_nats::Error> {
        Self::start(stream, start, trust, None, true).await
    }

    async fn start(
        stream: &Stream,
        start: u64,
        trust: &Trust,
        until: Option<u64>,
        decode: bool,
    ) -> Result<Reader, async_nats::Error> {
        // `start` may fall inside an append (a reader's checkpoint is any
        // message it applied): read from early enough to see its first
        // message, and hand out only what comes from `start` on.
        let from = start
            .saturating_sub(ledger_schemas::signing::APPEND_MESSAGES_MAX - 1)
            .max(1);
        let mut messages = ordered_from(stream, from, None).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(BATCH_EVENTS_MAX * 2);
        let mut gate = Gate::new(trust);
        let stream = stream.clone();
        let task = tokio::spawn(async move {
            let mut released = Vec::new();
            let mut last_seen = from - 1;
            loop {
                // Past `until` with an append still open: its rest is
                // stored (an append is stored whole, though a reader may
                // see its first messages a moment before the others).
                let tail_open = until.is_some_and(|u| last_seen >= u) && gate.held_from().is_some();
                let next = if tail_open {
                    match tokio::time::timeout(TAIL_STALL, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let head = match stream.clone().info().await {
                                Ok(i) => i.state.last_sequence,
                                Err(e) => {
                                    let _ = tx.send(Err(e.to_string())).await;
                                    return;
                                }
                            };
                            if head <= last_seen {
                                gate.finish(&mut released);
                                if !send(&tx, &mut released, start).await {
                                    return;
                                }
                            }
                            continue;
                        }
                    }
                } else {
                    messages.next().await
                };
                let Some(next) = next else {
                    return;
                };
                let item = next.map_err(|e| e.to_string()).and_then(|m| {
                    let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
                    let m = m.split().0;
                    let event = (decode && seq >= start).then(|| fold::decode(seq, &m.payload));
                    Ok(Raw {
                        seq,
                        subject: m.subject,
                        headers: m.headers,
                        payload: m.payload,
                        event,
                        seal: Seal::Checkpoint,
                    })
                });
                let raw = match item {
                    Ok(raw) => raw,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                // An ordered consumer that recreates itself must not hand a
                // message over twice: the gate expects each append once.
                if raw.seq <= last_seen {
                    continue;
                }
                last_seen = raw.seq;
                gate.push(raw, &mut released);
                if !send(&tx, &mut released, start).await {
                    return;
                }
            }
        });
        Ok(Reader {
            rx,
            _task: AbortOnDrop(task),
        })
    }

    /// Waits for the next message, then takes what else has been read
    /// already, up to `max` messages; `None` when the stream ended.
    pub async fn batch(&mut self, max: usize) -> Option<anyhow::Result<Vec<Raw>>> {
        let mut batch = Vec::new();
        let mut item = Some(self.rx.recv().await?);
        while let Some(next) = item.take() {
            match next {
                Ok(e) => batch.push(e),
                Err(e) => return Some(Err(anyhow::anyhow!(e))),
            }
            if batch.len() >= max {
                break;
            }
            item = self.rx.try_recv().ok();
        }
        Some(Ok(batch))
    }

    /// The next message (`None` when the stream ended).
    pub async fn next(&mut self) -> Option<anyhow::Result<Raw>> {
        self.rx
            .recv()
            .await
            .map(|r| r.map_err(|e| anyhow::anyhow!(e)))
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the next message, then takes what else has been read already,
/// up to [`BATCH_EVENTS_MAX`]: a batch as large as the backlog, never waiting.
async fn gather(reader: &mut Reader) -> Result<Vec<Raw>, Stop> {
    match reader.batch(BATCH_EVENTS_MAX).await {
        None => Err(Stop::Passing(anyhow::anyhow!("the event stream ended"))),
        Some(Err(e)) => Err(Stop::Passing(e)),
        Some(Ok(batch)) => Ok(batch),
    }
}
