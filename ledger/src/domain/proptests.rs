//! Invariants over any sequence of commands:
//! - postings always balance, and folded per ledger account they equal the
//!   buckets and reservations the state holds;
//! - replaying the accepted events (through their JSON form) rebuilds the
//!   same state;
//! - usage never takes a bucket below zero.

use std::collections::BTreeMap;

use ledger_schemas::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::tests::{acct, b, catalog, rid, svc, t0};
use super::*;

fn credits() -> impl Strategy<Value = Credits> {
    // Up to 50 credits with micro-credit precision, and zero now and then;
    // and now and then amounts at the limit of 10^15, where sums overflow.
    let max = Credits::max_value();
    prop_oneof![
        12 => (0u64..=50_000_000)
            .prop_map(|micro| Credits::new(Decimal::new(micro as i64, 6)).unwrap()),
        1 => prop_oneof![
            Just(max),
            Just(max - Decimal::new(1, 6)),
            Just(max / Decimal::TWO),
            Just(max - Decimal::ONE),
        ]
        .prop_map(|d| Credits::new(d).unwrap()),
    ]
}

fn bucket() -> impl Strategy<Value = Bucket> {
    prop_oneof![Just(b("general")), Just(b("email")), Just(b("sms"))]
}

fn service() -> impl Strategy<Value = Service> {
    prop_oneof![Just(svc("email")), Just(svc("sms"))]
}

fn shortfall() -> impl Strategy<Value = Shortfall> {
    prop_oneof![Just(Shortfall::Refuse), Just(Shortfall::Record)]
}

/// Commands a platform service can send: they must never create a debt.
fn usage_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (service(), 1u64..=500, proptest::option::of(credits()), shortfall()).prop_map(
            |(service, q, credits, shortfall)| Command::Consume {
                service,
                usage_id: UsageId::parse("u").unwrap(),
                quantity: Quantity::new(q).unwrap(),
                credits,
                shortfall,
            }
        ),
        2 => (0u64..8, service(), credits(), 1u64..=120).prop_map(|(n, service, credits, ttl)| {
            Command::Reserve { reservation_id: rid(n), service, credits, expires_in_s: ttl }
        }),
        2 => (0u64..8, credits()).prop_map(|(n, credits)| Command::Capture {
            reservation_id: rid(n),
            credits,
        }),
        1 => (0u64..8).prop_map(|n| Command::Release { reservation_id: rid(n) }),
        1 => Just(Command::ExpireReservations),
        1 => (bucket(), bucket(), credits()).prop_map(|(from_bucket, to_bucket, credits)| {
            Command::Transfer { from_bucket, to_bucket, credits }
        }),
    ]
}

/// Commands that bring credits in or take them out outside usage.
fn money_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (bucket(), credits()).prop_map(|(bucket, credits)| Command::Grant {
            bucket,
            credits,
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: None,
        }),
        1 => (bucket(), credits()).prop_map(|(bucket, credits)| Command::Reverse {
            refund_id: "rfnd_1".into(),
            topup_id: rid(100),
            payment_id: None,
            bucket,
            credits,
        }),
        1 => (bucket(), -20_000_000i64..=20_000_000).prop_map(|(bucket, micro)| Command::Adjust {
            bucket,
            delta: SignedCredits::new(Decimal::new(micro, 6)).unwrap(),
            reason: Text::parse("test").unwrap(),
        }),
    ]
}

/// Setting or removing a balance alert.
fn alert_command() -> impl Strategy<Value = Command> {
    (
        proptest::option::of(service()),
        proptest::option::of(0u64..=30_000_000),
    )
        .prop_map(|(service, micro)| Command::SetAlert {
            service,
            threshold: micro.map(|m| Credits::new(Decimal::new(m as i64, 6)).unwrap()),
        })
}

fn is_usage(c: &Command) -> bool {
    !matches!(
        c,
        Command::Grant { .. }
            | Command::Reverse { .. }
            | Command::Adjust { .. }
            | Command::Open { .. }
            | Command::SetAlert { .. }
    )
}

/// A step: a command and how many seconds pass before it.
fn steps(money: bool) -> impl Strategy<Value = Vec<(Command, u64)>> {
    let command = if money {
        prop_oneof![3 => usage_command(), 2 => money_command(), 1 => alert_command()].boxed()
    } else {
        usage_command().boxed()
    };
    proptest::collection::vec((command, 0u64..40), 1..80)
}

struct Run {
    account: Account,
    events: Vec<NewEvent>,
}

/// Opens and funds an account, then runs the steps, checking `each` after
/// every accepted command with the state before and after it.
fn run(steps: &[(Command, u64)], mut each: impl FnMut(&Command, &Account, &Account)) -> Run {
    let catalog = catalog();
    let mut now = t0();
    let mut account = Account::new(acct());
    let mut events = Vec::new();
    let setup = [
        Command::Open { display_name: None },
        Command::Grant {
            bucket: b("general"),
            credits: Credits::parse("20").unwrap(),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: None,
        },
    ];
    let all = setup
        .into_iter()
        .map(|c| (c, 0))
        .chain(steps.iter().cloned());
    for (command, wait) in all {
        now = now.plus_seconds(wait).unwrap();
        let ctx = Context {
            now,
            catalog: &catalog,
        };
        if let Ok(new) = decide(&account, &command, &ctx) {
            let before = account.clone();
            for e in &new {
                account.evolve(&e.data);
            }
            each(&command, &before, &account);
            events.extend(new);
        }
    }
    Run { account, events }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn postings_balance_and_explain_the_state(steps in steps(true)) {
        let Run { account, events } = run(&steps, |_, _, _| {});
        let mut net: BTreeMap<String, Decimal> = BTreeMap::new();
        for e in &events {
            prop_assert_eq!(&e.postings, &postings_for(&acct(), &e.data));
            for p in &e.postings {
                prop_assert!(!p.amount.is_zero());
                prop_assert_ne!(&p.debit, &p.credit);
                *net.entry(p.debit.to_string()).or_default() -= p.amount.get();
                *net.entry(p.credit.to_string()).or_default() += p.amount.get();
            }
        }
        prop_assert_eq!(net.values().copied().sum::<Decimal>(), Decimal::ZERO);
        for bucket in catalog().buckets() {
            let key = LedgerAccount::Customer(acct(), bucket.clone()).to_string();
            prop_assert_eq!(
                net.get(&key).copied().unwrap_or_default(),
                account.balance(&bucket),
                "bucket {}", bucket
            );
        }
        let reserved = account.reserved();
        for s in catalog().services() {
            let key = LedgerAccount::Reserved(s.clone()).to_string();
            prop_assert_eq!(
                net.get(&key).copied().unwrap_or_default(),
                reserved.get(s).map(|c| c.get()).unwrap_or_default(),
                "reserved {}", s
            );
        }
    }

    #[test]
    fn replaying_the_stored_events_rebuilds_the_state(steps in steps(true)) {
        let Run { account, events } = run(&steps, |_, _, _| {});
        let stored: Vec<String> = events
            .iter()
            .map(|e| {
                let envelope = EventEnvelope {
                    event_id: Id::new_v7(),
                    body: e.data.clone(),
                    schema_version: SCHEMA_VERSION,
                    account_id: acct(),
                    occurred_at: t0(),
                    recorded_at: t0(),
                    idempotency_key: None,
                    correlation_id: None,
                    causation_id: None,
                    actor: Actor::system(),
                    request_hash: None,
                    postings: e.postings.clone(),
                };
                serde_json::to_string(&envelope).unwrap()
            })
            .collect();
        let read: Vec<EventData> = stored
            .iter()
            .map(|s| serde_json::from_str::<EventEnvelope>(s).unwrap().body)
            .collect();
        prop_assert_eq!(Account::replay(acct(), &read), account);
    }

    /// After every event and the alerts that follow it, each alert's last
    /// recorded state says whether its balance is below the threshold, and
    /// alerts only ever record a change: one per crossing, none between.
    #[test]
    fn alerts_fire_once_per_crossing_and_never_between(steps in steps(true)) {
        let Run { events, .. } = run(&steps, |_, _, _| {});
        // Balances folded without the alert logic: only what moves credits.
        let mut balances = Account::new(acct());
        // Per scope: the threshold, and whether the last alert said low.
        let mut alerts: BTreeMap<Option<Service>, (Decimal, bool)> = BTreeMap::new();
        let mut fired = 0;
        let check = |balances: &Account, alerts: &BTreeMap<Option<Service>, (Decimal, bool)>| {
            for (scope, (threshold, low)) in alerts {
                let below = balances.spendable(scope.as_ref()) < *threshold;
                prop_assert_eq!(below, *low, "scope {:?} threshold {}", scope, threshold);
            }
            Ok(())
        };
        for (i, e) in events.iter().enumerate() {
            match &e.data {
                EventData::BalanceAlert(a) => {
                    fired += 1;
                    let entry = alerts.get_mut(&a.service).expect("an alert that is set");
                    prop_assert_eq!(entry.0, a.threshold.get());
                    let low = a.state == AlertState::Low;
                    prop_assert_ne!(entry.1, low, "an alert that changes nothing");
                    entry.1 = low;
                }
                EventData::AlertSet(set) => match set.threshold {
                    Some(t) => {
                        alerts.insert(set.service.clone(), (t.get(), false));
                    }
                    None => {
                        alerts.remove(&set.service);
                    }
                },
                other => balances.evolve(other),
            }
            let group_ends = !matches!(
                events.get(i + 1).map(|n| &n.data),
                Some(EventData::BalanceAlert(_))
            );
            if group_ends {
                check(&balances, &alerts)?;
            }
        }
        let _ = fired;
    }

    #[test]
    fn usage_never_takes_a_bucket_below_zero(steps in steps(false)) {
        run(&steps, |_, _, after| {
            for (bucket, balance) in after.balances() {
                assert!(!balance.is_negative(), "{bucket} went to {balance}");
            }
        });
    }

    #[test]
    fn usage_never_lowers_a_bucket_below_zero_even_with_debts(steps in steps(true)) {
        run(&steps, |command, before, after| {
            if !is_usage(command) {
                return;
            }
            for (bucket, balance) in after.balances() {
                let was = before.balance(bucket);
                assert!(
                    balance.get() >= was || !balance.is_negative(),
                    "{command:?} took {bucket} from {was} to {balance}"
                );
            }
        });
    }
}
