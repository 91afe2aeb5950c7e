//! Auditor tools: `ledger audit verify`, `replay --as-of`, `export`.
//!
//! Everything here needs read access to stream `LEDGER` only (or an export
//! of it, with no server at all); `verify` also reads the read models when
//! given a database, to check that a replay of the log equals them.

pub mod verify;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use ledger_projections::projector::TAIL_STALL;
use ledger_schemas::checkpoint;
use ledger_schemas::signing;
use ledger_schemas::*;

pub use verify::{Finding, Record, Verifier};

/// Prints progress on a terminal (events/s, time left); silent otherwise.
#[derive(Debug)]
pub struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
    total: u64,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        let now = Instant::now();
        Self {
            on: std::io::stderr().is_terminal(),
            started: now,
            last: now,
            total,
        }
    }

    pub fn tick(&mut self, done: u64) {
        if !self.on || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let left = self.total.saturating_sub(done) as f64 / rate.max(1.0);
        eprint!(
            "\r{done}/{} events, {rate:.0}/s, about {left:.0}s left   ",
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    pub fn done(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// Records read ahead of the checks at most.
const READ_AHEAD_MAX: usize = 8192;

fn header(m: &async_nats::HeaderMap, name: &str) -> Option<String> {
    m.get(name).map(|v| v.as_str().to_owned())
}

/// Reads the stream from `from_seq` to its head at the start (or to
/// `until`, when before it), in order, and on to the end of the append that
/// head falls inside: an append is stored whole, but the head may be read
/// between its first messages and its last (and a checkpoint may cover part
/// of one). Past the head, a message that claims a place in an append whose
/// rest is not stored within [`TAIL_STALL`] ends the read (what `visit` holds
/// of it is foreign). Returns the head.
pub async fn read_stream(
    stream: &Stream,
    from_seq: u64,
    until: Option<u64>,
    mut visit: impl FnMut(Record),
) -> anyhow::Result<u64> {
    let head = stream.clone().info().await?.state.last_sequence;
    let head = until.map_or(head, |u| u.min(head));
    if head < from_seq.max(1) {
        return Ok(head);
    }
    let mut messages = ledger_projections::projector::ordered_from(stream, from_seq, None)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    // Read ahead on another task, so reading and checking overlap.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Record>>(READ_AHEAD_MAX);
    let stream = stream.clone();
    let reader = tokio::spawn(async move {
        let mut end = head;
        let mut last = 0;
        while last < end {
            let next = if last >= head {
                // Past the head, the rest of an append: judged foreign
                // (the read ends) only when nothing more is stored for
                // TAIL_STALL, as the projections' bounded reader does.
                match tokio::time::timeout(TAIL_STALL, messages.next()).await {
                    Ok(next) => next,
                    Err(_) => match stream.clone().info().await {
                        Ok(i) if i.state.last_sequence > last => continue,
                        Ok(_) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    },
                }
            } else {
                messages.next().await
            };
            let Some(m) = next else { return };
            let record = m.map_err(anyhow::Error::from).and_then(|m| {
                let seq = m
                    .info()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .stream_sequence;
                let h = m.headers.clone().unwrap_or_default();
                Ok(Record {
                    seq,
                    subject: m.subject.to_string(),
                    msg_id: header(&h, ledger_schemas::genuine::MSG_ID_HEADER),
                    event_type: header(&h, crate::store::batch::HEADER_EVENT_TYPE),
                    chain: header(&h, CHAIN_HEADER),
                    payload: String::from_utf8_lossy(&m.payload).into_owned(),
                    batch: header(&h, signing::BATCH_HEADER),
                    heads: header(&h, signing::HEADS_HEADER),
                    signature: header(&h, signing::SIGNATURE_HEADER),
                })
            });
            match &record {
                Ok(r) => {
                    last = r.seq;
                    if r.seq >= head
                        && let Some((i, n)) = r.batch.as_deref().and_then(signing::parse_position)
                    {
                        end = end.max(r.seq + (n - i) as u64);
                    }
                }
                Err(_) => end = 0,
            }
            if tx.send(record).await.is_err() {
                return;
            }
        }
    });
    let mut progress = Progress::new(head);
    while let Some(record) = rx.recv().await {
        let record = record?;
        let seq = record.seq;
        visit(record);
        progress.tick(seq.min(head));
    }
    reader.await?;
    progress.done();
    Ok(head)
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

/// Writes the log from `from_seq` (records with their headers and chain values).
pub async fn export(
    stream: &Stream,
    from_seq: u64,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut failed = None;
    match format {
        Format::Jsonl => {
            read_stream(stream, from_seq, None, |r| {
                if failed.is_none() {
                    let line = serde_json::to_string(&r).expect("records serialise");
                    if let Err(e) = writeln!(out, "{line}") {
                        failed = Some(e);
                    }
                    n += 1;
                }
            })
            .await?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            read_stream(stream, from_seq, None, |r| {
                if failed.is_none() {
                    if let Err(e) = w.serialize(&r) {
                        failed = Some(std::io::Error::other(e));
                    }
                    n += 1;
                }
            })
            .await?;
            w.flush()?;
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(n),
    }
}

/// Reads an export (JSON lines, or CSV with a header row).
pub fn read_export(path: &std::path::Path, mut visit: impl FnMut(Record)) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)?;
    let mut reader = std::io::BufReader::new(file);
    let first = reader.fill_buf()?.first().copied();
    if first == Some(b'{') {
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(&line) {
                Ok(r) => visit(r),
                Err(e) => {
                    anyhow::bail!("line {} of {} is not a record: {e}", i + 1, path.display())
                }
            }
        }
    } else {
        let mut r = csv::Reader::from_reader(reader);
        let headers = r.headers()?.clone();
        for column in ["seq", "subject", "chain", "payload"] {
            if !headers.iter().any(|h| h == column) {
                anyhow::bail!(
                    "{} is neither a JSON-lines nor a CSV export (no '{column}' column)",
                    path.display()
                );
            }
        }
        for (i, rec) in r.deserialize::<Record>().enumerate() {
            match rec {
                Ok(rec) => visit(rec),
                Err(e) => anyhow::bail!("row {} of {} is not a record: {e}", i + 1, path.display()),
            }
        }
    }
    Ok(())
}

/// Read-model balances and the stream seq they reflect, read consistently.
pub async fn read_models(database_url: &str) -> anyhow::Result<(u64, verify::ReadModelRows)> {
    let (mut client, _connection) = ledger_projections::pg::connect(database_url).await?;
    let tx = ledger_projections::db::snapshot(&mut client).await?;
    let at: i64 = tx
        .query_opt(
            "SELECT stream_seq FROM ledger.projection_checkpoints WHERE projection = 'accounts'",
            &[],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let rows = tx
        .query(
            "SELECT account_id, bucket, balance, reserved FROM ledger.service_balances",
            &[],
        )
        .await?;
    let map = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    tx.commit().await?;
    Ok((at as u64, map))
}

/// The summary `verify` prints.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub events: u64,
    pub aggregates: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    pub findings: u64,
    pub read_models_checked_at: Option<u64>,
}

/// Balances per bucket of every account (or one) as of `as_of`, from the
/// log: only the ledger's own events count (with `keys`, each append's
/// signature is checked too), recorded at or before `as_of`.
pub async fn replay_as_of(
    stream: &Stream,
    prefix: &str,
    keys: Option<signing::PublicKeys>,
    as_of: Timestamp,
    account: Option<&AccountId>,
) -> anyhow::Result<serde_json::Value> {
    let mut verifier = Verifier::new(prefix);
    if let Some(keys) = keys {
        verifier = verifier.with_keys(keys);
    }
    verifier.replay_until(as_of);
    read_stream(stream, 1, None, |r| verifier.check_owned(r)).await?;
    verifier.finish();
    let last_seq = verifier.last_folded_seq;
    let accounts: BTreeMap<&AccountId, &crate::domain::Account> = verifier
        .accounts()
        .iter()
        .filter(|(id, _)| account.is_none_or(|a| a == *id))
        .collect();
    let body: serde_json::Map<String, serde_json::Value> = accounts
        .iter()
        .filter(|(_, a)| a.is_open())
        .map(|(id, a)| {
            let buckets: BTreeMap<String, String> = a
                .balances()
                .map(|(b, v)| (b.to_string(), v.to_string()))
                .collect();
            let reserved: BTreeMap<String, String> = a
                .reserved()
                .iter()
                .map(|(s, c)| (s.to_string(), c.to_string()))
                .collect();
            (
                id.to_string(),
                serde_json::json!({"buckets": buckets, "reserved": reserved}),
            )
        })
        .collect();
    Ok(serde_json::json!({"as_of": as_of, "stream_seq": last_seq, "accounts": body}))
}

/// The checkpoints on `subject`, oldest first, each with its own stream seq.
pub async fn checkpoints(
    stream: &Stream,
    subject: &str,
) -> anyhow::Result<Vec<(u64, checkpoint::Checkpoint)>> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let last = match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => m.sequence,
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut messages = ledger_projections::projector::ordered_from(stream, 1, Some(subject))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!(e))?;
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        match serde_json::from_slice(&m.payload) {
            Ok(c) => out.push((seq, c)),
            Err(e) => tracing::warn!(seq, error = %e, "an unreadable checkpoint is skipped"),
        }
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// An inclusion proof of `account`'s history in the newest checkpoint
/// (at or before stream seq `as_of_seq`, when given) that `keys` verify:
/// the log is read from its start up to the checkpoint, every append's
/// signature checked, and the heads must give the checkpoint's root.
pub async fn prove(
    stream: &Stream,
    prefix: &str,
    keys: &signing::PublicKeys,
    account: &AccountId,
    as_of_seq: Option<u64>,
) -> anyhow::Result<checkpoint::Proof> {
    let mut verifier = Verifier::new(prefix).with_keys(keys.clone());
    let subject = format!("{prefix}.acct.{account}");
    let all = checkpoints(stream, verifier.checkpoint_subject()).await?;
    let chosen = all
        .into_iter()
        .rev()
        .find(|(_, c)| as_of_seq.is_none_or(|n| c.seq <= n) && c.verify(keys).is_ok())
        .map(|(_, c)| c)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no checkpoint{} verifies under the keys given (one is appended every \
                 checkpoint_interval_s while events arrive)",
                as_of_seq
                    .map(|n| format!(" at or before stream seq {n}"))
                    .unwrap_or_default()
            )
        })?;
    verifier.collect(subject.clone());
    read_stream(stream, 1, Some(chosen.seq), |r| verifier.check_owned(r)).await?;
    verifier.finish();
    let (leaves, root) = checkpoint::tree(verifier.heads_at(chosen.seq));
    anyhow::ensure!(
        hex::encode(root) == chosen.root,
        "the log up to stream seq {} does not give the checkpoint's root ({} aggregates, \
         signed {}): run `ledger audit verify`",
        chosen.seq,
        leaves.len(),
        chosen.aggregates
    );
    let index = leaves
        .iter()
        .position(|l| l.subject == subject)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "account {account} has no events up to stream seq {}",
                chosen.seq
            )
        })?;
    let hashes: Vec<_> = leaves.iter().map(checkpoint::Leaf::hash).collect();
    let path = ledger_schemas::merkle::path(index, &hashes)
        .iter()
        .map(hex::encode)
        .collect();
    let events: Vec<String> = verifier.collected.iter().map(|(_, p)| p.clone()).collect();
    let envelopes = events
        .iter()
        .map(|e| serde_json::from_str::<EventEnvelope>(e))
        .collect::<Result<Vec<_>, _>>()?;
    let balances = checkpoint::balances_from_postings(account.as_str(), &envelopes)
        .into_iter()
        .map(|(b, v)| (b, v.normalize().to_string()))
        .collect();
    Ok(checkpoint::Proof {
        version: 1,
        account_id: account.to_string(),
        leaf: leaves[index].clone(),
        index: index as u64,
        path,
        events,
        balances,
        checkpoint: chosen,
    })
}
