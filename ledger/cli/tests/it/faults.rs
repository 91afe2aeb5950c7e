//! Two processes on the same accounts, and nats-server killed under load.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ledger_schemas::Bucket;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::support::*;

/// Sends a command until it gets an outcome, retrying what the contract
/// says is safe to retry (with the same key).
async fn until_outcome(client: &async_nats::Client, name: &str, body: Value) -> Value {
    for _ in 0..200 {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(format!("ledger.cmd.{name}"), body.to_string().into()),
        )
        .await;
        if let Ok(Ok(m)) = reply {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            match code(&v) {
                Some("conflict_retry") | Some("unavailable") => {}
                _ => return v,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no outcome for {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_the_same_accounts_stay_exact() {
    let servers = Servers::start().await;
    let (_a, _b) = (
        spawn_ledger(&servers, "command", &[]),
        spawn_ledger(&servers, "command", &[]),
    );
    let client = servers.client().await;
    wait_for_instances(&client, 2).await;
    let accounts = ["p1", "p2", "p3"];
    for a in accounts {
        let r = until_outcome(
            &client,
            "open_account",
            json!({"idempotency_key": format!("o-{a}"), "account_id": a}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
        let r = until_outcome(
            &client,
            "grant",
            json!({"idempotency_key": format!("g-{a}"),
            "account_id": a, "bucket": "general", "credits": "10", "source": "promotion"}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
    }
    // Requests spread over both processes (one NATS queue group): 32 clients
    // x 20 consumptions of 0.25 over 3 accounts = 160 credits asked of 30.
    let mut tasks = Vec::new();
    for c in 0..32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted: HashMap<&str, Decimal> = HashMap::new();
            for i in 0..20 {
                let a = accounts[(c + i) % 3];
                let r = until_outcome(
                    &client,
                    "consume",
                    json!({"idempotency_key": format!("c{c}-{i}"),
                    "account_id": a, "service": "email", "quantity": 1, "credits": "0.25"}),
                )
                .await;
                match code(&r) {
                    None => *accepted.entry(a).or_default() += Decimal::from_str("0.25").unwrap(),
                    Some("insufficient_credits") => {}
                    Some(other) => panic!("{other}: {r}"),
                }
            }
            accepted
        }));
    }
    let mut total: HashMap<&str, Decimal> = HashMap::new();
    for t in tasks {
        for (a, d) in t.await.unwrap() {
            *total.entry(a).or_default() += d;
        }
    }
    for a in accounts {
        assert_eq!(
            total[a],
            Decimal::from(10),
            "account {a} spent exactly its credits"
        );
        let replay = replayed(&client, a).await;
        assert_eq!(
            replay.balance(&Bucket::general()),
            Decimal::ZERO,
            "account {a}"
        );
        let consumed = log_of(&client, a)
            .await
            .iter()
            .filter(|e| e.event_type().as_str() == "credits_consumed")
            .count();
        assert_eq!(
            consumed, 40,
            "account {a}: one event per accepted consumption"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_under_load_loses_no_acknowledged_command() {
    let mut servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "load", "1000000").await;

    // Clients send until told to stop, which is only after the restart, so
    // the load runs before, through and after the outage.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = client.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut results: Vec<(String, Option<String>, Instant, Instant)> = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let key = format!("c{c}-{i}");
                let body = json!({"idempotency_key": key, "account_id": "load",
                    "service": "sms", "quantity": 1, "credits": "1"});
                let sent = Instant::now();
                let reply = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.request("ledger.cmd.consume", body.to_string().into()),
                )
                .await;
                let acked = match reply {
                    Ok(Ok(m)) => {
                        let v: Value = serde_json::from_slice(&m.payload).unwrap();
                        match code(&v) {
                            None => Some(v["event"]["event_id"].as_str().unwrap().to_owned()),
                            Some("unavailable") | Some("conflict_retry") => None,
                            Some(other) => panic!("not retryable: {other}: {v}"),
                        }
                    }
                    _ => None,
                };
                results.push((key, acked, sent, Instant::now()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            results
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Instant::now();
    servers.nats.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    servers.nats.start_again().await.unwrap();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    let client = servers.client().await;
    let log = log_of(&client, "load").await;
    let in_log = |key: &str| -> Vec<String> {
        log.iter()
            .filter(|e| {
                e.idempotency_key
                    .as_ref()
                    .is_some_and(|k| k.as_str() == key)
            })
            .map(|e| e.event_id.to_string())
            .collect()
    };
    // The fault hit the load: answers before the kill and after the restart,
    // and requests in flight across the outage (whatever became of them).
    let acked_before = results
        .iter()
        .filter(|r| r.1.is_some() && r.3 < killed)
        .count();
    let acked_after = results
        .iter()
        .filter(|r| r.1.is_some() && r.2 > restarted)
        .count();
    let across = results
        .iter()
        .filter(|r| r.2 < restarted && r.3 > killed)
        .count();
    assert!(
        acked_before > 0 && acked_after > 0 && across > 0,
        "the outage must fall inside the load: {acked_before} before, {acked_after} after, {across} across"
    );
    for (key, reply, _, _) in &results {
        let found = in_log(key);
        match reply {
            Some(event_id) => {
                assert_eq!(
                    found,
                    vec![event_id.clone()],
                    "acknowledged {key} is in the log once"
                );
            }
            None => {
                assert!(
                    found.len() <= 1,
                    "unacknowledged {key} is in the log at most once"
                );
            }
        }
    }
    // Retrying every unanswered command (same key) gives one event each.
    for (key, reply, _, _) in &results {
        if reply.is_none() {
            let r = until_outcome(
                &client,
                "consume",
                json!({"idempotency_key": key,
                "account_id": "load", "service": "sms", "quantity": 1, "credits": "1"}),
            )
            .await;
            assert!(code(&r).is_none(), "{r}");
        }
    }
    let log = log_of(&client, "load").await;
    let consumed = log
        .iter()
        .filter(|e| e.event_type().as_str() == "credits_consumed")
        .count();
    assert_eq!(consumed, results.len(), "every command once, none twice");
    let replay = replayed(&client, "load").await;
    assert_eq!(
        replay.balance(&Bucket::general()),
        Decimal::from(1_000_000 - results.len() as i64)
    );
    ledger.stop().await.unwrap();
}
