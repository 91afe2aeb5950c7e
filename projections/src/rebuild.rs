//! Rebuilding a projection from the whole log.
//!
//! The log is replayed into shadow tables (`<table>_rebuild`) with the same
//! fold and writer as the live projector, history by binary COPY, while the
//! live tables keep serving reads and the live projector keeps running. Then
//! one transaction takes the checkpoint row and an exclusive lock on the live
//! tables, catches the shadows up to the live checkpoint, and swaps them in
//! by renaming: readers see the old tables or the new ones, never a
//! half-built one. The live projector finds its checkpoint moved and resumes
//! from the new position.

use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::stream::Stream;
use ledger_schemas::EventEnvelope;
use ledger_schemas::signing::Trust;

use crate::db::{self, Tables};
use crate::fold;
use crate::projector::{Projection, State};
use crate::sift::{Sifter, Verdict};

/// Events folded per shadow transaction during a rebuild.
pub const REBUILD_BATCH_EVENTS_MAX: usize = 20_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub projection: &'static str,
    pub events: u64,
    pub position: u64,
    pub seconds: f64,
}

/// Rebuilds `projection`; `progress(done, head)` is called as it goes.
pub async fn rebuild(
    database_url: &str,
    stream: &Stream,
    trust: &Trust,
    projection: Projection,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let (mut client, _connection) = crate::pg::connect(database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let name = projection.name();
    let shadow = Tables::shadow();
    for t in projection.tables() {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS ledger.{t}_rebuild; \
                 CREATE TABLE ledger.{t}_rebuild (LIKE ledger.{t} INCLUDING ALL);"
            ))
            .await?;
    }
    let head = stream.clone().info().await?.state.last_sequence;
    let mut state = State::new(projection);
    // The log is read from its start: every subject's chain from genesis.
    let mut sifter = Sifter::new(name, true);
    let mut position = 0;
    let mut events = 0u64;
    if head > 0 {
        events += fold_range(
            &mut client,
            (stream, trust),
            (&mut state, &mut sifter),
            &shadow,
            (0, head),
            &mut progress,
        )
        .await?;
        position = head;
    }

    // The swap, with the live projector held off by the checkpoint row.
    let tx = client.transaction().await?;
    db::ensure_checkpoint(&tx, name).await?;
    let live_checkpoint = db::checkpoint_for_update(&tx, name).await? as u64;
    let live = projection
        .tables()
        .iter()
        .map(|t| format!("ledger.{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.batch_execute(&format!("LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"))
        .await?;
    if live_checkpoint > position {
        events += fold_range(
            &mut InTransaction(&tx),
            (stream, trust),
            (&mut state, &mut sifter),
            &shadow,
            (position, live_checkpoint),
            &mut progress,
        )
        .await?;
        position = live_checkpoint;
    }
    sifter.save_all(&tx).await?;
    for t in projection.tables() {
        tx.batch_execute(&format!(
            "ALTER TABLE ledger.{t} RENAME TO {t}_replaced; \
             ALTER TABLE ledger.{t}_rebuild RENAME TO {t}; \
             DROP TABLE ledger.{t}_replaced;"
        ))
        .await?;
    }
    db::set_checkpoint(&tx, name, position as i64).await?;
    tx.commit().await?;
    Ok(Report {
        projection: name,
        events,
        position,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Folds the genuine events after `after` up to `until` into `tables`,
/// sifting out what the ledger did not write. Sifting and decoding run
/// ahead on a task of their own, a batch at a time, while the previous
/// batch is folded and written.
async fn fold_range(
    c: &mut impl Transactional,
    (stream, trust): (&Stream, &Trust),
    (state, sifter): (&mut State, &mut Sifter),
    tables: &Tables,
    (after, until): (u64, u64),
    progress: &mut impl FnMut(u64, u64),
) -> anyhow::Result<u64> {
    let reader = crate::projector::Reader::open(stream, after + 1, trust, Some(until))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let taken = std::mem::replace(sifter, Sifter::new("", false));
    let decoding = tokio::spawn(decode_ahead(reader, (after, until), taken, tx));
    let mut done = 0u64;
    while let Some(batch) = rx.recv().await {
        let batch: Vec<(u64, EventEnvelope)> = batch?;
        let Some(&(last, _)) = batch.last() else {
            continue;
        };
        c.apply(state, tables, &batch).await?;
        done += batch.len() as u64;
        progress(last, until);
    }
    *sifter = decoding.await?;
    Ok(done)
}

/// Reads, sifts and decodes the messages after `after` up to `until`,
/// sending the genuine events in batches of at most
/// [`REBUILD_BATCH_EVENTS_MAX`]; the first error ends it. Gives the sifter
/// back when done.
async fn decode_ahead(
    mut reader: crate::projector::Reader,
    (after, until): (u64, u64),
    mut sifter: Sifter,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<Vec<(u64, EventEnvelope)>>>,
) -> Sifter {
    let mut batch = Vec::with_capacity(REBUILD_BATCH_EVENTS_MAX);
    let mut seq = after;
    while seq < until {
        let next = match reader.next().await {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return sifter;
            }
            None => {
                let _ = tx
                    .send(Err(anyhow::anyhow!(
                        "the event stream ended during the rebuild"
                    )))
                    .await;
                return sifter;
            }
        };
        seq = next.seq;
        if seq > until {
            break;
        }
        if next.is_checkpoint() {
            continue;
        }
        match sifter.verdict(&next.message(), fold::decode(seq, &next.payload)) {
            Verdict::Genuine(chain, event) => {
                sifter.keep(seq, &next.subject, chain);
                batch.push((seq, *event));
            }
            Verdict::Foreign(why) => sifter.skip(seq, &next.subject, why),
            Verdict::Unreadable(e) => {
                let _ = tx.send(Err(e.into())).await;
                return sifter;
            }
        }
        if batch.len() >= REBUILD_BATCH_EVENTS_MAX
            && tx.send(Ok(std::mem::take(&mut batch))).await.is_err()
        {
            return sifter;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
    sifter
}

trait Transactional {
    async fn apply(
        &mut self,
        state: &mut State,
        tables: &Tables,
        batch: &[(u64, EventEnvelope)],
    ) -> anyhow::Result<()>;
}

impl Transactional for tokio_postgres::Client {
    async fn apply(
        &mut self,
        state: &mut State,
        tables: &Tables,
        batch: &[(u64, EventEnvelope)],
    ) -> anyhow::Result<()> {
        let tx = self.transaction().await?;
        state.apply(&tx, tables, batch).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Folding inside a transaction the caller holds open.
struct InTransaction<'a, 'b>(&'a tokio_postgres::Transaction<'b>);

impl Transactional for InTransaction<'_, '_> {
    async fn apply(
        &mut self,
        state: &mut State,
        tables: &Tables,
        batch: &[(u64, EventEnvelope)],
    ) -> anyhow::Result<()> {
        state.apply(self.0, tables, batch).await?;
        Ok(())
    }
}
