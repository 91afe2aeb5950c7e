//! The checks of `ledger audit verify`, over records read in stream order
//! from the stream itself or from an export.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::Arc;

use ledger_schemas::checkpoint::{self, Checkpoint, Leaf};
use ledger_schemas::genuine;
use ledger_schemas::signing::{self, Gate, PublicKeys, Seal, Sealable, Trust};
use ledger_schemas::*;
use rust_decimal::Decimal;

use crate::domain::{Account, postings_for};

/// One stored message, as the stream or an export gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub seq: u64,
    pub subject: String,
    #[serde(default)]
    pub msg_id: Option<String>,
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub chain: Option<String>,
    /// The message body exactly as stored (the chain hashes these bytes).
    pub payload: String,
    /// `Ledger-Batch`: the message's position in its signed append.
    #[serde(default)]
    pub batch: Option<String>,
    /// `Ledger-Heads` and `Ledger-Signature`, on an append's last message.
    #[serde(default)]
    pub heads: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
}

impl Record {
    /// The fields a reader judges it by, with what its append's signature
    /// says of it.
    pub fn message<'a>(&'a self, signature: genuine::Signature<'a>) -> genuine::Message<'a> {
        genuine::Message {
            subject: &self.subject,
            msg_id: self.msg_id.as_deref(),
            event_type: self.event_type.as_deref(),
            chain: self.chain.as_deref(),
            payload: self.payload.as_bytes(),
            signature,
        }
    }
}

impl Sealable for Record {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn subject(&self) -> &str {
        &self.subject
    }
    fn header(&self, name: &str) -> Option<&str> {
        match name {
            signing::BATCH_HEADER => self.batch.as_deref(),
            signing::HEADS_HEADER => self.heads.as_deref(),
            signing::SIGNATURE_HEADER => self.signature.as_deref(),
            CHAIN_HEADER => self.chain.as_deref(),
            _ => None,
        }
    }
}

/// The newest checkpoint a verification checked, and by which key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Covered {
    pub seq: u64,
    pub key_id: Option<String>,
    pub root: String,
}

/// A rule the log breaks, where.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub seq: u64,
    pub subject: String,
    pub rule: &'static str,
    pub detail: String,
}

/// Read-model balances: (account, bucket) -> (balance, reserved).
pub type ReadModelRows = BTreeMap<(String, String), (Decimal, Decimal)>;

/// Findings kept at most; past it they are only counted.
pub const FINDINGS_KEPT_MAX: usize = 10_000;

/// A head moved by the event at a seq: (seq, subject, the head before).
type HeadMove = (u64, String, Option<(u64, ChainHash)>);

/// Folds records in order and collects what breaks the ledger's rules.
#[derive(Debug, Default)]
pub struct Verifier {
    prefix: String,
    /// Per subject, the chain value of its last genuine event, and its seq.
    chains: HashMap<String, ChainHash>,
    head_seqs: HashMap<String, u64>,
    /// Head moves since the last checkpoint's sequence, to see the heads
    /// as of a checkpoint read after them: (seq, subject, the head before).
    undo: Vec<HeadMove>,
    /// Signature checks, when the public keys are known.
    gate: Option<Gate<Record>>,
    keys: Option<Arc<PublicKeys>>,
    checkpoint_subject: String,
    /// The last checkpoint met in the log, and one given from outside that
    /// the log must reach and agree with.
    last_checkpoint: Option<Checkpoint>,
    expected: Option<Checkpoint>,
    /// The newest checkpoint the log was found to agree with.
    pub covered: Option<Covered>,
    pub checkpoints: u64,
    /// The first record's seq.
    first_seq: Option<u64>,
    /// Genuine events kept, of one subject (for an inclusion proof).
    collect: Option<String>,
    /// Accounts are folded only with events recorded up to this time
    /// (`audit replay --as-of`); later ones are still judged.
    replay_until: Option<Timestamp>,
    /// The stream seq of the last event folded into an account.
    pub last_folded_seq: u64,
    pub collected: Vec<(u64, String)>,
    /// Per subject, the stored chain value of a message that broke the
    /// chain just before (an event altered in an export links on from it).
    altered: HashMap<String, ChainHash>,
    /// Messages skipped as not the ledger's.
    pub foreign: u64,
    accounts: HashMap<AccountId, Account>,
    /// Net of all postings per ledger account.
    totals: BTreeMap<String, Decimal>,
    last_seq: Option<u64>,
    /// Top-ups' quoted credits, and payments recorded captured (by payment
    /// id: the top-up and the credits it buys).
    topup_credits: HashMap<Id, Credits>,
    captured: HashMap<String, (Id, Credits)>,
    /// Payments already credited by the gateway's grant.
    credited: HashSet<String>,
    /// Read-model rows and the stream seq they reflect, compared when the
    /// replay reaches that seq.
    compare_at: Option<(u64, ReadModelRows)>,
    pub events: u64,
    pub findings: Vec<Finding>,
    pub findings_total: u64,
}

fn is_usage(data: &EventData) -> bool {
    matches!(
        data,
        EventData::CreditsConsumed(_)
            | EventData::CreditsReserved(_)
            | EventData::ReservationCaptured(_)
            | EventData::ReservationReleased(_)
            | EventData::CreditsTransferred(_)
    )
}

impl Verifier {
    /// `prefix` is the events' subject prefix (`ledger.events`); without
    /// keys ([`Verifier::with_keys`]) signatures are not checked.
    pub fn new(prefix: &str) -> Self {
        let root = prefix.strip_suffix(".events").unwrap_or(prefix);
        Self {
            prefix: prefix.to_owned(),
            checkpoint_subject: format!("{root}.checkpoints"),
            ..Self::default()
        }
    }

    /// Checks every append's signature and every checkpoint's with `keys`.
    pub fn with_keys(mut self, keys: PublicKeys) -> Self {
        let keys = Arc::new(keys);
        self.gate = Some(Gate::new(&Trust {
            keys: keys.clone(),
            checkpoint_subject: self.checkpoint_subject.clone(),
        }));
        self.keys = Some(keys);
        self
    }

    /// The log must reach `checkpoint`'s sequence and agree with it.
    pub fn expect_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.expected = Some(checkpoint);
    }

    /// Folds accounts only with events recorded at or before `as_of`.
    pub fn replay_until(&mut self, as_of: Timestamp) {
        self.replay_until = Some(as_of);
    }

    /// Keeps the genuine events of `subject` as they are met.
    pub fn collect(&mut self, subject: String) {
        self.collect = Some(subject);
    }

    pub fn checkpoint_subject(&self) -> &str {
        &self.checkpoint_subject
    }

    pub fn signatures_checked(&self) -> bool {
        self.keys.is_some()
    }

    fn find(&mut self, r: &Record, rule: &'static str, detail: impl Into<String>) {
        self.find_at(r.seq, &r.subject, rule, detail);
    }

    fn find_at(&mut self, seq: u64, subject: &str, rule: &'static str, detail: impl Into<String>) {
        self.findings_total += 1;
        if self.findings.len() < FINDINGS_KEPT_MAX {
            self.findings.push(Finding {
                seq,
                subject: subject.to_owned(),
                rule,
                detail: detail.into(),
            });
        }
    }

    /// Compares the replay with `rows` (the read models at stream seq `at`)
    /// once the replay has reached `at`.
    pub fn compare_with(&mut self, at: u64, rows: ReadModelRows) {
        self.compare_at = Some((at, rows));
    }

    fn compare_if_reached(&mut self, next_seq: Option<u64>) {
        let expected_due = match (&self.expected, next_seq) {
            (Some(c), Some(next)) => next > c.seq,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if expected_due {
            if let Some(c) = self.expected.take() {
                self.check_expected(c);
            }
        }
        let due = match (&self.compare_at, next_seq) {
            (Some((at, _)), Some(next)) => next > *at,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if due {
            if let Some((at, rows)) = self.compare_at.take() {
                self.compare_read_models(&rows, at);
            }
        }
    }

    /// Checks one record; records must come in stream order. With keys, a
    /// record is checked once its append's last message has been read.
    pub fn check(&mut self, r: &Record) {
        match self.gate {
            None => self.check_sealed(r, None),
            Some(_) => self.check_owned(r.clone()),
        }
    }

    /// [`Verifier::check`] for a record the caller gives up (the gate holds
    /// it without a copy).
    pub fn check_owned(&mut self, r: Record) {
        let Some(gate) = self.gate.as_mut() else {
            return self.check_sealed(&r, None);
        };
        let mut released = Vec::new();
        gate.push(r, &mut released);
        for (r, seal) in released {
            self.check_sealed(&r, Some(seal));
        }
    }

    fn check_sealed(&mut self, r: &Record, seal: Option<Seal>) {
        self.first_seq.get_or_insert(r.seq);
        self.compare_if_reached(Some(r.seq));
        let checkpoint = r.subject == self.checkpoint_subject;
        if !checkpoint {
            self.events += 1;
        }
        match self.last_seq {
            Some(last) if r.seq <= last => {
                self.find(r, "order", format!("stream seq {} after {last}", r.seq))
            }
            Some(last) if r.seq != last + 1 => self.find(
                r,
                "contiguity",
                format!("stream seqs {} to {} are missing", last + 1, r.seq - 1),
            ),
            _ => {}
        }
        self.last_seq = Some(self.last_seq.map_or(r.seq, |l| l.max(r.seq)));
        if checkpoint {
            return self.check_checkpoint(r);
        }
        let signature = match &seal {
            None => genuine::Signature::NotChecked,
            Some(Seal::Signed) => genuine::Signature::Verified,
            Some(Seal::Unsigned(why)) => genuine::Signature::Missing(why),
            Some(Seal::Checkpoint) => genuine::Signature::Missing("a checkpoint"),
        };

        // Only the ledger's own events count: a message that does not
        // follow its subject's chain, or whose headers and envelope
        // disagree, is reported and skipped, as every reader skips it.
        let previous = self
            .chains
            .get(&r.subject)
            .copied()
            .unwrap_or(ChainHash::GENESIS);
        let m = r.message(signature);
        let decoded = serde_json::from_str::<EventEnvelope>(&r.payload);
        let judge = |previous: &ChainHash| match &decoded {
            Ok(envelope) => genuine::judge_event(&m, previous, envelope),
            Err(_) => genuine::judge(&m, previous),
        };
        let chain = match judge(&previous) {
            Ok(chain) => chain,
            Err(why) => {
                // An export's event altered in place (its stored chain value
                // kept): what follows links to that value, so one
                // alteration is one finding.
                match self.altered.get(&r.subject).map(judge) {
                    Some(Ok(chain)) => chain,
                    _ => {
                        self.foreign += 1;
                        if why.rule == "chain" {
                            if let Some(stored) = r.chain.as_deref().and_then(|c| c.parse().ok()) {
                                self.altered.insert(r.subject.clone(), stored);
                            }
                        }
                        let detail = format!("not written by the ledger, skipped: {}", why.reason);
                        return self.find(r, why.rule, detail);
                    }
                }
            }
        };
        let before = self
            .chains
            .insert(r.subject.clone(), chain)
            .map(|c| (self.head_seqs.get(&r.subject).copied().unwrap_or(0), c));
        self.head_seqs.insert(r.subject.clone(), r.seq);
        self.undo.push((r.seq, r.subject.clone(), before));
        self.altered.remove(&r.subject);
        if self.collect.as_deref() == Some(r.subject.as_str()) {
            self.collected.push((r.seq, r.payload.clone()));
        }

        let envelope: EventEnvelope = match decoded {
            Ok(e) => e,
            Err(e) => {
                let detail = format!("a genuine event this version cannot read: {e}");
                return self.find(r, "envelope", detail);
            }
        };
        if envelope.schema_version != SCHEMA_VERSION {
            self.find(
                r,
                "envelope",
                format!("schema_version {}", envelope.schema_version),
            );
        }
        let account_subject = format!("{}.acct.{}", self.prefix, envelope.account_id);

        // Postings: balanced, and what the event's data implies.
        for p in &envelope.postings {
            if p.amount.is_zero() || p.debit == p.credit {
                self.find(
                    r,
                    "postings",
                    format!(
                        "degenerate posting {} -> {} of {}",
                        p.debit, p.credit, p.amount
                    ),
                );
            }
            *self.totals.entry(p.debit.to_string()).or_default() -= p.amount.get();
            *self.totals.entry(p.credit.to_string()).or_default() += p.amount.get();
        }
        let implied = postings_for(&envelope.account_id, &envelope.body);
        if implied != envelope.postings {
            self.find(
                r,
                "postings",
                "the postings are not those the event's data implies",
            );
        }

        self.check_topup(r, &envelope);
        if r.subject != account_subject {
            return;
        }
        if self.replay_until.is_some_and(|t| envelope.recorded_at > t) {
            return;
        }
        self.last_folded_seq = r.seq;
        // Replay the account; usage never takes a bucket below zero.
        let account = self
            .accounts
            .entry(envelope.account_id.clone())
            .or_insert_with(|| Account::new(envelope.account_id.clone()));
        let closes = match &envelope.body {
            EventData::ReservationCaptured(c) => Some(c.reservation_id),
            EventData::ReservationReleased(c) => Some(c.reservation_id),
            _ => None,
        };
        if let Some(id) = closes {
            if account.reservation(&id).is_none() {
                let detail = format!("closes reservation {id}, which is not open");
                return self.find(r, "replay", detail);
            }
        }
        if let EventData::CommandRefused(refused) = &envelope.body {
            if let Err(detail) = refusal_holds(account, refused, envelope.recorded_at) {
                return self.find(r, "refusal", detail);
            }
        }
        // Alerts fire exactly at the crossings the replay shows: right
        // after the event that crossed, once, and never otherwise.
        let due = account.alerts_due();
        let alert_finding = match (&envelope.body, due.first()) {
            (EventData::BalanceAlert(a), Some(d)) if a == d => None,
            (EventData::BalanceAlert(a), _) => Some(format!(
                "a {:?} alert at {} with no crossing of the replay behind it",
                a.state, a.threshold
            )),
            (_, Some(d)) => Some(format!(
                "the balance crossed {} ({:?}, spendable {}) and no alert followed",
                d.threshold, d.state, d.spendable
            )),
            (_, None) => None,
        };
        if let Some(detail) = alert_finding {
            self.find(r, "alert", detail);
        }
        let account = self
            .accounts
            .get_mut(&envelope.account_id)
            .expect("replayed above");
        let before: HashMap<Bucket, SignedCredits> =
            account.balances().map(|(b, v)| (b.clone(), v)).collect();
        account.evolve(&envelope.body);
        if is_usage(&envelope.body) {
            let broken: Vec<String> = account
                .balances()
                .filter(|(b, after)| {
                    let was = before.get(*b).copied().unwrap_or_default();
                    after.is_negative() && after.get() < was.get()
                })
                .map(|(b, after)| format!("{b} to {after}"))
                .collect();
            if !broken.is_empty() {
                let detail = format!("usage took {}", broken.join(", "));
                self.find(r, "negative_balance", detail);
            }
        }
    }

    /// Credits for a payment come once, after the top-up recorded the payment
    /// captured, and are the credits it bought.
    fn check_topup(&mut self, r: &Record, envelope: &EventEnvelope) {
        match &envelope.body {
            EventData::TopupQuoted(q) => {
                self.topup_credits.insert(q.topup_id, q.credits);
            }
            EventData::PaymentCaptured(c) => {
                if let Some(credits) = self.topup_credits.get(&c.topup_id) {
                    self.captured
                        .insert(c.payment_id.clone(), (c.topup_id, *credits));
                }
            }
            EventData::CreditsGranted(g)
                if envelope
                    .idempotency_key
                    .as_ref()
                    .is_some_and(|k| k.as_str().starts_with("topup:")) =>
            {
                let payment = g.payment_id.clone().unwrap_or_default();
                let detail = match self.captured.get(&payment) {
                    None => Some(format!(
                        "grants for payment '{payment}', never recorded captured"
                    )),
                    Some((topup, _)) if g.topup_id != Some(*topup) => Some(format!(
                        "grants payment {payment} to top-up {:?}, captured on {topup}",
                        g.topup_id
                    )),
                    Some((_, credits)) if *credits != g.credits => Some(format!(
                        "grants {} for payment {payment}, which bought {credits}",
                        g.credits
                    )),
                    Some(_) if !self.credited.insert(payment.clone()) => {
                        Some(format!("a second grant for payment {payment}"))
                    }
                    Some(_) => None,
                };
                if let Some(d) = detail {
                    self.find(r, "topup_grant", d);
                }
            }
            _ => {}
        }
    }

    /// Every aggregate's head as of stream seq `seq` (at or after the last
    /// checkpoint's), as checkpoint leaves.
    pub fn heads_at(&self, seq: u64) -> Vec<Leaf> {
        let mut heads: HashMap<&str, (u64, ChainHash)> = self
            .chains
            .iter()
            .map(|(s, c)| {
                (
                    s.as_str(),
                    (self.head_seqs.get(s).copied().unwrap_or(0), *c),
                )
            })
            .collect();
        for (at, subject, before) in self.undo.iter().rev() {
            if *at <= seq {
                break;
            }
            match before {
                Some(b) => heads.insert(subject, *b),
                None => heads.remove(subject.as_str()),
            };
        }
        heads
            .into_iter()
            .map(|(subject, (seq, chain))| Leaf {
                subject: subject.to_owned(),
                seq,
                chain: chain.to_hex(),
            })
            .collect()
    }

    /// Whether the heads as of `c.seq` give `c`'s root; a finding of
    /// `rule` when not.
    fn agrees_with(&mut self, c: &Checkpoint, at: u64, rule: &'static str) -> bool {
        let (leaves, root) = checkpoint::tree(self.heads_at(c.seq));
        let root = hex::encode(root);
        if root == c.root && leaves.len() as u64 == c.aggregates {
            return true;
        }
        let detail = format!(
            "up to stream seq {} the log gives {} aggregates with root {root}; the checkpoint \
             signed {} with root {}: an aggregate is missing, added or rewritten",
            c.seq,
            leaves.len(),
            c.aggregates,
            c.root
        );
        self.find_at(at, &self.checkpoint_subject.clone(), rule, detail);
        false
    }

    /// A checkpoint in the log: signed by a trusted key, chained to the
    /// one before, and agreeing with the heads as of its sequence.
    fn check_checkpoint(&mut self, r: &Record) {
        self.checkpoints += 1;
        let c: Checkpoint = match serde_json::from_str(&r.payload) {
            Ok(c) => c,
            Err(e) => return self.find(r, "checkpoint", format!("not a checkpoint: {e}")),
        };
        let mut key_id = None;
        if let Some(keys) = &self.keys {
            match c.verify(keys) {
                Ok(id) => key_id = Some(id.to_owned()),
                Err(why) => return self.find(r, "checkpoint_signature", why.0),
            }
        }
        let previous = match &self.last_checkpoint {
            Some(p) => Some(p.hash()),
            // From the start of the log, the first has no predecessor.
            None if self.first_seq == Some(1) => Some(checkpoint::NO_PREVIOUS.to_owned()),
            None => None,
        };
        if previous.as_ref().is_some_and(|p| *p != c.previous) {
            let detail = format!(
                "names previous {}, the checkpoint before it hashes to {}",
                c.previous,
                previous.unwrap_or_default()
            );
            self.find(r, "checkpoint_chain", detail);
        }
        if c.seq >= r.seq {
            let detail = format!("covers seq {}, at or after its own seq {}", c.seq, r.seq);
            return self.find(r, "checkpoint", detail);
        }
        if self.agrees_with(&c, r.seq, "checkpoint_root") {
            self.covered = Some(Covered {
                seq: c.seq,
                key_id,
                root: c.root.clone(),
            });
        }
        let seq = c.seq;
        self.undo.retain(|(at, _, _)| *at > seq);
        self.last_checkpoint = Some(c);
    }

    /// The checkpoint given from outside, once the log has passed its seq
    /// (or ended before it).
    fn check_expected(&mut self, c: Checkpoint) {
        let last = self.last_seq();
        if last < c.seq {
            let detail = format!(
                "the log ends at stream seq {last}; the checkpoint covers up to {}: \
                 what follows {last} is missing",
                c.seq
            );
            self.find_at(
                last,
                &self.checkpoint_subject.clone(),
                "checkpoint_coverage",
                detail,
            );
            return;
        }
        if self.agrees_with(&c, c.seq, "checkpoint_root") {
            let key_id = self
                .keys
                .as_ref()
                .and_then(|k| c.verify(k).ok().map(str::to_owned));
            let newer = self.covered.as_ref().is_none_or(|v| v.seq <= c.seq);
            if newer {
                self.covered = Some(Covered {
                    seq: c.seq,
                    key_id,
                    root: c.root.clone(),
                });
            }
        }
    }

    /// Checks that hold for the whole log: every customer bucket's running
    /// total of postings, and every service's reserve, is what the replay
    /// of the accounts' events gives.
    pub fn finish(&mut self) {
        if let Some(gate) = self.gate.as_mut() {
            let mut released = Vec::new();
            gate.finish(&mut released);
            for (r, seal) in released {
                self.check_sealed(&r, Some(seal));
            }
        }
        let missing: Vec<(String, String)> = self
            .accounts
            .iter()
            .filter_map(|(id, a)| {
                let d = a.alerts_due().into_iter().next()?;
                Some((
                    format!("{}.acct.{id}", self.prefix),
                    format!(
                        "the balance crossed {} ({:?}) and no alert followed",
                        d.threshold, d.state
                    ),
                ))
            })
            .collect();
        self.compare_if_reached(None);
        let at = self.last_seq();
        for (subject, detail) in missing {
            self.find_at(at, &subject, "alert", detail);
        }
        let mut replayed: BTreeMap<String, Decimal> = BTreeMap::new();
        for (id, account) in &self.accounts {
            for (b, v) in account.balances() {
                let key = LedgerAccount::Customer(id.clone(), b.clone()).to_string();
                replayed.insert(key, v.get());
            }
            for (service, credits) in account.reserved() {
                let key = LedgerAccount::Reserved(service).to_string();
                *replayed.entry(key).or_default() += credits.get();
            }
        }
        let checked =
            |key: &str| key.starts_with("customer:") || key.starts_with("platform:reserved:");
        let mut problems = Vec::new();
        for (key, total) in self.totals.iter().filter(|(k, _)| checked(k)) {
            let want = replayed.get(key).copied().unwrap_or_default();
            if *total != want {
                problems.push(format!(
                    "{key}: the postings total {total}, the replay gives {want}"
                ));
            }
        }
        for (key, want) in &replayed {
            if !want.is_zero() && !self.totals.contains_key(key) {
                problems.push(format!("{key}: no postings, the replay gives {want}"));
            }
        }
        let at = self.last_seq();
        for p in problems {
            self.find_at(at, "", "totals", p);
        }
    }

    pub fn accounts(&self) -> &HashMap<AccountId, Account> {
        &self.accounts
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.unwrap_or(0)
    }

    pub fn aggregates(&self) -> usize {
        self.chains.len()
    }

    /// Compares the replayed balances with read-model rows
    /// `(account, bucket) -> (balance, reserved)` taken at the same position.
    fn compare_read_models(&mut self, rows: &ReadModelRows, at_seq: u64) {
        let mut replayed = ReadModelRows::new();
        for (id, account) in &self.accounts {
            if !account.is_open() {
                continue;
            }
            let reserved = account.reserved();
            let mut buckets: Vec<Bucket> = account.balances().map(|(b, _)| b.clone()).collect();
            buckets.push(Bucket::general());
            buckets.extend(reserved.keys().map(Bucket::from));
            for b in buckets {
                let res = b.service().and_then(|s| reserved.get(&s).map(|c| c.get()));
                replayed.insert(
                    (id.to_string(), b.to_string()),
                    (account.balance(&b), res.unwrap_or_default()),
                );
            }
        }
        let mut problems = Vec::new();
        for (key, want) in &replayed {
            let have = rows.get(key).copied().unwrap_or_default();
            if have.0 != want.0 || have.1 != want.1 {
                problems.push(format!(
                    "{}/{}: read model {} (reserved {}), replay {} (reserved {})",
                    key.0, key.1, have.0, have.1, want.0, want.1
                ));
            }
        }
        for (key, have) in rows {
            if !replayed.contains_key(key) && (!have.0.is_zero() || !have.1.is_zero()) {
                problems.push(format!(
                    "{}/{}: a row the log does not explain",
                    key.0, key.1
                ));
            }
        }
        for p in problems {
            self.find_at(at_seq, "ledger.service_balances", "read_model", p);
        }
    }
}

/// Whether a remembered refusal was right for the account's state when it
/// was made: the facts in its details are those the state gives.
fn refusal_holds(account: &Account, refused: &CommandRefused, at: Timestamp) -> Result<(), String> {
    let text = |field: &str| {
        refused
            .details
            .get(field)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("a {} refusal without '{field}'", refused.code.as_str()))
    };
    let decimal = |field: &str| -> Result<Decimal, String> {
        text(field)?
            .parse::<Decimal>()
            .map_err(|e| format!("'{field}' is no decimal: {e}"))
    };
    let reservation =
        || -> Result<Id, String> { Id::parse(text("reservation_id")?).map_err(|e| e.to_string()) };
    if !account.is_open() {
        return Err("a refusal on an account that is not open".into());
    }
    match refused.code {
        ErrorCode::AccountExists => Ok(()),
        ErrorCode::InsufficientCredits => {
            let required = decimal("credits_required")?;
            let available = decimal("credits_available")?;
            let actual = match (text("service"), text("from_bucket")) {
                (Ok(service), _) => {
                    let own = account.balance(&Bucket::parse(service).map_err(|e| e.to_string())?);
                    let general = account.balance(&Bucket::general());
                    // As the refusal reports it: within one value's range.
                    SignedCredits::saturating(if account.in_debt() {
                        own + general
                    } else {
                        own.max(Decimal::ZERO) + general.max(Decimal::ZERO)
                    })
                    .get()
                }
                (_, Ok(bucket)) => {
                    account.balance(&Bucket::parse(bucket).map_err(|e| e.to_string())?)
                }
                _ => {
                    return Err(
                        "an insufficient_credits refusal naming no service or bucket".into(),
                    );
                }
            };
            if actual != available {
                return Err(format!(
                    "says {available} credits were available, the replay gives {actual}"
                ));
            }
            if required <= available && !account.in_debt() {
                return Err(format!(
                    "refused {required} credits with {available} available"
                ));
            }
            Ok(())
        }
        ErrorCode::ReservationNotFound => {
            let id = reservation()?;
            if account.reservation(&id).is_some() || account.closed_reservation(&id).is_some() {
                return Err(format!(
                    "says reservation {id} does not exist, the replay has it"
                ));
            }
            Ok(())
        }
        ErrorCode::ReservationClosed => {
            let id = reservation()?;
            let expired = account.reservation(&id).is_some_and(|r| r.expires_at <= at);
            if account.closed_reservation(&id).is_none() && !expired {
                return Err(format!(
                    "says reservation {id} is closed, the replay has it open"
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "the domain never remembers a refusal coded {}",
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AppendMessage, Origin};

    /// One account's log, checked event by event as it is written.
    struct Log {
        seq: u64,
        chain: ChainHash,
        verifier: Verifier,
    }

    impl Log {
        fn new() -> Self {
            Log {
                seq: 0,
                chain: ChainHash::GENESIS,
                verifier: Verifier::new("ledger.events"),
            }
        }

        /// Appends `data` and returns the rules it broke.
        fn append(&mut self, data: EventData) -> Vec<&'static str> {
            self.append_with(data, |_| {}, |_| {})
        }

        /// Appends `data` with its envelope edited before it is chained
        /// (still the ledger's event, breaking a rule of the ledger), and
        /// the stored record edited after (no longer the ledger's).
        fn append_with(
            &mut self,
            data: EventData,
            edit_envelope: impl FnOnce(&mut EventEnvelope),
            edit_record: impl FnOnce(&mut Record),
        ) -> Vec<&'static str> {
            let mut envelope = envelope_of(data);
            edit_envelope(&mut envelope);
            self.seq += 1;
            let (mut record, next) =
                chained(self.seq, "ledger.events.acct.acme", &envelope, self.chain);
            let genuine = record.clone();
            edit_record(&mut record);
            if record == genuine {
                self.chain = next;
            }
            self.check(&record)
        }

        /// Checks `record` and returns the rules it broke.
        fn check(&mut self, record: &Record) -> Vec<&'static str> {
            let before = self.verifier.findings.len();
            self.verifier.check(record);
            self.verifier.findings[before..]
                .iter()
                .map(|f| f.rule)
                .collect()
        }

        /// Ends the log and returns the rules the whole of it broke.
        fn finish(&mut self) -> Vec<&'static str> {
            let before = self.verifier.findings.len();
            self.verifier.finish();
            self.verifier.findings[before..]
                .iter()
                .map(|f| f.rule)
                .collect()
        }

        /// An open account with `credits` in `general`.
        fn funded(credits: &str) -> Self {
            let mut log = Log::new();
            assert!(log.append(opened()).is_empty());
            assert!(log.append(grant(credits)).is_empty());
            log
        }
    }

    /// `data` as account acme's event, with its postings.
    fn envelope_of(data: EventData) -> EventEnvelope {
        let account = AccountId::parse("acme").unwrap();
        let actor = Actor::parse("system").unwrap();
        let origin = Origin {
            account: &account,
            idempotency_key: None,
            request_hash: "",
            correlation_id: None,
            causation_id: None,
            actor: &actor,
            occurred_at: None,
        };
        let postings = postings_for(&account, &data);
        origin.envelope(data, postings, Timestamp::now())
    }

    /// The record the ledger stores for `envelope` at `seq` on `subject`
    /// after chain value `previous`, and the chain value that follows.
    fn chained(
        seq: u64,
        subject: &str,
        envelope: &EventEnvelope,
        previous: ChainHash,
    ) -> (Record, ChainHash) {
        let (m, next) = AppendMessage::chained(subject, envelope, previous);
        let record = Record {
            seq,
            subject: subject.into(),
            msg_id: Some(m.event_id),
            event_type: Some(m.event_type.into()),
            chain: Some(m.chain),
            payload: String::from_utf8(m.payload.to_vec()).unwrap(),
            batch: None,
            heads: None,
            signature: None,
        };
        (record, next)
    }

    fn opened() -> EventData {
        EventData::AccountOpened(AccountOpened { display_name: None })
    }

    fn grant(credits: &str) -> EventData {
        EventData::CreditsGranted(CreditsGranted {
            bucket: Bucket::general(),
            credits: Credits::parse(credits).unwrap(),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: None,
        })
    }

    fn consumed(credits: &str) -> EventData {
        let c = Credits::parse(credits).unwrap();
        EventData::CreditsConsumed(CreditsConsumed {
            service: Service::parse("email").unwrap(),
            usage_id: UsageId::parse(Id::new_v7().to_string()).unwrap(),
            quantity: Quantity::new(1).unwrap(),
            unit_price: None,
            credits: c,
            drawn: vec![Draw {
                bucket: Bucket::general(),
                credits: c,
            }],
            rate_card_version: None,
        })
    }

    #[test]
    fn judging_a_decoded_event_agrees_with_judging_its_bytes() {
        let topup = Id::new_v7();
        let mut granted = grant("1");
        if let EventData::CreditsGranted(c) = &mut granted {
            c.topup_id = Some(topup);
        }
        let abandoned = EventData::TopupAbandoned(TopupAbandoned { topup_id: topup });
        let on_topup = format!("ledger.events.topup.{topup}");
        let cases = [
            (consumed("1"), "ledger.events.acct.acme"),
            (consumed("1"), "ledger.events.acct.other"),
            (consumed("1"), "ledger.events.acct.acme.x"),
            (granted.clone(), "ledger.events.acct.acme"),
            (granted, on_topup.as_str()),
            (abandoned.clone(), on_topup.as_str()),
            (abandoned.clone(), "ledger.events.acct.acme"),
            (abandoned, "ledger.events.topup.other"),
        ];
        let mut verdicts = Vec::new();
        for (data, subject) in cases {
            let envelope = envelope_of(data);
            let (record, _) = chained(1, subject, &envelope, ChainHash::GENESIS);
            let variants = [
                record.clone(),
                Record {
                    msg_id: Some("x".into()),
                    ..record.clone()
                },
                Record {
                    event_type: Some("account_opened".into()),
                    ..record.clone()
                },
                Record {
                    chain: None,
                    ..record
                },
            ];
            for r in variants {
                let m = r.message(genuine::Signature::NotChecked);
                let bytes = genuine::judge(&m, &ChainHash::GENESIS).map_err(|f| f.rule);
                let decoded =
                    genuine::judge_event(&m, &ChainHash::GENESIS, &envelope).map_err(|f| f.rule);
                assert_eq!(bytes, decoded, "{r:?}");
                verdicts.push(bytes.err().unwrap_or("genuine"));
            }
        }
        // Each verdict is reached by some case, so the agreement is not vacuous.
        for v in ["genuine", "chain", "header", "subject"] {
            assert!(verdicts.contains(&v), "{v}: {verdicts:?}");
        }
    }

    #[test]
    fn a_clean_log_breaks_no_rule() {
        let mut log = Log::funded("10");
        assert!(log.append(consumed("4")).is_empty());
        assert!(log.finish().is_empty(), "{:?}", log.verifier.findings);
    }

    #[test]
    fn stream_order_and_gaps_are_reported() {
        let mut log = Log::funded("10");
        log.seq += 2;
        assert_eq!(log.append(consumed("1")), ["contiguity"]);
        log.seq -= 3;
        assert_eq!(log.append(consumed("1")), ["order"]);
    }

    #[test]
    fn a_message_off_the_chain_is_reported_skipped_and_the_chain_goes_on() {
        let mut log = Log::funded("10");
        // A forgery with a chain value of its own making: reported, and its
        // consumption never counted (the running totals stay right).
        let forged = log.append_with(
            consumed("7"),
            |_| {},
            |r| r.chain = Some(ChainHash::GENESIS.next(b"forged").to_hex()),
        );
        assert_eq!(forged, ["chain"]);
        assert_eq!(
            log.append_with(consumed("1"), |_| {}, |r| r.chain = None),
            ["chain"]
        );
        assert!(
            log.append(consumed("9")).is_empty(),
            "the ledger's next event links on"
        );
        assert!(log.finish().is_empty(), "{:?}", log.verifier.findings);
        assert_eq!(log.verifier.foreign, 2);
    }

    #[test]
    fn an_event_altered_in_an_export_is_one_finding() {
        let mut log = Log::funded("10");
        let altered = log.append_with(
            consumed("1"),
            |_| {},
            |r| {
                r.payload = r.payload.replace("\"credits\":\"1\"", "\"credits\":\"0\"");
            },
        );
        assert_eq!(altered, ["chain"]);
        // The ledger chained the next event from the original; the export
        // holds the original's chain value beside the altered body.
        let previous = log.verifier.altered["ledger.events.acct.acme"];
        log.chain = previous;
        assert!(log.append(consumed("1")).is_empty());
    }

    #[test]
    fn headers_that_disagree_with_the_envelope_are_reported() {
        let mut log = Log::funded("10");
        let id = log.append_with(consumed("1"), |_| {}, |r| r.msg_id = Some("x".into()));
        assert_eq!(id, ["header"]);
        let kind = log.append_with(
            consumed("1"),
            |_| {},
            |r| r.event_type = Some("credits_granted".into()),
        );
        assert_eq!(kind, ["header"]);
    }

    #[test]
    fn an_unreadable_or_newer_envelope_is_reported() {
        let mut log = Log::funded("10");
        let head = log.chain;
        let junk = |r: &mut Record| {
            r.payload = "not json".into();
            r.chain = Some(head.next(b"not json").to_hex());
        };
        assert_eq!(log.append_with(consumed("1"), |_| {}, junk), ["envelope"]);
        let newer = log.append_with(consumed("1"), |e| e.schema_version = 2, |_| {});
        assert_eq!(newer, ["envelope"]);
    }

    #[test]
    fn an_event_on_another_aggregates_subject_is_reported() {
        let mut log = Log::funded("10");
        let other = AccountId::parse("other").unwrap();
        let moved = log.append_with(consumed("1"), |e| e.account_id = other, |_| {});
        assert_eq!(moved, ["subject"]);
        // The ledger's chain, an account's event on a top-up's subject.
        let topup = Id::new_v7();
        let mut log = Log::new();
        let mut g = grant("1");
        if let EventData::CreditsGranted(c) = &mut g {
            c.topup_id = Some(topup);
        }
        let subject = format!("ledger.events.topup.{topup}");
        let (record, _) = chained(1, &subject, &envelope_of(g), ChainHash::GENESIS);
        assert_eq!(log.check(&record), ["subject"]);
    }

    #[test]
    fn postings_other_than_the_data_implies_are_reported_and_break_the_totals() {
        let mut log = Log::funded("10");
        let more = log.append_with(
            consumed("1"),
            |e| e.postings[0].amount = Credits::parse("2").unwrap(),
            |_| {},
        );
        assert_eq!(more, ["postings"]);
        assert_eq!(log.finish(), ["totals"]);
        let mut log = Log::funded("10");
        let degenerate = log.append_with(
            consumed("1"),
            |e| e.postings[0].credit = e.postings[0].debit.clone(),
            |_| {},
        );
        assert_eq!(degenerate, ["postings", "postings"]);
    }

    #[test]
    fn usage_below_zero_is_reported() {
        let mut log = Log::funded("1");
        assert_eq!(log.append(consumed("3")), ["negative_balance"]);
        // A grant may leave a bucket negative (debt); usage may not deepen it.
        assert!(log.append(grant("1")).is_empty());
    }

    #[test]
    fn closing_a_reservation_that_is_not_open_is_reported() {
        let mut log = Log::funded("10");
        let capture = EventData::ReservationCaptured(ReservationCaptured {
            reservation_id: Id::new_v7(),
            service: Service::parse("email").unwrap(),
            credits: Credits::parse("1").unwrap(),
            drawn: vec![],
            returned: vec![],
        });
        assert_eq!(log.append(capture), ["replay"]);
        // Its postings moved reserve to revenue that the replay never held.
        assert_eq!(log.finish(), ["totals"]);
    }

    #[test]
    fn a_grant_for_a_payment_never_captured_is_reported() {
        let mut log = Log::funded("10");
        let mut g = grant("5");
        if let EventData::CreditsGranted(c) = &mut g {
            c.source = GrantSource::Topup;
            c.payment_id = Some("pay_x".into());
        }
        let key = IdempotencyKey::parse("topup:pay_x").unwrap();
        let found = log.append_with(g, |e| e.idempotency_key = Some(key), |_| {});
        assert_eq!(found, ["topup_grant"]);
    }

    #[test]
    fn read_models_that_differ_from_the_replay_are_reported() {
        let mut log = Log::funded("10");
        let mut rows = ReadModelRows::new();
        rows.insert(
            ("acme".into(), "general".into()),
            (Decimal::new(9, 0), Decimal::ZERO),
        );
        log.verifier.compare_with(2, rows);
        assert_eq!(log.finish(), ["read_model"]);
    }

    fn refused(code: ErrorCode, details: serde_json::Value) -> EventData {
        EventData::CommandRefused(CommandRefused {
            command: "consume".into(),
            code,
            message: "refused".into(),
            details: details.as_object().unwrap().clone(),
        })
    }

    #[test]
    fn a_refusal_must_be_right_for_the_state_it_was_made_on() {
        let mut log = Log::new();
        assert!(
            log.append(EventData::AccountOpened(AccountOpened {
                display_name: None
            }))
            .is_empty()
        );
        let grant = EventData::CreditsGranted(CreditsGranted {
            bucket: Bucket::general(),
            credits: Credits::parse("1").unwrap(),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: None,
        });
        assert!(log.append(grant).is_empty());
        let short = |available: &str, required: &str| {
            refused(
                ErrorCode::InsufficientCredits,
                serde_json::json!({"service": "email", "credits_available": available,
                                   "credits_required": required}),
            )
        };
        assert!(log.append(short("1", "5")).is_empty(), "a right refusal");
        assert_eq!(
            log.append(short("3", "5")),
            ["refusal"],
            "wrong availability"
        );
        assert_eq!(
            log.append(short("1", "0.5")),
            ["refusal"],
            "refused with enough"
        );
        let rid = Id::new_v7();
        let not_found = refused(
            ErrorCode::ReservationNotFound,
            serde_json::json!({"reservation_id": rid.to_string()}),
        );
        assert!(log.append(not_found.clone()).is_empty());
        let reserve = EventData::CreditsReserved(CreditsReserved {
            reservation_id: rid,
            service: Service::parse("email").unwrap(),
            credits: Credits::parse("0.5").unwrap(),
            drawn: vec![Draw {
                bucket: Bucket::general(),
                credits: Credits::parse("0.5").unwrap(),
            }],
            expires_at: Timestamp::parse("2099-01-01T00:00:00.000Z").unwrap(),
        });
        assert!(log.append(reserve).is_empty());
        assert_eq!(log.append(not_found), ["refusal"], "the reservation exists");
        let closed = refused(
            ErrorCode::ReservationClosed,
            serde_json::json!({"reservation_id": rid.to_string()}),
        );
        assert_eq!(
            log.append(closed),
            ["refusal"],
            "it is open and not expired"
        );
        let never = refused(ErrorCode::InvalidRequest, serde_json::json!({}));
        assert_eq!(log.append(never), ["refusal"], "never remembered");
    }

    #[test]
    fn alerts_must_fire_exactly_at_the_crossings_of_the_replay() {
        let alert = |state: AlertState, spendable: &str| {
            EventData::BalanceAlert(BalanceAlert {
                service: None,
                threshold: Credits::parse("5").unwrap(),
                state,
                spendable: SignedCredits::parse(spendable).unwrap(),
            })
        };
        let set = EventData::AlertSet(AlertSet {
            service: None,
            threshold: Some(Credits::parse("5").unwrap()),
        });
        // Right: each crossing followed by its alert, once.
        let mut log = Log::funded("6");
        assert!(log.append(set.clone()).is_empty());
        assert!(log.append(consumed("2")).is_empty());
        assert!(log.append(alert(AlertState::Low, "4")).is_empty());
        assert!(log.append(consumed("1")).is_empty(), "no second low");
        assert!(log.append(grant("3")).is_empty());
        assert!(log.append(alert(AlertState::Recovered, "6")).is_empty());
        assert!(log.finish().is_empty());
        // A crossing without its alert, found at the next event and at the end.
        let mut log = Log::funded("6");
        assert!(log.append(set.clone()).is_empty());
        assert!(log.append(consumed("2")).is_empty());
        assert_eq!(log.append(consumed("1")), ["alert"]);
        assert_eq!(log.finish(), ["alert"]);
        // An alert with no crossing behind it, and one repeated.
        let mut log = Log::funded("6");
        assert!(log.append(set).is_empty());
        assert_eq!(log.append(alert(AlertState::Low, "6")), ["alert"]);
        let mut log = Log::funded("6");
        assert!(log.append(consumed("2")).is_empty());
        assert_eq!(
            log.append(alert(AlertState::Low, "4")),
            ["alert"],
            "no alert set"
        );
    }
}
