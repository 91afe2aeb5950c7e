//! The ledger against its limits, measured in one run on this machine.
//!
//! `cargo bench -p ledger --bench ledger -- [--accounts N] [--commands N] [--clients N]
//! [--peer-seconds N] [--quick]`
//!
//! Starts its own nats-server (once with default syncing, once with
//! `sync_interval: always`) and PostgreSQL, then measures, for each mode:
//! - raw pipelined JetStream publishes of event-sized messages over the same
//!   subjects (the limit with default syncing);
//! - raw atomic batches of 1000 of the same messages (the durable limit);
//! - consumptions over many funded accounts from concurrent clients, through
//!   the NATS command service;
//! - consumptions on one hot account from the same clients;
//! - the same two workloads on the design's peer, a plain PostgreSQL ledger
//!   (one transaction per command: `UPDATE … WHERE balance >= x` plus an
//!   `INSERT` into history), at equal durability: PostgreSQL fsyncs when
//!   nats-server does (`sync_interval: always`), and neither does otherwise;
//!   and `cqrs-es` with `postgres-es` (an account aggregate written for the
//!   bench), stopped after `--peer-seconds` when slower than that.
//!
//! Prints a table of throughput, latency percentiles and ratios, and writes
//! the same as JSON (`target/bench-ledger.json`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/load.rs"]
mod load;
#[path = "shared/raw.rs"]
mod raw;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ledger::config::{Config, Secret};
use ledger_testkit::{NatsOptions, NatsServer, Postgres, PostgresOptions};
use load::{closed_loop, gather_latencies};
use raw::{body, raw_batches};
use serde_json::json;

struct Args {
    accounts: usize,
    commands: usize,
    clients: usize,
    raw_messages: usize,
    batches_in_flight: Option<usize>,
    in_flight_per_client: usize,
    /// How long a slow peer may run one workload (it is measured over what
    /// it completes in that time).
    peer_budget: Duration,
    /// How long the projector lag is measured at the offered rate.
    lag_duration: Duration,
    /// `default` or `always`: run one sync mode only (for profiling).
    only_mode: Option<String>,
    /// Skip the peers (for profiling the ledger's own workloads).
    no_peers: bool,
}

fn args() -> Args {
    let mut a = Args {
        accounts: 10_000,
        commands: 40_000,
        clients: 64,
        raw_messages: 100_000,
        batches_in_flight: None,
        in_flight_per_client: 16,
        peer_budget: Duration::from_secs(20),
        lag_duration: Duration::from_secs(10),
        only_mode: None,
        no_peers: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--accounts" => a.accounts = value().expect("--accounts N"),
            "--commands" => a.commands = value().expect("--commands N"),
            "--clients" => a.clients = value().expect("--clients N"),
            "--raw-messages" => a.raw_messages = value().expect("--raw-messages N"),
            "--batches-in-flight" => a.batches_in_flight = value(),
            "--mode" => a.only_mode = argv.get(i + 1).cloned(),
            "--peer-seconds" => {
                a.peer_budget = Duration::from_secs(value().expect("--peer-seconds N") as u64)
            }
            "--in-flight-per-client" => {
                a.in_flight_per_client = value().expect("--in-flight-per-client N")
            }
            "--no-peers" => {
                a.no_peers = true;
                i += 1;
                continue;
            }
            "--quick" => {
                a.accounts = 200;
                a.commands = 2_000;
                a.clients = 16;
                a.raw_messages = 5_000;
                a.peer_budget = Duration::from_secs(2);
                a.lag_duration = Duration::from_secs(1);
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    mode: &'static str,
    workload: String,
    ops: usize,
    per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    limit: Option<&'static str>,
    ratio_to_limit: Option<f64>,
    /// Throughput over each peer's on the same workload in the same run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ratio_to_peers: BTreeMap<&'static str, f64>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Publish acks awaited in a bounded window, as a real publisher keeps one.
#[derive(Default)]
struct AckWindow {
    pending: FuturesUnordered<
        <async_nats::jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture,
    >,
}

impl AckWindow {
    const MAX: usize = 4096;

    async fn push(&mut self, ack: async_nats::jetstream::context::PublishAckFuture) {
        self.pending.push(std::future::IntoFuture::into_future(ack));
        if self.pending.len() >= Self::MAX {
            self.pending.next().await.unwrap().unwrap();
        }
    }

    async fn drain(&mut self) {
        while let Some(a) = self.pending.next().await {
            a.unwrap();
        }
    }
}

async fn raw_pipelined(nats: &NatsServer, n: usize, accounts: usize) -> f64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut acks = AckWindow::default();
    for i in 0..n {
        let f = js
            .publish(format!("raw.acct.a{}", i % accounts), body(i))
            .await
            .unwrap();
        acks.push(f).await;
    }
    acks.drain().await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Sends `commands` consumptions from `clients` concurrent clients, spread
/// over `accounts`; returns (commands/s, sorted latencies).
async fn consumptions(
    client: &async_nats::Client,
    accounts: &[String],
    commands: usize,
    clients: usize,
    in_flight: usize,
    tag: &str,
) -> (f64, Vec<Duration>) {
    let per_client = commands / clients;
    let (accounts, tag) = (accounts.to_vec(), tag.to_owned());
    closed_loop(
        client,
        b"{\"event\":",
        clients,
        per_client,
        in_flight,
        move |c, i| {
            let account = &accounts[(c * per_client + i) % accounts.len()];
            let body = json!({"idempotency_key": format!("{tag}-{c}-{i}"), "account_id": account,
            "service": "sms", "quantity": 1, "credits": "0.01"});
            ("ledger.cmd.consume".to_owned(), body.to_string())
        },
    )
    .await
}

/// Sends `commands` consumptions as `consume_batch` requests of `per_batch`
/// items over `accounts`, from `clients` clients with `in_flight` batches
/// each; returns (items/s, sorted batch latencies).
async fn batched_consumptions(
    client: &async_nats::Client,
    accounts: &[String],
    commands: usize,
    per_batch: usize,
    clients: usize,
    in_flight: usize,
) -> (f64, Vec<Duration>) {
    let per_client = commands / per_batch / clients;
    let accounts = accounts.to_vec();
    let (batches_per_s, lat) = closed_loop(
        client,
        b"{\"results\":[",
        clients,
        per_client,
        in_flight,
        move |c, b| {
            let items: Vec<serde_json::Value> = (0..per_batch)
                .map(|i| {
                    let n = (c * per_client + b) * per_batch + i;
                    json!({"idempotency_key": format!("batch-{n}"),
                    "account_id": accounts[n % accounts.len()],
                    "service": "sms", "quantity": 1, "credits": "0.01"})
                })
                .collect();
            (
                "ledger.cmd.consume_batch".to_owned(),
                json!({ "items": items }).to_string(),
            )
        },
    )
    .await;
    (batches_per_s * per_batch as f64, lat)
}

/// The committer's mean batch size and mean append time so far, from the
/// ledger's own metrics.
async fn batch_metrics(addr: std::net::SocketAddr) -> String {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let batches = value("ledger_batch_messages_count");
    format!(
        "{batches} batches, {:.1} messages each, {:.2} ms per append",
        value("ledger_batch_messages_sum") / batches.max(1.0),
        1000.0 * value("ledger_append_seconds_sum") / value("ledger_append_seconds_count").max(1.0)
    )
}

/// One request at a time from one client: consume latencies, sorted.
async fn one_at_a_time(client: &async_nats::Client, account: &str, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"idempotency_key": format!("solo-{i}"), "account_id": account,
            "service": "sms", "quantity": 1, "credits": "0.01"});
        let t = Instant::now();
        let r = client
            .request("ledger.cmd.consume", body.to_string().into())
            .await
            .expect("a reply");
        lat.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert!(v.get("error").is_none(), "{v}");
    }
    lat.sort();
    lat
}

/// One durable publish at a time, each awaiting its ack: latencies, sorted.
async fn raw_round_trips(nats: &NatsServer, n: usize) -> Vec<Duration> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "RAWRT".into(),
        subjects: vec!["rawrt.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        js.publish(format!("rawrt.acct.a{}", i % 100), body(i))
            .await
            .unwrap()
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

/// A PostgreSQL session whose connection runs in the background.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// The plain PostgreSQL ledger: `clients` connections, each running one
/// transaction per consumption (`UPDATE … WHERE balance >= x`, then an
/// `INSERT` into history whose unique key refuses a repeated command), over
/// `accounts`; returns (commands/s, sorted latencies).
async fn pg_peer(
    pg: &Postgres,
    accounts: &[String],
    commands: usize,
    clients: usize,
    tag: &str,
) -> (f64, Vec<Duration>) {
    let url = pg.connection_string_for("postgres");
    let setup = connect(&url).await;
    setup
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS peer;
             DROP TABLE IF EXISTS peer.balances, peer.history;
             CREATE TABLE peer.balances (account_id text PRIMARY KEY, balance numeric NOT NULL);
             CREATE TABLE peer.history (id bigserial PRIMARY KEY, account_id text NOT NULL,
                 key text NOT NULL UNIQUE, delta numeric NOT NULL,
                 at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .unwrap();
    setup
        .execute(
            "INSERT INTO peer.balances SELECT unnest($1::text[]), 1000000",
            &[&accounts],
        )
        .await
        .unwrap();
    let per_client = commands / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = url.clone();
        let accounts = accounts.to_vec();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut db = connect(&url).await;
            let update = db
                .prepare(
                    "UPDATE peer.balances SET balance = balance - $2::text::numeric                      WHERE account_id = $1 AND balance >= $2::text::numeric",
                )
                .await
                .unwrap();
            let insert = db
                .prepare(
                    "INSERT INTO peer.history (account_id, key, delta)                      VALUES ($1, $2, -($3::text::numeric))",
                )
                .await
                .unwrap();
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let account = &accounts[(c * per_client + i) % accounts.len()];
                let key = format!("{tag}-{c}-{i}");
                let t = Instant::now();
                let tx = db.transaction().await.unwrap();
                let n = tx.execute(&update, &[account, &"0.01"]).await.unwrap();
                assert_eq!(n, 1, "funded accounts have credits");
                tx.execute(&insert, &[account, &key, &"0.01"]).await.unwrap();
                tx.commit().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    gather_latencies(tasks, started).await
}

/// The design's other peer: `cqrs-es` with `postgres-es`, an account
/// aggregate written for the bench (balances in micro-credits).
mod cqrs_peer {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct PeerAccount {
        balance: i64,
    }

    #[derive(Debug)]
    pub enum PeerCommand {
        Fund { micros: i64 },
        Consume { micros: i64 },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum PeerEvent {
        Funded { micros: i64 },
        Consumed { micros: i64 },
    }

    impl DomainEvent for PeerEvent {
        fn event_type(&self) -> String {
            match self {
                PeerEvent::Funded { .. } => "Funded".into(),
                PeerEvent::Consumed { .. } => "Consumed".into(),
            }
        }
        fn event_version(&self) -> String {
            "1".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("insufficient credits")]
    pub struct Insufficient;

    impl Aggregate for PeerAccount {
        const TYPE: &'static str = "account";
        type Command = PeerCommand;
        type Event = PeerEvent;
        type Error = Insufficient;
        type Services = ();

        async fn handle(
            &mut self,
            command: PeerCommand,
            _: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), Insufficient> {
            let event = match command {
                PeerCommand::Fund { micros } => PeerEvent::Funded { micros },
                PeerCommand::Consume { micros } if self.balance >= micros => {
                    PeerEvent::Consumed { micros }
                }
                PeerCommand::Consume { .. } => return Err(Insufficient),
            };
            sink.write(event, self).await;
            Ok(())
        }

        fn apply(&mut self, event: PeerEvent) {
            match event {
                PeerEvent::Funded { micros } => self.balance += micros,
                PeerEvent::Consumed { micros } => self.balance -= micros,
            }
        }
    }
}

/// The `cqrs-es`+`postgres-es` peer: `clients` tasks over a pool of as many
/// connections, each executing consumptions one after another (retrying on
/// `AggregateConflict`, as its users must) until `commands` are done or
/// `budget` has passed; returns (commands/s, sorted latencies).
async fn cqrs_peer_run(
    pg: &Postgres,
    accounts: &[String],
    commands: usize,
    clients: usize,
    budget: Duration,
) -> (f64, Vec<Duration>) {
    use cqrs_es::AggregateError;
    use cqrs_peer::{PeerAccount, PeerCommand};
    let url = pg.connection_string_for("postgres");
    let setup = connect(&url).await;
    // postgres-es's own schema (its db/init.sql), one set per workload.
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS public.events, public.snapshots;
             CREATE TABLE public.events (aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                 sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
                 event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
                 PRIMARY KEY (aggregate_type, aggregate_id, sequence));
             CREATE TABLE public.snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                 last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
                 current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                 payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));",
        )
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect(&pg.url())
        .await
        .unwrap();
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<PeerAccount>(pool, vec![], ()));
    for account in accounts {
        cqrs.execute(
            account,
            PeerCommand::Fund {
                micros: 1_000_000_000_000,
            },
        )
        .await
        .unwrap();
    }
    let per_client = commands / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let cqrs = cqrs.clone();
        let accounts = accounts.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                if started.elapsed() > budget {
                    break;
                }
                let account = &accounts[(c * per_client + i) % accounts.len()];
                let t = Instant::now();
                loop {
                    match cqrs
                        .execute(account, PeerCommand::Consume { micros: 10_000 })
                        .await
                    {
                        Ok(()) => break,
                        Err(AggregateError::AggregateConflict) => continue,
                        Err(e) => panic!("cqrs-es peer: {e}"),
                    }
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    gather_latencies(tasks, started).await
}

/// The offered rate of the lag measurement (the design's target names it).
const LAG_OFFERED_PER_S: usize = 5_000;

/// Offers consumptions at [`LAG_OFFERED_PER_S`] for `duration` while the
/// projectors run, and measures, for each event, the time from its
/// command's reply to the accounts projection's checkpoint passing its
/// stream seq (the checkpoint is polled every 2 ms). Returns (events/s
/// achieved, sorted lags).
async fn projector_lag(
    client: &async_nats::Client,
    database_url: &str,
    accounts: &[String],
    duration: Duration,
) -> (f64, Vec<Duration>) {
    let db = connect(database_url).await;
    let checkpoint = db
        .prepare(
            "SELECT coalesce(max(stream_seq), 0) FROM ledger.projection_checkpoints \
             WHERE projection = 'accounts'",
        )
        .await
        .unwrap();
    let position = || async {
        db.query_one(&checkpoint, &[])
            .await
            .unwrap()
            .get::<_, i64>(0) as u64
    };
    // A fresh process loads each account on its first command; the steady
    // state has them loaded, so load them first (64 at a time).
    futures::stream::iter(accounts.iter().cloned())
        .for_each_concurrent(64, |account| {
            let client = client.clone();
            async move {
                let body = json!({"account_id": account}).to_string();
                let r = client
                    .request("ledger.cmd.get_balance", body.into())
                    .await
                    .expect("a reply");
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                assert!(v.get("error").is_none(), "{v}");
            }
        })
        .await;
    // Let the projectors catch up with what the earlier workloads wrote.
    let js = async_nats::jetstream::new(client.clone());
    let head = js
        .get_stream("LEDGER")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    while position().await < head {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = (LAG_OFFERED_PER_S as f64 * duration.as_secs_f64()) as usize;
    let tick = Duration::from_millis(10);
    let per_tick = LAG_OFFERED_PER_S / 100;
    let started = Instant::now();
    let mut replies = FuturesUnordered::new();
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let mut acked: Vec<(u64, Instant)> = Vec::with_capacity(total);
    let mut next = started;
    let mut sent = 0;
    let mut last_poll = Instant::now();
    while sent < total || !replies.is_empty() {
        if sent < total && Instant::now() >= next {
            for _ in 0..per_tick.min(total - sent) {
                let account = &accounts[sent % accounts.len()];
                let body = json!({"idempotency_key": format!("lag-{sent}"), "account_id": account,
                    "service": "sms", "quantity": 1, "credits": "0.01"});
                let client = client.clone();
                replies.push(async move {
                    // A client retries what the ledger says is safe to retry,
                    // backing off.
                    let mut wait = Duration::from_millis(5);
                    loop {
                        let r = client
                            .request("ledger.cmd.consume", body.to_string().into())
                            .await
                            .expect("a reply");
                        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                        if let Some(seq) = v["stream_seq"].as_u64() {
                            return (seq, Instant::now());
                        }
                        let code = v["error"]["code"].as_str().unwrap_or_default();
                        assert!(
                            code == "unavailable" || code == "conflict_retry",
                            "not accepted: {v}"
                        );
                        eprintln!("lag workload: retrying after {v}");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(500));
                    }
                });
                sent += 1;
            }
            next += tick;
        }
        if last_poll.elapsed() >= Duration::from_millis(2) {
            samples.push((Instant::now(), position().await));
            last_poll = Instant::now();
        }
        tokio::select! {
            Some(done) = replies.next(), if !replies.is_empty() => acked.push(done),
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    let elapsed = started.elapsed();
    let last = acked.iter().map(|(s, _)| *s).max().unwrap_or(0);
    loop {
        let p = position().await;
        samples.push((Instant::now(), p));
        if p >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut lags: Vec<Duration> = acked
        .iter()
        .map(|(seq, at)| {
            let i = samples.partition_point(|(_, p)| p < seq);
            samples[i].0.saturating_duration_since(*at)
        })
        .collect();
    lags.sort();
    (acked.len() as f64 / elapsed.as_secs_f64(), lags)
}

/// Publishes `n` usages (pipelined, as a service would) over `accounts` and
/// waits for every outcome; returns usages/s from first publish to last outcome.
async fn intake(client: &async_nats::Client, accounts: &[String], n: usize) -> f64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut outcomes = client.subscribe("ledger.outcome.>").await.unwrap();
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        let accounts = accounts.to_vec();
        tokio::spawn(async move {
            let mut acks = AckWindow::default();
            for i in 0..n {
                let account = &accounts[i % accounts.len()];
                let id = format!("bench-{i}");
                let body = json!({"usage_id": id, "account_id": account, "service": "sms",
                    "quantity": 1, "credits": null, "occurred_at": "2026-11-21T10:00:00.000Z",
                    "attributes": {}});
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", id.as_str());
                let f = js
                    .publish_with_headers(
                        format!("ledger.usage.sms.{account}"),
                        h,
                        body.to_string().into(),
                    )
                    .await
                    .unwrap();
                acks.push(f).await;
            }
            acks.drain().await;
        })
    };
    outcomes_of(&mut outcomes, n).await;
    publisher.await.unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}

/// Waits for `n` usage outcomes.
async fn outcomes_of(outcomes: &mut async_nats::Subscriber, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(60), outcomes.next())
            .await
            .expect("outcomes keep coming")
            .unwrap();
    }
}

/// Publishes `n` usages as batch messages of `per_batch` (pipelined) over
/// `accounts` and waits for every outcome; usages/s.
async fn intake_batches(
    client: &async_nats::Client,
    accounts: &[String],
    n: usize,
    per_batch: usize,
) -> f64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut outcomes = client.subscribe("ledger.outcome.>").await.unwrap();
    let started = Instant::now();
    let publisher = {
        let accounts = accounts.to_vec();
        tokio::spawn(async move {
            let mut acks = AckWindow::default();
            for b in 0..n / per_batch {
                let usages: Vec<serde_json::Value> = (0..per_batch)
                    .map(|i| {
                        let k = b * per_batch + i;
                        json!({"usage_id": format!("ub-{k}"),
                            "account_id": accounts[k % accounts.len()], "service": "sms",
                            "quantity": 1, "credits": null,
                            "occurred_at": "2026-11-21T10:00:00.000Z", "attributes": {}})
                    })
                    .collect();
                let id = format!("usage-batch-{b}");
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", id.as_str());
                let body = json!({ "usages": usages }).to_string();
                let f = js
                    .publish_with_headers("ledger.usage_batch.sms", h, body.into())
                    .await
                    .unwrap();
                acks.push(f).await;
            }
            acks.drain().await;
        })
    };
    let total = n / per_batch * per_batch;
    outcomes_of(&mut outcomes, total).await;
    publisher.await.unwrap();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Reads the whole stream with an ordered consumer; events/s.
async fn ordered_replay(stream: &async_nats::jetstream::stream::Stream) -> (u64, f64) {
    use async_nats::jetstream::consumer::pull;
    let head = stream.clone().info().await.unwrap().state.last_sequence;
    let started = Instant::now();
    let consumer = stream
        .create_consumer(pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut n = 0u64;
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        n += 1;
        if m.info().unwrap().stream_sequence >= head {
            break;
        }
    }
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// Binary COPY of `rows` credit_history-shaped rows into a scratch table; rows/s.
async fn copy_rows(database_url: &str, rows: usize) -> f64 {
    use ledger_projections::fold::HistoryRow;
    let mut client = connect(database_url).await;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ledger; DROP TABLE IF EXISTS ledger.credit_history_copybench; \
             CREATE TABLE ledger.credit_history_copybench (LIKE ledger.credit_history INCLUDING ALL)",
        )
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let batch: Vec<HistoryRow> = (0..rows)
        .map(|i| HistoryRow {
            stream_seq: i as i64,
            line: 0,
            event_id: uuid::Uuid::now_v7(),
            account_id: format!("acct{}", i % 10_000),
            occurred_at: now,
            kind: "credits_consumed",
            service: Some("sms".into()),
            bucket: "general".into(),
            credits_delta: rust_decimal::Decimal::new(-75, 4),
            balance_after: rust_decimal::Decimal::new(99_925, 4),
            reference: Some(format!("msg-{i}")),
            topup_id: None,
            details: json!({"quantity": 1, "unit_price": "0.0075"}),
        })
        .collect();
    let tables = ledger_projections::db::Tables {
        history: "ledger.credit_history_copybench".into(),
        ..ledger_projections::db::Tables::live()
    };
    let started = Instant::now();
    let tx = client.transaction().await.unwrap();
    ledger_projections::db::copy_history(&tx, &tables, &batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    client
        .batch_execute("DROP TABLE ledger.credit_history_copybench")
        .await
        .unwrap();
    rate
}

/// A fresh database's accounts projector catching up on the whole stream; events/s.
async fn projector_catch_up(
    admin_url: &str,
    pg: &Postgres,
    stream: &async_nats::jetstream::stream::Stream,
    trust: &ledger_schemas::signing::Trust,
    name: &str,
) -> f64 {
    use ledger_projections::projector::{Projection, Projector};
    let admin = connect(admin_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = pg.connection_string_for(name);
    let pool = ledger_projections::db::pool(&url).unwrap();
    ledger_projections::db::migrate(&pool).await.unwrap();
    let head = stream.clone().info().await.unwrap().state.last_sequence as i64;
    let token = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(
        Projector {
            projection: Projection::Accounts,
            database_url: url.clone(),
            stream: stream.clone(),
            trust: trust.clone(),
            status: Default::default(),
        }
        .run(token.clone()),
    );
    let client = pool.get().await.unwrap();
    loop {
        let cp: Option<i64> = client
            .query_opt(
                "SELECT stream_seq FROM ledger.projection_checkpoints WHERE projection = 'accounts'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if cp.unwrap_or(0) >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = head as f64 / started.elapsed().as_secs_f64();
    token.cancel();
    task.await.unwrap().unwrap();
    rate
}

async fn fund(client: &async_nats::Client, accounts: &[String]) {
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    for a in accounts {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for (name, body) in [
                (
                    "open_account",
                    json!({"idempotency_key": format!("o-{a}"), "account_id": a}),
                ),
                (
                    "grant",
                    json!({"idempotency_key": format!("g-{a}"), "account_id": a,
                    "bucket": "general", "credits": "1000000", "source": "promotion"}),
                ),
            ] {
                let r = client
                    .request(format!("ledger.cmd.{name}"), body.to_string().into())
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                assert!(v.get("error").is_none(), "{v}");
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The design's peers for the command workloads.
const PG_PEER: &str = "plain PostgreSQL ledger";
const CQRS_PEER: &str = "cqrs-es + postgres-es";

async fn mode(name: &'static str, sync_always: bool, a: &Args, rows: &mut Vec<Row>) {
    let nats = NatsServer::start_with(NatsOptions {
        sync_always,
        ..NatsOptions::default()
    })
    .await
    .unwrap();
    // Equal durability: PostgreSQL fsyncs exactly when nats-server does.
    let pg = Postgres::start_with(PostgresOptions {
        durable: sync_always,
        ..PostgresOptions::default()
    })
    .await
    .unwrap();
    let pipelined = raw_pipelined(&nats, a.raw_messages, a.accounts).await;
    let batches = {
        let client = async_nats::connect(nats.url()).await.unwrap();
        raw_batches(&client, "RAWB", "rawb", 1, a.raw_messages, a.accounts).await
    };
    let (limit_name, limit) = if sync_always {
        ("raw atomic batches of 1000", batches)
    } else {
        ("raw pipelined publish", pipelined)
    };
    let raw = |workload: &str, per_s: f64| Row {
        mode: name,
        workload: workload.into(),
        ops: a.raw_messages,
        per_s,
        p50_ms: None,
        p99_ms: None,
        limit: None,
        ratio_to_limit: None,
        ratio_to_peers: BTreeMap::new(),
    };
    rows.push(raw("raw pipelined publish", pipelined));
    rows.push(raw("raw atomic batches of 1000", batches));
    let solo_n = (a.commands / 20).clamp(200, 2000);
    let raw_rt = raw_round_trips(&nats, solo_n).await;
    rows.push(Row {
        mode: name,
        workload: "raw durable publish round trip, 1 in flight".into(),
        ops: raw_rt.len(),
        per_s: raw_rt.len() as f64 / raw_rt.iter().sum::<Duration>().as_secs_f64(),
        p50_ms: Some(percentile(&raw_rt, 0.5)),
        p99_ms: Some(percentile(&raw_rt, 0.99)),
        limit: None,
        ratio_to_limit: None,
        ratio_to_peers: BTreeMap::new(),
    });

    let mut config = Config {
        nats_url: nats.url(),
        database_url: pg.url(),
        http_addr: "127.0.0.1:0".into(),
        admin_token: Some(Secret::new("bench")),
        signing_key: Some(Secret::new(
            ledger_schemas::signing::SigningKey::generate("bench").unwrap(),
        )),
        ..Config::default()
    };
    config.limits.commands_in_flight_max = 100_000;
    if let Some(n) = a.batches_in_flight {
        config.limits.batches_in_flight_max = n;
    }
    let running = ledger::serve::start_command(&config).await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let accounts: Vec<String> = (0..a.accounts).map(|i| format!("acct{i}")).collect();
    fund(&client, &accounts).await;
    let hot = vec!["hot".to_owned()];
    fund(&client, &hot).await;

    for (tag, workload, set) in [
        (
            "many",
            format!(
                "consume, {} accounts, {}x{} in flight",
                a.accounts, a.clients, a.in_flight_per_client
            ),
            &accounts,
        ),
        (
            "hot",
            format!(
                "consume, 1 hot account, {}x{} in flight",
                a.clients, a.in_flight_per_client
            ),
            &hot,
        ),
    ] {
        phase(&workload);
        let (rate, lat) = consumptions(
            &client,
            set,
            a.commands,
            a.clients,
            a.in_flight_per_client,
            tag,
        )
        .await;
        let mut peers = Vec::new();
        if !a.no_peers {
            phase(&format!("{PG_PEER}: {tag}"));
            peers.push((PG_PEER, pg_peer(&pg, set, a.commands, a.clients, tag).await));
            phase(&format!("{CQRS_PEER}: {tag}"));
            let cqrs = cqrs_peer_run(&pg, set, a.commands, a.clients, a.peer_budget).await;
            peers.push((CQRS_PEER, cqrs));
        }
        eprintln!(
            "bench metrics after {workload}: {}",
            batch_metrics(running.http_addr).await
        );
        rows.push(Row {
            mode: name,
            workload: workload.clone(),
            ops: lat.len(),
            per_s: rate,
            p50_ms: Some(percentile(&lat, 0.5)),
            p99_ms: Some(percentile(&lat, 0.99)),
            limit: Some(limit_name),
            ratio_to_limit: Some(rate / limit),
            ratio_to_peers: peers.iter().map(|(p, (r, _))| (*p, rate / r)).collect(),
        });
        for (peer, (peer_rate, peer_lat)) in peers {
            rows.push(Row {
                mode: name,
                workload: format!(
                    "{peer}: {}",
                    workload.replace(
                        &format!("{}x{} in flight", a.clients, a.in_flight_per_client),
                        &format!("{} connections", a.clients),
                    )
                ),
                ops: peer_lat.len(),
                per_s: peer_rate,
                p50_ms: Some(percentile(&peer_lat, 0.5)),
                p99_ms: Some(percentile(&peer_lat, 0.99)),
                limit: None,
                ratio_to_limit: None,
                ratio_to_peers: BTreeMap::new(),
            });
        }
    }
    // Batches of 100 commands, against raw atomic batches of 1000.
    phase("consume_batch of 100");
    let (rate, lat) =
        batched_consumptions(&client, &accounts, a.commands, 100, a.clients.min(16), 4).await;
    rows.push(Row {
        mode: name,
        workload: format!("consume_batch of 100, {} accounts (items/s)", a.accounts),
        ops: lat.len() * 100,
        per_s: rate,
        p50_ms: Some(percentile(&lat, 0.5)),
        p99_ms: Some(percentile(&lat, 0.99)),
        limit: Some("raw atomic batches of 1000"),
        ratio_to_limit: Some(rate / batches),
        ratio_to_peers: BTreeMap::new(),
    });
    // One client, one request at a time: latency against a raw round trip.
    let solo = vec!["solo".to_owned()];
    fund(&client, &solo).await;
    phase("consume, 1 client, 1 in flight");
    let lat = one_at_a_time(&client, &solo[0], solo_n).await;
    rows.push(Row {
        mode: name,
        workload: "consume, 1 client, 1 in flight (p99 ratio)".into(),
        ops: lat.len(),
        per_s: lat.len() as f64 / lat.iter().sum::<Duration>().as_secs_f64(),
        p50_ms: Some(percentile(&lat, 0.5)),
        p99_ms: Some(percentile(&lat, 0.99)),
        limit: Some("raw durable publish round trip p99"),
        ratio_to_limit: Some(percentile(&lat, 0.99) / percentile(&raw_rt, 0.99)),
        ratio_to_peers: BTreeMap::new(),
    });
    phase("usage intake, pipelined");
    let rate = intake(&client, &accounts, a.commands).await;
    let intake_rate = rate;
    rows.push(Row {
        mode: name,
        workload: format!("usage intake, {} accounts, pipelined", a.accounts),
        ops: a.commands,
        per_s: rate,
        p50_ms: None,
        p99_ms: None,
        limit: Some("raw pipelined publish"),
        ratio_to_limit: Some(rate / pipelined),
        ratio_to_peers: BTreeMap::new(),
    });
    let _ = intake_rate;
    phase("usage intake, batch messages of 100");
    let rate = intake_batches(&client, &accounts, a.commands, 100).await;
    rows.push(Row {
        mode: name,
        workload: format!(
            "usage intake, batch messages of 100, {} accounts",
            a.accounts
        ),
        ops: a.commands,
        per_s: rate,
        p50_ms: None,
        p99_ms: None,
        limit: Some("raw atomic batches of 1000"),
        ratio_to_limit: Some(rate / batches),
        ratio_to_peers: BTreeMap::new(),
    });
    running.stop().await.unwrap();

    // Projector lag at a fixed offered rate, with the projections running.
    let running = {
        let mut p = ledger::serve::Process::connect(&config, &[]).await.unwrap();
        ledger::serve::command(&mut p, &config).await.unwrap();
        ledger::serve::projections(&mut p, &config);
        p.serve(
            &config,
            ledger::api::openapi::document(&ledger::api::openapi::Accepts::of(&config).unwrap()),
        )
        .await
        .unwrap()
    };
    phase("projector lag");
    let (achieved, lags) = projector_lag(&client, &pg.url(), &accounts, a.lag_duration).await;
    running.stop().await.unwrap();
    rows.push(Row {
        mode: name,
        workload: format!("projector lag (ms), {LAG_OFFERED_PER_S} events/s offered"),
        ops: lags.len(),
        per_s: achieved,
        p50_ms: Some(percentile(&lags, 0.5)),
        p99_ms: Some(percentile(&lags, 0.99)),
        limit: None,
        ratio_to_limit: None,
        ratio_to_peers: BTreeMap::new(),
    });

    // The read side over the stream the workloads above wrote.
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("LEDGER").await.unwrap();
    let (events, replay) = ordered_replay(&stream).await;
    let copy = copy_rows(&pg.connection_string_for("postgres"), 200_000).await;
    let trust = ledger_schemas::signing::Trust {
        keys: std::sync::Arc::new(config.keys().unwrap().public),
        checkpoint_subject: config.checkpoint_subject(),
    };
    let catch_up = projector_catch_up(
        &pg.connection_string_for("postgres"),
        &pg,
        &stream,
        &trust,
        &format!("catchup_{}", if sync_always { "sync" } else { "default" }),
    )
    .await;
    let started = Instant::now();
    let report = ledger_projections::rebuild::rebuild(
        &pg.connection_string_for("postgres"),
        &stream,
        &trust,
        ledger_projections::projector::Projection::Accounts,
        |_, _| {},
    )
    .await
    .unwrap();
    let rebuild = report.events as f64 / started.elapsed().as_secs_f64();
    let slower = replay.min(copy);
    let read_row = |workload: &str, ops: u64, per_s: f64, limit: Option<(&'static str, f64)>| Row {
        mode: name,
        workload: workload.into(),
        ops: ops as usize,
        per_s,
        p50_ms: None,
        p99_ms: None,
        limit: limit.map(|l| l.0),
        ratio_to_limit: limit.map(|l| per_s / l.1),
        ratio_to_peers: BTreeMap::new(),
    };
    let started = Instant::now();
    let mut verifier =
        ledger::audit::Verifier::new("ledger.events").with_keys((*trust.keys).clone());
    ledger::audit::read_stream(&stream, 1, None, |r| verifier.check_owned(r))
        .await
        .unwrap();
    verifier.finish();
    assert_eq!(verifier.findings_total, 0, "{:?}", verifier.findings);
    let verify = verifier.events as f64 / started.elapsed().as_secs_f64();
    rows.push(read_row("ordered replay of LEDGER", events, replay, None));
    rows.push(read_row(
        "audit verify (chains, postings, replay)",
        verifier.events,
        verify,
        Some(("ordered replay", replay)),
    ));
    rows.push(read_row("COPY credit_history rows", 200_000, copy, None));
    rows.push(read_row(
        "projector catch-up (accounts)",
        events,
        catch_up,
        Some(("target 50000 events/s", 50_000.0)),
    ));
    rows.push(read_row(
        "rebuild (accounts)",
        report.events,
        rebuild,
        Some(("slower of replay and COPY", slower)),
    ));
}

/// The same allocator as the `ledger` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Marks the start of a workload on stderr, with the time, so a profile
/// sampled alongside can be cut by workload.
fn phase(name: &str) {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("bench phase {:.3} {name}", at.as_secs_f64());
}

/// What signing costs: one seal (an Ed25519 signature over the heads) per
/// append, and its check by a reader, measured on this machine's CPU; and
/// the share of one core that signing the measured consume rate's appends
/// takes, at the batch sizes the committer made (bench metrics above) or
/// at worst one event per append.
fn signing(rows: &mut Vec<Row>) {
    use ledger_schemas::signing::{PublicKeys, SigningKey, open_seal, seal};
    let key = SigningKey::parse(&SigningKey::generate("bench").unwrap()).unwrap();
    let keys = PublicKeys::new([key.public()]);
    let consume_rate = rows
        .iter()
        .filter(|r| r.workload.starts_with("consume, ") && r.workload.contains("accounts"))
        .map(|r| r.per_s)
        .fold(0.0, f64::max);
    let chains: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("ledger.events.acct.a{i}"),
                ledger_schemas::ChainHash::GENESIS.next(&[i as u8]).to_hex(),
            )
        })
        .collect();
    for n in [1usize, 100] {
        let messages = || chains[..n].iter().map(|(s, c)| (s.as_str(), c.as_str()));
        let rounds = 4000 / n.min(10);
        let started = Instant::now();
        let mut sealed = (String::new(), String::new());
        for _ in 0..rounds {
            sealed = seal(&key, messages());
        }
        let per_s = rounds as f64 / started.elapsed().as_secs_f64();
        rows.push(Row {
            mode: "cpu",
            workload: format!("sign one append of {n} event(s) (appends/s)"),
            ops: rounds,
            per_s,
            p50_ms: None,
            p99_ms: None,
            limit: (consume_rate > 0.0).then_some("one core at the measured consume rate"),
            // Events/s over events one core signs per second at this size.
            ratio_to_limit: (consume_rate > 0.0).then(|| consume_rate / (per_s * n as f64)),
            ratio_to_peers: BTreeMap::new(),
        });
        let started = Instant::now();
        for _ in 0..rounds {
            open_seal(&keys, n, Some(&sealed.0), Some(&sealed.1)).unwrap();
        }
        let per_s = rounds as f64 / started.elapsed().as_secs_f64();
        rows.push(Row {
            mode: "cpu",
            workload: format!("check one append's signature, {n} event(s) (appends/s)"),
            ops: rounds,
            per_s,
            p50_ms: None,
            p99_ms: None,
            limit: None,
            ratio_to_limit: None,
            ratio_to_peers: BTreeMap::new(),
        });
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut rows = Vec::new();
    let run = |m: &str| a.only_mode.as_deref().is_none_or(|only| only == m);
    if run("default") {
        mode("default sync", false, &a, &mut rows).await;
    }
    if run("always") {
        mode("sync always", true, &a, &mut rows).await;
    }
    signing(&mut rows);
    println!(
        "{:<13} {:<56} {:>8} {:>10} {:>8} {:>8}  ratio to limit; to peer",
        "mode", "workload", "ops", "per s", "p50 ms", "p99 ms"
    );
    for r in &rows {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:<56} {:>8} {:>10.0} {:>8} {:>8}  {}{}",
            r.mode,
            r.workload,
            r.ops,
            r.per_s,
            opt(r.p50_ms),
            opt(r.p99_ms),
            match (r.ratio_to_limit, r.limit) {
                (Some(x), Some(l)) => format!("{x:.3} x {l}"),
                _ => "-".into(),
            },
            r.ratio_to_peers
                .iter()
                .map(|(p, x)| format!("; {x:.3} x {p}"))
                .collect::<String>()
        );
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-ledger.json");
    std::fs::write(&out, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    println!("\nwritten to {}", out.display());
}
