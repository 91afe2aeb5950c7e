//! The validated values of the contract ("Values" table).
//!
//! Each type can only be built valid. A refusal is a [`ValueError`] that names
//! the value and the rule, so a caller can report `invalid_request` with the
//! field and the rule in `details`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A value that broke a rule of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value}: {rule}")]
pub struct ValueError {
    /// Which kind of value was refused (`account_id`, `credits`, …).
    pub value: &'static str,
    /// The rule it broke, as a sentence fragment a person can act on.
    pub rule: Cow<'static, str>,
}

impl ValueError {
    pub fn new(value: &'static str, rule: impl Into<Cow<'static, str>>) -> Self {
        Self {
            value,
            rule: rule.into(),
        }
    }
}

/// Declares a string newtype whose constructor runs `$check`.
macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $label:literal, $check:path, $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The name this value has in the contract and in error details.
            pub const LABEL: &'static str = $label;

            pub fn parse(raw: impl Into<String>) -> Result<Self, ValueError> {
                let raw = raw.into();
                $check(&raw).map_err(|rule| ValueError::new($label, rule))?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

fn check_account_id(s: &str) -> Result<(), &'static str> {
    let ok_len = (1..=64).contains(&s.len());
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err("must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
    }
}

/// `general` is the shared bucket's name, so no service may take it.
const GENERAL: &str = "general";

fn check_service(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let ok = (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if !ok {
        Err("must start with a-z and have at most 32 characters from a-z, 0-9 and '_'")
    } else if s == GENERAL {
        Err("'general' is the shared bucket, not a service")
    } else {
        Ok(())
    }
}

fn check_bucket(s: &str) -> Result<(), &'static str> {
    if s == GENERAL {
        Ok(())
    } else {
        check_service(s).map_err(|_| "must be 'general' or a service name")
    }
}

fn check_phone(s: &str) -> Result<(), &'static str> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be an optional '+' and 8 to 15 digits, without spaces or separators")
    }
}

/// Printable ASCII without spaces, 1–128 characters: safe as a NATS header
/// value and as a key in any index.
fn check_key(s: &str) -> Result<(), &'static str> {
    if (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err("must be 1 to 128 printable ASCII characters without spaces")
    }
}

string_value!(
    /// A customer workspace: `[A-Za-z0-9_-]{1,64}`. Safe as a NATS subject token.
    AccountId, "account_id", check_account_id,
    {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
);
string_value!(
    /// A platform service that consumes credits: `[a-z][a-z0-9_]{0,31}`, not `general`.
    Service, "service", check_service,
    {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$", "not": {"const": "general"}}
);
string_value!(
    /// A credit bucket: `general` or a service name.
    Bucket, "bucket", check_bucket,
    {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"}
);
string_value!(
    /// The key that makes a command or usage idempotent.
    IdempotencyKey, "idempotency_key", check_key,
    {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}
);
string_value!(
    /// A service's own id for one usage (its `Nats-Msg-Id` on the intake).
    UsageId, "usage_id", check_key,
    {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}
);
string_value!(
    /// A customer's phone number for the payment page: an optional '+' and 8
    /// to 15 digits (E.164 without separators).
    Phone, "phone", check_phone,
    {"type": "string", "pattern": "^\\+?[0-9]{8,15}$"}
);

impl Bucket {
    pub fn general() -> Self {
        Self(GENERAL.to_owned())
    }

    pub fn is_general(&self) -> bool {
        self.0 == GENERAL
    }

    /// The service whose bucket this is, or `None` for `general`.
    pub fn service(&self) -> Option<Service> {
        (!self.is_general()).then(|| Service(self.0.clone()))
    }
}

impl From<Service> for Bucket {
    fn from(s: Service) -> Self {
        Bucket(s.0)
    }
}

impl From<&Service> for Bucket {
    fn from(s: &Service) -> Self {
        Bucket(s.0.clone())
    }
}

/// Strict decimal syntax: `-?digits(.digits)?`, no exponent, no spaces, no
/// `+`, no leading zeros (`0.5`, not `00.5`). Returns the number of
/// fractional digits as written.
fn decimal_syntax(s: &str, allow_negative: bool) -> Result<usize, &'static str> {
    let body = match s.strip_prefix('-') {
        Some(rest) if allow_negative => rest,
        Some(_) => return Err("must not be negative"),
        None => s,
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err("must be a decimal string such as \"12.5\"");
    }
    if int.len() > 1 && int.starts_with('0') {
        return Err("must be written without leading zeros");
    }
    Ok(frac.map_or(0, str::len))
}

/// Declares a decimal newtype carried on the wire as a string.
macro_rules! decimal_value {
    ($(#[$doc:meta])* $name:ident, $label:literal, scale_max = $scale:literal,
     negative = $neg:literal, max = $max:expr, $rule_scale:literal, $rule_max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(Decimal);

        impl $name {
            pub const LABEL: &'static str = $label;
            /// The most fractional digits the value may have.
            pub const SCALE_MAX: u32 = $scale;
            pub const ZERO: Self = Self(Decimal::ZERO);

            /// The largest magnitude the value may have.
            pub fn max_value() -> Decimal {
                Decimal::from($max)
            }

            /// Builds the value from a decimal, refusing what breaks the rules.
            pub fn new(d: Decimal) -> Result<Self, ValueError> {
                let d = d.normalize();
                if d.scale() > $scale {
                    return Err(ValueError::new($label, $rule_scale));
                }
                if !$neg && d.is_sign_negative() && !d.is_zero() {
                    return Err(ValueError::new($label, "must not be negative"));
                }
                if d.abs() > Self::max_value() {
                    return Err(ValueError::new($label, $rule_max));
                }
                Ok(Self(d))
            }

            pub fn parse(s: &str) -> Result<Self, ValueError> {
                let frac = decimal_syntax(s, $neg).map_err(|r| ValueError::new($label, r))?;
                if frac > $scale as usize {
                    return Err(ValueError::new($label, $rule_scale));
                }
                let d = Decimal::from_str_exact(s)
                    .map_err(|_| ValueError::new($label, $rule_max))?;
                Self::new(d)
            }

            pub fn get(self) -> Decimal {
                self.0
            }

            pub fn is_zero(self) -> bool {
                self.0.is_zero()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Normalised at construction: "12.5", never "12.500000" or "-0".
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }

        impl TryFrom<Decimal> for $name {
            type Error = ValueError;
            fn try_from(d: Decimal) -> Result<Self, ValueError> {
                Self::new(d)
            }
        }

        impl From<$name> for Decimal {
            fn from(v: $name) -> Decimal {
                v.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // A JSON number is refused: amounts travel as strings only.
                let raw = <Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern = crate::pattern::decimal_range(Decimal::ZERO, Self::max_value(), $scale);
                let pattern = if $neg { crate::pattern::signed(&pattern) } else { pattern };
                json_schema!({"type": "string", "pattern": pattern})
            }
        }
    };
}

/// The largest credit amount one value may carry: far above any real balance,
/// far below where `Decimal` arithmetic could overflow when amounts are summed.
pub const CREDITS_MAX: i64 = 1_000_000_000_000_000;

decimal_value!(
    /// A non-negative credit amount with at most 6 fractional digits.
    Credits, "credits", scale_max = 6, negative = false, max = CREDITS_MAX,
    "must have at most 6 fractional digits", "must be at most 10^15"
);
decimal_value!(
    /// A signed credit amount (a balance, which a refund can make negative, or
    /// an operator's adjustment), at most 6 fractional digits.
    SignedCredits, "credits", scale_max = 6, negative = true, max = CREDITS_MAX,
    "must have at most 6 fractional digits", "must be at most 10^15 in magnitude"
);
decimal_value!(
    /// A non-negative USD amount with at most 2 fractional digits.
    UsdAmount, "amount_usd", scale_max = 2, negative = false, max = 1_000_000_000i64,
    "must have at most 2 fractional digits (cents)", "must be at most 1000000000"
);

/// The schema of a credit amount a command moves: more than zero (the
/// commands refuse zero; the type itself holds it, as balances do).
#[derive(Debug, Clone, Copy)]
pub struct PositiveCredits;

impl PositiveCredits {
    /// Credit amounts from one micro-credit to 10^15.
    fn pattern() -> String {
        let min = Decimal::new(1, Credits::SCALE_MAX);
        crate::pattern::decimal_range(min, Credits::max_value(), Credits::SCALE_MAX)
    }
}

impl JsonSchema for PositiveCredits {
    fn schema_name() -> Cow<'static, str> {
        "PositiveCredits".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": PositiveCredits::pattern(),
            "description": "A credit amount greater than zero, at most 10^15, at most 6 fractional digits."})
    }
}

/// The schema of an adjustment: a signed credit amount other than zero.
#[derive(Debug, Clone, Copy)]
pub struct NonZeroCredits;

impl JsonSchema for NonZeroCredits {
    fn schema_name() -> Cow<'static, str> {
        "NonZeroCredits".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": crate::pattern::signed(&PositiveCredits::pattern()),
            "description": "A signed credit amount other than zero, at most 10^15 in magnitude."})
    }
}

/// The schema of a top-up's USD amount: from 1.00 to the default maximum
/// (10,000.00); a process's OpenAPI document states its configured range.
#[derive(Debug, Clone, Copy)]
pub struct TopupUsd;

impl TopupUsd {
    /// The pattern of amounts from `min` to `max` (cents at most).
    pub fn pattern(min: Decimal, max: Decimal) -> String {
        crate::pattern::decimal_range(min, max, UsdAmount::SCALE_MAX)
    }
}

impl JsonSchema for TopupUsd {
    fn schema_name() -> Cow<'static, str> {
        "TopupUsd".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let pattern = TopupUsd::pattern(Decimal::ONE, Decimal::from(10_000));
        json_schema!({"type": "string", "pattern": pattern,
            "description": "USD, at most 2 fractional digits, from 1.00 to the configured maximum (LEDGER_TOPUP_USD_MAX)."})
    }
}

/// Ids the payment gateway gives (payments, refunds, disputes): 1 to 64
/// characters from A-Z, a-z, 0-9, `_` and `-`.
pub const GATEWAY_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

impl Credits {
    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0
            .checked_add(other.0)
            .and_then(|d| Credits::new(d).ok())
    }

    /// `self - other`, or `None` when that would be negative.
    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0
            .checked_sub(other.0)
            .and_then(|d| Credits::new(d).ok())
    }

    pub fn min(self, other: Credits) -> Credits {
        if self <= other { self } else { other }
    }
}

impl SignedCredits {
    /// `d` within the range: the nearest bound when past it (sums of
    /// buckets reported in a refusal, which may lie outside one value's
    /// range), rounded to the scale.
    pub fn saturating(d: Decimal) -> SignedCredits {
        let max = Self::max_value();
        SignedCredits(d.round_dp(Self::SCALE_MAX).clamp(-max, max).normalize())
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn checked_add(self, d: Decimal) -> Option<SignedCredits> {
        self.0
            .checked_add(d)
            .and_then(|d| SignedCredits::new(d).ok())
    }
}

impl From<Credits> for SignedCredits {
    fn from(c: Credits) -> Self {
        SignedCredits(c.0)
    }
}

/// A JSON number with no fractional part: `3`, or `3.0` (JSON Schema's
/// `integer` takes both), within what a double holds exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i128);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v.into()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<WholeNumber, E> {
                // 2^53: past it a double no longer holds every whole number.
                const EXACT_MAX: f64 = 9_007_199_254_740_992.0;
                if v.fract() == 0.0 && v.abs() <= EXACT_MAX {
                    Ok(WholeNumber(v as i128))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A `u64` field read as a [`WholeNumber`] (`deserialize_with`).
pub fn whole_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let w = WholeNumber::deserialize(d)?;
    u64::try_from(w.0).map_err(|_| serde::de::Error::custom("must be a whole number from 0"))
}

/// Declares an integer newtype carried on the wire as a JSON number within `$range`.
macro_rules! int_value {
    ($(#[$doc:meta])* $name:ident($int:ty as $wire:literal), $label:literal, $range:expr,
     $rule:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(try_from = "WholeNumber", into = $wire)]
        pub struct $name($int);

        impl $name {
            pub const LABEL: &'static str = $label;

            pub fn new(v: $int) -> Result<Self, ValueError> {
                if ($range).contains(&v) {
                    Ok(Self(v))
                } else {
                    Err(ValueError::new($label, $rule))
                }
            }

            pub fn get(self) -> $int {
                self.0
            }
        }

        impl TryFrom<$int> for $name {
            type Error = ValueError;
            fn try_from(v: $int) -> Result<Self, ValueError> {
                Self::new(v)
            }
        }

        impl TryFrom<WholeNumber> for $name {
            type Error = ValueError;
            fn try_from(v: WholeNumber) -> Result<Self, ValueError> {
                <$int>::try_from(v.0)
                    .map_err(|_| ValueError::new($label, $rule))
                    .and_then(Self::new)
            }
        }

        impl From<$name> for $int {
            fn from(v: $name) -> $int {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let r = $range;
                json_schema!({"type": "integer", "minimum": *r.start(), "maximum": *r.end()})
            }
        }
    };
}

int_value!(
    /// An amount in Indian rupees, in integer paise (1 INR = 100 paise).
    Paise(i64 as "i64"), "amount_inr_paise", 0..=i64::MAX, "must be a whole number of paise, not negative"
);

/// One usage covers at most this many units; bulk senders split larger sends.
pub const QUANTITY_MAX: u64 = 1_000_000;

int_value!(
    /// How many units one usage or consumption covers (messages sent, …).
    Quantity(u64 as "u64"), "quantity", 1..=QUANTITY_MAX, "must be a whole number from 1 to 1000000"
);

/// A UUID of version 7 (time-ordered): event, top-up, reservation and quote ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(Uuid);

impl Id {
    pub const LABEL: &'static str = "id";

    /// A fresh id for now.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let u = Uuid::try_parse(s).map_err(|_| ValueError::new(Self::LABEL, "must be a UUID"))?;
        Self::try_from(u)
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl TryFrom<Uuid> for Id {
    type Error = ValueError;
    fn try_from(u: Uuid) -> Result<Self, ValueError> {
        if u.get_version_num() == 7 {
            Ok(Self(u))
        } else {
            Err(ValueError::new(Self::LABEL, "must be a version 7 UUID"))
        }
    }
}

impl FromStr for Id {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Cow<'de, str>>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Id {
    fn schema_name() -> Cow<'static, str> {
        "Id".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
        })
    }
}

/// Who caused an event: `service:sms`, `operator:<name>`, `gateway:razorpay`,
/// `console:<account>`, `system`. Free text within a bound, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    pub const LEN_MAX: usize = 128;

    pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
        let s = s.into();
        check_key(&s).map_err(|r| ValueError::new("actor", r))?;
        debug_assert!(s.len() <= Self::LEN_MAX);
        Ok(Self(s))
    }

    pub fn system() -> Self {
        Self("system".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Actor {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.0
    }
}

/// Free text chosen by a person (display names, adjustment reasons), bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(transform = text_schema)]
pub struct Text(String);

fn text_schema(s: &mut Schema) {
    s.insert("minLength".into(), 1.into());
    s.insert("maxLength".into(), Text::LEN_MAX.into());
    // No control characters (Unicode's Cc: U+0000-U+001F, U+007F-U+009F).
    s.insert(
        "pattern".into(),
        "^[^\\u0000-\\u001f\\u007f-\\u009f]*$".into(),
    );
}

impl Text {
    /// Characters, not bytes.
    pub const LEN_MAX: usize = 500;

    pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
        let s = s.into();
        let n = s.chars().count();
        if n == 0 || n > Self::LEN_MAX {
            Err(ValueError::new("text", "must be 1 to 500 characters"))
        } else if s.chars().any(char::is_control) {
            Err(ValueError::new(
                "text",
                "must not contain control characters",
            ))
        } else {
            Ok(Self(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Text {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert!(AccountId::parse("acme_01-x").is_ok());
        assert!(AccountId::parse("a".repeat(64)).is_ok());
        for bad in ["", "a.b", "a b", "ümlaut", &"a".repeat(65), "acme>"] {
            let e = AccountId::parse(bad).unwrap_err();
            assert_eq!(e.value, "account_id", "{bad}");
        }
    }

    #[test]
    fn services_and_buckets() {
        assert!(Service::parse("email").is_ok());
        assert!(Service::parse("push_v2").is_ok());
        assert!(Service::parse("general").is_err());
        assert!(Service::parse("Email").is_err());
        assert!(Service::parse("2fa").is_err());
        assert!(Service::parse("a".repeat(33)).is_err());
        assert!(Bucket::parse("general").unwrap().is_general());
        assert_eq!(
            Bucket::parse("sms").unwrap().service(),
            Some(Service::parse("sms").unwrap())
        );
        assert!(Bucket::parse("GENERAL").is_err());
    }

    #[test]
    fn keys() {
        assert!(IdempotencyKey::parse("sms:msg-8812").is_ok());
        assert!(IdempotencyKey::parse("a".repeat(128)).is_ok());
        assert!(IdempotencyKey::parse("a".repeat(129)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("tab\t").is_err());
        assert!(IdempotencyKey::parse("").is_err());
    }

    #[test]
    fn credits_parse_and_print() {
        assert_eq!(Credits::parse("12.5").unwrap().to_string(), "12.5");
        assert_eq!(Credits::parse("12.500000").unwrap().to_string(), "12.5");
        assert_eq!(Credits::parse("0.0075").unwrap().to_string(), "0.0075");
        assert_eq!(Credits::parse("0").unwrap().to_string(), "0");
        assert_eq!(Credits::parse("100").unwrap().to_string(), "100");
        let e = Credits::parse("0.0000001").unwrap_err();
        assert!(e.rule.contains("6 fractional"), "{e}");
        for bad in ["-1", "1e3", "+1", " 1", "1.", ".5", "", "abc", "1,5"] {
            assert!(Credits::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Credits::parse("1000000000000000").is_ok());
        assert!(Credits::parse("1000000000000000.000001").is_err());
        assert_eq!(SignedCredits::parse("-2.5").unwrap().to_string(), "-2.5");
        assert_eq!(SignedCredits::parse("-0").unwrap().to_string(), "0");
    }

    #[test]
    fn credits_refuse_json_numbers() {
        assert!(serde_json::from_str::<Credits>("12.5").is_err());
        assert_eq!(
            serde_json::from_str::<Credits>("\"12.5\"").unwrap(),
            Credits::parse("12.5").unwrap()
        );
        assert_eq!(
            serde_json::to_string(&Credits::parse("1.50").unwrap()).unwrap(),
            "\"1.5\""
        );
    }

    #[test]
    fn usd_and_paise() {
        assert!(UsdAmount::parse("10.00").is_ok());
        assert!(UsdAmount::parse("10.001").is_err());
        assert!(Paise::new(-1).is_err());
        assert!(serde_json::from_str::<Paise>("-5").is_err());
        assert_eq!(
            serde_json::to_string(&Paise::new(83_10).unwrap()).unwrap(),
            "8310"
        );
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(1).is_ok());
        assert!(Quantity::new(QUANTITY_MAX + 1).is_err());
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
    }

    #[test]
    fn ids_must_be_v7() {
        let id = Id::new_v7();
        assert_eq!(Id::parse(&id.to_string()).unwrap(), id);
        assert!(Id::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").is_err()); // v4
        assert!(Id::parse("not-a-uuid").is_err());
    }

    #[test]
    fn text_bounds() {
        assert!(Text::parse("Acme Inc.").is_ok());
        assert!(Text::parse("").is_err());
        assert!(Text::parse("x".repeat(501)).is_err());
        assert!(Text::parse("line\nbreak").is_err());
    }
}
