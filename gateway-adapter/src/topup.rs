//! The top-up aggregate (`ledger.events.topup.<topup_id>`) and the one rule
//! that moves it forward.
//!
//! Webhooks, the checkout callback and the reconciliation poller all end in
//! the same place: the gateway re-fetches the order's payments (and the
//! credited payment's refunds and disputes) from Razorpay, and
//! [`next_step`] compares what Razorpay says with what the top-up has
//! recorded, one step at a time. Each step records one event, sometimes after
//! one effect on the ledger or on Razorpay (a grant, a reversal, a refund)
//! keyed so that repeating it changes nothing. The gateway applies a step,
//! reloads, and asks again until there is nothing left to do, so a crash
//! between an effect and its record is mended by the next pass.
//!
//! Rules:
//! - credits are granted once per captured payment, keyed on the Razorpay
//!   payment id, and only for a payment the API shows captured with the
//!   order's amount, in INR, on the top-up's order (a signature alone never
//!   grants);
//! - a captured payment that does not match is quarantined, never credited;
//! - a second captured payment on an already paid order is refunded in full,
//!   never credited;
//! - each processed refund of the credited payment reverses credits in
//!   proportion to the refunded paise; all of them together reverse exactly
//!   the credits granted;
//! - a dispute holds (reverses) its share of the credits while open; a won
//!   dispute grants them back, a lost one leaves them reversed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ledger_schemas::*;

use crate::money::reversal_for;
use crate::razorpay::{Dispute, Order, Payment, Refund};

/// Razorpay's currency for every order the gateway creates.
pub const CURRENCY: &str = "INR";

/// A top-up as its events tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct Topup {
    pub account: AccountId,
    pub quote: TopupQuoted,
    pub created_at: Timestamp,
    pub order: Option<GatewayOrderCreated>,
    pub progress: TopupProgress,
    /// `(payment id, status)` pairs already recorded.
    pub seen: BTreeSet<(String, String)>,
    /// The payment credited (or to be credited).
    pub captured: Option<PaymentCaptured>,
    pub credited: Option<TopupCredited>,
    pub quarantined: BTreeSet<String>,
    /// Recorded refunds by refund id.
    pub refunds: BTreeMap<String, RefundProcessed>,
    /// Recorded disputes by dispute id, and how each closed.
    pub disputes: BTreeMap<String, (DisputeOpened, Option<DisputeOutcome>)>,
    /// Extra payments refunded in full.
    pub duplicates_refunded: BTreeSet<String>,
}

impl Topup {
    /// Folds a top-up's events, oldest first; `None` for an empty subject.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a EventEnvelope>,
    ) -> Result<Option<Topup>, String> {
        let mut topup: Option<Topup> = None;
        for e in events {
            match (&mut topup, &e.body) {
                (None, EventData::TopupQuoted(q)) => {
                    topup = Some(Topup {
                        account: e.account_id.clone(),
                        quote: q.clone(),
                        created_at: e.recorded_at,
                        order: None,
                        progress: TopupProgress::default(),
                        seen: BTreeSet::new(),
                        captured: None,
                        credited: None,
                        quarantined: BTreeSet::new(),
                        refunds: BTreeMap::new(),
                        disputes: BTreeMap::new(),
                        duplicates_refunded: BTreeSet::new(),
                    })
                }
                (None, other) => {
                    return Err(format!(
                        "a top-up's first event must be topup_quoted, not {}",
                        other.event_type()
                    ));
                }
                (Some(t), data) => t.apply(data),
            }
        }
        Ok(topup)
    }

    pub fn id(&self) -> Id {
        self.quote.topup_id
    }

    pub fn status(&self) -> TopupStatus {
        self.progress.status()
    }

    fn apply(&mut self, data: &EventData) {
        self.progress.apply(data);
        match data {
            EventData::GatewayOrderCreated(o) => self.order = Some(o.clone()),
            EventData::PaymentObserved(p) => {
                self.seen.insert((p.payment_id.clone(), p.status.clone()));
            }
            EventData::PaymentFailed(p) => {
                self.seen.insert((p.payment_id.clone(), "failed".into()));
            }
            EventData::PaymentCaptured(p) => self.captured = Some(p.clone()),
            EventData::TopupCredited(c) => self.credited = Some(c.clone()),
            EventData::TopupQuarantined(q) => {
                if let Some(p) = &q.payment_id {
                    self.quarantined.insert(p.clone());
                }
            }
            EventData::RefundProcessed(r) => {
                if self.captured.as_ref().map(|c| &c.payment_id) == Some(&r.payment_id) {
                    self.refunds.insert(r.refund_id.clone(), r.clone());
                } else {
                    self.duplicates_refunded.insert(r.payment_id.clone());
                }
            }
            EventData::DisputeOpened(d) => {
                self.disputes
                    .insert(d.dispute_id.clone(), (d.clone(), None));
            }
            EventData::DisputeClosed(d) => {
                if let Some(entry) = self.disputes.get_mut(&d.dispute_id) {
                    entry.1 = Some(d.outcome);
                }
            }
            _ => {}
        }
    }

    /// Paise refunded or held by disputes so far, and the credits they took.
    fn taken(&self) -> (i64, Credits) {
        let mut paise = 0;
        let mut credits = Credits::ZERO;
        for r in self.refunds.values() {
            paise += r.amount_inr_paise.get();
            credits = credits.checked_add(r.credits).unwrap_or(credits);
        }
        for (d, outcome) in self.disputes.values() {
            if *outcome != Some(DisputeOutcome::Won) {
                paise += d.amount_inr_paise.get();
                credits = credits.checked_add(d.credits_held).unwrap_or(credits);
            }
        }
        (paise, credits)
    }

    /// The credits `paise` of the credited payment stand for, given what
    /// refunds and disputes took before.
    fn share(&self, paise: i64) -> Credits {
        let (Some(captured), Some(credited)) = (&self.captured, &self.credited) else {
            return Credits::ZERO;
        };
        let (taken_paise, taken_credits) = self.taken();
        let left_paise = captured.amount_inr_paise.get() - taken_paise;
        let paise = paise.min(left_paise);
        let (Ok(before), Ok(this)) = (Paise::new(taken_paise), Paise::new(paise)) else {
            return Credits::ZERO;
        };
        if paise == 0 {
            return Credits::ZERO;
        }
        reversal_for(
            credited.credits,
            captured.amount_inr_paise,
            before,
            taken_credits,
            this,
        )
        .unwrap_or(Credits::ZERO)
    }
}

/// What Razorpay's API says now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The order found by receipt, when the top-up has none recorded.
    pub order: Option<Order>,
    pub payments: Vec<Payment>,
    /// Refunds of the credited payment.
    pub refunds: Vec<Refund>,
    /// Disputes of the credited payment.
    pub disputes: Vec<Dispute>,
}

/// An effect outside the top-up's own log, keyed so it happens once.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Grant credits on the account (`credits_granted`, source `topup`).
    Grant {
        key: String,
        credits: Credits,
        reason: Option<String>,
    },
    /// Reverse credits on the account (`credits_reversed`; may leave a debt).
    Reverse {
        key: String,
        refund_id: String,
        credits: Credits,
    },
    /// Refund a payment in full through Razorpay.
    Refund {
        payment_id: String,
        amount_inr_paise: Paise,
        key: String,
    },
}

/// One move forward: an optional effect, then the event that records it
/// ([`Step::finish`], given what the effect returned).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub effect: Option<Effect>,
    record: EventData,
}

/// What carrying out a step's effect returned, for the event that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// No effect, or one whose record needs nothing back (a reversal).
    Nothing,
    /// The grant's event is at this stream seq.
    Granted { stream_seq: u64 },
    /// Razorpay's id of the refund made.
    Refunded { refund_id: String },
}

impl Step {
    fn only(record: EventData) -> Self {
        Step {
            effect: None,
            record,
        }
    }

    /// The event that records this step, once its effect is done.
    pub fn finish(self, done: Done) -> EventData {
        let mut record = self.record;
        match (&mut record, done) {
            (EventData::TopupCredited(c), Done::Granted { stream_seq }) => {
                c.grant_stream_seq = stream_seq;
            }
            (EventData::RefundProcessed(r), Done::Refunded { refund_id }) => {
                r.refund_id = refund_id;
            }
            _ => {}
        }
        record
    }
}

/// The idempotency key of the grant for a captured payment.
pub fn grant_key(payment_id: &str) -> String {
    format!("topup:{payment_id}")
}

fn is_captured(p: &Payment) -> bool {
    p.captured || matches!(p.status.as_str(), "captured" | "refunded")
}

/// The next thing to do for `topup`, given what Razorpay says; `None` when the
/// top-up is up to date. `abandon_after` is how long a top-up may go without
/// a captured payment before it is marked abandoned (and still reconciled).
pub fn next_step(
    topup: &Topup,
    observed: &Observed,
    now: Timestamp,
    abandon_after: Duration,
) -> Option<Step> {
    let id = topup.id();
    let Some(order) = &topup.order else {
        let o = observed
            .order
            .as_ref()
            .filter(|o| o.receipt.as_deref() == Some(id.to_string().as_str()))?;
        return Some(Step::only(EventData::GatewayOrderCreated(
            GatewayOrderCreated {
                topup_id: id,
                order_id: o.id.clone(),
                amount_inr_paise: Paise::new(o.amount).ok()?,
                currency: o.currency.clone(),
                receipt: id.to_string(),
            },
        )));
    };
    let expected = topup.quote.amount_inr_paise;
    let mut payments: Vec<&Payment> = observed
        .payments
        .iter()
        .filter(|p| p.order_id.as_deref() == Some(order.order_id.as_str()))
        .collect();
    payments.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    for p in payments {
        if let Some(step) = payment_step(topup, order, expected, p) {
            return Some(step);
        }
    }
    if let (Some(c), None) = (&topup.captured, &topup.credited) {
        return Some(Step {
            effect: Some(Effect::Grant {
                key: grant_key(&c.payment_id),
                credits: topup.quote.credits,
                reason: None,
            }),
            record: EventData::TopupCredited(TopupCredited {
                topup_id: id,
                payment_id: c.payment_id.clone(),
                bucket: topup.quote.bucket.clone(),
                credits: topup.quote.credits,
                grant_stream_seq: 0,
            }),
        });
    }
    if let (Some(c), Some(_)) = (&topup.captured, &topup.credited) {
        if let Some(step) = refund_step(topup, c, observed) {
            return Some(step);
        }
        if let Some(step) = dispute_step(topup, c, observed) {
            return Some(step);
        }
    }
    let age_ms = now.millis() - topup.created_at.millis();
    if topup.captured.is_none()
        && !topup.progress.abandoned
        && !topup.progress.quarantined
        && age_ms >= abandon_after.as_millis() as i64
    {
        return Some(Step::only(EventData::TopupAbandoned(TopupAbandoned {
            topup_id: id,
        })));
    }
    None
}

fn payment_step(
    topup: &Topup,
    order: &GatewayOrderCreated,
    expected: Paise,
    p: &Payment,
) -> Option<Step> {
    let id = topup.id();
    let seen = |status: &str| topup.seen.contains(&(p.id.clone(), status.to_owned()));
    if is_captured(p) {
        if p.amount != expected.get() || p.currency != CURRENCY {
            if topup.quarantined.contains(&p.id) {
                return None;
            }
            let reason = if p.currency != CURRENCY {
                "currency_mismatch"
            } else {
                "amount_mismatch"
            };
            return Some(Step::only(EventData::TopupQuarantined(TopupQuarantined {
                topup_id: id,
                payment_id: Some(p.id.clone()),
                reason: reason.into(),
                expected_inr_paise: expected,
                observed_inr_paise: Paise::new(p.amount).ok(),
                observed_currency: Some(p.currency.clone()),
            })));
        }
        return match &topup.captured {
            None if !topup.progress.quarantined => {
                Some(Step::only(EventData::PaymentCaptured(PaymentCaptured {
                    topup_id: id,
                    payment_id: p.id.clone(),
                    order_id: order.order_id.clone(),
                    method: p.method.clone().unwrap_or_else(|| "unknown".into()),
                    amount_inr_paise: expected,
                    currency: p.currency.clone(),
                    captured_at: Timestamp::from_millis(p.created_at * 1000)
                        .unwrap_or(topup.created_at),
                })))
            }
            Some(c) if c.payment_id == p.id => None,
            // A second captured payment on a paid (or quarantined) order:
            // the customer paid twice, so the extra payment goes back.
            _ if topup.duplicates_refunded.contains(&p.id) => None,
            _ => Some(Step {
                effect: Some(Effect::Refund {
                    payment_id: p.id.clone(),
                    amount_inr_paise: Paise::new(p.amount - p.amount_refunded).ok()?,
                    key: format!("duplicate-{}", p.id),
                }),
                record: EventData::RefundProcessed(RefundProcessed {
                    topup_id: id,
                    payment_id: p.id.clone(),
                    refund_id: String::new(),
                    amount_inr_paise: Paise::new(p.amount - p.amount_refunded).ok()?,
                    credits: Credits::ZERO,
                }),
            }),
        };
    }
    match p.status.as_str() {
        "failed" if !seen("failed") => Some(Step::only(EventData::PaymentFailed(PaymentFailed {
            topup_id: id,
            payment_id: p.id.clone(),
            order_id: order.order_id.clone(),
            method: p.method.clone(),
            error_code: p.error_code.clone(),
            error_description: p.error_description.clone(),
        }))),
        "failed" => None,
        status if !seen(status) => Some(Step::only(EventData::PaymentObserved(PaymentObserved {
            topup_id: id,
            payment_id: p.id.clone(),
            order_id: order.order_id.clone(),
            status: status.to_owned(),
            method: p.method.clone(),
            amount_inr_paise: Paise::new(p.amount).ok()?,
            currency: p.currency.clone(),
        }))),
        _ => None,
    }
}

fn refund_step(topup: &Topup, captured: &PaymentCaptured, observed: &Observed) -> Option<Step> {
    let mut refunds: Vec<&Refund> = observed
        .refunds
        .iter()
        .filter(|r| r.payment_id == captured.payment_id && r.status == "processed")
        .filter(|r| !topup.refunds.contains_key(&r.id))
        .collect();
    refunds.sort_by(|a, b| a.id.cmp(&b.id));
    let r = refunds.first()?;
    let credits = topup.share(r.amount);
    let record = EventData::RefundProcessed(RefundProcessed {
        topup_id: topup.id(),
        payment_id: captured.payment_id.clone(),
        refund_id: r.id.clone(),
        amount_inr_paise: Paise::new(r.amount).ok()?,
        credits,
    });
    Some(Step {
        effect: (!credits.is_zero()).then(|| Effect::Reverse {
            key: format!("refund:{}", r.id),
            refund_id: r.id.clone(),
            credits,
        }),
        record,
    })
}

fn dispute_step(topup: &Topup, captured: &PaymentCaptured, observed: &Observed) -> Option<Step> {
    let id = topup.id();
    let mut disputes: Vec<&Dispute> = observed
        .disputes
        .iter()
        .filter(|d| d.payment_id == captured.payment_id)
        .collect();
    disputes.sort_by(|a, b| a.id.cmp(&b.id));
    for d in disputes {
        match topup.disputes.get(&d.id) {
            // A dispute first seen already won held nothing: nothing to do.
            None if d.status == "won" => {}
            None => {
                let credits = topup.share(d.amount);
                return Some(Step {
                    effect: (!credits.is_zero()).then(|| Effect::Reverse {
                        key: format!("dispute:{}", d.id),
                        refund_id: d.id.clone(),
                        credits,
                    }),
                    record: EventData::DisputeOpened(DisputeOpened {
                        topup_id: id,
                        payment_id: captured.payment_id.clone(),
                        dispute_id: d.id.clone(),
                        amount_inr_paise: Paise::new(d.amount).ok()?,
                        credits_held: credits,
                    }),
                });
            }
            Some((opened, None)) if d.status == "won" => {
                let returned = opened.credits_held;
                return Some(Step {
                    effect: (!returned.is_zero()).then(|| Effect::Grant {
                        key: format!("dispute-won:{}", d.id),
                        credits: returned,
                        reason: Some(format!("dispute {} won", d.id)),
                    }),
                    record: EventData::DisputeClosed(DisputeClosed {
                        topup_id: id,
                        payment_id: captured.payment_id.clone(),
                        dispute_id: d.id.clone(),
                        outcome: DisputeOutcome::Won,
                        credits_returned: returned,
                    }),
                });
            }
            Some((_, None)) if matches!(d.status.as_str(), "lost" | "closed") => {
                return Some(Step::only(EventData::DisputeClosed(DisputeClosed {
                    topup_id: id,
                    payment_id: captured.payment_id.clone(),
                    dispute_id: d.id.clone(),
                    outcome: DisputeOutcome::Lost,
                    credits_returned: Credits::ZERO,
                })));
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn envelope(data: EventData) -> EventEnvelope {
        EventEnvelope {
            event_id: Id::new_v7(),
            body: data,
            schema_version: SCHEMA_VERSION,
            account_id: AccountId::parse("acme").unwrap(),
            occurred_at: at("2026-11-21T10:00:00.000Z"),
            recorded_at: at("2026-11-21T10:00:00.000Z"),
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            actor: Actor::parse("gateway:razorpay").unwrap(),
            request_hash: None,
            postings: Vec::new(),
        }
    }

    /// A top-up of $10.00 at 83.12 (83,120 paise, 10 credits) with order_1.
    fn ordered() -> (Topup, Vec<EventData>) {
        let id = Id::new_v7();
        let events = vec![
            EventData::TopupQuoted(TopupQuoted {
                topup_id: id,
                bucket: Bucket::general(),
                amount_usd: UsdAmount::parse("10.00").unwrap(),
                amount_inr_paise: Paise::new(83_120).unwrap(),
                fx_rate: "83.12".into(),
                fx_source: "test".into(),
                fx_quoted_at: at("2026-11-21T10:00:00.000Z"),
                quote_id: Id::new_v7(),
                quote_expires_at: at("2026-11-21T10:15:00.000Z"),
                credits: Credits::parse("10").unwrap(),
                credits_per_usd: "1".into(),
            }),
            EventData::GatewayOrderCreated(GatewayOrderCreated {
                topup_id: id,
                order_id: "order_1".into(),
                amount_inr_paise: Paise::new(83_120).unwrap(),
                currency: "INR".into(),
                receipt: id.to_string(),
            }),
        ];
        (fold(&events), events)
    }

    fn fold(events: &[EventData]) -> Topup {
        let envelopes: Vec<EventEnvelope> = events.iter().cloned().map(envelope).collect();
        Topup::from_events(&envelopes).unwrap().unwrap()
    }

    fn payment(id: &str, status: &str, amount: i64) -> Payment {
        serde_json::from_value(serde_json::json!({"id": id, "amount": amount,
            "currency": "INR", "status": status, "order_id": "order_1", "method": "upi",
            "captured": status == "captured", "created_at": 1_700_000_000}))
        .unwrap()
    }

    /// Applies every step as the gateway would (effects succeed) and returns
    /// the effects and the final top-up.
    fn drive(mut events: Vec<EventData>, observed: &Observed) -> (Vec<Effect>, Topup) {
        let mut effects = Vec::new();
        for _ in 0..32 {
            let t = fold(&events);
            let Some(step) = next_step(&t, observed, at("2026-11-21T10:01:00.000Z"), HOUR) else {
                return (effects, t);
            };
            let done = match &step.effect {
                Some(Effect::Refund { .. }) => Done::Refunded {
                    refund_id: "rfnd_dup".into(),
                },
                _ => Done::Nothing,
            };
            effects.extend(step.effect.clone());
            events.push(step.finish(done));
        }
        panic!("no end of steps");
    }

    #[test]
    fn a_capture_is_recorded_then_credited_once() {
        let (_, events) = ordered();
        let observed = Observed {
            payments: vec![payment("pay_1", "captured", 83_120)],
            ..Observed::default()
        };
        let (effects, t) = drive(events, &observed);
        assert_eq!(
            effects,
            vec![Effect::Grant {
                key: "topup:pay_1".into(),
                credits: Credits::parse("10").unwrap(),
                reason: None
            }]
        );
        assert_eq!(t.status(), TopupStatus::Credited);
    }

    #[test]
    fn failures_mismatches_and_second_payments() {
        let (_, events) = ordered();
        let failed = Observed {
            payments: vec![payment("pay_1", "failed", 83_120)],
            ..Observed::default()
        };
        let (effects, t) = drive(events.clone(), &failed);
        assert!(effects.is_empty());
        assert_eq!(t.status(), TopupStatus::Failed);

        let short = Observed {
            payments: vec![payment("pay_1", "captured", 83_000)],
            ..Observed::default()
        };
        let (effects, t) = drive(events.clone(), &short);
        assert!(effects.is_empty());
        assert_eq!(t.status(), TopupStatus::Quarantined);

        let mut twice = payment("pay_2", "captured", 83_120);
        twice.created_at += 60;
        let both = Observed {
            payments: vec![twice, payment("pay_1", "captured", 83_120)],
            ..Observed::default()
        };
        let (effects, t) = drive(events, &both);
        assert_eq!(effects.len(), 2, "{effects:?}");
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Grant { key, .. } if key == "topup:pay_1"))
        );
        assert!(effects.iter().any(
            |e| matches!(e, Effect::Refund { payment_id, amount_inr_paise, .. }
                if payment_id == "pay_2" && amount_inr_paise.get() == 83_120)
        ));
        assert_eq!(t.status(), TopupStatus::Credited);
    }

    #[test]
    fn refunds_reverse_exactly_what_was_granted_and_disputes_hold() {
        let (_, events) = ordered();
        let refund = |id: &str, amount| Refund {
            id: id.into(),
            payment_id: "pay_1".into(),
            amount,
            status: "processed".into(),
        };
        let observed = Observed {
            payments: vec![payment("pay_1", "captured", 83_120)],
            refunds: vec![refund("rfnd_1", 27_707), refund("rfnd_2", 83_120 - 27_707)],
            ..Observed::default()
        };
        let (effects, t) = drive(events.clone(), &observed);
        let reversed: Vec<String> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reverse { credits, .. } => Some(credits.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(reversed, vec!["3.333373", "6.666627"]);
        assert_eq!(t.status(), TopupStatus::Refunded);

        let dispute = |status: &str| Dispute {
            id: "disp_1".into(),
            payment_id: "pay_1".into(),
            amount: 83_120,
            currency: "INR".into(),
            status: status.into(),
            reason_code: None,
            created_at: 0,
        };
        let open = Observed {
            payments: vec![payment("pay_1", "captured", 83_120)],
            disputes: vec![dispute("open")],
            ..Observed::default()
        };
        let (effects, t) = drive(events.clone(), &open);
        assert!(matches!(&effects[1], Effect::Reverse { key, credits, .. }
            if key == "dispute:disp_1" && credits.to_string() == "10"));
        assert_eq!(t.status(), TopupStatus::Disputed);
        let mut held = events.clone();
        held.extend(fold_steps(&events, &open));
        let won = Observed {
            disputes: vec![dispute("won")],
            ..open.clone()
        };
        let (effects, t) = drive(held, &won);
        assert!(matches!(&effects[..], [Effect::Grant { key, .. }] if key == "dispute-won:disp_1"));
        assert_eq!(t.status(), TopupStatus::Credited);
    }

    /// The events `drive` would record.
    fn fold_steps(events: &[EventData], observed: &Observed) -> Vec<EventData> {
        let mut all = events.to_vec();
        while let Some(step) =
            next_step(&fold(&all), observed, at("2026-11-21T10:01:00.000Z"), HOUR)
        {
            all.push(step.record);
        }
        all[events.len()..].to_vec()
    }

    #[test]
    fn an_unpaid_top_up_is_abandoned_after_its_time() {
        let (t, _) = ordered();
        let none = Observed::default();
        assert_eq!(
            next_step(&t, &none, at("2026-11-21T10:59:00.000Z"), HOUR),
            None
        );
        let step = next_step(&t, &none, at("2026-11-21T11:00:00.000Z"), HOUR).unwrap();
        assert!(matches!(step.record, EventData::TopupAbandoned(_)));
    }
}
