//! Integration tests of the command side against real servers started by
//! `ledger-testkit` (one test binary for the crate).

mod store;
