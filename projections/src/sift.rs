//! Sifting the log: each reader of stream `LEDGER` that folds it into
//! PostgreSQL (the projectors, the key indexer) keeps the chain value of
//! every subject's last genuine event in `ledger.chain_heads`, and judges
//! each message against it ([`ledger_schemas::genuine::judge`]). A foreign
//! message is skipped, recorded in `ledger.quarantine` (by the projectors)
//! and counted; the subject's chain goes on from its last genuine event.
//! The heads move in the same transaction as the reader's checkpoint.

use std::collections::{HashMap, HashSet};

use async_nats::HeaderMap;
use ledger_schemas::{ChainHash, EventEnvelope};

use crate::fold::FoldError;
use ledger_schemas::genuine::{self, Message, Signature};
use ledger_schemas::signing::Seal;
use tokio_postgres::GenericClient;

/// Heads cached at most; past it the cache starts over from the table.
pub const HEADS_CACHED_MAX: usize = 500_000;

/// A message's fields from its NATS headers, with what its append's
/// signature says of it.
pub fn message<'a>(
    subject: &'a str,
    headers: Option<&'a HeaderMap>,
    payload: &'a [u8],
    signature: Signature<'a>,
) -> Message<'a> {
    let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    Message {
        subject,
        msg_id: get(genuine::MSG_ID_HEADER),
        event_type: get(genuine::EVENT_TYPE_HEADER),
        chain: get(ledger_schemas::CHAIN_HEADER),
        payload,
        signature,
    }
}

/// The signature verdict a stream-order reader's [`Seal`] gives.
pub fn signature(seal: &Seal) -> Signature<'_> {
    match seal {
        Seal::Signed => Signature::Verified,
        Seal::Unsigned(why) => Signature::Missing(why),
        Seal::Checkpoint => Signature::Missing("a checkpoint, not an event"),
    }
}

/// What a reader makes of one message.
#[derive(Debug)]
pub enum Verdict {
    /// The ledger's event: its chain value, and the event.
    Genuine(ChainHash, Box<EventEnvelope>),
    /// Not the ledger's: skip it.
    Foreign(genuine::Foreign),
    /// The ledger's, but this code cannot read it (a newer version).
    Unreadable(FoldError),
}

/// A message the ledger did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub seq: u64,
    pub subject: String,
    pub reason: String,
}

/// One reader's chain heads: those it has read from the table or moved,
/// and the foreign messages of the current batch.
#[derive(Debug)]
pub struct Sifter {
    reader: &'static str,
    heads: HashMap<String, (u64, ChainHash)>,
    /// Subjects whose head moved since the last save.
    moved: HashSet<String>,
    /// Foreign messages met since the last save.
    pub foreign: Vec<Quarantined>,
    /// Whether `save` records foreign messages in `ledger.quarantine`.
    quarantine: bool,
}

impl Sifter {
    /// The sifter of `reader`; `quarantine` when it records what it skips.
    pub fn new(reader: &'static str, quarantine: bool) -> Self {
        Self {
            reader,
            heads: HashMap::new(),
            moved: HashSet::new(),
            foreign: Vec::new(),
            quarantine,
        }
    }

    /// Reads from the table the heads of `subjects` not cached yet.
    pub async fn load<'s>(
        &mut self,
        c: &impl GenericClient,
        subjects: impl IntoIterator<Item = &'s str>,
    ) -> Result<(), tokio_postgres::Error> {
        if self.heads.len() > HEADS_CACHED_MAX && self.moved.is_empty() {
            self.heads.clear();
        }
        let mut wanted: Vec<&str> = subjects
            .into_iter()
            .filter(|s| !self.heads.contains_key(*s))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = c
            .query(
                "SELECT subject, stream_seq, chain FROM ledger.chain_heads \
                 WHERE reader = $1 AND subject = ANY($2)",
                &[&self.reader, &wanted],
            )
            .await?;
        for row in rows {
            let chain: &[u8] = row.get(2);
            // Only the sifter writes this column, always 32 bytes.
            let chain = ChainHash::from_bytes(chain).unwrap_or(ChainHash::GENESIS);
            self.heads
                .insert(row.get(0), (row.get::<_, i64>(1) as u64, chain));
        }
        Ok(())
    }

    /// The chain value of `subject`'s last genuine event (not loaded: none).
    fn head(&self, subject: &str) -> ChainHash {
        self.heads
            .get(subject)
            .map_or(ChainHash::GENESIS, |(_, c)| *c)
    }

    /// What `m` is, given its payload `decoded` (by [`crate::fold::decode`]):
    /// the ledger's event (its chain value and the event), a foreign
    /// message, or a genuine event this code cannot read. Moves nothing.
    pub fn verdict(&self, m: &Message<'_>, decoded: Result<EventEnvelope, FoldError>) -> Verdict {
        let previous = self.head(m.subject);
        match decoded {
            Ok(event) => match genuine::judge_event(m, &previous, &event) {
                Ok(chain) => Verdict::Genuine(chain, Box::new(event)),
                Err(why) => Verdict::Foreign(why),
            },
            Err(e) => match genuine::judge(m, &previous) {
                Ok(_) => Verdict::Unreadable(e),
                Err(why) => Verdict::Foreign(why),
            },
        }
    }

    /// Moves `subject`'s head to the genuine event `seq`.
    pub fn keep(&mut self, seq: u64, subject: &str, chain: ChainHash) {
        self.heads.insert(subject.to_owned(), (seq, chain));
        self.moved.insert(subject.to_owned());
    }

    /// Records the foreign message `seq`, which is skipped.
    pub fn skip(&mut self, seq: u64, subject: &str, why: genuine::Foreign) {
        tracing::warn!(seq, subject, reason = %why, reader = self.reader,
            "skipping a message the ledger did not write");
        self.foreign.push(Quarantined {
            seq,
            subject: subject.to_owned(),
            reason: why.to_string(),
        });
    }

    /// Judges message `seq` and keeps or skips it: `true` when genuine.
    pub fn sift(&mut self, seq: u64, m: &Message<'_>) -> bool {
        match genuine::judge(m, &self.head(m.subject)) {
            Ok(chain) => {
                self.keep(seq, m.subject, chain);
                true
            }
            Err(why) => {
                self.skip(seq, m.subject, why);
                false
            }
        }
    }

    /// Writes the heads moved and the foreign messages met since the last
    /// save, in the caller's transaction.
    pub async fn save(&mut self, c: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        if !self.moved.is_empty() {
            let mut subjects = Vec::with_capacity(self.moved.len());
            let mut seqs = Vec::with_capacity(self.moved.len());
            let mut chains = Vec::with_capacity(self.moved.len());
            for s in &self.moved {
                let (seq, chain) = self.heads[s];
                subjects.push(s.as_str());
                seqs.push(seq as i64);
                chains.push(chain.as_bytes().to_vec());
            }
            c.execute(
                "INSERT INTO ledger.chain_heads (reader, subject, stream_seq, chain) \
                 SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::bytea[]) \
                 ON CONFLICT (reader, subject) DO UPDATE \
                 SET stream_seq = EXCLUDED.stream_seq, chain = EXCLUDED.chain",
                &[&self.reader, &subjects, &seqs, &chains],
            )
            .await?;
        }
        if self.quarantine && !self.foreign.is_empty() {
            let seqs: Vec<i64> = self.foreign.iter().map(|q| q.seq as i64).collect();
            let subjects: Vec<&str> = self.foreign.iter().map(|q| q.subject.as_str()).collect();
            let reasons: Vec<&str> = self.foreign.iter().map(|q| q.reason.as_str()).collect();
            c.execute(
                "INSERT INTO ledger.quarantine (stream_seq, subject, reason) \
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[]) \
                 ON CONFLICT (stream_seq) DO NOTHING",
                &[&seqs, &subjects, &reasons],
            )
            .await?;
        }
        self.moved.clear();
        self.foreign.clear();
        Ok(())
    }

    /// Replaces every head of this reader in the table with the cached ones
    /// (a rebuild's, which read the whole log), in the caller's transaction.
    pub async fn save_all(&mut self, c: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        c.execute(
            "DELETE FROM ledger.chain_heads WHERE reader = $1",
            &[&self.reader],
        )
        .await?;
        self.moved = self.heads.keys().cloned().collect();
        self.save(c).await
    }
}

/// Deletes every head of `reader` (its log is read again from the start),
/// in the caller's transaction.
pub async fn reset(c: &impl GenericClient, reader: &str) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "DELETE FROM ledger.chain_heads WHERE reader = $1",
        &[&reader],
    )
    .await?;
    Ok(())
}
