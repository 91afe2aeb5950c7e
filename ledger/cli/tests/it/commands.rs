//! The command side end to end: concurrency on one account, idempotency
//! across restarts, reservation expiry.

use std::str::FromStr;
use std::time::Duration;

use ledger_schemas::Bucket;
use rust_decimal::Decimal;
use serde_json::json;

use crate::support::*;

fn dec(v: &serde_json::Value) -> Decimal {
    Decimal::from_str(v.as_str().expect("a decimal string")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_consumers_on_one_account_stay_exact() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "hot", "100").await;

    // 64 clients x 30 consumptions of 0.07 = 134.4 credits of demand for 100.
    let mut tasks = Vec::new();
    for c in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Decimal::ZERO, 0u32);
            for i in 0..30 {
                let r = cmd(
                    &client,
                    "consume",
                    json!({
                    "idempotency_key": format!("c{c}-{i}"), "account_id": "hot",
                    "service": "sms", "quantity": 1, "credits": "0.07"}),
                )
                .await;
                match code(&r) {
                    None => {
                        accepted += dec(&r["event"]["data"]["credits"]);
                        for (_, b) in r["balances"].as_object().unwrap() {
                            assert!(dec(b) >= Decimal::ZERO, "a bucket below zero: {r}");
                        }
                    }
                    Some("insufficient_credits") => refused += 1,
                    Some(other) => panic!("unexpected {other}: {r}"),
                }
            }
            (accepted, refused)
        }));
    }
    let mut accepted = Decimal::ZERO;
    let mut refused = 0;
    for t in tasks {
        let (a, r) = t.await.unwrap();
        accepted += a;
        refused += r;
    }
    // 100 / 0.07 = 1428 consumptions fit, 0.04 left.
    assert_eq!(accepted, Decimal::from_str("99.96").unwrap());
    assert_eq!(refused, 64 * 30 - 1428);

    let account = replayed(&client, "hot").await;
    assert_eq!(
        account.balance(&Bucket::general()),
        Decimal::from_str("0.04").unwrap()
    );
    let live = cmd(&client, "get_balance", json!({"account_id": "hot"})).await;
    assert_eq!(
        dec(&live["balances"]["general"]),
        Decimal::from_str("0.04").unwrap()
    );
    let consumed = log_of(&client, "hot")
        .await
        .iter()
        .filter(|e| e.event_type().as_str() == "credits_consumed")
        .count();
    assert_eq!(consumed, 1428);
    ledger.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_after_a_restart_returns_the_original_outcome() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "acme", "1").await;
    let spend = json!({"idempotency_key": "k-spend", "account_id": "acme",
                       "service": "email", "quantity": 1, "credits": "0.6"});
    let too_much = json!({"idempotency_key": "k-too-much", "account_id": "acme",
                          "service": "email", "quantity": 1, "credits": "5"});
    let first = cmd(&client, "consume", spend.clone()).await;
    let refusal = cmd(&client, "consume", too_much.clone()).await;
    assert_eq!(code(&refusal), Some("insufficient_credits"));
    ledger.stop().await.unwrap();

    let ledger = servers.ledger().await;
    // Enough credits now for the refused request, yet its key keeps its refusal.
    let r = cmd(
        &client,
        "grant",
        json!({"idempotency_key": "more", "account_id": "acme",
        "bucket": "general", "credits": "10", "source": "promotion"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    assert_eq!(cmd(&client, "consume", spend.clone()).await, first);
    assert_eq!(cmd(&client, "consume", too_much).await, refusal);
    let mut different = spend.clone();
    different["credits"] = json!("0.5");
    let conflict = cmd(&client, "consume", different).await;
    assert_eq!(code(&conflict), Some("idempotency_conflict"), "{conflict}");
    let spends = log_of(&client, "acme")
        .await
        .iter()
        .filter(|e| {
            e.idempotency_key
                .as_ref()
                .is_some_and(|k| k.as_str() == "k-spend")
        })
        .count();
    assert_eq!(spends, 1);
    ledger.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_without_an_operator() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "acme", "5").await;
    let r = cmd(
        &client,
        "reserve",
        json!({"idempotency_key": "r1", "account_id": "acme",
        "service": "sms", "credits": "2", "expires_in_s": 1}),
    )
    .await;
    let id = r["reservation_id"]
        .as_str()
        .expect("a reservation id")
        .to_owned();
    assert_eq!(r["balances"]["general"], "3");

    let mut released = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        released = log_of(&client, "acme")
            .await
            .into_iter()
            .find(|e| e.event_type().as_str() == "reservation_released");
        if released.is_some() {
            break;
        }
    }
    let released = released.expect("the reservation is released by the service");
    let v = serde_json::to_value(&released).unwrap();
    assert_eq!(v["data"]["reason"], "expired");
    assert_eq!(v["data"]["reservation_id"], id.as_str());
    let b = cmd(&client, "get_balance", json!({"account_id": "acme"})).await;
    assert_eq!(b["balances"]["general"], "5");
    let late = cmd(
        &client,
        "capture",
        json!({"idempotency_key": "cap", "account_id": "acme",
        "reservation_id": id, "credits": "1"}),
    )
    .await;
    assert_eq!(code(&late), Some("reservation_closed"), "{late}");
    ledger.stop().await.unwrap();
}
