//! Why the domain refuses a command. Each variant maps to one wire code.

use ledger_schemas::{Credits, ErrorBody, ErrorCode, Id, RejectReason, SignedCredits};

use super::account::Closure;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("The account already exists.")]
    AccountExists,
    #[error("The account does not exist.")]
    UnknownAccount,
    #[error("The service or bucket '{name}' is not known.")]
    UnknownService { name: String },
    #[error("Not enough credits: {required} required, {available} available.")]
    InsufficientCredits {
        required: Credits,
        available: SignedCredits,
        reason: RejectReason,
    },
    #[error("The field '{field}' is invalid: {rule}.")]
    Invalid { field: &'static str, rule: String },
    #[error("A limit was reached: {limit} is {max}.")]
    Limit { limit: &'static str, max: usize },
    #[error("The reservation {id} does not exist.")]
    ReservationNotFound { id: Id },
    #[error("The reservation {id} is already closed ({how}).")]
    ReservationClosed { id: Id, how: Closure },
}

impl DomainError {
    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        DomainError::Invalid {
            field,
            rule: rule.into(),
        }
    }

    /// Whether the refusal is remembered under the command's key (as a
    /// `command_refused` event): the domain's refusals on an existing
    /// account. Validation failures and an unknown account are not.
    pub fn is_remembered(&self) -> bool {
        matches!(
            self,
            DomainError::AccountExists
                | DomainError::InsufficientCredits { .. }
                | DomainError::ReservationNotFound { .. }
                | DomainError::ReservationClosed { .. }
        )
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::AccountExists => ErrorCode::AccountExists,
            DomainError::UnknownAccount => ErrorCode::UnknownAccount,
            DomainError::UnknownService { .. } => ErrorCode::UnknownService,
            DomainError::InsufficientCredits { .. } => ErrorCode::InsufficientCredits,
            DomainError::Invalid { .. } | DomainError::Limit { .. } => ErrorCode::InvalidRequest,
            DomainError::ReservationNotFound { .. } => ErrorCode::ReservationNotFound,
            DomainError::ReservationClosed { .. } => ErrorCode::ReservationClosed,
        }
    }

    /// The contract's error object, with the facts a caller acts on in `details`.
    pub fn to_body(&self) -> ErrorBody {
        let body = ErrorBody::new(self.code(), self.to_string());
        match self {
            DomainError::AccountExists | DomainError::UnknownAccount => body,
            DomainError::UnknownService { name } => body.with_detail("name", name.as_str()),
            DomainError::InsufficientCredits {
                required,
                available,
                reason,
            } => body
                .with_detail("credits_required", required.to_string())
                .with_detail("credits_available", available.to_string())
                .with_detail("reason", serde_json::to_value(reason).unwrap_or_default()),
            DomainError::Invalid { field, rule } => body
                .with_detail("field", *field)
                .with_detail("rule", rule.as_str()),
            DomainError::Limit { limit, max } => {
                body.with_detail("limit", *limit).with_detail("max", *max)
            }
            DomainError::ReservationNotFound { id } => {
                body.with_detail("reservation_id", id.to_string())
            }
            DomainError::ReservationClosed { id, how } => body
                .with_detail("reservation_id", id.to_string())
                .with_detail("closed", how.to_string()),
        }
    }
}
