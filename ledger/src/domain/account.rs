//! The account aggregate's state and `evolve`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use ledger_schemas::{
    AccountId, Bucket, Credits, Draw, EventData, Id, ReleaseReason, Service, SignedCredits, Text,
    Timestamp,
};
use rust_decimal::Decimal;

use super::limits::RESERVATIONS_CLOSED_REMEMBERED_MAX;

/// Credits held for a service until captured, released or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub service: Service,
    pub credits: Credits,
    /// Which buckets the held credits came from, in draw order.
    pub drawn: Vec<Draw>,
    pub expires_at: Timestamp,
}

/// How a reservation was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    Captured,
    Released,
    Expired,
}

impl fmt::Display for Closure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Closure::Captured => "captured",
            Closure::Released => "released",
            Closure::Expired => "expired",
        })
    }
}

/// What the ledger knows of one account, built only from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    id: AccountId,
    opened: bool,
    display_name: Option<Text>,
    /// Balance per bucket; negative only through a refund, chargeback or
    /// operator adjustment (a debt).
    balances: BTreeMap<Bucket, Decimal>,
    reservations: BTreeMap<Id, Reservation>,
    /// Recently closed reservations, oldest first, bounded.
    closed_order: VecDeque<Id>,
    closed: HashMap<Id, Closure>,
    /// Balance alerts by scope (a service, or `None` for the total).
    alerts: BTreeMap<Option<Service>, Alert>,
}

/// One balance alert: its threshold, and whether it last fired low.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub threshold: Credits,
    pub low: bool,
}

impl Account {
    /// The state before the account's first event.
    pub fn new(id: AccountId) -> Self {
        Self {
            id,
            opened: false,
            display_name: None,
            balances: BTreeMap::new(),
            reservations: BTreeMap::new(),
            closed_order: VecDeque::new(),
            closed: HashMap::new(),
            alerts: BTreeMap::new(),
        }
    }

    /// Folds a whole history.
    pub fn replay<'a>(id: AccountId, events: impl IntoIterator<Item = &'a EventData>) -> Self {
        let mut a = Account::new(id);
        for e in events {
            a.evolve(e);
        }
        a
    }

    pub fn id(&self) -> &AccountId {
        &self.id
    }

    pub fn is_open(&self) -> bool {
        self.opened
    }

    pub fn display_name(&self) -> Option<&Text> {
        self.display_name.as_ref()
    }

    pub fn balance(&self, bucket: &Bucket) -> Decimal {
        self.balances.get(bucket).copied().unwrap_or_default()
    }

    /// Every bucket that has ever held credits, with its balance.
    pub fn balances(&self) -> impl Iterator<Item = (&Bucket, SignedCredits)> {
        self.balances.iter().map(|(b, d)| (b, to_signed(*d)))
    }

    /// True while any bucket is negative: usage waits until the debt is paid.
    pub fn in_debt(&self) -> bool {
        self.balances
            .values()
            .any(|d| d.is_sign_negative() && !d.is_zero())
    }

    pub fn reservation(&self, id: &Id) -> Option<&Reservation> {
        self.reservations.get(id)
    }

    pub fn reservations(&self) -> impl Iterator<Item = (&Id, &Reservation)> {
        self.reservations.iter()
    }

    pub fn closed_reservation(&self, id: &Id) -> Option<Closure> {
        self.closed.get(id).copied()
    }

    /// Credits held by open reservations, per service.
    pub fn reserved(&self) -> BTreeMap<Service, Credits> {
        let mut out: BTreeMap<Service, Credits> = BTreeMap::new();
        for r in self.reservations.values() {
            let e = out.entry(r.service.clone()).or_default();
            *e = e
                .checked_add(r.credits)
                .expect("reserved credits stay in range");
        }
        out
    }

    /// The balance alerts set, by scope.
    pub fn alerts(&self) -> &BTreeMap<Option<Service>, Alert> {
        &self.alerts
    }

    /// What an alert watches: a service's bucket and `general`, or (no
    /// service) every bucket.
    pub fn spendable(&self, service: Option<&Service>) -> Decimal {
        match service {
            Some(s) => self.balance(&Bucket::from(s)) + self.balance(&Bucket::general()),
            None => self.balances.values().copied().sum(),
        }
    }

    /// The alerts the balances now call for: each alert whose balance is
    /// below its threshold and that has not fired low since, and each that
    /// fired low and is back at or above it. Once recorded, an alert is
    /// not due again until the balance crosses back: one per crossing.
    pub fn alerts_due(&self) -> Vec<ledger_schemas::BalanceAlert> {
        use ledger_schemas::{AlertState, BalanceAlert};
        self.alerts
            .iter()
            .filter_map(|(service, a)| {
                let spendable = self.spendable(service.as_ref());
                let below = spendable < a.threshold.get();
                let state = match (a.low, below) {
                    (false, true) => AlertState::Low,
                    (true, false) => AlertState::Recovered,
                    _ => return None,
                };
                Some(BalanceAlert {
                    service: service.clone(),
                    threshold: a.threshold,
                    state,
                    spendable: clamped(spendable),
                })
            })
            .collect()
    }

    /// Applies one event. Events come from the log, which the command side
    /// only writes after `decide` accepted them, so a broken invariant here is
    /// a corrupt log and stops the process rather than guessing.
    pub fn evolve(&mut self, event: &EventData) {
        match event {
            EventData::AccountOpened(e) => {
                self.opened = true;
                self.display_name = e.display_name.clone();
            }
            EventData::CreditsGranted(e) => self.add(&e.bucket, e.credits.get()),
            EventData::CreditsConsumed(e) => self.take_all(&e.drawn),
            EventData::UsageRejected(_) | EventData::CommandRefused(_) => {}
            EventData::CreditsReserved(e) => {
                self.take_all(&e.drawn);
                self.reservations.insert(
                    e.reservation_id,
                    Reservation {
                        service: e.service.clone(),
                        credits: e.credits,
                        drawn: e.drawn.clone(),
                        expires_at: e.expires_at,
                    },
                );
            }
            EventData::ReservationCaptured(e) => {
                self.close(e.reservation_id, Closure::Captured);
                self.give_all(&e.returned);
            }
            EventData::ReservationReleased(e) => {
                let how = match e.reason {
                    ReleaseReason::Released => Closure::Released,
                    ReleaseReason::Expired => Closure::Expired,
                };
                self.close(e.reservation_id, how);
                self.give_all(&e.returned);
            }
            EventData::CreditsTransferred(e) => {
                self.add(&e.from_bucket, -e.credits.get());
                self.add(&e.to_bucket, e.credits.get());
            }
            EventData::CreditsReversed(e) => self.add(&e.bucket, -e.credits.get()),
            EventData::CreditsAdjusted(e) => self.add(&e.bucket, e.delta.get()),
            // Top-up events live on top-up subjects; the account sees only
            // the credits they grant or reverse.
            EventData::TopupQuoted(_)
            | EventData::GatewayOrderCreated(_)
            | EventData::PaymentObserved(_)
            | EventData::PaymentCaptured(_)
            | EventData::PaymentFailed(_)
            | EventData::TopupQuarantined(_)
            | EventData::RefundProcessed(_)
            | EventData::TopupCredited(_)
            | EventData::DisputeOpened(_)
            | EventData::DisputeClosed(_)
            | EventData::TopupAbandoned(_) => {}
            EventData::AlertSet(e) => match e.threshold {
                Some(threshold) => {
                    let alert = Alert {
                        threshold,
                        low: false,
                    };
                    self.alerts.insert(e.service.clone(), alert);
                }
                None => {
                    self.alerts.remove(&e.service);
                }
            },
            EventData::BalanceAlert(e) => {
                if let Some(a) = self.alerts.get_mut(&e.service) {
                    a.low = e.state == ledger_schemas::AlertState::Low;
                }
            }
        }
    }

    fn add(&mut self, bucket: &Bucket, delta: Decimal) {
        let b = self.balances.entry(bucket.clone()).or_default();
        *b = b
            .checked_add(delta)
            .expect("balances stay in Decimal range");
    }

    fn take_all(&mut self, drawn: &[Draw]) {
        for d in drawn {
            self.add(&d.bucket, -d.credits.get());
        }
    }

    fn give_all(&mut self, returned: &[Draw]) {
        for d in returned {
            self.add(&d.bucket, d.credits.get());
        }
    }

    fn close(&mut self, id: Id, how: Closure) {
        let removed = self.reservations.remove(&id);
        assert!(
            removed.is_some(),
            "corrupt log: closing unknown reservation {id}"
        );
        self.closed.insert(id, how);
        self.closed_order.push_back(id);
        if self.closed_order.len() > RESERVATIONS_CLOSED_REMEMBERED_MAX {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }
}

/// A sum of buckets (each within range) as credits, held to the range's
/// ends: an alert's report of a total past 10^15 says "at least 10^15".
pub fn clamped(d: Decimal) -> SignedCredits {
    let max = ledger_schemas::Credits::max_value();
    to_signed(d.clamp(-max, max))
}

/// Balances stay within `SignedCredits`' range because `decide` refuses any
/// command that would leave it.
pub(crate) fn to_signed(d: Decimal) -> SignedCredits {
    SignedCredits::new(d).expect("balances stay within the credits range")
}
