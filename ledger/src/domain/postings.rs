//! The double-entry rule: which ledger accounts an event moves credits
//! between. Derived from the event's data alone, so an auditor can recompute
//! and compare the postings stored with each event.

use ledger_schemas::{
    AccountId, Credits, Draw, EventData, GrantSource, LedgerAccount, Posting, Service,
};

fn customer(account: &AccountId, d: &Draw) -> LedgerAccount {
    LedgerAccount::Customer(account.clone(), d.bucket.clone())
}

fn posting(debit: LedgerAccount, credit: LedgerAccount, amount: Credits) -> Option<Posting> {
    // A zero movement says nothing; it is left out rather than stored.
    (!amount.is_zero()).then_some(Posting {
        debit,
        credit,
        amount,
    })
}

fn from_buckets(account: &AccountId, drawn: &[Draw], to: LedgerAccount) -> Vec<Posting> {
    drawn
        .iter()
        .filter_map(|d| posting(customer(account, d), to.clone(), d.credits))
        .collect()
}

fn back_to_buckets(account: &AccountId, service: &Service, returned: &[Draw]) -> Vec<Posting> {
    returned
        .iter()
        .filter_map(|d| {
            posting(
                LedgerAccount::Reserved(service.clone()),
                customer(account, d),
                d.credits,
            )
        })
        .collect()
}

/// The postings of one event of `account`'s aggregate.
pub fn postings_for(account: &AccountId, event: &EventData) -> Vec<Posting> {
    let bucket = |b: &ledger_schemas::Bucket| LedgerAccount::Customer(account.clone(), b.clone());
    match event {
        EventData::CreditsGranted(e) => {
            let source = match e.source {
                GrantSource::Topup => LedgerAccount::PaymentGateway,
                GrantSource::Promotion | GrantSource::Adjustment => LedgerAccount::Adjustments,
            };
            posting(source, bucket(&e.bucket), e.credits)
                .into_iter()
                .collect()
        }
        EventData::CreditsConsumed(e) => {
            from_buckets(account, &e.drawn, LedgerAccount::Revenue(e.service.clone()))
        }
        EventData::CreditsReserved(e) => from_buckets(
            account,
            &e.drawn,
            LedgerAccount::Reserved(e.service.clone()),
        ),
        EventData::ReservationCaptured(e) => {
            let mut p: Vec<Posting> = posting(
                LedgerAccount::Reserved(e.service.clone()),
                LedgerAccount::Revenue(e.service.clone()),
                e.credits,
            )
            .into_iter()
            .collect();
            p.extend(back_to_buckets(account, &e.service, &e.returned));
            p
        }
        EventData::ReservationReleased(e) => back_to_buckets(account, &e.service, &e.returned),
        EventData::CreditsTransferred(e) => {
            posting(bucket(&e.from_bucket), bucket(&e.to_bucket), e.credits)
                .into_iter()
                .collect()
        }
        EventData::CreditsReversed(e) => {
            posting(bucket(&e.bucket), LedgerAccount::PaymentGateway, e.credits)
                .into_iter()
                .collect()
        }
        EventData::CreditsAdjusted(e) => {
            let amount = Credits::new(e.delta.get().abs()).expect("|delta| is within range");
            let (debit, credit) = if e.delta.is_negative() {
                (bucket(&e.bucket), LedgerAccount::Adjustments)
            } else {
                (LedgerAccount::Adjustments, bucket(&e.bucket))
            };
            posting(debit, credit, amount).into_iter().collect()
        }
        EventData::AccountOpened(_)
        | EventData::UsageRejected(_)
        | EventData::CommandRefused(_)
        | EventData::AlertSet(_)
        | EventData::BalanceAlert(_)
        | EventData::TopupQuoted(_)
        | EventData::GatewayOrderCreated(_)
        | EventData::PaymentObserved(_)
        | EventData::PaymentCaptured(_)
        | EventData::PaymentFailed(_)
        | EventData::TopupQuarantined(_)
        | EventData::RefundProcessed(_)
        | EventData::TopupCredited(_)
        | EventData::DisputeOpened(_)
        | EventData::DisputeClosed(_)
        | EventData::TopupAbandoned(_) => Vec::new(),
    }
}
