//! The Razorpay boundary of the credit ledger.
//!
//! - [`fx`]: FX quotes (a fixed rate or an operations rate file, plus spread);
//! - [`money`]: the written rounding rules (USD to paise, USD to credits,
//!   refunds to credit reversals);
//! - [`signature`]: Razorpay's checkout and webhook signatures;
//! - [`razorpay`]: a thin client of Razorpay's API, with retries;
//! - [`topup`]: the top-up aggregate and the rule that moves it forward;
//! - [`webhook`]: reading webhooks; [`reconcile`]: the polling schedule;
//! - [`fake`]: a fake Razorpay server for development and tests.
//!
//! The `ledger` binary runs these as `ledger serve --role gateway`.

pub mod fake;
pub mod fx;
pub mod money;
pub mod razorpay;
pub mod reconcile;
pub mod signature;
pub mod topup;
pub mod webhook;
