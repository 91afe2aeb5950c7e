//! The command side's interfaces: NATS request/reply (`ledger.cmd.<name>`,
//! service `ledger`) and HTTP. Both parse requests here, into the same
//! [`CommandRequest`]s, so a command means the same whichever way it came.

pub mod auth;
pub mod http;
pub mod nats;

use std::sync::Arc;

use axum::http::StatusCode;
use ledger_schemas::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::{Command, Shortfall};
use crate::engine::{CommandRequest, Engine, Outcome};

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
    GetBalance,
}

impl CommandName {
    pub const ALL: [CommandName; 9] = [
        CommandName::OpenAccount,
        CommandName::Consume,
        CommandName::Reserve,
        CommandName::Capture,
        CommandName::Release,
        CommandName::Transfer,
        CommandName::Grant,
        CommandName::Adjust,
        CommandName::GetBalance,
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
            CommandName::GetBalance => "get_balance",
        }
    }
}

/// A parsed request: a command to run, or a balance to read.
#[derive(Debug, Clone)]
pub enum Parsed {
    Command(Box<CommandRequest>),
    Balance(AccountId),
}

impl Parsed {
    pub fn account(&self) -> &AccountId {
        match self {
            Parsed::Command(c) => &c.account,
            Parsed::Balance(a) => a,
        }
    }
}

/// SHA-256 of the command name and the request without its key.
fn request_hash<T: Serialize>(name: CommandName, request: &T) -> String {
    let mut v = serde_json::to_value(request).expect("requests serialise");
    if let Some(m) = v.as_object_mut() {
        m.remove("idempotency_key");
    }
    let mut h = Sha256::new();
    h.update(name.as_str().as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(&v).expect("values serialise"));
    hex::encode(h.finalize())
}

fn command(
    key: IdempotencyKey,
    account: AccountId,
    hash: String,
    command: Command,
    actor: &Actor,
) -> Parsed {
    Parsed::Command(Box::new(CommandRequest {
        account,
        key: Some(key),
        request_hash: hash,
        command,
        actor: actor.clone(),
        occurred_at: None,
        correlation_id: Some(Id::new_v7().to_string()),
        causation_id: None,
    }))
}

/// Parses the JSON body of command `name`, sent by `actor`.
pub fn parse(name: CommandName, body: &[u8], actor: &Actor) -> Result<Parsed, Box<ErrorBody>> {
    Ok(match name {
        CommandName::OpenAccount => {
            let r: OpenAccountRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Open {
                display_name: r.display_name,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Consume => {
            let r: ConsumeRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let usage_id = UsageId::parse(r.idempotency_key.as_str())
                .expect("an idempotency key is a valid usage id");
            let cmd = Command::Consume {
                service: r.service,
                usage_id,
                quantity: r.quantity,
                credits: r.credits,
                shortfall: Shortfall::Refuse,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Reserve => {
            let r: ReserveRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Reserve {
                reservation_id: Id::new_v7(),
                service: r.service,
                credits: r.credits,
                expires_in_s: r.expires_in_s,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Capture => {
            let r: CaptureRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Capture {
                reservation_id: r.reservation_id,
                credits: r.credits,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Release => {
            let r: ReleaseRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Release {
                reservation_id: r.reservation_id,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Transfer => {
            let r: TransferRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Transfer {
                from_bucket: r.from_bucket,
                to_bucket: r.to_bucket,
                credits: r.credits,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Grant => {
            let r: GrantRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Grant {
                bucket: r.bucket,
                credits: r.credits,
                source: r.source,
                topup_id: r.topup_id,
                payment_id: r.payment_id,
                reason: r.reason,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::Adjust => {
            let r: AdjustRequest = decode_request(body)?;
            let hash = request_hash(name, &r);
            let cmd = Command::Adjust {
                bucket: r.bucket,
                delta: r.delta,
                reason: r.reason,
            };
            command(r.idempotency_key, r.account_id, hash, cmd, actor)
        }
        CommandName::GetBalance => {
            let r: GetBalanceRequest = decode_request(body)?;
            Parsed::Balance(r.account_id)
        }
    })
}

/// Runs a parsed request: the JSON reply body and whether it is an error.
pub async fn run(engine: &Engine, parsed: Parsed) -> Result<Vec<u8>, Arc<ErrorBody>> {
    match parsed {
        Parsed::Balance(account) => engine
            .balance(&account)
            .await
            .map(|b| serde_json::to_vec(&b).expect("replies serialise"))
            .map_err(Arc::new),
        Parsed::Command(request) => match engine.execute(*request).await {
            Ok(Outcome::Accepted(reply)) => {
                Ok(serde_json::to_vec(reply.as_ref()).expect("replies serialise"))
            }
            Ok(Outcome::Refused(e)) => Err(e),
            Err(e) => Err(Arc::new(e.to_body())),
        },
    }
}

/// The HTTP status of each error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::UnknownService => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownAccount | ErrorCode::ReservationNotFound => StatusCode::NOT_FOUND,
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
