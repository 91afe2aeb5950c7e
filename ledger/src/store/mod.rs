//! The JetStream event store.
//!
//! Stream `LEDGER` holds every event, one literal subject per aggregate
//! (`ledger.events.acct.<account>`, `ledger.events.topup.<topup>`), so the
//! optimistic-concurrency check is `Nats-Expected-Last-Subject-Sequence` and
//! the stream gives one total order to projectors and auditors.
//!
//! - [`stream`]: create or verify the stream; refuse settings that could lose events.
//! - [`batch`]: append one or more events, atomically (ADR-50 batches over the
//!   core client; async-nats has no API for them).
//! - [`read`]: read an aggregate's events back, and its last message.

pub mod batch;
pub mod read;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream;
use ledger_schemas::signing::{Keys, SigningKey, Trust};

pub use batch::{AppendMessage, Appended, Origin};
pub use read::StoredEvent;
pub use stream::{Replication, StreamSettings, check_sync_always};

/// The server version the ledger needs: older servers ignore the
/// expected-subject and atomic-batch headers and can store partial batches.
pub const NATS_VERSION_MIN: (u64, u64) = (2, 12);

/// Why an append or a read failed, by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the subject first: reload and decide again.
    #[error("concurrent append to {subject}: {detail}")]
    Conflict { subject: String, detail: String },
    /// No answer in time: the append may or may not be stored.
    #[error("no answer from JetStream within {0:?}")]
    Timeout(Duration),
    /// The server could not be reached or refused for a passing reason.
    #[error("JetStream unavailable: {0}")]
    Unavailable(String),
    /// The server refused the append for a reason retrying will not fix.
    #[error("JetStream refused the append: {0}")]
    Refused(String),
    /// What was read breaks the log's rules (bad chain, unparsable event).
    #[error("corrupt log: {0}")]
    Corrupt(String),
}

/// Connects to JetStream and refuses servers older than [`NATS_VERSION_MIN`].
#[derive(Debug, Clone)]
pub struct EventStore {
    client: Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    settings: StreamSettings,
    keys: Arc<Keys>,
}

impl EventStore {
    /// Checks the server, creates or verifies the stream, and returns the store.
    /// `keys` sign what this process appends and tell the ledger's
    /// messages from anything else.
    pub async fn open(
        client: Client,
        settings: StreamSettings,
        keys: Keys,
    ) -> anyhow::Result<Self> {
        check_server_version(&client)?;
        let js = jetstream::new(client.clone());
        // A cluster that has just formed may answer late: try for a while.
        let stream = crate::retry::patiently(
            "creating or verifying the event stream",
            crate::retry::STARTUP_WAIT,
            || stream::ensure(&js, &settings),
        )
        .await?;
        Ok(Self {
            client,
            js,
            stream,
            settings,
            keys: Arc::new(keys),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// What stream-order readers of this stream trust.
    pub fn trust(&self) -> Trust {
        Trust {
            keys: Arc::new(self.keys.public.clone()),
            checkpoint_subject: self.settings.checkpoint_subject.clone(),
        }
    }

    /// The ledger's events on `subject` after `after` (see
    /// [`read::events_after`]), judged by this process's keys.
    pub async fn events_after(
        &self,
        subject: &str,
        after: u64,
        chain: ledger_schemas::ChainHash,
    ) -> Result<read::SubjectRead, StoreError> {
        read::events_after(
            &self.client,
            &self.stream,
            &self.keys.public,
            subject,
            after,
            chain,
        )
        .await
    }

    /// The key this process signs its appends with.
    pub fn signer(&self) -> Result<&SigningKey, StoreError> {
        self.keys
            .signer()
            .map_err(|e| StoreError::Refused(e.to_string()))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn stream(&self) -> &jetstream::stream::Stream {
        &self.stream
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }
}

/// Refuses servers below [`NATS_VERSION_MIN`], from the version in INFO.
pub fn check_server_version(client: &Client) -> anyhow::Result<()> {
    let version = client.server_info().version;
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    anyhow::ensure!(
        found >= NATS_VERSION_MIN,
        "nats-server {version} is too old: the ledger needs {}.{} or newer, whose JetStream \
         honours expected-subject-sequence and atomic batch headers",
        NATS_VERSION_MIN.0,
        NATS_VERSION_MIN.1
    );
    Ok(())
}
