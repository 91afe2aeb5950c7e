//! Prometheus metrics of the process (`GET /metrics`): the command side's
//! and the read side's here; other parts register theirs through
//! [`Metrics::register`].

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A command's outcome, a label value in `snake_case`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
    Replayed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Replayed => "replayed",
            Outcome::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabels {
    pub projection: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntakeLabels {
    /// `consumed`, `rejected`, `dead_letter`, `duplicate`.
    pub result: &'static str,
}

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub commands: Family<CommandLabels, Counter>,
    pub append_seconds: Histogram,
    pub batch_messages: Histogram,
    pub batches_failed: Counter,
    pub batch_splits: Counter,
    pub conflicts: Counter,
    pub accounts_loaded: Gauge,
    pub intake: Family<IntakeLabels, Counter>,
    /// Seconds between a usage's publication and its outcome, last seen.
    pub intake_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub reservations_expired: Counter,
    /// Events in the stream a projector has not applied yet.
    pub projection_lag: Family<ProjectionLabels, Gauge>,
    /// Messages on `LEDGER` the ledger did not write, skipped by every reader.
    pub quarantined: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("ledger")),
            commands: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            batch_messages: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            batches_failed: Counter::default(),
            batch_splits: Counter::default(),
            conflicts: Counter::default(),
            accounts_loaded: Gauge::default(),
            intake: Family::default(),
            intake_lag_seconds: Gauge::default(),
            reservations_expired: Counter::default(),
            projection_lag: Family::default(),
            quarantined: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().expect("metrics registry");
            r.register(
                "commands",
                "Commands by name and outcome",
                m.commands.clone(),
            );
            r.register(
                "append_seconds",
                "Time from sending an atomic batch to its ack",
                m.append_seconds.clone(),
            );
            r.register(
                "batch_messages",
                "Messages per atomic batch (group commit across accounts)",
                m.batch_messages.clone(),
            );
            r.register(
                "batches_failed",
                "Batches JetStream refused or did not ack",
                m.batches_failed.clone(),
            );
            r.register(
                "batch_splits",
                "Grouped batches re-sent per account after a stale expectation",
                m.batch_splits.clone(),
            );
            r.register(
                "conflicts",
                "Appends refused by the expected-sequence check (another writer won)",
                m.conflicts.clone(),
            );
            r.register(
                "accounts_loaded",
                "Accounts held in memory",
                m.accounts_loaded.clone(),
            );
            r.register(
                "intake_usages",
                "Usage messages by result",
                m.intake.clone(),
            );
            r.register(
                "intake_lag_seconds",
                "Delay between a usage's publication and its outcome (last seen)",
                m.intake_lag_seconds.clone(),
            );
            r.register(
                "projection_lag_events",
                "Events in stream LEDGER a projector has not applied yet",
                m.projection_lag.clone(),
            );
            r.register(
                "quarantined_messages",
                "Messages on stream LEDGER the ledger did not write (ledger.quarantine), skipped by every reader",
                m.quarantined.clone(),
            );
            r.register(
                "reservations_expired",
                "Reservations released because their time ran out",
                m.reservations_expired.clone(),
            );
        }
        m
    }
}

impl Metrics {
    pub fn command(&self, command: &'static str, outcome: Outcome) {
        self.commands
            .get_or_create(&CommandLabels { command, outcome })
            .inc();
    }

    pub fn observe_batch(&self, messages: usize, took: Duration, ok: bool) {
        self.append_seconds.observe(took.as_secs_f64());
        self.batch_messages.observe(messages as f64);
        if !ok {
            self.batches_failed.inc();
        }
    }

    /// Registers metrics of another part of the process (the gateway's)
    /// under the same `ledger_` prefix, served by the same `/metrics`.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .expect("metrics registry")
            .register(name, help, metric);
    }

    pub fn intake(&self, result: &'static str) {
        self.intake.get_or_create(&IntakeLabels { result }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().expect("metrics registry");
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String");
        out
    }
}
