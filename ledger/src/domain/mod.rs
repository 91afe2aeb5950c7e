//! The pure domain core: the account aggregate.
//!
//! `decide(&Account, &Command, &Context) -> Result<Vec<NewEvent>, DomainError>`
//! says what happens; `Account::evolve(&EventData)` applies what happened. No
//! async, no I/O, no clock: the caller passes the time and the catalog in
//! [`Context`], and ids (reservation ids) inside the command, so the same
//! inputs always give the same events. The command side wraps the events in
//! envelopes and appends them; projectors and auditors replay them with the
//! same `evolve`.
//!
//! Postings are derived from an event's data by [`postings_for`], the one rule
//! used both when an event is decided and when an auditor checks it.

mod account;
mod catalog;
mod decide;
mod error;
mod postings;

pub use account::{Account, Alert, Closure, Reservation, clamped};
pub use catalog::{Catalog, CatalogError};
pub use decide::{Command, CommandName, Context, NewEvent, Shortfall, decide, refusal};
pub use error::DomainError;
pub use postings::postings_for;

/// Limits of one account aggregate.
pub mod limits {
    /// Open reservations one account may hold at once.
    pub const RESERVATIONS_OPEN_MAX: usize = 10_000;
    /// Closed reservation ids remembered per account, so that a late capture
    /// or release is told `reservation_closed` rather than `not_found`.
    pub const RESERVATIONS_CLOSED_REMEMBERED_MAX: usize = 10_000;
    /// The longest a reservation may be held: 7 days.
    pub const RESERVATION_TTL_S_MAX: u64 = 7 * 24 * 3600;
    /// Reservations one expiry sweep releases (one event each, one batch).
    pub const EXPIRE_EVENTS_MAX: usize = 500;
    /// Length of a refund id (the payment gateway's are 18 characters).
    pub const REFUND_ID_LEN_MAX: usize = 64;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
