//! The error object every interface answers with:
//! `{"error": {"code": "<snake_case>", "message": "<sentence>", "details": {...}}}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The contract's error codes. Each says what the caller can do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or breaks a rule; `details` names the field.
    InvalidRequest,
    UnknownAccount,
    AccountExists,
    UnknownService,
    InsufficientCredits,
    /// The idempotency key was used before for a different request.
    IdempotencyConflict,
    ReservationNotFound,
    ReservationClosed,
    /// No top-up has the id.
    UnknownTopup,
    /// A Razorpay signature (checkout callback or webhook) did not verify.
    InvalidSignature,
    Unauthorized,
    Forbidden,
    /// A concurrent write won; retrying the same request is safe.
    ConflictRetry,
    /// A dependency is down; retrying the same request is safe.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownAccount,
        ErrorCode::AccountExists,
        ErrorCode::UnknownService,
        ErrorCode::InsufficientCredits,
        ErrorCode::IdempotencyConflict,
        ErrorCode::ReservationNotFound,
        ErrorCode::ReservationClosed,
        ErrorCode::UnknownTopup,
        ErrorCode::InvalidSignature,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::ConflictRetry,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::ReservationNotFound => "reservation_not_found",
            ErrorCode::ReservationClosed => "reservation_closed",
            ErrorCode::UnknownTopup => "unknown_topup",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ConflictRetry => "conflict_retry",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the same request may simply be sent again.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::ConflictRetry | ErrorCode::Unavailable)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// The whole error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorObject {
                code,
                message: message.into(),
                details: Map::new(),
            },
        }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.error.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let e = ErrorBody::new(ErrorCode::InsufficientCredits, "Not enough credits.")
            .with_detail("credits_required", "2");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"error": {"code": "insufficient_credits",
                "message": "Not enough credits.", "details": {"credits_required": "2"}}})
        );
        assert_eq!(
            serde_json::to_value(ErrorCode::ConflictRetry).unwrap(),
            ErrorCode::ConflictRetry.as_str()
        );
    }
}
