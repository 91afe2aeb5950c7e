//! Projections: the read side of the credit ledger.
//!
//! Projectors fold stream `LEDGER` into PostgreSQL read models (schema
//! `ledger`): per-service balances, credit history, top-ups, daily usage.
//! They own their position ([`projector`]): each batch and its checkpoint
//! commit together, so a crash anywhere gives the same tables as an
//! uninterrupted run. [`rebuild`] replays the whole log into shadow tables and
//! swaps them in. [`query`] answers the dashboards' and console's reads.
//!
//! The fold ([`fold`]) reads only the events: balances move by their postings.

pub mod db;
pub mod fold;
pub mod pg;
pub mod projector;
pub mod query;
pub mod rebuild;
pub mod sift;
