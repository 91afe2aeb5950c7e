//! One account's writer: the only task in this process that appends to the
//! account's subject.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledger_schemas::*;
use tokio::sync::{mpsc, oneshot};

use super::idempotency::{self, KeyCache, Remembered, Row};
use super::{CommandRequest, Engine, EngineError, Msg, Outcome};
use crate::domain::{Account, Context, decide};
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
    Refused(Arc<ErrorBody>),
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
    last_seq: u64,
    chain: ChainHash,
    keys: KeyCache,
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
            for b in balances {
                let _ = b.send(self.balance_reply());
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

    /// Reads the account's whole subject.
    async fn load(&mut self) -> Result<(), EngineError> {
        self.state = Account::new(self.account.clone());
        self.last_seq = 0;
        self.chain = ChainHash::GENESIS;
        self.catch_up().await?;
        self.loaded = true;
        // Make sure every open reservation can be found by the expiry sweep,
        // even if a crash came between its append and its row.
        let open: Vec<(Id, Timestamp)> = self
            .state
            .reservations()
            .map(|(id, r)| (*id, r.expires_at))
            .collect();
        if !open.is_empty() {
            self.write_reservations(&open, &[])
                .await
                .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Applies the subject's events after `last_seq` (another writer's, or
    /// ours whose ack was lost).
    async fn catch_up(&mut self) -> Result<(), EngineError> {
        let events = read::events_after(
            self.engine.store().client(),
            self.engine.store().stream(),
            &self.subject,
            self.last_seq,
            self.chain,
        )
        .await
        .map_err(store_error)?;
        for e in events {
            self.state.evolve(&e.envelope.body);
            self.last_seq = e.seq;
            self.chain = e.chain;
            if let (Some(key), Some(hash)) = (&e.envelope.idempotency_key, &e.envelope.request_hash)
            {
                let reply = self.reply_for(e.envelope.clone(), e.seq);
                self.keys.insert(
                    key.clone(),
                    Remembered {
                        request_hash: hash.clone(),
                        outcome: Outcome::Accepted(Arc::new(reply)),
                    },
                );
            }
        }
        Ok(())
    }

    async fn process(&mut self, mut jobs: Vec<Job>) {
        // Keys this writer does not remember may be in PostgreSQL (older than
        // the cache, decided by another process, or refusals).
        let unknown: Vec<IdempotencyKey> = jobs
            .iter()
            .filter_map(|j| j.request.key.as_ref())
            .filter(|k| self.keys.get(k).is_none())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            match self
                .engine
                .inner
                .lookups
                .lookup(&self.account, unknown)
                .await
            {
                Ok(found) => {
                    for (k, r) in found {
                        self.keys.insert(k, r);
                    }
                }
                Err(e) => return fail_all(jobs, EngineError::Unavailable(e.to_string())),
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
                    return self.finish(jobs, decisions, &messages, first_seq).await;
                }
                Err(StoreError::Conflict { .. }) => {
                    self.engine.metrics().conflicts.inc();
                    if let Err(e) = self.catch_up().await {
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
            let new_events = match decide(&work, &job.request.command, &ctx) {
                Ok(events) => events,
                Err(e) => {
                    decisions.push(Decision::Refused(Arc::new(e.to_body())));
                    continue;
                }
            };
            let mut last_envelope = None;
            for ne in new_events {
                let envelope = job.request.origin().envelope(ne.data, ne.postings, now);
                let (message, next) = AppendMessage::chained(&self.subject, &envelope, chain);
                chain = next;
                work.evolve(&envelope.body);
                messages.push(message);
                last_envelope = Some(envelope);
            }
            decisions.push(match last_envelope {
                Some(envelope) => Decision::Accepted {
                    last: messages.len() - 1,
                    reply: Box::new(reply_from(&work, self.engine.catalog(), envelope, 0)),
                },
                None => Decision::Nothing,
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
                        Ok(Some((seq, chain))) if chain == final_chain => {
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

    /// Records, then sends, the outcomes of an appended (or refusal-only) round.
    async fn finish(
        &mut self,
        jobs: Vec<Job>,
        decisions: Vec<Decision>,
        messages: &[AppendMessage],
        first_seq: u64,
    ) {
        let recorded = self.record(&jobs, decisions, messages, first_seq).await;
        self.answer(jobs, recorded);
    }

    /// Works out each job's outcome from its decision and records what must
    /// outlive the process (idempotency rows, open reservations). Refusals
    /// exist nowhere else, so whether they were stored decides their answer.
    async fn record(
        &mut self,
        jobs: &[Job],
        decisions: Vec<Decision>,
        messages: &[AppendMessage],
        first_seq: u64,
    ) -> Recorded {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(jobs.len());
        let mut refusals = Vec::new();
        let mut opened: Vec<(Id, Timestamp)> = Vec::new();
        let mut closed: Vec<Id> = Vec::new();
        for (i, d) in decisions.into_iter().enumerate() {
            let job = &jobs[i];
            let outcome = match d {
                Decision::Accepted { last, mut reply } => {
                    reply.stream_seq = first_seq + last as u64;
                    track_reservation(&reply.event.body, &mut opened, &mut closed);
                    let o = Outcome::Accepted(Arc::new(*reply));
                    if let Some(key) = &job.request.key {
                        self.engine
                            .inner
                            .background
                            .write(Row {
                                account_id: self.account.clone(),
                                key: key.clone(),
                                request_hash: job.request.request_hash.clone(),
                                outcome: o.clone(),
                                stream_seq: Some(first_seq + last as u64),
                            })
                            .await;
                    }
                    Some(o)
                }
                Decision::Refused(body) => {
                    let o = Outcome::Refused(body);
                    if let Some(key) = &job.request.key {
                        refusals.push(Row {
                            account_id: self.account.clone(),
                            key: key.clone(),
                            request_hash: job.request.request_hash.clone(),
                            outcome: o.clone(),
                            stream_seq: None,
                        });
                    }
                    Some(o)
                }
                Decision::Nothing => None,
                Decision::SameKeyAs(first) => outcomes[first].clone().map(|o| {
                    Remembered {
                        request_hash: jobs[first].request.request_hash.clone(),
                        outcome: o,
                    }
                    .answer(&job.request.request_hash)
                }),
            };
            outcomes.push(outcome);
        }
        debug_assert!(messages.is_empty() || first_seq > 0);
        // Refusals exist nowhere else: they must be stored before anyone hears of them.
        let refusals_stored = idempotency::insert(self.engine.pool(), &refusals).await;
        let reservations_stored = self.write_reservations(&opened, &closed).await;
        if let Err(e) = &reservations_stored {
            tracing::warn!(account = %self.account, error = %e,
                "open reservation rows not written; the account's next load writes them");
        }
        Recorded {
            outcomes,
            refusals_stored: refusals_stored.is_ok(),
        }
    }

    /// Remembers each outcome under its key, counts it, and answers its caller.
    fn answer(&mut self, jobs: Vec<Job>, recorded: Recorded) {
        for (job, outcome) in jobs.into_iter().zip(recorded.outcomes) {
            let name = job.request.command.name();
            let result = match outcome {
                Some(Outcome::Refused(_)) if !recorded.refusals_stored => Err(
                    EngineError::Unavailable("the refusal could not be recorded".into()),
                ),
                Some(o) => {
                    if let Some(key) = &job.request.key {
                        self.keys.insert(
                            key.clone(),
                            Remembered {
                                request_hash: job.request.request_hash.clone(),
                                outcome: o.clone(),
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
    }
}

/// A round's outcomes, in the jobs' order, once recorded.
struct Recorded {
    outcomes: Vec<Option<Outcome>>,
    refusals_stored: bool,
}

impl Writer {
    async fn write_reservations(
        &self,
        opened: &[(Id, Timestamp)],
        closed: &[Id],
    ) -> anyhow::Result<()> {
        if opened.is_empty() && closed.is_empty() {
            return Ok(());
        }
        let client = self.engine.pool().get().await?;
        let ids: Vec<uuid::Uuid> = opened.iter().map(|(id, _)| id.uuid()).collect();
        let times: Vec<chrono::DateTime<chrono::Utc>> =
            opened.iter().map(|(_, t)| t.datetime()).collect();
        let gone: Vec<uuid::Uuid> = closed.iter().map(|id| id.uuid()).collect();
        client
            .execute(
                "WITH ins AS (
                    INSERT INTO ledger_cmd.open_reservations (account_id, reservation_id, expires_at)
                    SELECT $1, r, e FROM unnest($2::uuid[], $3::timestamptz[]) AS t(r, e)
                    ON CONFLICT DO NOTHING)
                 DELETE FROM ledger_cmd.open_reservations
                 WHERE account_id = $1 AND reservation_id = ANY($4::uuid[])",
                &[&self.account.as_str(), &ids, &times, &gone],
            )
            .await?;
        Ok(())
    }

    fn reply_for(&self, envelope: EventEnvelope, seq: u64) -> CommandReply {
        reply_from(&self.state, self.engine.catalog(), envelope, seq)
    }

    fn balance_reply(&self) -> Result<BalanceReply, ErrorBody> {
        if !self.state.is_open() {
            return Err(crate::domain::DomainError::UnknownAccount.to_body());
        }
        let (balances, reserved) = balances_of(&self.state, self.engine.catalog());
        Ok(BalanceReply {
            account_id: self.account.clone(),
            balances,
            reserved,
            last_seq: self.last_seq,
        })
    }
}

fn track_reservation(data: &EventData, opened: &mut Vec<(Id, Timestamp)>, closed: &mut Vec<Id>) {
    match data {
        EventData::CreditsReserved(r) => opened.push((r.reservation_id, r.expires_at)),
        EventData::ReservationCaptured(r) => closed.push(r.reservation_id),
        EventData::ReservationReleased(r) => closed.push(r.reservation_id),
        _ => {}
    }
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
    CommandReply {
        event,
        balances,
        reserved,
        reservation_id,
        stream_seq,
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
