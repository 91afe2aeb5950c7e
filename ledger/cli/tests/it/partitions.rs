//! Commands routed by account (`ledger.cmd.<name>.<account_id>`): nats-server
//! maps them onto partitions (deploy/nats/accounts.conf), and each `ledger`
//! process serves the partitions it leases; a stopped process's partitions
//! are taken over by the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::support::*;

const PARTITIONS: u32 = 6;

/// Partition → the instance holding its lease, as the bucket says.
async fn holders(client: &async_nats::Client) -> BTreeMap<u32, String> {
    let js = async_nats::jetstream::new(client.clone());
    let Ok(kv) = js.get_key_value("LEDGER_PARTITIONS").await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    let Ok(mut keys) = kv.keys().await else {
        return out;
    };
    while let Some(Ok(k)) = keys.next().await {
        if let Some(p) = k.strip_prefix("p.").and_then(|p| p.parse().ok())
            && let Ok(Some(v)) = kv.get(&k).await
        {
            out.insert(p, String::from_utf8_lossy(&v).into_owned());
        }
    }
    out
}

/// Waits until every partition is held, by `processes` instances with an
/// even share each; the holders.
async fn settled(client: &async_nats::Client, processes: usize) -> BTreeMap<u32, String> {
    wait_for(Duration::from_secs(30), || async {
        let h = holders(client).await;
        let mut per: BTreeMap<&String, usize> = BTreeMap::new();
        for v in h.values() {
            *per.entry(v).or_default() += 1;
        }
        let share = (PARTITIONS as usize).div_ceil(processes);
        let ok = h.len() == PARTITIONS as usize
            && per.len() == processes
            && per.values().all(|n| *n == share);
        ok.then_some(h)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_account_subjects_reach_the_partition_holder_from_every_account() {
    let servers = Servers::start().await;
    let mut config = servers.config();
    config.ledger.partition_lease_s = 3;
    let running = ledger_cli::start(&config, ledger_cli::Role::Command)
        .await
        .unwrap();
    let operator = servers.client().await;
    settled(&operator, 1).await;
    funded(&operator, "pa", "10").await;
    // From another NATS account (a service user), across the import.
    let sms = servers.client_as("sms").await;
    assert_eq!(
        try_consume_on(&sms, "ledger.cmd.consume.pa", "pa-1", "pa").await,
        Some(true)
    );
    // From the ledger's own account.
    assert_eq!(
        try_consume_on(&operator, "ledger.cmd.consume.pa", "pa-2", "pa").await,
        Some(true)
    );
    // The subject's account and the request's must agree.
    let r = operator
        .request(
            "ledger.cmd.consume.pa",
            consume_one("pa-3", "other").to_string().into(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(code(&v), Some("invalid_request"), "{v}");
    // A service may still spend only for itself.
    let r = sms
        .request(
            "ledger.cmd.consume.pa",
            json!({"idempotency_key": "pa-4", "account_id": "pa", "service": "email",
                "quantity": 1, "credits": "1"})
            .to_string()
            .into(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(code(&v), Some("forbidden"), "{v}");
    let b = cmd(&operator, "get_balance", json!({"account_id": "pa"})).await;
    assert_eq!(b["balances"]["general"], "8", "{b}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_partitions_and_a_killed_ones_are_taken_over() {
    let servers = Servers::start().await;
    let env = [("LEDGER_PARTITION_LEASE_S", "3")];
    let mut processes: Vec<_> = (0..3)
        .map(|_| spawn_ledger(&servers, "command", &env))
        .collect();
    let operator = servers.client().await;
    let before = settled(&operator, 3).await;
    let accounts: Vec<String> = (0..12).map(|i| format!("pt{i}")).collect();
    for a in &accounts {
        funded(&operator, a, "100000").await;
    }
    let sms = servers.client_as("sms").await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for chunk in accounts.chunks(3) {
        let (sms, acked, stop, chunk) = (sms.clone(), acked.clone(), stop.clone(), chunk.to_vec());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = &chunk[i as usize % chunk.len()];
                let key = format!("{a}-{i}");
                let subject = format!("ledger.cmd.consume.{a}");
                if try_consume_on(&sms, &subject, &key, a).await == Some(true) {
                    acked.lock().unwrap().push(key);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = processes.remove(0);
    drop(victim); // killed (kill_on_drop): its leases are not given up
    let after = settled(&operator, 2).await;
    let gone: BTreeSet<&String> = before
        .values()
        .filter(|v| !after.values().any(|a| a == *v))
        .collect();
    assert_eq!(gone.len(), 1, "one holder gone: {before:?} → {after:?}");
    let served_before = acked.lock().unwrap().len();
    // Commands succeed again (workers stuck on a request to the killed
    // process wait out its timeout first: on a loaded machine, seconds).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() <= served_before + 10
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > served_before,
        "no command succeeded after the takeover"
    );
    acknowledged_exactly_once(&operator, &accounts, &acked, 100_000).await;
    drop(processes);
}
