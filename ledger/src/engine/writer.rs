//! One account's writer: the only task in this process that appends to the
//! account's subject.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledger_schemas::*;
use tokio::sync::{mpsc, oneshot};

use super::idempotency::{Indexed, KeyCache, Remembered};
use super::{CommandRequest, Engine, EngineError, Msg, Outcome};
use crate::domain::{Account, Context, decide, refusal};
use crate::metrics;
use crate::store::{AppendMessage, Appended, StoreError, read};

type Reply = oneshot::Sender<Result<Option<Outcome>, EngineError>>;

struct Job {
    request: CommandRequest,
    reply: Reply,
}

/// What became of one job in a round of decisions.
enum Decision {
    /// Its events are `messages[first..=last]`; the reply reflects the state
    /// after the last one.
    Accepted {
        last: usize,
        reply: Box<CommandReply>,
    },
    /// Refused; `recorded` names its `command_refused` event when the
    /// refusal is remembered under the key (else nothing is saved).
    Refused {
        body: Arc<ErrorBody>,
        recorded: Option<usize>,
    },
    /// Decided nothing (an expiry with nothing due).
    Nothing,
    /// Same key as an earlier job of this round: same outcome.
    SameKeyAs(usize),
}

pub(super) struct Writer {
    engine: Engine,
    account: AccountId,
    subject: String,
    generation: u64,
    loaded: bool,
    state: Account,
    /// The subject's last stream seq this writer has read or written,
    /// messages the ledger did not write included (they are skipped, but
    /// the next append expects them).
    last_seq: u64,
    /// The chain value of the subject's last genuine event.
    chain: ChainHash,
    keys: KeyCache,
    /// Whether the index may hold keys of this account that memory does not
    /// (events at or below the checkpoint loaded with, or dropped since):
    /// when not, a key missing from memory is new, with no query.
    index_may_hold: bool,
}

impl Writer {
    pub(super) fn new(engine: Engine, account: AccountId, generation: u64) -> Self {
        let subject = engine.store().settings().account_subject(&account);
        let keys = KeyCache::new(engine.limits().idempotency_keys_cached_per_account_max);
        Self {
            state: Account::new(account.clone()),
            engine,
            account,
            subject,
            generation,
            loaded: false,
            last_seq: 0,
            chain: ChainHash::GENESIS,
            keys,
            index_may_hold: false,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let idle = Duration::from_secs(self.engine.limits().account_idle_s_max);
        let batch_max = self.engine.limits().account_batch_commands_max;
        loop {
            let first = match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            };
            let mut msgs = vec![first];
            while msgs.len() < batch_max {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            let mut jobs = Vec::with_capacity(msgs.len());
            let mut balances = Vec::new();
            for m in msgs {
                match m {
                    Msg::Command(request, reply) => jobs.push(Job {
                        request: *request,
                        reply,
                    }),
                    Msg::Balance(reply) => balances.push(reply),
                }
            }
            if !self.loaded {
                if let Err(e) = self.load().await {
                    tracing::warn!(account = %self.account, error = %e, "loading the account failed");
                    for j in jobs {
                        let _ = j.reply.send(Err(e.clone()));
                    }
                    for b in balances {
                        let _ = b.send(Err(e.to_body()));
                    }
                    continue;
                }
            }
            if !jobs.is_empty() {
                self.process(jobs).await;
            }
            if !balances.is_empty() {
                // Another process may have appended since this one last
                // looked: a read reflects every event the log holds when
                // it is answered.
                let reply = match self.refresh().await {
                    Ok(()) => self.balance_reply(),
                    Err(e) => Err(e.to_body()),
                };
                for b in balances {
                    let _ = b.send(reply.clone());
                }
            }
        }
        // Stop taking commands, then answer what is still queued.
        rx.close();
        self.engine.writer_stopped(&self.account, self.generation);
        while let Ok(m) = rx.try_recv() {
            if let Msg::Command(_, reply) = m {
                let _ = reply.send(Err(EngineError::Unavailable(
                    "the account was unloaded; retry".into(),
                )));
            }
        }
    }

    /// Reads the account's whole subject. The index checkpoint is taken
    /// first: keys of events after it are held in memory, the others are in
    /// the index.
    async fn load(&mut self) -> Result<(), EngineError> {
        let indexed = self.engine.index_checkpoint();
        self.state = Account::new(self.account.clone());
        self.last_seq = 0;
        self.chain = ChainHash::GENESIS;
        self.keys = KeyCache::new(self.engine.limits().idempotency_keys_cached_per_account_max);
        self.index_may_hold = false;
        self.catch_up(indexed).await?;
        self.loaded = true;
        Ok(())
    }

    /// Applies the subject's events after `last_seq` (another writer's, or
    /// ours whose ack was lost), remembering the keys of those after `indexed`.
    async fn catch_up(&mut self, indexed: u64) -> Result<(), EngineError> {
        let read = self
            .engine
            .store()
            .events_after(&self.subject, self.last_seq, self.chain)
            .await
            .map_err(store_error)?;
        self.last_seq = read.last_seq;
        self.chain = read.chain;
        for e in read.events {
            self.state.evolve(&e.envelope.body);
            if e.envelope.idempotency_key.is_none() {
                continue;
            }
            if e.seq <= indexed {
                self.index_may_hold = true;
                continue;
            }
            if let Some((key, remembered)) =
                remembered(&self.state, self.engine.catalog(), e.envelope, e.seq)
            {
                self.keys.insert(key, remembered);
            }
        }
        Ok(())
    }

    /// Catches up when the subject holds messages after `last_seq`.
    async fn refresh(&mut self) -> Result<(), EngineError> {
        let last = read::last_on_subject(self.engine.store().stream(), &self.subject)
            .await
            .map_err(store_error)?;
        if last.is_some_and(|(seq, _)| seq != self.last_seq) {
            self.catch_up(self.engine.index_checkpoint()).await?;
        }
        Ok(())
    }

    /// The outcomes of keys the index holds, rebuilt from the log: the
    /// subject is replayed up to each key's event.
    async fn recall(
        &self,
        wanted: &[Indexed],
    ) -> Result<Vec<(IdempotencyKey, Remembered)>, EngineError> {
        let events = self
            .engine
            .store()
            .events_after(&self.subject, 0, ChainHash::GENESIS)
            .await
            .map_err(store_error)?
            .events;
        let seqs: HashMap<u64, &Indexed> = wanted.iter().map(|w| (w.seq, w)).collect();
        let mut state = Account::new(self.account.clone());
        let mut found = Vec::with_capacity(wanted.len());
        for e in events {
            state.evolve(&e.envelope.body);
            let Some(w) = seqs.get(&e.seq) else {
                continue;
            };
            match remembered(&state, self.engine.catalog(), e.envelope, e.seq) {
                Some((key, r)) if key == w.key && r.request_hash == w.request_hash => {
                    found.push((key, r));
                }
                _ => {
                    return Err(EngineError::Corrupt(format!(
                        "the index names stream seq {} for key '{}', which holds another event",
                        w.seq, w.key
                    )));
                }
            }
        }
        // Fail closed: a key the index holds but the log does not show is
        // never decided a second time.
        if found.len() != seqs.len() {
            return Err(EngineError::Corrupt(format!(
                "the index holds {} key(s) of account {} whose events are not on its subject",
                seqs.len() - found.len(),
                self.account
            )));
        }
        Ok(found)
    }

    async fn process(&mut self, mut jobs: Vec<Job>) {
        // A key missing from memory may be in the index, when the account
        // has keyed events at or below the checkpoint it loaded with.
        let mut unknown: Vec<IdempotencyKey> = if self.index_may_hold {
            jobs.iter()
                .filter_map(|j| j.request.key.as_ref())
                .filter(|k| self.keys.get(k).is_none())
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        unknown.sort();
        unknown.dedup();
        if !unknown.is_empty() {
            let found = match self
                .engine
                .inner
                .lookups
                .lookup(&self.account, unknown)
                .await
            {
                Ok(found) => found,
                Err(e) => return fail_all(jobs, EngineError::Unavailable(e.to_string())),
            };
            if !found.is_empty() {
                match self.recall(&found).await {
                    Ok(outcomes) => {
                        for (k, r) in outcomes {
                            self.keys.insert(k, r);
                        }
                    }
                    Err(e) => return fail_all(jobs, e),
                }
            }
        }
        let retries = self.engine.limits().conflict_retries_max;
        for _ in 0..=retries {
            jobs = self.answer_remembered(jobs);
            if jobs.is_empty() {
                return;
            }
            let now = Timestamp::now();
            let (work, chain, messages, decisions) = self.decide_all(&jobs, now);
            let appended = if messages.is_empty() {
                self.confirm_fresh().await.map(|()| None)
            } else {
                self.append(messages.clone(), chain).await.map(Some)
            };
            match appended {
                Ok(appended) => {
                    if let Some(a) = appended {
                        self.state = work;
                        self.chain = chain;
                        self.last_seq = a.last_seq;
                    }
                    let first_seq = appended.map(|a| a.first_seq()).unwrap_or(0);
                    return self.finish(jobs, decisions, &messages, first_seq);
                }
                Err(StoreError::Conflict { .. }) => {
                    self.engine.metrics().conflicts.inc();
                    if let Err(e) = self.catch_up(0).await {
                        return fail_all(jobs, e);
                    }
                }
                Err(e) => return fail_all(jobs, store_error(e)),
            }
        }
        fail_all(jobs, EngineError::Conflict);
    }

    /// Answers the jobs whose key is remembered; returns the others.
    fn answer_remembered(&self, jobs: Vec<Job>) -> Vec<Job> {
        let mut rest = Vec::with_capacity(jobs.len());
        for j in jobs {
            let known = j.request.key.as_ref().and_then(|k| self.keys.get(k));
            match known {
                Some(r) => {
                    self.engine
                        .metrics()
                        .command(j.request.command.name(), metrics::Outcome::Replayed);
                    let _ = j.reply.send(Ok(Some(r.answer(&j.request.request_hash))));
                }
                None => rest.push(j),
            }
        }
        rest
    }

    /// Decides every job in order against a copy of the state.
    fn decide_all(
        &self,
        jobs: &[Job],
        now: Timestamp,
    ) -> (Account, ChainHash, Vec<AppendMessage>, Vec<Decision>) {
        let catalog = self.engine.catalog();
        let ctx = Context { now, catalog };
        let mut work = self.state.clone();
        let mut chain = self.chain;
        let mut messages: Vec<AppendMessage> = Vec::new();
        let mut decisions = Vec::with_capacity(jobs.len());
        let mut seen: HashMap<&IdempotencyKey, usize> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            if let Some(key) = &job.request.key {
                if let Some(&first) = seen.get(key) {
                    decisions.push(Decision::SameKeyAs(first));
                    continue;
                }
                seen.insert(key, i);
            }
            let (new_events, refused) = match decide(&work, &job.request.command, &ctx) {
                Ok(events) => (events, None),
                Err(e) => {
                    // A domain refusal on an existing account is remembered
                    // as an event under the key; any other saves nothing.
                    let remembered = job
                        .request
                        .key
                        .as_ref()
                        .and_then(|_| refusal(&job.request.command, &e));
                    match remembered {
                        // The caller hears what the event remembers.
                        Some(refused) => {
                            let body = Arc::new(refused.to_error());
                            let data = EventData::CommandRefused(refused);
                            let event = crate::domain::NewEvent {
                                postings: crate::domain::postings_for(&self.account, &data),
                                data,
                            };
                            (vec![event], Some(body))
                        }
                        None => {
                            decisions.push(Decision::Refused {
                                body: Arc::new(e.to_body()),
                                recorded: None,
                            });
                            continue;
                        }
                    }
                }
            };
            let mut last_envelope = None;
            for ne in new_events {
                let alert = matches!(ne.data, EventData::BalanceAlert(_));
                let mut envelope = job.request.origin().envelope(ne.data, ne.postings, now);
                if alert {
                    // The command's outcome is its own event; an alert it
                    // caused holds no key (nothing answers a repeat from it).
                    envelope.idempotency_key = None;
                    envelope.request_hash = None;
                }
                let (message, next) = AppendMessage::chained(&self.subject, &envelope, chain);
                chain = next;
                work.evolve(&envelope.body);
                if !alert {
                    last_envelope = Some((envelope, message.payload.clone()));
                }
                messages.push(message);
            }
            decisions.push(match (refused, last_envelope) {
                (Some(body), _) => Decision::Refused {
                    body,
                    recorded: Some(messages.len() - 1),
                },
                (None, Some((envelope, json))) => {
                    let mut reply = reply_from(&work, self.engine.catalog(), envelope, 0);
                    // The reply reuses the event's stored bytes.
                    reply.event_json = Some(json);
                    Decision::Accepted {
                        last: messages.len() - 1,
                        reply: Box::new(reply),
                    }
                }
                (None, None) => Decision::Nothing,
            });
        }
        if let Some(first) = messages.first_mut() {
            first.expected_last_subject_seq = Some(self.last_seq);
        }
        (work, chain, messages, decisions)
    }

    /// Appends through the committer. After a timeout, reads the subject to
    /// tell our own landed append from none, and re-sends the same messages
    /// (same ids) when none landed.
    async fn append(
        &self,
        messages: Vec<AppendMessage>,
        final_chain: ChainHash,
    ) -> Result<Appended, StoreError> {
        let retries = self.engine.limits().publish_retries_max;
        let mut wait = Duration::from_millis(50);
        let mut last_error = None;
        for _ in 0..=retries {
            match self.engine.inner.committer.append(messages.clone()).await {
                Ok(a) => return Ok(a),
                Err(e @ (StoreError::Timeout(_) | StoreError::Unavailable(_))) => {
                    last_error = Some(e);
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    match read::last_on_subject(self.engine.store().stream(), &self.subject).await {
                        Ok(Some((seq, Some(chain)))) if chain == final_chain => {
                            return Ok(Appended {
                                last_seq: seq,
                                count: messages.len(),
                            });
                        }
                        Ok(Some((seq, _))) if seq != self.last_seq => {
                            return Err(StoreError::Conflict {
                                subject: self.subject.clone(),
                                detail: "the subject moved on while the append was unanswered"
                                    .into(),
                            });
                        }
                        // Not stored (or cannot tell yet): send the same messages again.
                        _ => continue,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| StoreError::Unavailable("append retries exhausted".into())))
    }

    /// Before answering with refusals only: make sure they were decided on
    /// the subject's latest state, since a refusal leaves no event for the
    /// expected-sequence check to guard.
    async fn confirm_fresh(&self) -> Result<(), StoreError> {
        let last = read::last_on_subject(self.engine.store().stream(), &self.subject).await?;
        let seq = last.map(|(s, _)| s).unwrap_or(0);
        if seq == self.last_seq {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                subject: self.subject.clone(),
                detail: format!("the subject is at {seq}, this writer at {}", self.last_seq),
            })
        }
    }

    /// Works out, then sends, the outcomes of an appended (or refusal-only)
    /// round. Nothing is written anywhere but the log: the outcomes worth
    /// remembering are in it already.
    fn finish(
        &mut self,
        jobs: Vec<Job>,
        decisions: Vec<Decision>,
        messages: &[AppendMessage],
        first_seq: u64,
    ) {
        let recorded = record(&jobs, decisions, messages, first_seq);
        self.answer(jobs, recorded);
    }

    /// Remembers each outcome its event holds, counts it, and answers its caller.
    fn answer(&mut self, jobs: Vec<Job>, recorded: Recorded) {
        for (job, (outcome, seq)) in jobs.into_iter().zip(recorded.outcomes) {
            let name = job.request.command.name();
            let result = match outcome {
                Some(o) => {
                    if let (Some(key), Some(seq)) = (&job.request.key, seq) {
                        self.keys.insert(
                            key.clone(),
                            Remembered {
                                request_hash: job.request.request_hash.clone(),
                                outcome: o.clone(),
                                seq,
                            },
                        );
                    }
                    let m = if o.is_refusal() {
                        metrics::Outcome::Refused
                    } else {
                        metrics::Outcome::Accepted
                    };
                    self.engine.metrics().command(name, m);
                    Ok(Some(o))
                }
                None => Ok(None),
            };
            let _ = job.reply.send(result);
        }
        if self.keys.trim(self.engine.index_checkpoint()) {
            self.index_may_hold = true;
        }
    }
}

/// Each job's outcome, from its decision, with the stream seq of the event
/// that holds it (`None`: nothing to remember under its key).
fn record(
    jobs: &[Job],
    decisions: Vec<Decision>,
    messages: &[AppendMessage],
    first_seq: u64,
) -> Recorded {
    debug_assert!(messages.is_empty() || first_seq > 0);
    let mut outcomes: Vec<(Option<Outcome>, Option<u64>)> = Vec::with_capacity(jobs.len());
    for (i, d) in decisions.into_iter().enumerate() {
        let outcome = match d {
            Decision::Accepted { last, mut reply } => {
                let seq = first_seq + last as u64;
                reply.stream_seq = seq;
                (Some(Outcome::Accepted(Arc::new(*reply))), Some(seq))
            }
            Decision::Refused { body, recorded } => (
                Some(Outcome::Refused(body)),
                recorded.map(|last| first_seq + last as u64),
            ),
            Decision::Nothing => (None, None),
            Decision::SameKeyAs(first) => {
                let o = outcomes[first].0.clone().map(|o| {
                    Remembered {
                        request_hash: jobs[first].request.request_hash.clone(),
                        outcome: o,
                        seq: 0,
                    }
                    .answer(&jobs[i].request.request_hash)
                });
                (o, None)
            }
        };
        outcomes.push(outcome);
    }
    Recorded { outcomes }
}

/// A round's outcomes, in the jobs' order, once recorded.
struct Recorded {
    outcomes: Vec<(Option<Outcome>, Option<u64>)>,
}

impl Writer {
    fn balance_reply(&self) -> Result<BalanceReply, ErrorBody> {
        if !self.state.is_open() {
            return Err(crate::domain::DomainError::UnknownAccount.to_body());
        }
        let (balances, reserved) = balances_of(&self.state, self.engine.catalog());
        let alerts = self
            .state
            .alerts()
            .iter()
            .map(|(service, a)| ledger_schemas::AlertStatus {
                service: service.clone(),
                threshold: a.threshold,
                spendable: crate::domain::clamped(self.state.spendable(service.as_ref())),
                low: a.low,
            })
            .collect();
        Ok(BalanceReply {
            account_id: self.account.clone(),
            balances,
            reserved,
            last_seq: self.last_seq,
            alerts,
        })
    }
}

/// What an event remembers under its key, with the account's state after
/// it: a success's reply, or a refusal.
fn remembered(
    state: &Account,
    catalog: &crate::domain::Catalog,
    envelope: EventEnvelope,
    seq: u64,
) -> Option<(IdempotencyKey, Remembered)> {
    let key = envelope.idempotency_key.clone()?;
    let request_hash = envelope.request_hash.clone()?;
    let outcome = match &envelope.body {
        EventData::CommandRefused(r) => Outcome::Refused(Arc::new(r.to_error())),
        _ => Outcome::Accepted(Arc::new(reply_from(state, catalog, envelope, seq))),
    };
    Some((
        key,
        Remembered {
            request_hash,
            outcome,
            seq,
        },
    ))
}

/// Every bucket of the catalog (zero when untouched), plus any other the
/// account holds, and the reserved credits per service.
fn balances_of(
    state: &Account,
    catalog: &crate::domain::Catalog,
) -> (
    std::collections::BTreeMap<Bucket, SignedCredits>,
    std::collections::BTreeMap<Service, Credits>,
) {
    let mut balances: std::collections::BTreeMap<Bucket, SignedCredits> = catalog
        .buckets()
        .map(|b| (b, SignedCredits::ZERO))
        .collect();
    for (b, v) in state.balances() {
        balances.insert(b.clone(), v);
    }
    (balances, state.reserved())
}

fn reply_from(
    state: &Account,
    catalog: &crate::domain::Catalog,
    event: EventEnvelope,
    stream_seq: u64,
) -> CommandReply {
    let (balances, reserved) = balances_of(state, catalog);
    let reservation_id = match &event.body {
        EventData::CreditsReserved(r) => Some(r.reservation_id),
        _ => None,
    };
    let below_threshold = state
        .alerts()
        .iter()
        .filter(|(_, a)| a.low)
        .map(|(service, a)| ledger_schemas::BelowThreshold {
            service: service.clone(),
            threshold: a.threshold,
            spendable: crate::domain::clamped(state.spendable(service.as_ref())),
        })
        .collect();
    CommandReply {
        event,
        balances,
        reserved,
        reservation_id,
        stream_seq,
        below_threshold,
        event_json: None,
    }
}

fn fail_all(jobs: Vec<Job>, e: EngineError) {
    for j in jobs {
        let _ = j.reply.send(Err(e.clone()));
    }
}

fn store_error(e: StoreError) -> EngineError {
    match e {
        StoreError::Conflict { .. } => EngineError::Conflict,
        StoreError::Corrupt(m) => EngineError::Corrupt(m),
        other => EngineError::Unavailable(other.to_string()),
    }
}
