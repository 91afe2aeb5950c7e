//! Signed checkpoints, appended by the active key indexer.
//!
//! The indexer keeps every aggregate's last genuine (subject, stream seq,
//! chain value) in `ledger.chain_heads` (reader `key_index`), moved in the
//! same transaction as its checkpoint. After a commit, when the interval
//! has passed or enough messages have followed the last checkpoint, it
//! reads those heads at its checkpoint, builds the Merkle tree
//! (`ledger_schemas::checkpoint`), signs it, chains it to the previous
//! checkpoint and appends it to `ledger.checkpoints` with the previous
//! one's subject sequence expected, so two writers can never fork the
//! chain of checkpoints.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::Stream};
use ledger_schemas::checkpoint::{self, Checkpoint, Leaf, NO_PREVIOUS};
use ledger_schemas::signing::SigningKey;

use crate::store::batch::HEADER_EXPECTED_SUBJECT_SEQ;

/// When and how checkpoints are made.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    pub key: SigningKey,
    pub subject: String,
    pub interval: Duration,
    pub events_max: u64,
}

/// The last checkpoint on the stream: its hash, what it covers, and its
/// own stream sequence (the next one's expected subject sequence).
#[derive(Debug, Clone)]
struct Last {
    hash: String,
    covers: u64,
    seq: u64,
}

#[derive(Debug)]
pub struct Checkpointer {
    settings: CheckpointSettings,
    js: jetstream::Context,
    stream: Stream,
    last: Option<Last>,
    last_at: Instant,
}

impl Checkpointer {
    pub fn new(settings: CheckpointSettings, js: jetstream::Context, stream: Stream) -> Self {
        Self {
            settings,
            js,
            stream,
            last: None,
            last_at: Instant::now(),
        }
    }

    /// How long until a checkpoint is due for events up to `event_seq`
    /// (zero: now; `None`: nothing to cover).
    pub fn due_in(&self, event_seq: u64) -> Option<Duration> {
        let covers = self.last.as_ref().map_or(0, |l| l.covers);
        if event_seq <= covers {
            return None;
        }
        if event_seq - covers >= self.settings.events_max {
            return Some(Duration::ZERO);
        }
        Some(
            self.settings
                .interval
                .saturating_sub(self.last_at.elapsed()),
        )
    }

    /// Reads the newest checkpoint on the stream.
    async fn load(&mut self) -> anyhow::Result<()> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        self.last = match self
            .stream
            .direct_get_last_for_subject(&self.settings.subject)
            .await
        {
            Ok(m) => {
                let c: Checkpoint = serde_json::from_slice(&m.payload)
                    .context("the newest checkpoint on the stream is unreadable")?;
                Some(Last {
                    hash: c.hash(),
                    covers: c.seq,
                    seq: m.sequence,
                })
            }
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Some(Last {
                hash: NO_PREVIOUS.to_owned(),
                covers: 0,
                seq: 0,
            }),
            Err(e) => return Err(e.into()),
        };
        Ok(())
    }

    /// Appends a checkpoint at `position` (the indexer's checkpoint, whose
    /// heads are in the table) when one is due for `event_seq` (its last
    /// event). Failures are logged; the next commit tries again.
    pub async fn maybe(
        &mut self,
        client: &mut tokio_postgres::Client,
        position: u64,
        event_seq: u64,
    ) {
        if self.last.is_none() {
            if let Err(e) = self.load().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reading the last checkpoint failed"
                );
                return;
            }
        }
        if self.due_in(event_seq) != Some(Duration::ZERO) {
            return;
        }
        match self.append(client, position).await {
            Ok(c) => {
                tracing::info!(seq = c.seq, aggregates = c.aggregates, root = %c.root,
                    "signed checkpoint appended");
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "appending a checkpoint failed");
                self.last = None;
            }
        }
    }

    async fn append(
        &mut self,
        client: &mut tokio_postgres::Client,
        position: u64,
    ) -> anyhow::Result<Checkpoint> {
        let leaves = heads_at(client, position).await?;
        let (leaves, root) = checkpoint::tree(leaves);
        let last = self.last.clone().expect("loaded");
        let c = Checkpoint::sign(
            &self.settings.key,
            &self.stream.cached_info().config.name,
            position,
            &leaves,
            root,
            &last.hash,
            ledger_schemas::Timestamp::now().to_string(),
        );
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("checkpoint-{position}").as_str());
        h.insert(HEADER_EXPECTED_SUBJECT_SEQ, last.seq.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(
                self.settings.subject.clone(),
                h,
                serde_json::to_vec(&c)?.into(),
            )
            .await?
            .await?;
        self.last = Some(Last {
            hash: c.hash(),
            covers: position,
            seq: ack.sequence,
        });
        self.last_at = Instant::now();
        Ok(c)
    }
}

/// Every aggregate's head as the key indexer holds them at `position`,
/// read in one snapshot (the indexer that moves them is this process).
async fn heads_at(client: &mut tokio_postgres::Client, position: u64) -> anyhow::Result<Vec<Leaf>> {
    let tx = ledger_projections::db::snapshot(client).await?;
    let at: i64 = tx
        .query_one(
            "SELECT stream_seq FROM ledger_cmd.key_index_checkpoint",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        at as u64 == position,
        "the key index moved to {at} while a checkpoint at {position} was being made"
    );
    let rows = tx
        .query(
            "SELECT subject, stream_seq, chain FROM ledger.chain_heads WHERE reader = $1",
            &[&super::indexer::SIFTER],
        )
        .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Leaf {
            subject: r.get(0),
            seq: r.get::<_, i64>(1) as u64,
            chain: hex::encode(r.get::<_, &[u8]>(2)),
        })
        .collect())
}
