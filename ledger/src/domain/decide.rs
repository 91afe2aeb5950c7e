//! `decide`: what a command does to an account, or why it is refused.

use ledger_schemas::*;
use rust_decimal::Decimal;

use super::account::{Account, Closure, to_signed};
use super::catalog::Catalog;
use super::error::DomainError;
use super::limits::*;
use super::postings::postings_for;

/// What the caller supplies that the domain must not fetch itself.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub now: Timestamp,
    pub catalog: &'a Catalog,
}

/// What to do with a usage the account cannot pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Refuse the command with `insufficient_credits` (the `consume` command).
    Refuse,
    /// Record a `usage_rejected` event (the usage intake: the usage happened
    /// and its outcome must be in the log exactly once).
    Record,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Open {
        display_name: Option<Text>,
    },
    Grant {
        bucket: Bucket,
        credits: Credits,
        source: GrantSource,
        topup_id: Option<Id>,
        payment_id: Option<String>,
        reason: Option<Text>,
    },
    Consume {
        service: Service,
        usage_id: UsageId,
        quantity: Quantity,
        /// Given credits, or `None` to price by the rate card.
        credits: Option<Credits>,
        shortfall: Shortfall,
    },
    Reserve {
        reservation_id: Id,
        service: Service,
        credits: Credits,
        expires_in_s: u64,
    },
    Capture {
        reservation_id: Id,
        credits: Credits,
    },
    Release {
        reservation_id: Id,
    },
    /// Releases every open reservation whose time is up (issued by the service).
    ExpireReservations,
    Transfer {
        from_bucket: Bucket,
        to_bucket: Bucket,
        credits: Credits,
    },
    /// Takes back the credits of a refunded or charged-back payment.
    Reverse {
        refund_id: String,
        topup_id: Id,
        payment_id: Option<String>,
        bucket: Bucket,
        credits: Credits,
    },
    Adjust {
        bucket: Bucket,
        delta: SignedCredits,
        reason: Text,
    },
    /// Sets (or removes) a balance alert.
    SetAlert {
        service: Option<Service>,
        threshold: Option<Credits>,
    },
}

/// The commands of the contract, by their subject name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    OpenAccount,
    Consume,
    Reserve,
    Capture,
    Release,
    Transfer,
    Grant,
    Adjust,
    Reverse,
    GetBalance,
    /// Many `consume` requests, each decided on its own key.
    ConsumeBatch,
    SetAlert,
}

impl CommandName {
    pub const ALL: [CommandName; 12] = [
        CommandName::OpenAccount,
        CommandName::Consume,
        CommandName::Reserve,
        CommandName::Capture,
        CommandName::Release,
        CommandName::Transfer,
        CommandName::Grant,
        CommandName::Adjust,
        CommandName::Reverse,
        CommandName::GetBalance,
        CommandName::ConsumeBatch,
        CommandName::SetAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::OpenAccount => "open_account",
            CommandName::Consume => "consume",
            CommandName::Reserve => "reserve",
            CommandName::Capture => "capture",
            CommandName::Release => "release",
            CommandName::Transfer => "transfer",
            CommandName::Grant => "grant",
            CommandName::Adjust => "adjust",
            CommandName::Reverse => "reverse",
            CommandName::GetBalance => "get_balance",
            CommandName::ConsumeBatch => "consume_batch",
            CommandName::SetAlert => "set_alert",
        }
    }
}

impl Command {
    /// The command's name, for metrics and logs: its subject name, or
    /// `expire_reservations` for the service's own sweep.
    pub fn name(&self) -> &'static str {
        let name = match self {
            Command::Open { .. } => CommandName::OpenAccount,
            Command::Grant { .. } => CommandName::Grant,
            Command::Consume { .. } => CommandName::Consume,
            Command::Reserve { .. } => CommandName::Reserve,
            Command::Capture { .. } => CommandName::Capture,
            Command::Release { .. } => CommandName::Release,
            Command::ExpireReservations => return "expire_reservations",
            Command::Transfer { .. } => CommandName::Transfer,
            Command::Reverse { .. } => CommandName::Reverse,
            Command::Adjust { .. } => CommandName::Adjust,
            Command::SetAlert { .. } => CommandName::SetAlert,
        };
        name.as_str()
    }
}

/// An event decided but not yet stored: its data and its postings.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub data: EventData,
    pub postings: Vec<Posting>,
}

/// Decides a command against the account's current state: one function
/// per command below, each returning the events' data.
pub fn decide(
    account: &Account,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<NewEvent>, DomainError> {
    if let Command::Open { display_name } = command {
        return Ok(vec![new_event(account, open(account, display_name)?)]);
    }
    if !account.is_open() {
        return Err(DomainError::UnknownAccount);
    }
    let data = match command {
        Command::Open { .. } => unreachable!("handled above"),
        Command::Grant {
            bucket,
            credits,
            source,
            topup_id,
            payment_id,
            reason,
        } => vec![grant(
            account, ctx, bucket, *credits, *source, *topup_id, payment_id, reason,
        )?],
        Command::Consume {
            service,
            usage_id,
            quantity,
            credits,
            shortfall,
        } => vec![consume(
            account, ctx, service, usage_id, *quantity, *credits, *shortfall,
        )?],
        Command::Reserve {
            reservation_id,
            service,
            credits,
            expires_in_s,
        } => vec![reserve(
            account,
            ctx,
            *reservation_id,
            service,
            *credits,
            *expires_in_s,
        )?],
        Command::Capture {
            reservation_id,
            credits,
        } => vec![capture(account, ctx, *reservation_id, *credits)?],
        Command::Release { reservation_id } => {
            let r = open_reservation(account, reservation_id)?;
            vec![release(*reservation_id, r, ReleaseReason::Released)]
        }
        Command::ExpireReservations => expire_reservations(account, ctx),
        Command::Transfer {
            from_bucket,
            to_bucket,
            credits,
        } => vec![transfer(account, ctx, from_bucket, to_bucket, *credits)?],
        Command::Reverse {
            refund_id,
            topup_id,
            payment_id,
            bucket,
            credits,
        } => vec![reverse(
            account, ctx, refund_id, *topup_id, payment_id, bucket, *credits,
        )?],
        Command::Adjust {
            bucket,
            delta,
            reason,
        } => vec![adjust(account, ctx, bucket, *delta, reason)?],
        Command::SetAlert { service, threshold } => {
            if let Some(s) = service {
                if !ctx.catalog.knows(s) {
                    return Err(DomainError::UnknownService {
                        name: s.to_string(),
                    });
                }
            }
            vec![EventData::AlertSet(AlertSet {
                service: service.clone(),
                threshold: *threshold,
            })]
        }
    };
    let events = data.into_iter().map(|d| new_event(account, d)).collect();
    Ok(with_alerts(account, events))
}

/// `events` with the balance alerts they cause, each right after the
/// event that crossed its threshold (so a replay of the log sees every
/// crossing where it happened).
fn with_alerts(account: &Account, events: Vec<NewEvent>) -> Vec<NewEvent> {
    let setting = events
        .iter()
        .any(|e| matches!(e.data, EventData::AlertSet(_)));
    if account.alerts().is_empty() && !setting {
        return events;
    }
    let mut state = account.clone();
    let mut out = Vec::with_capacity(events.len() + 1);
    for e in events {
        state.evolve(&e.data);
        out.push(e);
        for alert in state.alerts_due() {
            let data = EventData::BalanceAlert(alert);
            state.evolve(&data);
            out.push(new_event(&state, data));
        }
    }
    out
}

/// The event that remembers a refusal under the command's key: for the
/// domain's refusals on an existing account (`insufficient_credits`,
/// `reservation_not_found`, `reservation_closed`, `account_exists`). A
/// request that fails validation, or names an unknown account, gets `None`:
/// no outcome is saved, so a corrected retry is decided afresh.
pub fn refusal(command: &Command, error: &DomainError) -> Option<CommandRefused> {
    if !error.is_remembered() {
        return None;
    }
    let mut body = error.to_body();
    // What an auditor needs to check the refusal against the state.
    match command {
        Command::Consume { service, .. } | Command::Reserve { service, .. } => {
            body = body.with_detail("service", service.as_str());
        }
        Command::Transfer { from_bucket, .. } => {
            body = body.with_detail("from_bucket", from_bucket.as_str());
        }
        _ => {}
    }
    Some(CommandRefused {
        command: command.name().to_owned(),
        code: body.error.code,
        message: body.error.message,
        details: body.error.details,
    })
}

fn open(account: &Account, display_name: &Option<Text>) -> Result<EventData, DomainError> {
    if account.is_open() {
        return Err(DomainError::AccountExists);
    }
    Ok(EventData::AccountOpened(AccountOpened {
        display_name: display_name.clone(),
    }))
}

#[allow(clippy::too_many_arguments)]
fn grant(
    account: &Account,
    ctx: &Context<'_>,
    bucket: &Bucket,
    credits: Credits,
    source: GrantSource,
    topup_id: Option<Id>,
    payment_id: &Option<String>,
    reason: &Option<Text>,
) -> Result<EventData, DomainError> {
    known_bucket(ctx, bucket)?;
    positive("credits", credits)?;
    if source == GrantSource::Topup {
        if topup_id.is_none() {
            return Err(DomainError::invalid(
                "topup_id",
                "is required for a top-up grant",
            ));
        }
        check_gateway_id("payment_id", payment_id.as_deref().unwrap_or(""))?;
    }
    headroom(account, bucket, credits.get())?;
    Ok(EventData::CreditsGranted(CreditsGranted {
        bucket: bucket.clone(),
        credits,
        source,
        topup_id,
        payment_id: payment_id.clone(),
        reason: reason.clone(),
    }))
}

fn reserve(
    account: &Account,
    ctx: &Context<'_>,
    reservation_id: Id,
    service: &Service,
    credits: Credits,
    expires_in_s: u64,
) -> Result<EventData, DomainError> {
    known_service(ctx, service)?;
    positive("credits", credits)?;
    if !(1..=RESERVATION_TTL_S_MAX).contains(&expires_in_s) {
        return Err(DomainError::invalid(
            "expires_in_s",
            format!("must be from 1 to {RESERVATION_TTL_S_MAX} seconds"),
        ));
    }
    if account.reservation(&reservation_id).is_some()
        || account.closed_reservation(&reservation_id).is_some()
    {
        return Err(DomainError::invalid("reservation_id", "is already in use"));
    }
    if account.reservations().count() >= RESERVATIONS_OPEN_MAX {
        return Err(DomainError::Limit {
            limit: "reservations_open_max",
            max: RESERVATIONS_OPEN_MAX,
        });
    }
    // What a service holds reserved is one amount too: within range.
    let held = account
        .reservations()
        .filter(|(_, r)| &r.service == service)
        .fold(Decimal::ZERO, |sum, (_, r)| sum + r.credits.get());
    if Credits::new(held + credits.get()).is_err() {
        return Err(DomainError::invalid(
            "credits",
            "would take the service's reserved credits past the limit of 10^15",
        ));
    }
    let drawn = draw(account, service, credits).map_err(|(available, reason)| {
        DomainError::InsufficientCredits {
            required: credits,
            available,
            reason,
        }
    })?;
    let expires_at = ctx
        .now
        .plus_seconds(expires_in_s)
        .ok_or_else(|| DomainError::invalid("expires_in_s", "is too far in the future"))?;
    Ok(EventData::CreditsReserved(CreditsReserved {
        reservation_id,
        service: service.clone(),
        credits,
        drawn,
        expires_at,
    }))
}

fn capture(
    account: &Account,
    ctx: &Context<'_>,
    reservation_id: Id,
    credits: Credits,
) -> Result<EventData, DomainError> {
    let r = open_reservation(account, &reservation_id)?;
    if ctx.now >= r.expires_at {
        return Err(DomainError::ReservationClosed {
            id: reservation_id,
            how: Closure::Expired,
        });
    }
    positive("credits", credits)?;
    if credits > r.credits {
        return Err(DomainError::invalid(
            "credits",
            format!("must be at most the {} credits reserved", r.credits),
        ));
    }
    let (drawn, returned) = split(&r.drawn, credits);
    Ok(EventData::ReservationCaptured(ReservationCaptured {
        reservation_id,
        service: r.service.clone(),
        credits,
        drawn,
        returned,
    }))
}

/// Releases the reservations whose time is up, oldest first, at most
/// `EXPIRE_EVENTS_MAX` at once.
fn expire_reservations(account: &Account, ctx: &Context<'_>) -> Vec<EventData> {
    let mut due: Vec<_> = account
        .reservations()
        .filter(|(_, r)| r.expires_at <= ctx.now)
        .collect();
    due.sort_by_key(|(id, r)| (r.expires_at, **id));
    due.into_iter()
        .take(EXPIRE_EVENTS_MAX)
        .map(|(id, r)| release(*id, r, ReleaseReason::Expired))
        .collect()
}

fn transfer(
    account: &Account,
    ctx: &Context<'_>,
    from_bucket: &Bucket,
    to_bucket: &Bucket,
    credits: Credits,
) -> Result<EventData, DomainError> {
    known_bucket(ctx, from_bucket)?;
    known_bucket(ctx, to_bucket)?;
    positive("credits", credits)?;
    if from_bucket == to_bucket {
        return Err(DomainError::invalid(
            "to_bucket",
            "must differ from from_bucket",
        ));
    }
    let available = account.balance(from_bucket);
    if credits.get() > available {
        return Err(DomainError::InsufficientCredits {
            required: credits,
            available: to_signed(available),
            reason: RejectReason::InsufficientCredits,
        });
    }
    headroom(account, to_bucket, credits.get())?;
    Ok(EventData::CreditsTransferred(CreditsTransferred {
        from_bucket: from_bucket.clone(),
        to_bucket: to_bucket.clone(),
        credits,
    }))
}

fn reverse(
    account: &Account,
    ctx: &Context<'_>,
    refund_id: &str,
    topup_id: Id,
    payment_id: &Option<String>,
    bucket: &Bucket,
    credits: Credits,
) -> Result<EventData, DomainError> {
    known_bucket(ctx, bucket)?;
    positive("credits", credits)?;
    check_gateway_id("refund_id", refund_id)?;
    if let Some(p) = payment_id {
        check_gateway_id("payment_id", p)?;
    }
    headroom(account, bucket, -credits.get())?;
    Ok(EventData::CreditsReversed(CreditsReversed {
        refund_id: refund_id.to_owned(),
        topup_id,
        payment_id: payment_id.clone(),
        bucket: bucket.clone(),
        credits,
    }))
}

fn adjust(
    account: &Account,
    ctx: &Context<'_>,
    bucket: &Bucket,
    delta: SignedCredits,
    reason: &Text,
) -> Result<EventData, DomainError> {
    known_bucket(ctx, bucket)?;
    if delta.is_zero() {
        return Err(DomainError::invalid("delta", "must not be zero"));
    }
    headroom(account, bucket, delta.get())?;
    Ok(EventData::CreditsAdjusted(CreditsAdjusted {
        bucket: bucket.clone(),
        delta,
        reason: reason.clone(),
    }))
}

fn new_event(account: &Account, data: EventData) -> NewEvent {
    let postings = postings_for(account.id(), &data);
    NewEvent { data, postings }
}

fn consume(
    account: &Account,
    ctx: &Context<'_>,
    service: &Service,
    usage_id: &UsageId,
    quantity: Quantity,
    given: Option<Credits>,
    shortfall: Shortfall,
) -> Result<EventData, DomainError> {
    known_service(ctx, service)?;
    let (credits, unit_price, rate_card_version) = match given {
        Some(c) => {
            positive("credits", c)?;
            (c, None, None)
        }
        None => {
            let price = ctx
                .catalog
                .price(service)
                .expect("a known service has a price");
            let total = price
                .get()
                .checked_mul(Decimal::from(quantity.get()))
                .and_then(|d| Credits::new(d).ok())
                .ok_or_else(|| {
                    DomainError::invalid("quantity", "prices above the credits limit")
                })?;
            (total, Some(price), Some(ctx.catalog.rate_card_version()))
        }
    };
    match draw(account, service, credits) {
        Ok(drawn) => Ok(EventData::CreditsConsumed(CreditsConsumed {
            service: service.clone(),
            usage_id: usage_id.clone(),
            quantity,
            unit_price,
            credits,
            drawn,
            rate_card_version,
        })),
        Err((available, reason)) => match shortfall {
            Shortfall::Refuse => Err(DomainError::InsufficientCredits {
                required: credits,
                available,
                reason,
            }),
            Shortfall::Record => Ok(EventData::UsageRejected(UsageRejected {
                service: service.clone(),
                usage_id: usage_id.clone(),
                quantity,
                credits_required: credits,
                credits_available: available,
                reason,
            })),
        },
    }
}

/// Takes `credits` for `service`: its own bucket first, then `general`.
/// Refused while the account is in debt, or when the two hold too little;
/// so usage never takes a bucket below zero.
fn draw(
    account: &Account,
    service: &Service,
    credits: Credits,
) -> Result<Vec<Draw>, (SignedCredits, RejectReason)> {
    let own = Bucket::from(service);
    let general = Bucket::general();
    let own_balance = account.balance(&own);
    let general_balance = account.balance(&general);
    let available = own_balance.max(Decimal::ZERO) + general_balance.max(Decimal::ZERO);
    if account.in_debt() {
        return Err((
            SignedCredits::saturating(own_balance + general_balance),
            RejectReason::AccountInDebt,
        ));
    }
    if credits.get() > available {
        return Err((
            SignedCredits::saturating(available),
            RejectReason::InsufficientCredits,
        ));
    }
    let from_own = credits.get().min(own_balance);
    let from_general = credits.get() - from_own;
    let mut drawn = Vec::with_capacity(2);
    for (bucket, amount) in [(own, from_own), (general, from_general)] {
        if !amount.is_zero() {
            drawn.push(Draw {
                bucket,
                credits: Credits::new(amount).expect("a part of a valid amount"),
            });
        }
    }
    Ok(drawn)
}

/// Splits a reservation's draws into the captured part (taken in draw order)
/// and the rest, which goes back to the buckets it came from.
fn split(drawn: &[Draw], capture: Credits) -> (Vec<Draw>, Vec<Draw>) {
    let mut left = capture.get();
    let (mut taken, mut returned) = (Vec::new(), Vec::new());
    for d in drawn {
        let take = left.min(d.credits.get());
        left -= take;
        let back = d.credits.get() - take;
        for (list, amount) in [(&mut taken, take), (&mut returned, back)] {
            if !amount.is_zero() {
                list.push(Draw {
                    bucket: d.bucket.clone(),
                    credits: Credits::new(amount).expect("a part of a valid amount"),
                });
            }
        }
    }
    debug_assert!(left.is_zero(), "capture is at most the reserved credits");
    (taken, returned)
}

fn release(id: Id, r: &super::account::Reservation, reason: ReleaseReason) -> EventData {
    EventData::ReservationReleased(ReservationReleased {
        reservation_id: id,
        service: r.service.clone(),
        credits: r.credits,
        returned: r.drawn.clone(),
        reason,
    })
}

fn open_reservation<'a>(
    account: &'a Account,
    id: &Id,
) -> Result<&'a super::account::Reservation, DomainError> {
    if let Some(r) = account.reservation(id) {
        return Ok(r);
    }
    match account.closed_reservation(id) {
        Some(how) => Err(DomainError::ReservationClosed { id: *id, how }),
        None => Err(DomainError::ReservationNotFound { id: *id }),
    }
}

fn known_service(ctx: &Context<'_>, service: &Service) -> Result<(), DomainError> {
    if ctx.catalog.knows(service) {
        Ok(())
    } else {
        Err(DomainError::UnknownService {
            name: service.to_string(),
        })
    }
}

fn known_bucket(ctx: &Context<'_>, bucket: &Bucket) -> Result<(), DomainError> {
    if ctx.catalog.knows_bucket(bucket) {
        Ok(())
    } else {
        Err(DomainError::UnknownService {
            name: bucket.to_string(),
        })
    }
}

fn positive(field: &'static str, c: Credits) -> Result<(), DomainError> {
    if c.is_zero() {
        Err(DomainError::invalid(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

/// Refuses a change that would take a balance outside the credits range.
///
/// Credits an open reservation holds from the bucket may come back to it
/// (a release, an expiry, a partial capture), with no check then: they
/// count as the bucket's already, so that no return can take it past the
/// limit.
fn headroom(account: &Account, bucket: &Bucket, delta: Decimal) -> Result<(), DomainError> {
    let held: Decimal = account
        .reservations()
        .flat_map(|(_, r)| r.drawn.iter())
        .filter(|d| &d.bucket == bucket)
        .map(|d| d.credits.get())
        .sum();
    let balance = account.balance(bucket);
    let low = balance.checked_add(delta);
    let high = (balance + held).checked_add(delta);
    match (low.map(SignedCredits::new), high.map(SignedCredits::new)) {
        (Some(Ok(_)), Some(Ok(_))) => Ok(()),
        _ => Err(DomainError::invalid(
            "credits",
            "would take the balance past the limit of 10^15 credits",
        )),
    }
}

/// Ids that come from the gateway (payment and refund ids): printable, bounded.
fn check_gateway_id(field: &'static str, id: &str) -> Result<(), DomainError> {
    if (1..=REFUND_ID_LEN_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!("must be 1 to {REFUND_ID_LEN_MAX} characters from A-Z, a-z, 0-9, '_' and '-'"),
        ))
    }
}
