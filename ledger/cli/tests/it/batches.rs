//! Batches: `consume_batch` (NATS and HTTP) and usage batch messages. Items
//! are independent, each decided once on its own key and answered in order.

use std::time::Duration;

use ledger_schemas::EventData;
use serde_json::{Value, json};

use crate::support::*;

fn item(key: &str, account: &str, credits: &str) -> Value {
    json!({"idempotency_key": key, "account_id": account, "service": "email",
           "quantity": 1, "credits": credits})
}

fn consumed(log: &[ledger_schemas::EventEnvelope]) -> usize {
    log.iter()
        .filter(|e| matches!(e.body, EventData::CreditsConsumed(_)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_item_once_in_order_whole_or_in_part() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "b1", "2").await;
    funded(&client, "b2", "10").await;
    let items = vec![
        item("i-1", "b1", "1.5"),
        item("i-2", "b1", "1.5"), // refused: 0.5 left
        item("i-3", "b2", "4"),
        json!({"idempotency_key": "i-4", "account_id": "b2", "service": "email", "quantity": 0}),
        item("i-5", "nobody", "1"),
        item("i-6", "b2", "4"),
    ];
    let first = cmd(&client, "consume_batch", json!({"items": items})).await;
    let results = first["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 6);
    assert!(code(&results[0]).is_none(), "{}", results[0]);
    assert_eq!(code(&results[1]), Some("insufficient_credits"));
    assert!(code(&results[2]).is_none());
    assert_eq!(code(&results[3]), Some("invalid_request"));
    assert_eq!(code(&results[4]), Some("unknown_account"));
    assert!(code(&results[5]).is_none());
    assert_eq!(results[5]["balances"]["general"], "2");

    // Repeated whole: every item's original outcome, and no new effect.
    let again = cmd(&client, "consume_batch", json!({"items": items})).await;
    assert_eq!(again, first);
    // In part, in another order, with a new item beside the old ones.
    let part = vec![items[5].clone(), item("i-7", "b2", "1"), items[1].clone()];
    let part_reply = cmd(&client, "consume_batch", json!({"items": part})).await;
    let p = part_reply["results"].as_array().unwrap();
    assert_eq!(p[0], results[5]);
    assert!(code(&p[1]).is_none(), "{}", p[1]);
    assert_eq!(p[2], results[1]);
    // The same key singly is the same request as in the batch.
    assert_eq!(cmd(&client, "consume", items[0].clone()).await, results[0]);
    assert_eq!(consumed(&log_of(&client, "b1").await), 1);
    assert_eq!(consumed(&log_of(&client, "b2").await), 3);

    // Over the limit: refused whole, nothing appended.
    let before = stream_len(&client).await;
    let many: Vec<Value> = (0..1001)
        .map(|i| item(&format!("x-{i}"), "b2", "0.001"))
        .collect();
    let over = cmd(&client, "consume_batch", json!({"items": many})).await;
    assert_eq!(code(&over), Some("invalid_request"), "{over}");
    assert_eq!(over["error"]["details"]["limit"], "batch_items_max");
    let empty = cmd(&client, "consume_batch", json!({"items": []})).await;
    assert_eq!(code(&empty), Some("invalid_request"), "{empty}");
    assert_eq!(stream_len(&client).await, before);

    // A full batch of 1,000 over HTTP, each item its own key.
    let full: Vec<Value> = (0..1000)
        .map(|i| {
            item(
                &format!("h-{i}"),
                if i % 2 == 0 { "b1" } else { "b2" },
                "0.001",
            )
        })
        .collect();
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/consumptions/batch", ledger.http_addr);
    let resp = http
        .post(&url)
        .bearer_auth(ADMIN)
        .json(&json!({"items": full}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 1000);
    assert!(r.iter().all(|x| code(x).is_none()), "every item consumed");
    assert_eq!(r[10]["event"]["idempotency_key"], "h-10");
    assert_eq!(consumed(&log_of(&client, "b1").await), 501);
    // Without a token, nothing.
    let resp = http
        .post(&url)
        .json(&json!({"items": [item("u-1", "b1", "0.001")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    ledger.stop().await.unwrap();
}

fn usage(id: &str, account: &str, service: &str) -> Value {
    json!({"usage_id": id, "account_id": account, "service": service, "quantity": 1,
           "credits": "0.5", "occurred_at": "2026-11-21T10:00:00.000Z", "attributes": {}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_batch_message_decides_each_usage_exactly_once() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "u1", "10").await;
    funded(&client, "u2", "0.5").await;
    let js = async_nats::jetstream::new(client.clone());
    // One usage first on its own, then again inside the batch.
    publish(
        &js,
        "solo",
        "ledger.usage.email.u1",
        usage("e-1", "u1", "email"),
    )
    .await;
    let batch = json!({"usages": [
        usage("e-1", "u1", "email"),
        usage("e-2", "u1", "email"),
        usage("e-3", "u2", "email"),
        usage("e-4", "u2", "email"), // rejected: u2 is out of credits
        usage("s-1", "u1", "sms"),   // another service: dead-lettered alone
    ]});
    publish(&js, "batch-1", "ledger.usage_batch.email", batch.clone()).await;
    // The same batch under another message id: nothing new.
    publish(&js, "batch-1-again", "ledger.usage_batch.email", batch).await;
    let mut done = false;
    for _ in 0..100 {
        let mut usage_stream = js.get_stream("LEDGER_USAGE").await.unwrap();
        if usage_stream.info().await.unwrap().state.messages == 0 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "every message acknowledged");
    let u1 = log_of(&client, "u1").await;
    let u2 = log_of(&client, "u2").await;
    assert_eq!(consumed(&u1), 2, "e-1 and e-2, once each");
    assert_eq!(consumed(&u2), 1, "e-3");
    let rejected = u2
        .iter()
        .filter(|e| matches!(e.body, EventData::UsageRejected(_)))
        .count();
    assert_eq!(rejected, 1, "e-4, once");
    let mut dead = js.get_stream("LEDGER_USAGE_DEAD").await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1, "s-1, once");
    let kept = dead.direct_get(1).await.unwrap();
    let reason = kept
        .headers
        .get("Ledger-Dead-Reason")
        .unwrap()
        .as_str()
        .to_owned();
    assert!(reason.contains("service"), "{reason}");
    let kept: Value = serde_json::from_slice(&kept.payload).unwrap();
    assert_eq!(kept["usage_id"], "s-1");

    // A batch over the limit is dead-lettered whole, deciding nothing.
    let many: Vec<Value> = (0..1001)
        .map(|i| usage(&format!("m-{i}"), "u1", "email"))
        .collect();
    publish(
        &js,
        "too-big",
        "ledger.usage_batch.email",
        json!({"usages": many}),
    )
    .await;
    for _ in 0..100 {
        if dead.info().await.unwrap().state.messages == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.info().await.unwrap().state.messages, 2);
    assert_eq!(consumed(&log_of(&client, "u1").await), 2);
    ledger.stop().await.unwrap();
}
