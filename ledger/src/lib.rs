//! The credit ledger's command side.
//!
//! - [`domain`]: the pure account aggregate (`decide`/`evolve`, postings,
//!   catalog). No async, no I/O.
//!
//! The JetStream event store, the command service, the usage intake and the
//! `ledger` binary build on it.

pub mod api;
pub mod audit;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod gateway;
pub mod intake;
pub mod metrics;
pub mod serve;
pub mod store;
