//! The Razorpay boundary of the credit ledger.
//!
//! So far: FX quotes and the written rounding rules ([`money`]), and
//! Razorpay's signature checks ([`signature`]). The top-up state machine, the
//! Razorpay client, webhooks, reconciliation and the fake Razorpay server
//! build on these.

pub mod fake;
pub mod money;
pub mod razorpay;
pub mod signature;
