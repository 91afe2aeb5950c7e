//! The checks of `ledger audit verify`, over records read in stream order
//! from the stream itself or from an export.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// Folds records in order and collects what breaks the ledger's rules.
#[derive(Debug, Default)]
pub struct Verifier {
    prefix: String,
    chains: HashMap<String, ChainHash>,
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
    /// `prefix` is the events' subject prefix (`ledger.events`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ..Self::default()
        }
    }

    fn find(&mut self, r: &Record, rule: &'static str, detail: impl Into<String>) {
        self.findings_total += 1;
        if self.findings.len() < FINDINGS_KEPT_MAX {
            self.findings.push(Finding {
                seq: r.seq,
                subject: r.subject.clone(),
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

    /// Checks one record; records must come in stream order.
    pub fn check(&mut self, r: &Record) {
        self.compare_if_reached(Some(r.seq));
        self.events += 1;
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

        // The chain, per aggregate subject.
        let previous = self
            .chains
            .get(&r.subject)
            .copied()
            .unwrap_or(ChainHash::GENESIS);
        let expected = previous.next(r.payload.as_bytes());
        match r.chain.as_deref().map(str::parse::<ChainHash>) {
            Some(Ok(stored)) if stored == expected => {}
            Some(Ok(stored)) => self.find(
                r,
                "chain",
                format!("{CHAIN_HEADER} is {stored}, the chain gives {expected}"),
            ),
            Some(Err(e)) => self.find(r, "chain", e.to_string()),
            None => self.find(r, "chain", format!("no {CHAIN_HEADER} header")),
        }
        // Later events chain from what was stored, so one bad link is one finding.
        let stored = r
            .chain
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(expected);
        self.chains.insert(r.subject.clone(), stored);

        let envelope: EventEnvelope = match serde_json::from_str(&r.payload) {
            Ok(e) => e,
            Err(e) => return self.find(r, "envelope", format!("unreadable event: {e}")),
        };
        if envelope.schema_version != SCHEMA_VERSION {
            self.find(
                r,
                "envelope",
                format!("schema_version {}", envelope.schema_version),
            );
        }
        if r.msg_id.as_deref() != Some(envelope.event_id.to_string().as_str()) {
            self.find(
                r,
                "header",
                format!(
                    "Nats-Msg-Id {:?} is not the event id {}",
                    r.msg_id, envelope.event_id
                ),
            );
        }
        if r.event_type.as_deref() != Some(envelope.event_type().as_str()) {
            self.find(
                r,
                "header",
                format!(
                    "Ledger-Event-Type {:?} is not {}",
                    r.event_type,
                    envelope.event_type()
                ),
            );
        }
        let account_subject = format!("{}.acct.{}", self.prefix, envelope.account_id);
        let topup_subject = |id: &Id| format!("{}.topup.{id}", self.prefix);
        let subject_ok = r.subject == account_subject
            || envelope
                .body
                .topup_id()
                .is_some_and(|t| r.subject == topup_subject(&t));
        if !subject_ok {
            self.find(
                r,
                "subject",
                format!(
                    "a {} event of account {} on {}",
                    envelope.event_type(),
                    envelope.account_id,
                    r.subject
                ),
            );
        }

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

    /// Checks that hold for the whole log: all postings sum to zero.
    pub fn finish(&mut self) {
        self.compare_if_reached(None);
        let sum: Decimal = self.totals.values().copied().sum();
        if !sum.is_zero() {
            let r = Record {
                seq: self.last_seq.unwrap_or(0),
                subject: String::new(),
                msg_id: None,
                event_type: None,
                chain: None,
                payload: String::new(),
            };
            self.find(
                &r,
                "postings",
                format!("all postings sum to {sum}, not zero"),
            );
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
            let r = Record {
                seq: at_seq,
                subject: "ledger.service_balances".into(),
                msg_id: None,
                event_type: None,
                chain: None,
                payload: String::new(),
            };
            self.find(&r, "read_model", p);
        }
    }
}
