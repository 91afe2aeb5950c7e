//! Integration tests of the command side against real servers started by
//! `ledger-testkit` (one test binary for the crate).

mod alerts;
mod audit;
mod batches;
mod browser;
mod cluster;
mod commands;
mod console;
mod contract;
mod demo;
mod faults;
mod foreign;
mod grafana;
mod inputs;
mod intake;
mod keys;
mod manifests;
mod partitions;
mod projections;
mod security;
mod signatures;
mod store;
mod support;
mod topups;
