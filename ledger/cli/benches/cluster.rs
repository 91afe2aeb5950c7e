//! The ledger scaled out, measured in one run on this machine:
//!
//! `cargo bench -p ledger-cli --bench cluster -- [--quick] [--accounts N] [--commands N]
//! [--clients N]`
//!
//! Starts a three-node JetStream cluster (the shipped accounts and
//! permissions, `sync_interval: always`, R3 streams) and PostgreSQL, then:
//! - the raw cluster limit: atomic batches of 1,000 event-sized messages
//!   into an R3 stream, eight in flight (what the ledger's group commit
//!   sends), from the same machine;
//! - consumptions over many funded accounts from concurrent clients on
//!   `ledger.cmd.consume.<account>` (the partitioned subjects), with one,
//!   two and three `ledger serve --role command` processes, each run as a
//!   ratio to that limit;
//! - the CPU each part spent per 1,000 commands (from /proc: every `ledger`
//!   process, the three nats-servers, the clients), from which a real
//!   cluster's capacity follows.
//!
//! Everything shares this machine's cores: processes compete with each
//! other and with nats-server, so throughput does not grow with processes
//! here; the per-process cost is what carries over.
//!
//! Prints a table and writes `target/bench-cluster.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[path = "../../benches/shared/load.rs"]
mod load;
#[path = "../../benches/shared/raw.rs"]
mod raw;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ledger_testkit::{NatsCluster, NatsOptions, Postgres};
use serde_json::json;

/// The benchmark's signing key (a fixed seed).
const SIGNING_KEY: &str = "bench-1:CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

struct Args {
    accounts: usize,
    commands: usize,
    clients: usize,
    in_flight: usize,
    raw_messages: usize,
}

fn args() -> Args {
    let mut a = Args {
        accounts: 5_000,
        commands: 30_000,
        clients: 64,
        in_flight: 8,
        raw_messages: 60_000,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--accounts" => a.accounts = value().expect("--accounts N"),
            "--commands" => a.commands = value().expect("--commands N"),
            "--clients" => a.clients = value().expect("--clients N"),
            "--quick" => {
                a.accounts = 100;
                a.commands = 1_000;
                a.clients = 8;
                a.raw_messages = 3_000;
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

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field, stime the 15th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    let per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks / per_s
}

/// A `ledger serve --role command` process on the cluster (killed on drop).
fn spawn_ledger(nats: &NatsCluster, pg: &Postgres) -> tokio::process::Child {
    let monitors = format!(
        "[{}]",
        nats.monitor_urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["serve", "--role", "command"])
        .env("LEDGER_NATS_URL", nats.urls())
        .env("LEDGER_NATS_USER", "ledger")
        .env("LEDGER_NATS_PASSWORD", "ledger-dev")
        .env("LEDGER_SIGNING_KEY", SIGNING_KEY)
        .env(
            "LEDGER_DATABASE_URL",
            format!("postgres://ledger@127.0.0.1:{}/ledger", pg.port()),
        )
        .env("LEDGER_HTTP_ADDR", "127.0.0.1:0")
        .env("LEDGER_STREAM_REPLICAS", "3")
        .env("LEDGER_NATS_MONITOR_URLS", monitors)
        .env("LEDGER_PARTITION_LEASE_S", "3")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the ledger binary starts")
}

/// Waits until `processes` instances hold all six partitions evenly.
async fn partitions_settled(client: &async_nats::Client, processes: usize) {
    let started = Instant::now();
    loop {
        let js = async_nats::jetstream::new(client.clone());
        let mut holders: BTreeMap<String, usize> = BTreeMap::new();
        let mut held = 0;
        if let Ok(kv) = js.get_key_value("LEDGER_PARTITIONS").await
            && let Ok(mut keys) = kv.keys().await
        {
            while let Some(Ok(k)) = keys.next().await {
                if k.starts_with("p.")
                    && let Ok(Some(v)) = kv.get(&k).await
                {
                    held += 1;
                    *holders
                        .entry(String::from_utf8_lossy(&v).into_owned())
                        .or_default() += 1;
                }
            }
        }
        let share = 6usize.div_ceil(processes);
        if held == 6 && holders.len() == processes && holders.values().all(|n| *n == share) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "partitions never settled on {processes} processes: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `commands` consumptions on the partitioned subjects from `clients`
/// clients with `in_flight` each: (commands/s, sorted latencies).
async fn consumptions(
    client: &async_nats::Client,
    accounts: &[String],
    a: &Args,
    tag: &str,
) -> (f64, Vec<Duration>) {
    let per_client = a.commands / a.clients;
    let (accounts, tag) = (accounts.to_vec(), tag.to_owned());
    load::closed_loop(
        client,
        b"{\"event\":",
        a.clients,
        per_client,
        a.in_flight,
        move |c, i| {
            let account = &accounts[(c * per_client + i) % accounts.len()];
            let body = json!({"idempotency_key": format!("{tag}-{c}-{i}"),
                "account_id": account, "service": "sms", "quantity": 1, "credits": "0.01"});
            (format!("ledger.cmd.consume.{account}"), body.to_string())
        },
    )
    .await
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted
        .get(i)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[derive(Debug, serde::Serialize)]
struct Row {
    processes: usize,
    commands: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio_to_raw_limit: f64,
    /// CPU seconds per 1,000 commands: each ledger process, their sum, the
    /// three nats-servers together, the clients.
    ledger_cpu_s_per_1k: Vec<f64>,
    ledger_cpu_s_per_1k_total: f64,
    nats_cpu_s_per_1k: f64,
    clients_cpu_s_per_1k: f64,
}

#[tokio::main]
async fn main() {
    let a = args();
    let options = NatsOptions {
        accounts: true,
        sync_always: true,
        ..Default::default()
    };
    let (nats, pg) = tokio::join!(NatsCluster::start(3, options), Postgres::start());
    let (nats, pg) = (
        nats.expect("the cluster starts"),
        pg.expect("postgres starts"),
    );
    pg.create_owned_database("ledger").await.unwrap();
    let client = async_nats::ConnectOptions::with_user_and_password(
        "operator".into(),
        "operator-dev".into(),
    )
    .connect(nats.urls().split(',').collect::<Vec<_>>())
    .await
    .unwrap();
    let nats_pids: Vec<u32> = nats.nodes.iter().filter_map(|n| n.pid()).collect();
    eprintln!("== raw limit: atomic batches of 1000 into an R3 stream");
    let limit = raw::raw_batches(&client, "RAW_R3", "rawr3", 3, a.raw_messages, 1000).await;
    let accounts: Vec<String> = (0..a.accounts).map(|i| format!("b{i}")).collect();
    let mut rows = Vec::new();
    for processes in 1..=3 {
        let mut ledgers: Vec<_> = (0..processes).map(|_| spawn_ledger(&nats, &pg)).collect();
        partitions_settled(&client, processes).await;
        if processes == 1 {
            eprintln!("== funding {} accounts", accounts.len());
            let mut pending = FuturesUnordered::new();
            for acct in &accounts {
                let open = json!({"idempotency_key": format!("open-{acct}"), "account_id": acct});
                let grant = json!({"idempotency_key": format!("fund-{acct}"), "account_id": acct,
                    "bucket": "general", "credits": "1000000", "source": "promotion"});
                let client = client.clone();
                let acct = acct.clone();
                pending.push(async move {
                    for (name, body) in [("open_account", open), ("grant", grant)] {
                        let r = client
                            .request(format!("ledger.cmd.{name}.{acct}"), body.to_string().into())
                            .await
                            .unwrap();
                        load::assert_no_error(&r.payload);
                    }
                });
                if pending.len() >= 64 {
                    pending.next().await;
                }
            }
            while pending.next().await.is_some() {}
        }
        // Warm every process's accounts, then measure.
        consumptions(
            &client,
            &accounts,
            &Args {
                commands: a.accounts.max(a.clients),
                ..a
            },
            &format!("warm{processes}"),
        )
        .await;
        let pids: Vec<u32> = ledgers.iter().filter_map(|c| c.id()).collect();
        let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let nats_before: f64 = nats_pids.iter().map(|p| cpu_seconds(*p)).sum();
        let me_before = cpu_seconds(std::process::id());
        eprintln!(
            "== {processes} ledger process(es): {} consumptions",
            a.commands
        );
        let (rate, lat) = consumptions(&client, &accounts, &a, &format!("run{processes}")).await;
        let per_1k = |cpu: f64| cpu / lat.len() as f64 * 1000.0;
        let ledger_cpu: Vec<f64> = pids
            .iter()
            .zip(&before)
            .map(|(p, b)| per_1k(cpu_seconds(*p) - b))
            .collect();
        rows.push(Row {
            processes,
            commands: lat.len(),
            per_s: rate,
            p50_ms: ms(&lat, 0.5),
            p99_ms: ms(&lat, 0.99),
            ratio_to_raw_limit: rate / limit,
            ledger_cpu_s_per_1k_total: ledger_cpu.iter().sum(),
            ledger_cpu_s_per_1k: ledger_cpu,
            nats_cpu_s_per_1k: per_1k(
                nats_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - nats_before,
            ),
            clients_cpu_s_per_1k: per_1k(cpu_seconds(std::process::id()) - me_before),
        });
        // SIGTERM: each gives its partitions up at once for the next round.
        for l in &mut ledgers {
            if let Some(pid) = l.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for mut l in ledgers {
            let _ = tokio::time::timeout(Duration::from_secs(20), l.wait()).await;
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "\nThree-node JetStream cluster (R3, sync_interval: always) on one machine of {cores} \
         cores: every process below shares them.\nRaw cluster limit (atomic batches of 1000, \
         8 in flight): {limit:.0} messages/s\n"
    );
    println!(
        "{:>9} {:>10} {:>9} {:>9} {:>9} {:>22} {:>12} {:>12}",
        "processes",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "× limit",
        "ledger CPU s/1k (each)",
        "nats s/1k",
        "clients s/1k"
    );
    for r in &rows {
        let each: Vec<String> = r
            .ledger_cpu_s_per_1k
            .iter()
            .map(|c| format!("{c:.3}"))
            .collect();
        println!(
            "{:>9} {:>10.0} {:>9.1} {:>9.1} {:>9.3} {:>22} {:>12.3} {:>12.3}",
            r.processes,
            r.per_s,
            r.p50_ms,
            r.p99_ms,
            r.ratio_to_raw_limit,
            each.join(" "),
            r.nats_cpu_s_per_1k,
            r.clients_cpu_s_per_1k
        );
    }
    let unique: BTreeSet<usize> = rows.iter().map(|r| r.processes).collect();
    assert_eq!(unique.len(), 3);
    let out = ledger_testkit::workspace_root().join("target/bench-cluster.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "cores": cores,
            "raw_limit_messages_per_s": limit,
            "rows": rows,
        }))
        .unwrap(),
    )
    .unwrap();
    eprintln!("written {}", out.display());
}
