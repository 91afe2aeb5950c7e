//! A top-up's status, derived from its events by one rule that the gateway's
//! aggregate and the `ledger.topups` read model share.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::{DisputeOutcome, EventData};

/// The contract's top-up statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopupStatus {
    Quoted,
    AwaitingPayment,
    Captured,
    Credited,
    /// The last payment attempt failed; the customer may pay again.
    Failed,
    /// No payment in the configured time; still reconciled.
    Abandoned,
    /// A payment did not match the order (amount, currency or order).
    Quarantined,
    /// Some or all of the credited payment was refunded.
    Refunded,
    /// A dispute is open, or was lost.
    Disputed,
}

impl TopupStatus {
    pub const ALL: [TopupStatus; 9] = [
        TopupStatus::Quoted,
        TopupStatus::AwaitingPayment,
        TopupStatus::Captured,
        TopupStatus::Credited,
        TopupStatus::Failed,
        TopupStatus::Abandoned,
        TopupStatus::Quarantined,
        TopupStatus::Refunded,
        TopupStatus::Disputed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TopupStatus::Quoted => "quoted",
            TopupStatus::AwaitingPayment => "awaiting_payment",
            TopupStatus::Captured => "captured",
            TopupStatus::Credited => "credited",
            TopupStatus::Failed => "failed",
            TopupStatus::Abandoned => "abandoned",
            TopupStatus::Quarantined => "quarantined",
            TopupStatus::Refunded => "refunded",
            TopupStatus::Disputed => "disputed",
        }
    }

    pub fn parse(s: &str) -> Option<TopupStatus> {
        TopupStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TopupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a top-up's status depends on, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopupProgress {
    pub ordered: bool,
    /// The latest payment news was a failure (cleared by any later attempt).
    pub last_failed: bool,
    pub captured: bool,
    pub credited: bool,
    pub abandoned: bool,
    pub quarantined: bool,
    /// A refund reversed credits of the credited payment.
    pub refunded: bool,
    pub disputes_open: u32,
    pub disputes_lost: u32,
}

impl TopupProgress {
    /// Folds one top-up event in; other events leave it as it is.
    pub fn apply(&mut self, event: &EventData) {
        match event {
            EventData::GatewayOrderCreated(_) => self.ordered = true,
            EventData::PaymentObserved(_) => self.last_failed = false,
            EventData::PaymentFailed(_) => self.last_failed = true,
            EventData::PaymentCaptured(_) => {
                self.captured = true;
                self.last_failed = false;
            }
            EventData::TopupCredited(_) => self.credited = true,
            EventData::TopupAbandoned(_) => self.abandoned = true,
            EventData::TopupQuarantined(_) => self.quarantined = true,
            EventData::RefundProcessed(r) => self.refunded |= !r.credits.is_zero(),
            EventData::DisputeOpened(_) => self.disputes_open += 1,
            EventData::DisputeClosed(d) => {
                self.disputes_open = self.disputes_open.saturating_sub(1);
                if d.outcome == DisputeOutcome::Lost {
                    self.disputes_lost += 1;
                }
            }
            _ => {}
        }
    }

    /// The status, by precedence: what needs a person's attention first.
    pub fn status(&self) -> TopupStatus {
        if self.quarantined {
            TopupStatus::Quarantined
        } else if self.disputes_open > 0 || self.disputes_lost > 0 {
            TopupStatus::Disputed
        } else if self.refunded {
            TopupStatus::Refunded
        } else if self.credited {
            TopupStatus::Credited
        } else if self.captured {
            TopupStatus::Captured
        } else if self.abandoned {
            TopupStatus::Abandoned
        } else if self.last_failed {
            TopupStatus::Failed
        } else if self.ordered {
            TopupStatus::AwaitingPayment
        } else {
            TopupStatus::Quoted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in TopupStatus::ALL {
            assert_eq!(TopupStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn precedence() {
        let mut p = TopupProgress::default();
        assert_eq!(p.status(), TopupStatus::Quoted);
        p.ordered = true;
        p.last_failed = true;
        assert_eq!(p.status(), TopupStatus::Failed);
        p.captured = true;
        assert_eq!(p.status(), TopupStatus::Captured);
        p.credited = true;
        assert_eq!(p.status(), TopupStatus::Credited);
        p.refunded = true;
        assert_eq!(p.status(), TopupStatus::Refunded);
        p.disputes_open = 1;
        assert_eq!(p.status(), TopupStatus::Disputed);
        p.quarantined = true;
        assert_eq!(p.status(), TopupStatus::Quarantined);
    }
}
