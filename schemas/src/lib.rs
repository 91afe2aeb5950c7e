//! Wire types of the credit ledger.
//!
//! Everything another program sees of the ledger is defined here once: the
//! validated values of the contract (`AccountId`, `Credits`, …), the event
//! envelope and every event's `data`, the command requests and replies, the
//! usage message, the error object, and the `Ledger-Chain` hash rule. Services
//! in other languages use the JSON Schema files generated from these types
//! (`schemas/json/`, see [`json_schema`]); a test fails when those files drift.
//!
//! Values follow "parse, don't validate": each newtype is built only through
//! `parse`/`TryFrom`/`Deserialize`, so holding one means it is valid, and each
//! refusal names the value and the rule it broke.

pub mod chain;
pub mod checkpoint;
pub mod command;
pub mod error;
pub mod event;
pub mod genuine;
pub mod hash;
pub mod json_schema;
pub mod merkle;
pub mod pattern;
pub mod signing;
pub mod time;
pub mod topup;
pub mod usage;
pub mod values;
pub mod views;

pub use chain::{CHAIN_HEADER, ChainHash};
pub use command::*;
pub use error::{ErrorBody, ErrorCode, ErrorObject};
pub use event::*;
pub use hash::request_hash;
pub use time::Timestamp;
pub use topup::{TopupProgress, TopupStatus};
pub use usage::{UsageBatch, UsageMessage};
pub use values::*;
