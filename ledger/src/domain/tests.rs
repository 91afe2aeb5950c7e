//! Given events, when a command, then events (or a refusal): every command
//! and every refusal of the account aggregate.

use std::collections::BTreeMap;

use ledger_schemas::*;

use super::*;

pub(super) fn c(s: &str) -> Credits {
    Credits::parse(s).unwrap()
}
pub(super) fn b(s: &str) -> Bucket {
    Bucket::parse(s).unwrap()
}
pub(super) fn svc(s: &str) -> Service {
    Service::parse(s).unwrap()
}
pub(super) fn acct() -> AccountId {
    AccountId::parse("acme").unwrap()
}
/// A deterministic version 7 id.
pub(super) fn rid(n: u64) -> Id {
    Id::parse(&format!("01900000-0000-7000-8000-{n:012x}")).unwrap()
}
pub(super) fn t0() -> Timestamp {
    Timestamp::parse("2026-11-21T10:00:00.000Z").unwrap()
}
pub(super) fn catalog() -> Catalog {
    let prices = BTreeMap::from([
        (svc("email"), c("0.001")),
        (svc("sms"), c("0.0075")),
        (svc("push"), c("0")),
    ]);
    Catalog::new(3, prices).unwrap()
}

fn draw(bucket: &str, credits: &str) -> Draw {
    Draw {
        bucket: b(bucket),
        credits: c(credits),
    }
}

fn opened() -> EventData {
    EventData::AccountOpened(AccountOpened { display_name: None })
}

fn granted(bucket: &str, credits: &str) -> EventData {
    EventData::CreditsGranted(CreditsGranted {
        bucket: b(bucket),
        credits: c(credits),
        source: GrantSource::Promotion,
        topup_id: None,
        payment_id: None,
        reason: None,
    })
}

fn reserved(n: u64, service: &str, credits: &str, drawn: Vec<Draw>) -> EventData {
    EventData::CreditsReserved(CreditsReserved {
        reservation_id: rid(n),
        service: svc(service),
        credits: c(credits),
        drawn,
        expires_at: t0().plus_seconds(60).unwrap(),
    })
}

fn consume(service: &str, quantity: u64, credits: Option<&str>) -> Command {
    Command::Consume {
        service: svc(service),
        usage_id: UsageId::parse("u-1").unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
        credits: credits.map(c),
        shortfall: Shortfall::Refuse,
    }
}

fn posting(debit: &str, credit: &str, amount: &str) -> Posting {
    Posting {
        debit: debit.parse().unwrap(),
        credit: credit.parse().unwrap(),
        amount: c(amount),
    }
}

struct Given {
    account: Account,
    now: Timestamp,
}

fn given(events: impl IntoIterator<Item = EventData>) -> Given {
    let events: Vec<EventData> = events.into_iter().collect();
    Given {
        account: Account::replay(acct(), &events),
        now: t0(),
    }
}

struct When {
    account: Account,
    result: Result<Vec<NewEvent>, DomainError>,
}

impl Given {
    fn at(mut self, seconds_after_t0: u64) -> Self {
        self.now = t0().plus_seconds(seconds_after_t0).unwrap();
        self
    }

    fn when(self, command: Command) -> When {
        let catalog = catalog();
        let ctx = Context {
            now: self.now,
            catalog: &catalog,
        };
        let result = decide(&self.account, &command, &ctx);
        When {
            account: self.account,
            result,
        }
    }
}

impl When {
    fn then(self, expected: impl IntoIterator<Item = EventData>) -> Account {
        let expected: Vec<EventData> = expected.into_iter().collect();
        let got = self.result.expect("the command is accepted");
        let data: Vec<EventData> = got.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, expected);
        let mut account = self.account;
        for e in &got {
            account.evolve(&e.data);
        }
        account
    }

    fn then_postings(self, expected: Vec<Posting>) {
        let got = self.result.expect("the command is accepted");
        let postings: Vec<Posting> = got.into_iter().flat_map(|e| e.postings).collect();
        assert_eq!(postings, expected);
    }

    fn then_refused(self, code: ErrorCode) -> DomainError {
        let e = self.result.expect_err("the command is refused");
        assert_eq!(e.code(), code, "{e}");
        e
    }
}

/// Given one history, each command is refused with its code.
fn refuses<const N: usize>(history: &[EventData], cases: [(Command, ErrorCode); N]) {
    for (command, code) in cases {
        let described = format!("{command:?}");
        let e = given(history.to_vec())
            .when(command)
            .result
            .expect_err(&described);
        assert_eq!(e.code(), code, "{described}: {e}");
    }
}

fn bal(a: &Account, bucket: &str) -> String {
    a.balance(&b(bucket)).normalize().to_string()
}

// --- open ------------------------------------------------------------------

#[test]
fn open_a_new_account() {
    let name = Text::parse("Acme Inc.").unwrap();
    let a = given([])
        .when(Command::Open {
            display_name: Some(name.clone()),
        })
        .then([EventData::AccountOpened(AccountOpened {
            display_name: Some(name),
        })]);
    assert!(a.is_open());
}

#[test]
fn open_twice_is_refused() {
    given([opened()])
        .when(Command::Open { display_name: None })
        .then_refused(ErrorCode::AccountExists);
}

#[test]
fn commands_on_an_unopened_account_are_refused() {
    given([])
        .when(consume("sms", 1, None))
        .then_refused(ErrorCode::UnknownAccount);
    given([])
        .when(Command::Adjust {
            bucket: b("general"),
            delta: SignedCredits::parse("1").unwrap(),
            reason: Text::parse("x").unwrap(),
        })
        .then_refused(ErrorCode::UnknownAccount);
}

// --- grant -----------------------------------------------------------------

#[test]
fn grant_from_a_topup_posts_from_the_gateway() {
    let topup = rid(99);
    given([opened()])
        .when(Command::Grant {
            bucket: b("general"),
            credits: c("10"),
            source: GrantSource::Topup,
            topup_id: Some(topup),
            payment_id: Some("pay_29QQoUBi66xm2f".into()),
            reason: None,
        })
        .then_postings(vec![posting(
            // Its name is pinned by the schemas' own tests.
            &LedgerAccount::PaymentGateway.to_string(),
            "customer:acme:general",
            "10",
        )]);
}

#[test]
fn grant_a_promotion_into_a_service_bucket() {
    let a = given([opened()])
        .when(Command::Grant {
            bucket: b("sms"),
            credits: c("2.5"),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: Some(Text::parse("welcome").unwrap()),
        })
        .then([EventData::CreditsGranted(CreditsGranted {
            bucket: b("sms"),
            credits: c("2.5"),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: Some(Text::parse("welcome").unwrap()),
        })]);
    assert_eq!(bal(&a, "sms"), "2.5");
}

#[test]
fn grant_refusals() {
    let grant =
        |bucket: &str, credits: &str, source, topup_id, payment_id: Option<&str>| Command::Grant {
            bucket: b(bucket),
            credits: c(credits),
            source,
            topup_id,
            payment_id: payment_id.map(str::to_owned),
            reason: None,
        };
    use GrantSource::{Promotion, Topup};
    refuses(
        &[opened(), granted("general", "999999999999999")],
        [
            (
                grant("general", "0", Promotion, None, None),
                ErrorCode::InvalidRequest,
            ),
            (
                grant("fax", "1", Promotion, None, None),
                ErrorCode::UnknownService,
            ),
            (
                grant("general", "1", Topup, None, Some("pay_1")),
                ErrorCode::InvalidRequest,
            ),
            (
                grant("general", "1", Topup, Some(rid(1)), None),
                ErrorCode::InvalidRequest,
            ),
            (
                grant("general", "2", Promotion, None, None),
                ErrorCode::InvalidRequest,
            ),
        ],
    );
}

// --- consume ---------------------------------------------------------------

#[test]
fn consume_draws_from_the_service_bucket_first() {
    let a = given([opened(), granted("sms", "1"), granted("general", "5")])
        .when(consume("sms", 100, None))
        .then([EventData::CreditsConsumed(CreditsConsumed {
            service: svc("sms"),
            usage_id: UsageId::parse("u-1").unwrap(),
            quantity: Quantity::new(100).unwrap(),
            unit_price: Some(c("0.0075")),
            credits: c("0.75"),
            drawn: vec![draw("sms", "0.75")],
            rate_card_version: Some(3),
        })]);
    assert_eq!(bal(&a, "sms"), "0.25");
    assert_eq!(bal(&a, "general"), "5");
}

#[test]
fn consume_spills_over_into_general() {
    given([opened(), granted("sms", "1"), granted("general", "5")])
        .when(consume("sms", 1, Some("3")))
        .then_postings(vec![
            posting("customer:acme:sms", "platform:revenue:sms", "1"),
            posting("customer:acme:general", "platform:revenue:sms", "2"),
        ]);
}

#[test]
fn consume_with_given_credits_records_no_price() {
    let a = given([opened(), granted("general", "5")])
        .when(consume("email", 3, Some("0.3")))
        .then([EventData::CreditsConsumed(CreditsConsumed {
            service: svc("email"),
            usage_id: UsageId::parse("u-1").unwrap(),
            quantity: Quantity::new(3).unwrap(),
            unit_price: None,
            credits: c("0.3"),
            drawn: vec![draw("general", "0.3")],
            rate_card_version: None,
        })]);
    assert_eq!(bal(&a, "general"), "4.7");
}

#[test]
fn consume_of_a_free_service_moves_nothing() {
    given([opened()])
        .when(consume("push", 10, None))
        .then_postings(vec![]);
}

#[test]
fn consume_more_than_available_is_refused_with_the_figures() {
    let e = given([opened(), granted("sms", "0.5"), granted("email", "9")])
        .when(consume("sms", 1, Some("1")))
        .then_refused(ErrorCode::InsufficientCredits);
    assert_eq!(
        e,
        DomainError::InsufficientCredits {
            required: c("1"),
            available: SignedCredits::parse("0.5").unwrap(),
            reason: RejectReason::InsufficientCredits,
        }
    );
    let body = e.to_body();
    assert_eq!(body.error.details["credits_available"], "0.5");
}

#[test]
fn usage_short_of_credits_is_recorded_as_rejected() {
    let mut cmd = consume("sms", 2, None);
    if let Command::Consume { shortfall, .. } = &mut cmd {
        *shortfall = Shortfall::Record;
    }
    let a = given([opened(), granted("general", "0.01")])
        .when(cmd)
        .then([EventData::UsageRejected(UsageRejected {
            service: svc("sms"),
            usage_id: UsageId::parse("u-1").unwrap(),
            quantity: Quantity::new(2).unwrap(),
            credits_required: c("0.015"),
            credits_available: SignedCredits::parse("0.01").unwrap(),
            reason: RejectReason::InsufficientCredits,
        })]);
    assert_eq!(bal(&a, "general"), "0.01");
}

#[test]
fn consume_refusals() {
    refuses(
        &[opened(), granted("general", "5")],
        [
            (consume("fax", 1, None), ErrorCode::UnknownService),
            (consume("sms", 1, Some("0")), ErrorCode::InvalidRequest),
        ],
    );
}

// --- debt ------------------------------------------------------------------

fn reversed(bucket: &str, credits: &str) -> EventData {
    EventData::CreditsReversed(CreditsReversed {
        refund_id: "rfnd_1".into(),
        topup_id: rid(7),
        payment_id: Some("pay_1".into()),
        bucket: b(bucket),
        credits: c(credits),
    })
}

#[test]
fn reverse_may_leave_a_debt() {
    let a = given([opened(), granted("general", "10"), granted("sms", "3")])
        .when(Command::Reverse {
            refund_id: "rfnd_1".into(),
            topup_id: rid(7),
            payment_id: Some("pay_1".into()),
            bucket: b("general"),
            credits: c("12"),
        })
        .then([reversed("general", "12")]);
    assert_eq!(bal(&a, "general"), "-2");
    assert!(a.in_debt());
}

#[test]
fn a_debt_blocks_usage_even_with_credits_elsewhere() {
    let e = given([opened(), granted("sms", "3"), reversed("general", "2")])
        .when(consume("sms", 1, None))
        .then_refused(ErrorCode::InsufficientCredits);
    assert!(matches!(
        e,
        DomainError::InsufficientCredits {
            reason: RejectReason::AccountInDebt,
            ..
        }
    ));
    given([opened(), granted("sms", "3"), reversed("general", "2")])
        .when(Command::Reserve {
            reservation_id: rid(1),
            service: svc("sms"),
            credits: c("1"),
            expires_in_s: 60,
        })
        .then_refused(ErrorCode::InsufficientCredits);
}

#[test]
fn a_paid_debt_unblocks_usage() {
    given([
        opened(),
        granted("sms", "3"),
        reversed("general", "2"),
        granted("general", "2"),
    ])
    .when(consume("sms", 1, None))
    .then_postings(vec![posting(
        "customer:acme:sms",
        "platform:revenue:sms",
        "0.0075",
    )]);
}

#[test]
fn reverse_refusals() {
    let reverse = |refund_id: &str, credits: &str| Command::Reverse {
        refund_id: refund_id.into(),
        topup_id: rid(7),
        payment_id: None,
        bucket: b("general"),
        credits: c(credits),
    };
    refuses(
        &[opened()],
        [
            (reverse("rfnd_1", "0"), ErrorCode::InvalidRequest),
            (reverse("", "1"), ErrorCode::InvalidRequest),
            (reverse("rfnd 1", "1"), ErrorCode::InvalidRequest),
        ],
    );
}

// --- reserve / capture / release / expire ------------------------------------

#[test]
fn reserve_holds_credits_from_the_service_bucket_then_general() {
    let a = given([opened(), granted("sms", "1"), granted("general", "5")])
        .when(Command::Reserve {
            reservation_id: rid(1),
            service: svc("sms"),
            credits: c("3"),
            expires_in_s: 60,
        })
        .then([reserved(
            1,
            "sms",
            "3",
            vec![draw("sms", "1"), draw("general", "2")],
        )]);
    assert_eq!(bal(&a, "sms"), "0");
    assert_eq!(bal(&a, "general"), "3");
    assert_eq!(a.reserved()[&svc("sms")], c("3"));
}

#[test]
fn reserve_refusals() {
    let reserve = |n, credits: &str, ttl| Command::Reserve {
        reservation_id: rid(n),
        service: svc("sms"),
        credits: c(credits),
        expires_in_s: ttl,
    };
    refuses(
        &[
            opened(),
            granted("general", "5"),
            reserved(1, "sms", "1", vec![draw("general", "1")]),
        ],
        [
            (reserve(2, "4.000001", 60), ErrorCode::InsufficientCredits),
            (reserve(2, "0", 60), ErrorCode::InvalidRequest),
            (reserve(2, "1", 0), ErrorCode::InvalidRequest),
            (
                reserve(2, "1", limits::RESERVATION_TTL_S_MAX + 1),
                ErrorCode::InvalidRequest,
            ),
            (reserve(1, "1", 60), ErrorCode::InvalidRequest),
        ],
    );
}

#[test]
fn capture_takes_part_and_returns_the_rest_to_where_it_came_from() {
    let a = given([
        opened(),
        granted("sms", "1"),
        granted("general", "5"),
        reserved(1, "sms", "3", vec![draw("sms", "1"), draw("general", "2")]),
    ])
    .at(30)
    .when(Command::Capture {
        reservation_id: rid(1),
        credits: c("1.5"),
    })
    .then([EventData::ReservationCaptured(ReservationCaptured {
        reservation_id: rid(1),
        service: svc("sms"),
        credits: c("1.5"),
        drawn: vec![draw("sms", "1"), draw("general", "0.5")],
        returned: vec![draw("general", "1.5")],
    })]);
    assert_eq!(bal(&a, "sms"), "0");
    assert_eq!(bal(&a, "general"), "4.5");
    assert!(a.reserved().is_empty());
    assert_eq!(a.closed_reservation(&rid(1)), Some(Closure::Captured));
}

#[test]
fn capture_postings_move_reserved_credits_to_revenue() {
    given([
        opened(),
        granted("general", "5"),
        reserved(1, "sms", "3", vec![draw("general", "3")]),
    ])
    .when(Command::Capture {
        reservation_id: rid(1),
        credits: c("2"),
    })
    .then_postings(vec![
        posting("platform:reserved:sms", "platform:revenue:sms", "2"),
        posting("platform:reserved:sms", "customer:acme:general", "1"),
    ]);
}

#[test]
fn capture_refusals() {
    let history = [
        opened(),
        granted("general", "5"),
        reserved(1, "sms", "3", vec![draw("general", "3")]),
    ];
    let capture = |n, credits: &str| Command::Capture {
        reservation_id: rid(n),
        credits: c(credits),
    };
    refuses(
        &history,
        [
            (capture(1, "3.000001"), ErrorCode::InvalidRequest),
            (capture(1, "0"), ErrorCode::InvalidRequest),
            (capture(2, "1"), ErrorCode::ReservationNotFound),
        ],
    );
    given(history.clone())
        .at(60)
        .when(capture(1, "1"))
        .then_refused(ErrorCode::ReservationClosed);
    let mut closed = history.to_vec();
    closed.push(EventData::ReservationCaptured(ReservationCaptured {
        reservation_id: rid(1),
        service: svc("sms"),
        credits: c("3"),
        drawn: vec![draw("general", "3")],
        returned: vec![],
    }));
    let e = given(closed)
        .when(capture(1, "1"))
        .then_refused(ErrorCode::ReservationClosed);
    assert_eq!(e.to_body().error.details["closed"], "captured");
}

#[test]
fn release_returns_everything() {
    let a = given([
        opened(),
        granted("sms", "1"),
        granted("general", "5"),
        reserved(1, "sms", "3", vec![draw("sms", "1"), draw("general", "2")]),
    ])
    .when(Command::Release {
        reservation_id: rid(1),
    })
    .then([EventData::ReservationReleased(ReservationReleased {
        reservation_id: rid(1),
        service: svc("sms"),
        credits: c("3"),
        returned: vec![draw("sms", "1"), draw("general", "2")],
        reason: ReleaseReason::Released,
    })]);
    assert_eq!(bal(&a, "sms"), "1");
    assert_eq!(bal(&a, "general"), "5");
}

#[test]
fn release_refusals() {
    let release = |n| Command::Release {
        reservation_id: rid(n),
    };
    refuses(
        &[
            opened(),
            granted("general", "5"),
            reserved(1, "sms", "3", vec![draw("general", "3")]),
            EventData::ReservationReleased(ReservationReleased {
                reservation_id: rid(1),
                service: svc("sms"),
                credits: c("3"),
                returned: vec![draw("general", "3")],
                reason: ReleaseReason::Expired,
            }),
        ],
        [
            (release(2), ErrorCode::ReservationNotFound),
            (release(1), ErrorCode::ReservationClosed),
        ],
    );
}

#[test]
fn expiry_releases_only_what_is_due() {
    let later = EventData::CreditsReserved(CreditsReserved {
        reservation_id: rid(2),
        service: svc("email"),
        credits: c("1"),
        drawn: vec![draw("general", "1")],
        expires_at: t0().plus_seconds(3600).unwrap(),
    });
    let a = given([
        opened(),
        granted("general", "5"),
        reserved(1, "sms", "3", vec![draw("general", "3")]),
        later,
    ])
    .at(61)
    .when(Command::ExpireReservations)
    .then([EventData::ReservationReleased(ReservationReleased {
        reservation_id: rid(1),
        service: svc("sms"),
        credits: c("3"),
        returned: vec![draw("general", "3")],
        reason: ReleaseReason::Expired,
    })]);
    assert_eq!(bal(&a, "general"), "4");
    assert_eq!(a.closed_reservation(&rid(1)), Some(Closure::Expired));
}

#[test]
fn expiry_with_nothing_due_decides_nothing() {
    given([
        opened(),
        granted("general", "5"),
        reserved(1, "sms", "3", vec![draw("general", "3")]),
    ])
    .at(59)
    .when(Command::ExpireReservations)
    .then([]);
}

// --- transfer --------------------------------------------------------------

#[test]
fn transfer_between_buckets() {
    let a = given([opened(), granted("general", "5")])
        .when(Command::Transfer {
            from_bucket: b("general"),
            to_bucket: b("email"),
            credits: c("2"),
        })
        .then([EventData::CreditsTransferred(CreditsTransferred {
            from_bucket: b("general"),
            to_bucket: b("email"),
            credits: c("2"),
        })]);
    assert_eq!(bal(&a, "general"), "3");
    assert_eq!(bal(&a, "email"), "2");
}

#[test]
fn transfer_refusals() {
    let transfer = |from: &str, to: &str, credits: &str| Command::Transfer {
        from_bucket: b(from),
        to_bucket: b(to),
        credits: c(credits),
    };
    refuses(
        &[opened(), granted("general", "5")],
        [
            (
                transfer("general", "email", "5.000001"),
                ErrorCode::InsufficientCredits,
            ),
            (
                transfer("general", "general", "1"),
                ErrorCode::InvalidRequest,
            ),
            (transfer("general", "fax", "1"), ErrorCode::UnknownService),
            (transfer("general", "sms", "0"), ErrorCode::InvalidRequest),
        ],
    );
}

// --- adjust ----------------------------------------------------------------

#[test]
fn adjust_up_and_down() {
    given([opened(), granted("general", "5")])
        .when(Command::Adjust {
            bucket: b("general"),
            delta: SignedCredits::parse("-1.25").unwrap(),
            reason: Text::parse("duplicate grant").unwrap(),
        })
        .then_postings(vec![posting(
            "customer:acme:general",
            "platform:adjustments",
            "1.25",
        )]);
    given([opened()])
        .when(Command::Adjust {
            bucket: b("sms"),
            delta: SignedCredits::parse("4").unwrap(),
            reason: Text::parse("goodwill").unwrap(),
        })
        .then_postings(vec![posting(
            "platform:adjustments",
            "customer:acme:sms",
            "4",
        )]);
}

#[test]
fn adjust_refusals() {
    let adjust = |bucket: &str, delta: &str| Command::Adjust {
        bucket: b(bucket),
        delta: SignedCredits::parse(delta).unwrap(),
        reason: Text::parse("x").unwrap(),
    };
    refuses(
        &[opened()],
        [
            (adjust("general", "0"), ErrorCode::InvalidRequest),
            (adjust("fax", "1"), ErrorCode::UnknownService),
        ],
    );
}

// --- catalog ---------------------------------------------------------------

#[test]
fn catalog_requires_the_built_in_services() {
    let only_sms = BTreeMap::from([(svc("sms"), c("1"))]);
    assert_eq!(
        Catalog::new(1, only_sms),
        Err(CatalogError::MissingService("email"))
    );
    let buckets: Vec<String> = catalog().buckets().map(|b| b.to_string()).collect();
    assert_eq!(buckets, ["general", "email", "push", "sms"]);
}

#[test]
fn domain_refusals_are_remembered_and_invalid_requests_are_not() {
    let catalog = catalog();
    let ctx = Context {
        now: t0(),
        catalog: &catalog,
    };
    let account = Account::replay(acct(), &[opened(), granted("general", "1")]);
    let too_much = consume("email", 1, Some("5"));
    let e = decide(&account, &too_much, &ctx).unwrap_err();
    let r = refusal(&too_much, &e).expect("a domain refusal is remembered");
    let remembered = EventData::CommandRefused(r.clone());
    assert!(
        postings_for(account.id(), &remembered).is_empty(),
        "a refusal moves nothing"
    );
    assert_eq!(r.command, "consume");
    assert_eq!(r.code, ErrorCode::InsufficientCredits);
    assert_eq!(r.details["credits_available"], "1");
    assert_eq!(r.details["service"], "email");
    assert_eq!(r.to_error().code(), ErrorCode::InsufficientCredits);
    // The state is untouched by it.
    let mut after = account.clone();
    after.evolve(&remembered);
    assert_eq!(after.balance(&b("general")), account.balance(&b("general")));

    let missing = Command::Release {
        reservation_id: rid(7),
    };
    let e = decide(&account, &missing, &ctx).unwrap_err();
    assert!(refusal(&missing, &e).is_some(), "reservation_not_found");

    let invalid = consume("email", 1, Some("0"));
    let e = decide(&account, &invalid, &ctx).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    assert!(refusal(&invalid, &e).is_none(), "validation saves nothing");
    let unknown = Account::new(acct());
    let e = decide(&unknown, &too_much, &ctx).unwrap_err();
    assert!(
        refusal(&too_much, &e).is_none(),
        "an unknown account saves nothing"
    );
}

#[test]
fn credits_a_reservation_holds_count_against_the_limit() {
    // All of general reserved; a grant of the limit would leave no room
    // for the reservation's credits to come back on release.
    let grant = |credits: &str| Command::Grant {
        bucket: b("general"),
        credits: c(credits),
        source: GrantSource::Promotion,
        topup_id: None,
        payment_id: None,
        reason: None,
    };
    let history = [
        opened(),
        granted("general", "1000000000000000"),
        reserved(
            1,
            "email",
            "1000000000000000",
            vec![draw("general", "1000000000000000")],
        ),
    ];
    refuses(&history, [(grant("1"), ErrorCode::InvalidRequest)]);
    let history = [
        opened(),
        granted("general", "10"),
        reserved(1, "email", "10", vec![draw("general", "10")]),
    ];
    given(history)
        .when(grant("999999999999990"))
        .then([EventData::CreditsGranted(CreditsGranted {
            bucket: b("general"),
            credits: c("999999999999990"),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: None,
        })]);
}

#[test]
fn a_debt_deeper_than_one_values_range_is_reported_not_a_panic() {
    let reversed = |bucket: &str, credits: &str| {
        EventData::CreditsReversed(CreditsReversed {
            refund_id: "rfnd_1".into(),
            topup_id: rid(9),
            payment_id: None,
            bucket: b(bucket),
            credits: c(credits),
        })
    };
    let history = [
        opened(),
        reversed("email", "1000000000000000"),
        reversed("general", "1000000000000000"),
    ];
    let e = given(history)
        .when(consume("email", 1, Some("1")))
        .then_refused(ErrorCode::InsufficientCredits);
    let body = e.to_body();
    assert_eq!(
        body.error.details["credits_available"],
        serde_json::json!("-1000000000000000")
    );
}

#[test]
fn a_services_reserved_credits_stay_within_one_values_range() {
    let max = "1000000000000000";
    let reserve = |n: u64| Command::Reserve {
        reservation_id: rid(n),
        service: svc("email"),
        credits: c(max),
        expires_in_s: 60,
    };
    let history = [
        opened(),
        granted("general", max),
        granted("email", max),
        reserved(1, "email", max, vec![draw("email", max)]),
    ];
    refuses(&history, [(reserve(2), ErrorCode::InvalidRequest)]);
}
