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

/// Reads the stream from `from_seq` to its head at the start, in order.
pub async fn read_stream(
    stream: &Stream,
    from_seq: u64,
    mut visit: impl FnMut(Record),
) -> anyhow::Result<u64> {
    let head = stream.clone().info().await?.state.last_sequence;
    if head < from_seq.max(1) {
        return Ok(head);
    }
    let mut messages = ledger_projections::projector::ordered_from(stream, from_seq, None)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    // Read ahead on another task, so reading and checking overlap.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Record>>(READ_AHEAD_MAX);
    let reader = tokio::spawn(async move {
        while let Some(m) = messages.next().await {
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
                })
            });
            let last = record.as_ref().map_or(true, |r| r.seq >= head);
            if tx.send(record).await.is_err() || last {
                return;
            }
        }
    });
    let mut progress = Progress::new(head);
    while let Some(record) = rx.recv().await {
        let record = record?;
        let seq = record.seq;
        visit(record);
        progress.tick(seq);
        if seq >= head {
            break;
        }
    }
    reader.abort();
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
            read_stream(stream, from_seq, |r| {
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
            read_stream(stream, from_seq, |r| {
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
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
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

/// Balances per bucket of every account (or one) as of `as_of`, from the log.
pub async fn replay_as_of(
    stream: &Stream,
    prefix: &str,
    as_of: Timestamp,
    account: Option<&AccountId>,
) -> anyhow::Result<serde_json::Value> {
    let mut accounts: BTreeMap<AccountId, crate::domain::Account> = BTreeMap::new();
    let mut last_seq = 0;
    let mut bad = None;
    read_stream(stream, 1, |r| {
        if bad.is_some() || !r.subject.starts_with(&format!("{prefix}.acct.")) {
            return;
        }
        match serde_json::from_str::<EventEnvelope>(&r.payload) {
            Ok(e) if e.recorded_at <= as_of && account.is_none_or(|a| *a == e.account_id) => {
                last_seq = r.seq;
                accounts
                    .entry(e.account_id.clone())
                    .or_insert_with(|| crate::domain::Account::new(e.account_id.clone()))
                    .evolve(&e.body);
            }
            Ok(_) => {}
            Err(e) => bad = Some(format!("stream seq {}: {e}", r.seq)),
        }
    })
    .await?;
    if let Some(b) = bad {
        anyhow::bail!("the log cannot be replayed: {b}");
    }
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
