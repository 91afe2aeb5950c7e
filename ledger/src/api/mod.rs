//! The command side's interfaces: NATS request/reply (`ledger.cmd.<name>`,
//! service `ledger`) and HTTP. Both parse requests here, into the same
//! [`CommandRequest`]s, so a command means the same whichever way it came.

pub mod auth;
pub mod http;
pub mod nats;
pub mod openapi;
pub mod partitions;
pub mod reads;

use std::sync::Arc;

use axum::http::StatusCode;
use ledger_schemas::*;
use serde::Serialize;

pub use crate::domain::CommandName;
use crate::domain::{Command, Shortfall};
use crate::engine::{CommandRequest, Engine, Outcome};

/// A parsed request: a command to run, or a balance to read.
#[derive(Debug, Clone)]
pub enum Parsed {
    Command(Box<CommandRequest>),
    Balance(AccountId),
    /// A batch's items, each parsed on its own (an invalid item is its own
    /// error, answered in its place).
    Batch(Vec<Result<Box<CommandRequest>, Arc<ErrorBody>>>),
}

impl Parsed {
    /// The account of a single request; `None` for a batch, whose items
    /// each name their own.
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            Parsed::Command(c) => Some(&c.account),
            Parsed::Balance(a) => Some(a),
            Parsed::Batch(_) => None,
        }
    }

    /// Refuses each batch item `allowed` refuses (the other items go on:
    /// items are independent).
    pub fn authorize_items(
        &mut self,
        allowed: impl Fn(&CommandRequest) -> Result<(), Box<ErrorBody>>,
    ) {
        if let Parsed::Batch(items) = self {
            for item in items.iter_mut() {
                if let Ok(request) = item {
                    if let Err(e) = allowed(request) {
                        *item = Err(Arc::from(e));
                    }
                }
            }
        }
    }
}

/// What command `name` asks of the caller's role.
pub fn action_of(name: CommandName) -> auth::Action {
    use auth::Action;
    match name {
        CommandName::OpenAccount => Action::OpenAccount,
        CommandName::Consume
        | CommandName::ConsumeBatch
        | CommandName::Reserve
        | CommandName::Capture
        | CommandName::Release => Action::Spend,
        CommandName::Grant | CommandName::Adjust | CommandName::Reverse => Action::Operate,
        CommandName::Transfer => Action::Transfer,
        CommandName::GetBalance => Action::ReadAccount,
        CommandName::SetAlert => Action::Alert,
    }
}

/// Authorises a parsed request of `name` for `principal`: its action on
/// the request's account, and what its role may ask; each batch item on
/// its own account.
pub fn authorize(
    principal: &auth::Principal,
    name: CommandName,
    parsed: &mut Parsed,
) -> Result<(), Box<ErrorBody>> {
    let action = action_of(name);
    let check = |account: &AccountId, command: Option<&Command>| {
        let on = (action != auth::Action::OpenAccount).then_some(account);
        principal.check(action, on)?;
        command.map_or(Ok(()), |c| principal.check_command(c))
    };
    match parsed {
        Parsed::Command(c) => check(&c.account, Some(&c.command)),
        Parsed::Balance(a) => check(a, None),
        Parsed::Batch(_) => {
            parsed.authorize_items(|r| check(&r.account, Some(&r.command)));
            Ok(())
        }
    }
}

/// SHA-256 of the command name and the request without its key.
fn request_hash<T: Serialize>(name: CommandName, request: &T) -> String {
    let mut v = serde_json::to_value(request).expect("requests serialise");
    if let Some(m) = v.as_object_mut() {
        m.remove("idempotency_key");
    }
    ledger_schemas::request_hash(Some(name.as_str()), &v)
}

/// A command request of the contract: its key, its account, and the domain
/// command it asks for.
trait KeyedRequest: serde::de::DeserializeOwned + Serialize {
    fn key(&self) -> &IdempotencyKey;
    fn account(&self) -> &AccountId;
    fn into_command(self) -> Command;
}

macro_rules! keyed {
    ($t:ty, |$r:ident| $cmd:expr) => {
        impl KeyedRequest for $t {
            fn key(&self) -> &IdempotencyKey {
                &self.idempotency_key
            }
            fn account(&self) -> &AccountId {
                &self.account_id
            }
            fn into_command(self) -> Command {
                let $r = self;
                $cmd
            }
        }
    };
}

keyed!(OpenAccountRequest, |r| Command::Open {
    display_name: r.display_name
});
keyed!(ConsumeRequest, |r| Command::Consume {
    usage_id: UsageId::parse(r.idempotency_key.as_str())
        .expect("an idempotency key is a valid usage id"),
    service: r.service,
    quantity: r.quantity,
    credits: r.credits,
    shortfall: Shortfall::Refuse,
});
keyed!(ReserveRequest, |r| Command::Reserve {
    // A fresh id; a repeat of the key answers with the first one.
    reservation_id: Id::new_v7(),
    service: r.service,
    credits: r.credits,
    expires_in_s: r.expires_in_s,
});
keyed!(CaptureRequest, |r| Command::Capture {
    reservation_id: r.reservation_id,
    credits: r.credits,
});
keyed!(ReleaseRequest, |r| Command::Release {
    reservation_id: r.reservation_id
});
keyed!(SetAlertRequest, |r| Command::SetAlert {
    service: r.service,
    threshold: r.threshold,
});
keyed!(TransferRequest, |r| Command::Transfer {
    from_bucket: r.from_bucket,
    to_bucket: r.to_bucket,
    credits: r.credits,
});
keyed!(GrantRequest, |r| Command::Grant {
    bucket: r.bucket,
    credits: r.credits,
    source: r.source,
    topup_id: r.topup_id,
    payment_id: r.payment_id,
    reason: r.reason,
});
keyed!(ReverseRequest, |r| Command::Reverse {
    refund_id: r.refund_id,
    topup_id: r.topup_id,
    payment_id: r.payment_id,
    bucket: r.bucket,
    credits: r.credits,
});
keyed!(AdjustRequest, |r| Command::Adjust {
    bucket: r.bucket,
    delta: r.delta,
    reason: r.reason,
});

fn keyed<R: KeyedRequest>(
    name: CommandName,
    body: &[u8],
    actor: &Actor,
) -> Result<Parsed, Box<ErrorBody>> {
    let r: R = decode_request(body)?;
    let request_hash = request_hash(name, &r);
    Ok(Parsed::Command(Box::new(CommandRequest {
        account: r.account().clone(),
        key: Some(r.key().clone()),
        request_hash,
        actor: actor.clone(),
        occurred_at: None,
        correlation_id: Some(Id::new_v7().to_string()),
        causation_id: None,
        command: r.into_command(),
    })))
}

/// A batch as it arrives: its items are parsed one by one.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    items: Vec<Box<serde_json::value::RawValue>>,
}

fn batch(body: &[u8], actor: &Actor, items_max: usize) -> Result<Parsed, Box<ErrorBody>> {
    let raw: RawBatch = decode_request(body)?;
    if raw.items.is_empty() || raw.items.len() > items_max {
        return Err(Box::new(
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "A batch holds from 1 to {items_max} items; this one holds {}.",
                    raw.items.len()
                ),
            )
            .with_detail("field", "items")
            .with_detail("limit", "batch_items_max"),
        ));
    }
    let items = raw
        .items
        .into_iter()
        .map(|item| {
            match keyed::<ConsumeRequest>(CommandName::Consume, item.get().as_bytes(), actor) {
                Ok(Parsed::Command(c)) => Ok(c),
                Ok(_) => unreachable!("a consume request parses to a command"),
                Err(e) => Err(Arc::from(e)),
            }
        })
        .collect();
    Ok(Parsed::Batch(items))
}

/// Parses the JSON body of command `name`, sent by `actor`; a batch holds at
/// most `batch_items_max` items.
pub fn parse(
    name: CommandName,
    body: &[u8],
    actor: &Actor,
    batch_items_max: usize,
) -> Result<Parsed, Box<ErrorBody>> {
    match name {
        CommandName::ConsumeBatch => batch(body, actor, batch_items_max),
        CommandName::OpenAccount => keyed::<OpenAccountRequest>(name, body, actor),
        CommandName::Consume => keyed::<ConsumeRequest>(name, body, actor),
        CommandName::Reserve => keyed::<ReserveRequest>(name, body, actor),
        CommandName::Capture => keyed::<CaptureRequest>(name, body, actor),
        CommandName::Release => keyed::<ReleaseRequest>(name, body, actor),
        CommandName::Transfer => keyed::<TransferRequest>(name, body, actor),
        CommandName::Grant => keyed::<GrantRequest>(name, body, actor),
        CommandName::Adjust => keyed::<AdjustRequest>(name, body, actor),
        CommandName::Reverse => keyed::<ReverseRequest>(name, body, actor),
        CommandName::SetAlert => keyed::<SetAlertRequest>(name, body, actor),
        CommandName::GetBalance => {
            let r: GetBalanceRequest = decode_request(body)?;
            Ok(Parsed::Balance(r.account_id))
        }
    }
}

/// Runs a parsed request: the JSON reply body and whether it is an error.
pub async fn run(engine: &Engine, parsed: Parsed) -> Result<Vec<u8>, Arc<ErrorBody>> {
    match parsed {
        Parsed::Balance(account) => engine
            .balance(&account)
            .await
            .map(|b| serde_json::to_vec(&b).expect("replies serialise"))
            .map_err(Arc::new),
        Parsed::Command(request) => execute(engine, *request).await,
        Parsed::Batch(items) => {
            // Every item at once: the account writers decide them and the
            // committer appends them across accounts in shared batches.
            let results = futures::future::join_all(items.into_iter().map(|item| async move {
                match item {
                    Ok(request) => execute(engine, *request).await,
                    Err(e) => Err(e),
                }
            }))
            .await;
            let mut out = Vec::with_capacity(results.len() * 512);
            out.extend_from_slice(b"{\"results\":[");
            for (i, r) in results.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match r {
                    Ok(reply) => out.extend_from_slice(&reply),
                    Err(e) => {
                        serde_json::to_writer(&mut out, e.as_ref()).expect("errors serialise")
                    }
                }
            }
            out.extend_from_slice(b"]}");
            Ok(out)
        }
    }
}

/// One command: its reply's JSON, or its refusal.
async fn execute(engine: &Engine, request: CommandRequest) -> Result<Vec<u8>, Arc<ErrorBody>> {
    match engine.execute(request).await {
        Ok(Outcome::Accepted(reply)) => Ok(reply.to_json()),
        Ok(Outcome::Refused(e)) => Err(e),
        Err(e) => Err(Arc::new(e.to_body())),
    }
}

/// The HTTP status of each error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::UnknownService | ErrorCode::InvalidSignature => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::UnknownAccount | ErrorCode::ReservationNotFound | ErrorCode::UnknownTopup => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::AccountExists | ErrorCode::ReservationClosed | ErrorCode::ConflictRetry => {
            StatusCode::CONFLICT
        }
        ErrorCode::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        ErrorCode::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
