//! The gateway's one error type: every variant is one contract code (and so
//! one HTTP status, by the ledger's `status_of`), and says what the caller
//! can do: correct the request, retry, or report a bug.

use ledger_schemas::{ErrorBody, ErrorCode};

use crate::razorpay::RazorpayError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `invalid_request` (400): a field of the request breaks a rule.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
        /// The rule broken, or the limit's setting (`limit`).
        rule: &'static str,
    },
    /// `unknown_service` (400): the bucket names no service.
    #[error("There is no bucket '{0}'.")]
    UnknownBucket(String),
    /// `invalid_signature` (400): a Razorpay signature did not verify.
    #[error("{field} does not match {what}.")]
    InvalidSignature {
        field: &'static str,
        what: &'static str,
    },
    /// `unknown_account` (404), as the command service answered it.
    #[error("{}", .0.error.message)]
    UnknownAccount(Box<ErrorBody>),
    /// `unknown_topup` (404): no top-up has this id (or the id is no top-up id).
    #[error("No top-up has id '{0}'.")]
    UnknownTopup(String),
    /// `idempotency_conflict` (422): the key names a different request.
    #[error("This Idempotency-Key was used for a different top-up request.")]
    KeyConflict,
    /// `conflict_retry` (409): a concurrent request holds the top-up.
    #[error("A request with this Idempotency-Key is still being processed; retrying is safe.")]
    InProgress,
    /// `unavailable` (503): top-ups are not configured on this service.
    #[error("Top-ups are not configured on this service (no Razorpay settings).")]
    NotConfigured,
    /// `unavailable` (503): a dependency (Razorpay, NATS, PostgreSQL, the
    /// command service, the FX rate) did not answer; retrying is safe.
    #[error("{0}; retrying is safe.")]
    Unavailable(String),
    /// `unavailable` (503): the top-up is quoted but Razorpay did not create
    /// its order in time; a repeat with the same `Idempotency-Key` finishes
    /// this top-up (details name it).
    #[error(
        "The top-up is quoted but its Razorpay order is not created yet ({reason}); retrying with the same Idempotency-Key is safe."
    )]
    OrderPending {
        topup_id: ledger_schemas::Id,
        reason: String,
    },
    /// `internal` (500): a bug, a corrupt log, or Razorpay refusing what it
    /// should accept.
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        GatewayError::Unavailable(what.to_string())
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        GatewayError::Internal(what.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            GatewayError::Invalid { .. } => ErrorCode::InvalidRequest,
            GatewayError::UnknownBucket(_) => ErrorCode::UnknownService,
            GatewayError::InvalidSignature { .. } => ErrorCode::InvalidSignature,
            GatewayError::UnknownAccount(_) => ErrorCode::UnknownAccount,
            GatewayError::UnknownTopup(_) => ErrorCode::UnknownTopup,
            GatewayError::KeyConflict => ErrorCode::IdempotencyConflict,
            GatewayError::InProgress => ErrorCode::ConflictRetry,
            GatewayError::NotConfigured
            | GatewayError::Unavailable(_)
            | GatewayError::OrderPending { .. } => ErrorCode::Unavailable,
            GatewayError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The error in the contract's shape.
    pub fn body(&self) -> ErrorBody {
        if let GatewayError::UnknownAccount(answered) = self {
            return (**answered).clone();
        }
        let body = ErrorBody::new(self.code(), self.to_string());
        match self {
            GatewayError::Invalid { field, rule, .. } => {
                let key = if rule.ends_with("_max") {
                    "limit"
                } else {
                    "rule"
                };
                body.with_detail("field", *field).with_detail(key, *rule)
            }
            GatewayError::UnknownBucket(_) => body.with_detail("field", "bucket"),
            GatewayError::InvalidSignature { field, .. } => body.with_detail("field", *field),
            GatewayError::UnknownTopup(_) => body.with_detail("field", "topup_id"),
            GatewayError::KeyConflict => body.with_detail("field", "Idempotency-Key"),
            GatewayError::NotConfigured => body.with_detail("setting", "razorpay_base_url"),
            GatewayError::OrderPending { topup_id, .. } => {
                body.with_detail("topup_id", topup_id.to_string())
            }
            _ => body,
        }
    }

    /// The command service's refusal, as the gateway passes it on.
    pub fn from_ledger(e: ErrorBody) -> Self {
        match e.code() {
            ErrorCode::UnknownAccount => GatewayError::UnknownAccount(Box::new(e)),
            ErrorCode::Unavailable | ErrorCode::ConflictRetry => GatewayError::Unavailable(
                format!("the ledger's command service: {}", e.error.message),
            ),
            code => GatewayError::Internal(format!(
                "the ledger's command service refused ({}): {}",
                code.as_str(),
                e.error.message
            )),
        }
    }
}

impl From<RazorpayError> for GatewayError {
    fn from(e: RazorpayError) -> Self {
        match e {
            RazorpayError::Unavailable(d) => {
                GatewayError::Unavailable(format!("Razorpay is unavailable ({d})"))
            }
            RazorpayError::Refused {
                status,
                code,
                description,
            } => GatewayError::Internal(format!(
                "Razorpay refused the request ({status} {code}: {description})"
            )),
        }
    }
}

impl From<GatewayError> for ledger::api::http::ApiError {
    fn from(e: GatewayError) -> Self {
        ledger::api::http::ApiError(Box::new(e.body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_answers_its_own_code_and_status() {
        use axum::http::StatusCode;
        let cases = [
            (
                GatewayError::Invalid {
                    field: "amount_usd",
                    message: "too small".into(),
                    rule: "range",
                },
                "invalid_request",
                StatusCode::BAD_REQUEST,
            ),
            (
                GatewayError::UnknownTopup("x".into()),
                "unknown_topup",
                StatusCode::NOT_FOUND,
            ),
            (
                GatewayError::KeyConflict,
                "idempotency_conflict",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                GatewayError::NotConfigured,
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::InvalidSignature {
                    field: "razorpay_signature",
                    what: "the order and payment",
                },
                "invalid_signature",
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code().as_str(), code);
            assert_eq!(e.body().code().as_str(), code);
            assert_eq!(ledger::api::status_of(e.code()), status, "{e}");
        }
    }

    #[test]
    fn the_ledgers_refusals_keep_their_meaning() {
        let unknown = ErrorBody::new(ErrorCode::UnknownAccount, "No account 'x'.");
        assert_eq!(
            GatewayError::from_ledger(unknown).code(),
            ErrorCode::UnknownAccount
        );
        let busy = ErrorBody::new(ErrorCode::ConflictRetry, "busy");
        assert_eq!(
            GatewayError::from_ledger(busy).code(),
            ErrorCode::Unavailable
        );
        let odd = ErrorBody::new(ErrorCode::InsufficientCredits, "no");
        assert_eq!(GatewayError::from_ledger(odd).code(), ErrorCode::Internal);
    }
}
