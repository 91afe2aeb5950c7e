//! The credit ledger's top-ups: the whole flow and the Razorpay boundary.
//!
//! The pure core (no I/O):
//! - [`fx`]: FX quotes (a fixed rate or an operations rate file, plus spread);
//! - [`money`]: the written rounding rules (USD to paise, USD to credits,
//!   refunds to credit reversals);
//! - [`signature`]: Razorpay's checkout and webhook signatures;
//! - [`topup`]: the top-up aggregate and [`topup::next_step`], the one rule
//!   that moves a top-up forward;
//! - [`webhook`]: reading webhooks; [`reconcile`]: the polling schedule.
//!
//! The shell that carries it out:
//! - [`razorpay`]: a client of Razorpay's API, with retries;
//! - [`service`]: [`service::Gateway`]: create, quote, checkout, get, and
//!   `sync` (grants and reversals through the ledger's command service,
//!   refunds at Razorpay), reading and appending the top-up subject
//!   `ledger.events.topup.<id>`, and its tables (`topup_keys`,
//!   `topup_polls`, `webhook_events`, migrations in `migrations/`);
//! - [`http`]: its endpoints; [`poller`]: reconciliation by polling;
//! - [`role`]: the gateway as a role of a `ledger` process;
//! - [`config`]: its settings; [`metrics`]; [`error`]: its one error type.
//!
//! With the `fake` feature, module `fake` is a fake Razorpay server (API, signed
//! webhooks) for development and tests, run as the `fake-razorpay` binary;
//! the production build leaves it out.

pub mod config;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod fx;
pub mod http;
pub mod metrics;
pub mod money;
pub mod poller;
pub mod razorpay;
pub mod reconcile;
pub mod role;
pub mod service;
pub mod signature;
pub mod topup;
pub mod webhook;
