//! Command requests (`ledger.cmd.<name>`, and the HTTP endpoints that mirror
//! them) and their replies.
//!
//! Requests refuse unknown fields: a misspelt `"credit"` must not silently turn
//! a consumption with given credits into one priced by the rate card.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorBody, ErrorCode};
use crate::event::{EventEnvelope, GrantSource};
use crate::values::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub service: Service,
    pub quantity: Quantity,
    /// Given credits; absent or null means "price by the rate card".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<PositiveCredits>")]
    pub credits: Option<Credits>,
}

/// `consume_batch`: up to `batch_items_max` (1,000) consume requests, for
/// any accounts. Each item is decided on its own key and answered in order;
/// items are independent, not atomic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBatchRequest {
    /// 1 to `batch_items_max` (default 1,000) items.
    #[schemars(length(min = 1, max = 1000))]
    pub items: Vec<ConsumeRequest>,
}

/// The reply to `consume_batch`: one result per item, in the items' order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConsumeBatchReply {
    pub results: Vec<BatchResult>,
}

/// One item's outcome: its reply, or its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Error(crate::ErrorBody),
    Reply(Box<CommandReply>),
}

/// A top-up's grant names its top-up and payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"source": {"const": "topup"}}, "required": ["source"]},
    "then" = {"required": ["topup_id", "payment_id"],
              "properties": {"topup_id": {"type": "string"}, "payment_id": {"type": "string"}}}
))]
pub struct GrantRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub bucket: Bucket,
    #[schemars(with = "PositiveCredits")]
    pub credits: Credits,
    pub source: GrantSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text>,
    /// Required when `source` is `topup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topup_id: Option<Id>,
    /// Required when `source` is `topup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(GATEWAY_ID_PATTERN))]
    pub payment_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub service: Service,
    #[schemars(with = "PositiveCredits")]
    pub credits: Credits,
    /// From 1 second to 7 days.
    #[schemars(range(min = 1, max = 604_800))]
    #[serde(deserialize_with = "whole_u64")]
    pub expires_in_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub reservation_id: Id,
    #[schemars(with = "PositiveCredits")]
    pub credits: Credits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub reservation_id: Id,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub from_bucket: Bucket,
    pub to_bucket: Bucket,
    #[schemars(with = "PositiveCredits")]
    pub credits: Credits,
}

/// Sets (or, without `threshold`, removes) a balance alert: for one
/// service's spendable credits (its bucket and `general`), or without
/// `service` for the account's total. It fires once when the balance
/// crosses below the threshold and once when it recovers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlertRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<PositiveCredits>")]
    pub threshold: Option<Credits>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub bucket: Bucket,
    #[schemars(with = "NonZeroCredits")]
    pub delta: SignedCredits,
    pub reason: Text,
}

/// Takes back the credits of a refunded or disputed top-up payment. Sent by
/// the gateway; a reversal may leave a bucket in debt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseRequest {
    pub idempotency_key: IdempotencyKey,
    pub account_id: AccountId,
    pub bucket: Bucket,
    #[schemars(with = "PositiveCredits")]
    pub credits: Credits,
    /// Razorpay's refund id, or the dispute id for a chargeback.
    #[schemars(pattern(GATEWAY_ID_PATTERN))]
    pub refund_id: String,
    pub topup_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(GATEWAY_ID_PATTERN))]
    pub payment_id: Option<String>,
}

/// `POST /v1/accounts`: the account to open. The idempotency key is the
/// `Idempotency-Key` header, or `open:<account_id>` without one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    pub account_id: AccountId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text>,
}

/// `POST /v1/accounts/{id}/consumptions`: the `consume` command, its
/// account in the path and its key in the `Idempotency-Key` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBody {
    pub service: Service,
    pub quantity: Quantity,
    /// Given credits; absent or null means "price by the rate card".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<PositiveCredits>")]
    pub credits: Option<Credits>,
}

/// `POST /v1/accounts/{id}/topups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopupRequest {
    /// At least `"1.00"`, at most the configured maximum.
    #[schemars(with = "TopupUsd")]
    pub amount_usd: UsdAmount,
    /// The bucket to credit; `general` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<Bucket>,
    /// Prefilled on Razorpay's payment page.
    pub phone: Phone,
}

/// `POST /v1/topups/{topup_id}/checkout`: what Razorpay Checkout's success
/// handler receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub razorpay_payment_id: String,
    pub razorpay_order_id: String,
    /// `HMAC_SHA256(order_id + "|" + payment_id, key_secret)`, lowercase hex.
    pub razorpay_signature: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetBalanceRequest {
    pub account_id: AccountId,
}

/// The reply to every command that writes: the resulting event and the
/// balances after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandReply {
    pub event: EventEnvelope,
    /// Every bucket's balance after the event (negative only through a debt).
    pub balances: BTreeMap<Bucket, SignedCredits>,
    /// Credits held by open reservations, per service.
    pub reserved: BTreeMap<Service, Credits>,
    /// Set on the reply to `reserve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Id>,
    /// The stream sequence of the event: read models at or past it reflect it.
    pub stream_seq: u64,
    /// The balance alerts the account is under after the command (each
    /// fired `low` once, when the balance crossed below its threshold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub below_threshold: Vec<BelowThreshold>,
    /// The event's JSON exactly as stored, when the ledger has it at hand:
    /// [`CommandReply::to_json`] writes these bytes rather than serialising
    /// the event a second time. Not part of the wire form.
    #[serde(skip)]
    #[schemars(skip)]
    pub event_json: Option<bytes::Bytes>,
}

/// A balance alert the account is under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BelowThreshold {
    /// The service whose spendable credits it watches; none: the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    pub threshold: Credits,
    pub spendable: SignedCredits,
}

impl CommandReply {
    /// The reply's JSON: the same bytes as serde writes, reusing the stored
    /// event's JSON when it is at hand.
    pub fn to_json(&self) -> Vec<u8> {
        let Some(event) = &self.event_json else {
            return serde_json::to_vec(self).expect("replies serialise");
        };
        let mut out = Vec::with_capacity(event.len() + 256);
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(event);
        out.extend_from_slice(b",\"balances\":");
        serde_json::to_writer(&mut out, &self.balances).expect("balances serialise");
        out.extend_from_slice(b",\"reserved\":");
        serde_json::to_writer(&mut out, &self.reserved).expect("reservations serialise");
        if let Some(id) = &self.reservation_id {
            out.extend_from_slice(b",\"reservation_id\":");
            serde_json::to_writer(&mut out, id).expect("ids serialise");
        }
        out.extend_from_slice(b",\"stream_seq\":");
        out.extend_from_slice(self.stream_seq.to_string().as_bytes());
        if !self.below_threshold.is_empty() {
            out.extend_from_slice(b",\"below_threshold\":");
            serde_json::to_writer(&mut out, &self.below_threshold).expect("alerts serialise");
        }
        out.push(b'}');
        out
    }

    /// The event's JSON as stored (or serialised, when not at hand).
    pub fn event_json(&self) -> bytes::Bytes {
        match &self.event_json {
            Some(e) => e.clone(),
            None => serde_json::to_vec(&self.event)
                .expect("events serialise")
                .into(),
        }
    }
}

/// The reply to `get_balance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BalanceReply {
    pub account_id: AccountId,
    pub balances: BTreeMap<Bucket, SignedCredits>,
    pub reserved: BTreeMap<Service, Credits>,
    /// The stream sequence of the account's last event (0 when it has none).
    pub last_seq: u64,
    /// The balance alerts set, and whether each is below its threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertStatus>,
}

/// A balance alert and where its balance stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertStatus {
    /// The service whose spendable credits it watches; none: the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    pub threshold: Credits,
    pub spendable: SignedCredits,
    /// Whether it last fired `low` (the balance is below the threshold).
    pub low: bool,
}

/// Decodes a JSON request, turning any refusal into the contract's
/// `invalid_request` error with the offending field's path and the rule.
pub fn decode_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<ErrorBody>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let rule = strip_position(&inner.to_string());
        let syntax = inner.is_syntax() || inner.is_eof();
        let message = if syntax {
            "The request body is not valid JSON.".to_owned()
        } else if field == "." {
            format!("The request is invalid: {rule}.")
        } else {
            format!("The field '{field}' is invalid: {rule}.")
        };
        let mut body = ErrorBody::new(ErrorCode::InvalidRequest, message).with_detail("rule", rule);
        if !syntax && field != "." {
            body = body.with_detail("field", field);
        }
        Box::new(body)
    })?;
    de.end().map_err(|_| {
        Box::new(ErrorBody::new(
            ErrorCode::InvalidRequest,
            "The request body has trailing data after the JSON object.",
        ))
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; the field path already locates it.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_written_from_the_stored_event_is_what_serde_writes() {
        let event: EventEnvelope = serde_json::from_value(serde_json::json!({
            "event_id": "01930000-0000-7000-8000-000000000001", "type": "credits_reserved",
            "schema_version": 1, "account_id": "acme",
            "occurred_at": "2026-11-21T10:00:00.000Z", "recorded_at": "2026-11-21T10:00:00.000Z",
            "idempotency_key": "k\"quoted\"", "actor": "service:sms",
            "data": {"reservation_id": "01930000-0000-7000-8000-000000000002", "service": "sms",
                     "credits": "1.5", "drawn": [{"bucket": "general", "credits": "1.5"}],
                     "expires_at": "2026-11-21T10:10:00.000Z"},
            "postings": [{"debit": "customer:acme:general", "credit": "platform:reserved:sms",
                          "amount": "1.5"}]}))
        .unwrap();
        let mut reply = CommandReply {
            event: event.clone(),
            balances: [(Bucket::general(), SignedCredits::ZERO)].into(),
            reserved: [(
                Service::parse("sms").unwrap(),
                Credits::parse("1.5").unwrap(),
            )]
            .into(),
            reservation_id: Some(Id::parse("01930000-0000-7000-8000-000000000002").unwrap()),
            stream_seq: 42,
            below_threshold: vec![BelowThreshold {
                service: None,
                threshold: Credits::parse("10").unwrap(),
                spendable: SignedCredits::ZERO,
            }],
            event_json: None,
        };
        let by_serde = serde_json::to_vec(&reply).unwrap();
        assert_eq!(reply.to_json(), by_serde);
        reply.event_json = Some(serde_json::to_vec(&event).unwrap().into());
        assert_eq!(reply.to_json(), by_serde);
        reply.reservation_id = None;
        reply.below_threshold.clear();
        reply.event_json = None;
        let by_serde = serde_json::to_vec(&reply).unwrap();
        reply.event_json = Some(serde_json::to_vec(&event).unwrap().into());
        assert_eq!(reply.to_json(), by_serde);
    }

    #[test]
    fn consume_request_decodes() {
        let r: ConsumeRequest = decode_request(
            br#"{"idempotency_key":"k1","account_id":"acme","service":"sms","quantity":2}"#,
        )
        .unwrap();
        assert_eq!(r.quantity.get(), 2);
        assert_eq!(r.credits, None);
    }

    #[test]
    fn refusals_name_the_field_and_rule() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (br#"{"idempotency_key":"k","account_id":"a b","service":"sms","quantity":1}"#, Some("account_id")),
            (br#"{"idempotency_key":"k","account_id":"a","service":"sms","quantity":0}"#, Some("quantity")),
            (br#"{"idempotency_key":"k","account_id":"a","service":"sms","quantity":1,"credits":"-1"}"#, Some("credits")),
            (br#"{"idempotency_key":"k","account_id":"a","service":"sms","quantity":1,"credits":"0.0000001"}"#, Some("credits")),
            (br#"{"idempotency_key":"k","account_id":"a","service":"sms","quantity":1,"credits":1.5}"#, Some("credits")),
            (br#"{"idempotency_key":"k","account_id":"a","service":"sms","quantity":1,"credit":"1"}"#, Some("credit")),
            (br#"{"idempotency_key":"k","account_id":"a","service":"SMS","quantity":1}"#, Some("service")),
            (br#"{"account_id":"a","service":"sms","quantity":1}"#, None),
            (br#"{"idempotency_key":"k","#, None),
            (br#"{"idempotency_key":"k","account_id":"a","service":"sms","quantity":1} x"#, None),
        ];
        for (body, field) in cases {
            let e = decode_request::<ConsumeRequest>(body).unwrap_err();
            assert_eq!(
                e.code(),
                ErrorCode::InvalidRequest,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                e.error.details.get("field").and_then(|v| v.as_str()),
                *field,
                "{}: {:?}",
                String::from_utf8_lossy(body),
                e
            );
        }
    }
}
