//! The credit ledger's command side, and the pieces every `ledger` process
//! is assembled from.
//!
//! - [`domain`]: the pure account aggregate (`decide`, one function per
//!   command; `evolve`; postings; the catalog). No async, no I/O.
//! - [`store`]: the JetStream event store: stream checks, the one place an
//!   event's envelope, payload and `Ledger-Chain` are made
//!   ([`store::Origin`], [`store::AppendMessage::chained`]), atomic batches,
//!   chain-checked reads.
//! - [`engine`]: one writer per account with group commit across accounts,
//!   and idempotency.
//! - [`api`]: the NATS command service, HTTP (commands, the read API,
//!   health, metrics, the OpenAPI document) with its extractors and errors,
//!   and tokens.
//! - [`intake`]: the usage intake (stream `LEDGER_USAGE`).
//! - [`alerts`]: balance alerts published and delivered to a webhook.
//! - [`audit`]: `ledger audit verify | replay | export`.
//! - [`config`], [`metrics`], [`db`] (pool and migrations), and [`serve`]:
//!   a [`serve::Process`] with the command and projections roles.
//!
//! Top-ups are `ledger-gateway-adapter`'s; the `ledger` binary that wires
//! the roles together is `ledger-cli` (`ledger/cli`).

pub mod alerts;
pub mod api;
pub mod audit;
pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
pub mod intake;
pub mod metrics;
pub mod retry;
pub mod serve;
pub mod store;
