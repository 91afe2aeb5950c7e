//! The usage intake: exactly once per usage id, dead letters that do not block.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

fn usage(id: &str, account: &str, quantity: u64) -> String {
    json!({"usage_id": id, "account_id": account, "service": "sms", "quantity": quantity,
           "credits": null, "occurred_at": "2026-11-21T10:00:00.000Z", "attributes": {"to": "+91"}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_usage_is_consumed_once_and_bad_ones_are_dead_lettered() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "acme", "1").await;
    let js = async_nats::jetstream::new(client.clone());
    let mut outcomes = client.subscribe("ledger.outcome.sms.acme").await.unwrap();

    // Twice with the same Nats-Msg-Id (JetStream drops the second), and once
    // more with another id but the same usage id (the ledger drops it).
    publish(&js, "m-1", "ledger.usage.sms.acme", usage("m-1", "acme", 2)).await;
    publish(&js, "m-1", "ledger.usage.sms.acme", usage("m-1", "acme", 2)).await;
    publish(
        &js,
        "m-1-again",
        "ledger.usage.sms.acme",
        usage("m-1", "acme", 2),
    )
    .await;
    // Garbage, then a subject/body mismatch: recorded, never blocking.
    publish(&js, "junk", "ledger.usage.sms.acme", "{not json").await;
    publish(
        &js,
        "mismatch",
        "ledger.usage.sms.acme",
        usage("m-x", "other", 1),
    )
    .await;
    // Too expensive: recorded as usage_rejected.
    publish(
        &js,
        "m-2",
        "ledger.usage.sms.acme",
        usage("m-2", "acme", 1000),
    )
    .await;
    publish(&js, "m-3", "ledger.usage.sms.acme", usage("m-3", "acme", 1)).await;

    // Four outcomes: the duplicate usage id gets the original outcome again
    // (same event), so its sender hears what became of it.
    let mut seen = Vec::new();
    let mut m1_events = Vec::new();
    while seen.len() < 4 {
        let m = tokio::time::timeout(Duration::from_secs(10), outcomes.next())
            .await
            .expect("outcomes arrive")
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if v["data"]["usage_id"] == "m-1" {
            m1_events.push(v["event_id"].clone());
        }
        seen.push((
            v["type"].as_str().unwrap().to_owned(),
            v["data"]["usage_id"].as_str().unwrap().to_owned(),
        ));
    }
    seen.sort();
    assert_eq!(m1_events.len(), 2);
    assert_eq!(
        m1_events[0], m1_events[1],
        "a duplicate is answered with the original event"
    );
    assert_eq!(
        seen,
        vec![
            ("credits_consumed".into(), "m-1".into()),
            ("credits_consumed".into(), "m-1".into()),
            ("credits_consumed".into(), "m-3".into()),
            ("usage_rejected".into(), "m-2".into()),
        ]
    );
    // Give a late duplicate time to (wrongly) show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log_of(&client, "acme").await;
    let for_m1 = log
        .iter()
        .filter(|e| serde_json::to_value(e).unwrap()["data"]["usage_id"] == "m-1")
        .count();
    assert_eq!(for_m1, 1, "usage m-1 is consumed exactly once");
    let b = cmd(&client, "get_balance", json!({"account_id": "acme"})).await;
    assert_eq!(b["balances"]["general"], "0.9775");

    let mut dead = js.get_stream("LEDGER_USAGE_DEAD").await.unwrap();
    let mut n = 0;
    for _ in 0..50 {
        n = dead.info().await.unwrap().state.messages;
        if n >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 2, "both bad usages are kept");
    let first = dead.direct_get(1).await.unwrap();
    let reason = first
        .headers
        .get("Ledger-Dead-Reason")
        .unwrap()
        .as_str()
        .to_owned();
    assert!(reason.starts_with("invalid_request"), "{reason}");
    let metrics = metrics_text(ledger.http_addr).await;
    assert!(
        metrics.contains("ledger_intake_usages_total{result=\"dead_letter\"} 2"),
        "{metrics}"
    );
    ledger.stop().await.unwrap();
}
