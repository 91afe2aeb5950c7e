//! Events: the envelope stored on stream `LEDGER`, every event type's `data`,
//! and the double-entry postings each credit movement carries.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Timestamp;
use crate::values::*;

/// The envelope's `schema_version` this code writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// One immutable event as stored on `ledger.events.acct.<account>` or
/// `ledger.events.topup.<topup>`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EventEnvelope {
    pub event_id: Id,
    /// `type` and `data`.
    #[serde(flatten)]
    pub body: EventData,
    pub schema_version: u32,
    pub account_id: AccountId,
    /// When the fact happened (a usage's own time, a payment's capture time).
    pub occurred_at: Timestamp,
    /// When the ledger recorded it.
    pub recorded_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    pub actor: Actor,
    /// SHA-256 (hex) of the request that caused the event, so a repeated
    /// idempotency key with a different request is told apart from the log alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    /// Balanced movements: every posting moves `amount` from `debit` to `credit`.
    #[serde(default)]
    pub postings: Vec<Posting>,
}

impl EventEnvelope {
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }
}

// Deserialisation is written by hand: `data` is read as raw JSON and parsed
// by `type`, rather than buffered through serde's `flatten`, which costs
// several times more on every event a projector or auditor reads.
impl<'de> Deserialize<'de> for EventEnvelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            event_id: Id,
            #[serde(rename = "type")]
            kind: String,
            data: Box<serde_json::value::RawValue>,
            schema_version: u32,
            account_id: AccountId,
            occurred_at: Timestamp,
            recorded_at: Timestamp,
            #[serde(default)]
            idempotency_key: Option<IdempotencyKey>,
            #[serde(default)]
            correlation_id: Option<String>,
            #[serde(default)]
            causation_id: Option<String>,
            actor: Actor,
            #[serde(default)]
            request_hash: Option<String>,
            #[serde(default)]
            postings: Vec<Posting>,
        }
        let w = Wire::deserialize(d)?;
        let body =
            EventData::from_parts(&w.kind, w.data.get()).map_err(serde::de::Error::custom)?;
        Ok(EventEnvelope {
            event_id: w.event_id,
            body,
            schema_version: w.schema_version,
            account_id: w.account_id,
            occurred_at: w.occurred_at,
            recorded_at: w.recorded_at,
            idempotency_key: w.idempotency_key,
            correlation_id: w.correlation_id,
            causation_id: w.causation_id,
            actor: w.actor,
            request_hash: w.request_hash,
            postings: w.postings,
        })
    }
}

/// A ledger account of the double-entry book.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LedgerAccount {
    /// `customer:<account>:<bucket>`: credits a customer holds.
    Customer(AccountId, Bucket),
    /// `platform:gateway:razorpay`: where bought credits come from.
    PaymentGateway,
    /// `platform:revenue:<service>`: credits spent on a service.
    Revenue(Service),
    /// `platform:adjustments`: promotions and operator corrections.
    Adjustments,
    /// `platform:reserved:<service>`: credits held by open reservations.
    Reserved(Service),
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerAccount::Customer(a, b) => write!(f, "customer:{a}:{b}"),
            LedgerAccount::PaymentGateway => f.write_str("platform:gateway:razorpay"),
            LedgerAccount::Revenue(s) => write!(f, "platform:revenue:{s}"),
            LedgerAccount::Adjustments => f.write_str("platform:adjustments"),
            LedgerAccount::Reserved(s) => write!(f, "platform:reserved:{s}"),
        }
    }
}

impl FromStr for LedgerAccount {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || {
            ValueError::new(
                "ledger_account",
                "must be customer:<account>:<bucket> or a platform account",
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["customer", a, b] => LedgerAccount::Customer(
                AccountId::parse(*a).map_err(|_| bad())?,
                Bucket::parse(*b).map_err(|_| bad())?,
            ),
            ["platform", "gateway", "razorpay"] => LedgerAccount::PaymentGateway,
            ["platform", "revenue", svc] => {
                LedgerAccount::Revenue(Service::parse(*svc).map_err(|_| bad())?)
            }
            ["platform", "adjustments"] => LedgerAccount::Adjustments,
            ["platform", "reserved", svc] => {
                LedgerAccount::Reserved(Service::parse(*svc).map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        })
    }
}

impl Serialize for LedgerAccount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LedgerAccount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Cow<'de, str>>::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for LedgerAccount {
    fn schema_name() -> Cow<'static, str> {
        "LedgerAccount".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(customer:[A-Za-z0-9_-]{1,64}:[a-z][a-z0-9_]{0,31}|platform:gateway:razorpay|platform:revenue:[a-z][a-z0-9_]{0,31}|platform:adjustments|platform:reserved:[a-z][a-z0-9_]{0,31})$"
        })
    }
}

/// `amount` credits move from `debit` to `credit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Posting {
    pub debit: LedgerAccount,
    pub credit: LedgerAccount,
    pub amount: Credits,
}

/// Credits taken from (or given back to) one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Draw {
    pub bucket: Bucket,
    pub credits: Credits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    /// A captured Razorpay payment; `topup_id` and `payment_id` are set.
    Topup,
    Promotion,
    Adjustment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The service bucket plus `general` hold less than the usage costs.
    InsufficientCredits,
    /// A refund or chargeback left a bucket negative; usage waits until it is paid.
    AccountInDebt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    Released,
    Expired,
}

/// A balance alert's threshold set (or removed, without `threshold`) for
/// one service's spendable credits (its bucket and `general`), or without
/// `service` for the account's total (every bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Credits>,
}

/// Which way a balance crossed its alert's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The spendable balance went below the threshold.
    Low,
    /// It is back at or above it.
    Recovered,
}

/// A balance crossed an alert's threshold: recorded once per crossing,
/// right after the event that crossed it (in the same append).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BalanceAlert {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    pub threshold: Credits,
    pub state: AlertState,
    /// The spendable balance after the crossing.
    pub spendable: SignedCredits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccountOpened {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditsGranted {
    pub bucket: Bucket,
    pub credits: Credits,
    pub source: GrantSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topup_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditsConsumed {
    pub service: Service,
    pub usage_id: UsageId,
    pub quantity: Quantity,
    /// The rate card's price per unit; absent when the caller gave the credits.
    pub unit_price: Option<Credits>,
    pub credits: Credits,
    /// Where the credits came from: the service bucket first, then `general`.
    pub drawn: Vec<Draw>,
    /// The rate card version that priced it; absent when the caller gave the credits.
    pub rate_card_version: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsageRejected {
    pub service: Service,
    pub usage_id: UsageId,
    pub quantity: Quantity,
    pub credits_required: Credits,
    /// What the service bucket plus `general` held (negative when in debt).
    pub credits_available: SignedCredits,
    pub reason: RejectReason,
}

/// A command the domain refused on an existing account, remembered under
/// its idempotency key (the envelope carries the key and the request hash):
/// a repeat of the key answers this refusal again. No postings, no change
/// to any balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandRefused {
    /// The command's name (`consume`, `capture`, …).
    pub command: String,
    /// The contract's error code of the refusal.
    pub code: crate::ErrorCode,
    pub message: String,
    /// The facts the refusal was made on (e.g. `credits_required`,
    /// `credits_available`, `reservation_id`), as in the error's `details`.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl CommandRefused {
    /// The refusal as the caller heard it.
    pub fn to_error(&self) -> crate::ErrorBody {
        let mut body = crate::ErrorBody::new(self.code, self.message.clone());
        body.error.details = self.details.clone();
        body
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditsReserved {
    pub reservation_id: Id,
    pub service: Service,
    pub credits: Credits,
    pub drawn: Vec<Draw>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReservationCaptured {
    pub reservation_id: Id,
    pub service: Service,
    /// Credits captured (spent), at most what was reserved.
    pub credits: Credits,
    /// Which buckets the captured credits had come from.
    pub drawn: Vec<Draw>,
    /// The uncaptured rest, given back to the buckets it came from.
    pub returned: Vec<Draw>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReservationReleased {
    pub reservation_id: Id,
    pub service: Service,
    pub credits: Credits,
    pub returned: Vec<Draw>,
    pub reason: ReleaseReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditsTransferred {
    pub from_bucket: Bucket,
    pub to_bucket: Bucket,
    pub credits: Credits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditsReversed {
    /// Razorpay's refund id (or a chargeback's id).
    pub refund_id: String,
    pub topup_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    pub bucket: Bucket,
    pub credits: Credits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditsAdjusted {
    pub bucket: Bucket,
    pub delta: SignedCredits,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopupQuoted {
    pub topup_id: Id,
    pub bucket: Bucket,
    pub amount_usd: UsdAmount,
    pub amount_inr_paise: Paise,
    /// INR per USD actually used.
    pub fx_rate: String,
    pub fx_source: String,
    pub fx_quoted_at: Timestamp,
    pub quote_id: Id,
    pub quote_expires_at: Timestamp,
    pub credits: Credits,
    pub credits_per_usd: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayOrderCreated {
    pub topup_id: Id,
    pub order_id: String,
    pub amount_inr_paise: Paise,
    pub currency: String,
    pub receipt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentObserved {
    pub topup_id: Id,
    pub payment_id: String,
    pub order_id: String,
    /// Razorpay's payment status as seen (`created`, `authorized`, …).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub amount_inr_paise: Paise,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCaptured {
    pub topup_id: Id,
    pub payment_id: String,
    pub order_id: String,
    pub method: String,
    pub amount_inr_paise: Paise,
    pub currency: String,
    pub captured_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentFailed {
    pub topup_id: Id,
    pub payment_id: String,
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopupQuarantined {
    pub topup_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    pub reason: String,
    pub expected_inr_paise: Paise,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_inr_paise: Option<Paise>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefundProcessed {
    pub topup_id: Id,
    pub payment_id: String,
    pub refund_id: String,
    pub amount_inr_paise: Paise,
    /// Credits reversed for this refund, in proportion to the refunded paise
    /// (zero for the refund of a payment that was never credited, such as a
    /// second payment on an already paid order).
    pub credits: Credits,
}

/// Credits for a top-up's captured payment were granted on the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopupCredited {
    pub topup_id: Id,
    pub payment_id: String,
    pub bucket: Bucket,
    pub credits: Credits,
    /// The stream sequence of the `credits_granted` event on the account.
    pub grant_stream_seq: u64,
}

/// A captured payment was disputed (a chargeback was raised): its credits, in
/// proportion to the disputed paise, are taken back from the account while the
/// dispute is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DisputeOpened {
    pub topup_id: Id,
    pub payment_id: String,
    pub dispute_id: String,
    pub amount_inr_paise: Paise,
    /// Credits held (reversed on the account) until the dispute closes.
    pub credits_held: Credits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisputeOutcome {
    /// The merchant won: the held credits are granted back.
    Won,
    /// The customer's bank won: the held credits stay reversed.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DisputeClosed {
    pub topup_id: Id,
    pub payment_id: String,
    pub dispute_id: String,
    pub outcome: DisputeOutcome,
    /// Credits granted back (the held credits when won, zero when lost).
    pub credits_returned: Credits,
}

/// No payment was captured in the configured time; the top-up is still
/// reconciled, so a late payment is credited all the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopupAbandoned {
    pub topup_id: Id,
}

/// Declares `EventData` (`type` + `data`) and `EventType` from one list, so the
/// two can never disagree.
macro_rules! events {
    ($($variant:ident($data:ty) = $name:literal,)*) => {
        /// An event's `type` and its `data`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "type", content = "data", rename_all = "snake_case")]
        pub enum EventData {
            $($variant($data),)*
        }

        /// An event's `type` alone (the `Ledger-Event-Type` header).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($variant,)*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            pub fn parse(s: &str) -> Option<EventType> {
                match s {
                    $($name => Some(EventType::$variant),)*
                    _ => None,
                }
            }

            /// The JSON Schema of `data` for this type.
            pub fn data_schema(self, generator: &mut SchemaGenerator) -> Schema {
                match self {
                    $(EventType::$variant => generator.subschema_for::<$data>(),)*
                }
            }
        }

        impl EventData {
            pub fn event_type(&self) -> EventType {
                match self {
                    $(EventData::$variant(_) => EventType::$variant,)*
                }
            }

            /// An event's data from its `type` and its raw JSON `data`.
            pub fn from_parts(kind: &str, data: &str) -> Result<EventData, String> {
                match kind {
                    $($name => serde_json::from_str(data)
                        .map(EventData::$variant)
                        .map_err(|e| format!("{}: data: {e}", $name)),)*
                    other => Err(format!("unknown event type '{other}'")),
                }
            }
        }
    };
}

events! {
    AccountOpened(AccountOpened) = "account_opened",
    CreditsGranted(CreditsGranted) = "credits_granted",
    CreditsConsumed(CreditsConsumed) = "credits_consumed",
    UsageRejected(UsageRejected) = "usage_rejected",
    CommandRefused(CommandRefused) = "command_refused",
    CreditsReserved(CreditsReserved) = "credits_reserved",
    ReservationCaptured(ReservationCaptured) = "reservation_captured",
    ReservationReleased(ReservationReleased) = "reservation_released",
    CreditsTransferred(CreditsTransferred) = "credits_transferred",
    CreditsReversed(CreditsReversed) = "credits_reversed",
    CreditsAdjusted(CreditsAdjusted) = "credits_adjusted",
    TopupQuoted(TopupQuoted) = "topup_quoted",
    GatewayOrderCreated(GatewayOrderCreated) = "gateway_order_created",
    PaymentObserved(PaymentObserved) = "payment_observed",
    PaymentCaptured(PaymentCaptured) = "payment_captured",
    PaymentFailed(PaymentFailed) = "payment_failed",
    TopupQuarantined(TopupQuarantined) = "topup_quarantined",
    RefundProcessed(RefundProcessed) = "refund_processed",
    TopupCredited(TopupCredited) = "topup_credited",
    DisputeOpened(DisputeOpened) = "dispute_opened",
    DisputeClosed(DisputeClosed) = "dispute_closed",
    TopupAbandoned(TopupAbandoned) = "topup_abandoned",
    AlertSet(AlertSet) = "alert_set",
    BalanceAlert(BalanceAlert) = "balance_alert",
}

impl EventType {
    /// Whether events of this type live on their top-up's subject
    /// (`ledger.events.topup.<topup_id>`) rather than their account's.
    pub fn of_topup(self) -> bool {
        matches!(
            self,
            EventType::TopupQuoted
                | EventType::GatewayOrderCreated
                | EventType::PaymentObserved
                | EventType::PaymentCaptured
                | EventType::PaymentFailed
                | EventType::TopupQuarantined
                | EventType::RefundProcessed
                | EventType::TopupCredited
                | EventType::DisputeOpened
                | EventType::DisputeClosed
                | EventType::TopupAbandoned
        )
    }
}

impl EventData {
    /// The top-up of an event stored on a top-up subject
    /// (`ledger.events.topup.<topup_id>`); `None` for account events.
    /// Exactly the types [`EventType::of_topup`] names.
    pub fn topup_id(&self) -> Option<Id> {
        match self {
            EventData::TopupQuoted(t) => Some(t.topup_id),
            EventData::GatewayOrderCreated(t) => Some(t.topup_id),
            EventData::PaymentObserved(t) => Some(t.topup_id),
            EventData::PaymentCaptured(t) => Some(t.topup_id),
            EventData::PaymentFailed(t) => Some(t.topup_id),
            EventData::TopupQuarantined(t) => Some(t.topup_id),
            EventData::RefundProcessed(t) => Some(t.topup_id),
            EventData::TopupCredited(t) => Some(t.topup_id),
            EventData::DisputeOpened(t) => Some(t.topup_id),
            EventData::DisputeClosed(t) => Some(t.topup_id),
            EventData::TopupAbandoned(t) => Some(t.topup_id),
            EventData::AccountOpened(_)
            | EventData::CreditsGranted(_)
            | EventData::CreditsConsumed(_)
            | EventData::UsageRejected(_)
            | EventData::CommandRefused(_)
            | EventData::CreditsReserved(_)
            | EventData::ReservationCaptured(_)
            | EventData::ReservationReleased(_)
            | EventData::CreditsTransferred(_)
            | EventData::CreditsReversed(_)
            | EventData::CreditsAdjusted(_)
            | EventData::AlertSet(_)
            | EventData::BalanceAlert(_) => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> EventEnvelope {
        let acme = AccountId::parse("acme").unwrap();
        let sms = Service::parse("sms").unwrap();
        EventEnvelope {
            event_id: Id::new_v7(),
            body: EventData::CreditsConsumed(CreditsConsumed {
                service: sms.clone(),
                usage_id: UsageId::parse("msg-8812").unwrap(),
                quantity: Quantity::new(1).unwrap(),
                unit_price: Some(Credits::parse("0.0075").unwrap()),
                credits: Credits::parse("0.0075").unwrap(),
                drawn: vec![Draw {
                    bucket: Bucket::from(&sms),
                    credits: Credits::parse("0.0075").unwrap(),
                }],
                rate_card_version: Some(3),
            }),
            schema_version: SCHEMA_VERSION,
            account_id: acme.clone(),
            occurred_at: Timestamp::parse("2026-11-21T10:00:00.000Z").unwrap(),
            recorded_at: Timestamp::parse("2026-11-21T10:00:00.004Z").unwrap(),
            idempotency_key: Some(IdempotencyKey::parse("sms:msg-8812").unwrap()),
            correlation_id: None,
            causation_id: Some("msg-8812".into()),
            actor: Actor::parse("service:sms").unwrap(),
            request_hash: None,
            postings: vec![Posting {
                debit: LedgerAccount::Customer(acme, Bucket::from(&sms)),
                credit: LedgerAccount::Revenue(sms),
                amount: Credits::parse("0.0075").unwrap(),
            }],
        }
    }

    #[test]
    fn envelope_has_the_contract_shape() {
        let e = sample();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "credits_consumed");
        assert_eq!(v["data"]["credits"], "0.0075");
        assert_eq!(
            v["data"]["drawn"][0],
            json!({"bucket": "sms", "credits": "0.0075"})
        );
        assert_eq!(
            v["postings"][0],
            json!({"debit": "customer:acme:sms", "credit": "platform:revenue:sms", "amount": "0.0075"})
        );
        assert_eq!(v["occurred_at"], "2026-11-21T10:00:00.000Z");
        let back: EventEnvelope = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back, e);
        let unknown = v
            .to_string()
            .replace("credits_consumed", "credits_teleported");
        let err = serde_json::from_str::<EventEnvelope>(&unknown).unwrap_err();
        assert!(err.to_string().contains("unknown event type"), "{err}");
    }

    #[test]
    fn ledger_accounts_round_trip() {
        for s in [
            "customer:acme:general",
            "platform:gateway:razorpay",
            "platform:revenue:email",
            "platform:adjustments",
            "platform:reserved:sms",
        ] {
            assert_eq!(s.parse::<LedgerAccount>().unwrap().to_string(), s);
        }
        assert_eq!(
            LedgerAccount::PaymentGateway.to_string(),
            "platform:gateway:razorpay"
        );
        for bad in [
            "customer:acme",
            "platform:revenue:general",
            "bank:x",
            "customer:a b:sms",
        ] {
            assert!(bad.parse::<LedgerAccount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn event_type_names_match_serde() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        let v = serde_json::to_value(&sample().body).unwrap();
        assert_eq!(v["type"], sample().event_type().as_str());
    }
}
