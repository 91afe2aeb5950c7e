//! Idempotency from the log: a key keeps its first outcome through a crash
//! before the index caught up, two processes deciding it at once, restarts,
//! and an index wiped and rebuilt.

use std::time::Duration;

use ledger_schemas::{Bucket, EventData};
use serde_json::{Value, json};

use crate::support::*;

/// The key index's checkpoint.
async fn index_checkpoint(servers: &Servers) -> u64 {
    let db = servers.db().await;
    let row = db
        .query_one(
            "SELECT stream_seq FROM ledger_cmd.key_index_checkpoint",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

/// Waits until the index holds every event of the stream.
async fn indexed(servers: &Servers, client: &async_nats::Client) {
    let head = stream(client)
        .await
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    for _ in 0..400 {
        if index_checkpoint(servers).await >= head {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the key index never reached stream seq {head}");
}

fn spend(key: &str, credits: &str) -> Value {
    json!({"idempotency_key": key, "account_id": "keys", "service": "email",
           "quantity": 1, "credits": credits})
}

async fn general(client: &async_nats::Client) -> rust_decimal::Decimal {
    replayed(client, "keys").await.balance(&Bucket::general())
}

fn consumed(log: &[ledger_schemas::EventEnvelope]) -> usize {
    log.iter()
        .filter(|e| matches!(e.body, EventData::CreditsConsumed(_)))
        .count()
}

/// Every old key answers its original event, and changes nothing.
async fn retry_old_keys(
    client: &async_nats::Client,
    first: &[Value],
    balance: rust_decimal::Decimal,
) {
    for (i, original) in first.iter().enumerate() {
        let again = cmd(client, "consume", spend(&format!("old-{i}"), "1")).await;
        assert_eq!(again["event"], original["event"], "old-{i}");
        assert_eq!(again["balances"], original["balances"], "old-{i}");
    }
    assert_eq!(general(client).await, balance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_index_catches_up_loses_no_key() {
    let servers = Servers::start().await;
    let client = servers.client().await;
    // A process that never indexes, killed right after its appends were
    // acknowledged: the index has none of its keys.
    let mut crashing = spawn_ledger(&servers, "command", &[("LEDGER_KEY_INDEXER", "false")]);
    wait_for_instances(&client, 1).await;
    funded(&client, "keys", "100").await;
    let mut first = Vec::new();
    for i in 0..20 {
        let r = cmd(&client, "consume", spend(&format!("old-{i}"), "1")).await;
        assert!(code(&r).is_none(), "{r}");
        first.push(r);
    }
    crashing.start_kill().unwrap();
    crashing.wait().await.unwrap();
    assert_eq!(index_checkpoint(&servers).await, 0, "nothing was indexed");

    // A new process with room in memory for 8 keys, still without an
    // indexer, takes more than that many newer keys on the same account:
    // memory must keep every key the index does not hold.
    let mut settings = servers.config();
    settings
        .ledger
        .limits
        .idempotency_keys_cached_per_account_max = 8;
    settings.ledger.key_indexer = false;
    let ledger = ledger_cli::start_command(&settings).await.unwrap();
    for i in 0..30 {
        let r = cmd(&client, "consume", spend(&format!("new-{i}"), "1")).await;
        assert!(code(&r).is_none(), "{r}");
    }
    assert_eq!(index_checkpoint(&servers).await, 0, "still nothing indexed");
    let balance = general(&client).await;
    assert_eq!(balance, rust_decimal::Decimal::from(50));
    retry_old_keys(&client, &first, balance).await;
    ledger.stop().await.unwrap();

    // Then with the indexer: once it holds the keys, the writer drops them
    // from memory and finds them in the index.
    settings.ledger.key_indexer = true;
    let ledger = ledger_cli::start_command(&settings).await.unwrap();
    for i in 30..60 {
        let r = cmd(&client, "consume", spend(&format!("new-{i}"), "1")).await;
        assert!(code(&r).is_none(), "{r}");
    }
    indexed(&servers, &client).await;
    // One more round lets the writer drop what the index now holds.
    let r = cmd(&client, "consume", spend("last", "1")).await;
    assert!(code(&r).is_none(), "{r}");
    let balance = general(&client).await;
    assert_eq!(balance, rust_decimal::Decimal::from(19));
    retry_old_keys(&client, &first, balance).await;
    // The same old key twice at once (one writer round, one index lookup).
    let (a, b) = tokio::join!(
        cmd(&client, "consume", spend("old-5", "1")),
        cmd(&client, "consume", spend("old-5", "1"))
    );
    assert_eq!(a["event"], first[5]["event"], "{a}");
    assert_eq!(b["event"], first[5]["event"], "{b}");
    assert_eq!(consumed(&log_of(&client, "keys").await), 81);
    // The same key with another request is a conflict, not a new effect.
    let other = cmd(&client, "consume", spend("old-3", "2")).await;
    assert_eq!(code(&other), Some("idempotency_conflict"), "{other}");
    assert_eq!(general(&client).await, balance);
    ledger.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deciding_one_key_at_once_make_one_effect() {
    let servers = Servers::start().await;
    let client = servers.client().await;
    let _a = spawn_ledger(&servers, "command", &[]);
    let _b = spawn_ledger(&servers, "command", &[]);
    wait_for_instances(&client, 2).await;
    funded(&client, "keys", "100").await;
    for k in 0..5 {
        // The same request 16 times at once, spread over both processes.
        let key = format!("same-{k}");
        let replies = futures::future::join_all((0..16).map(|_| {
            let client = client.clone();
            let body = spend(&key, "1.5");
            async move {
                loop {
                    let r = cmd(&client, "consume", body.clone()).await;
                    if !matches!(code(&r), Some("conflict_retry") | Some("unavailable")) {
                        return r;
                    }
                }
            }
        }))
        .await;
        for r in &replies {
            assert!(code(r).is_none(), "{r}");
            assert_eq!(r["event"]["event_id"], replies[0]["event"]["event_id"]);
        }
    }
    let log = log_of(&client, "keys").await;
    assert_eq!(consumed(&log), 5, "one effect per key");
    assert_eq!(general(&client).await, rust_decimal::Decimal::new(925, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_remembered_across_restarts_processes_and_a_rebuilt_index() {
    let servers = Servers::start().await;
    let client = servers.client().await;
    let ledger = servers.ledger().await;
    funded(&client, "keys", "1").await;
    let refused = cmd(&client, "consume", spend("too-much", "5")).await;
    assert_eq!(code(&refused), Some("insufficient_credits"), "{refused}");
    // Invalid requests save nothing: the corrected retry is decided afresh.
    let invalid = cmd(&client, "consume", spend("fixable", "-1")).await;
    assert_eq!(code(&invalid), Some("invalid_request"), "{invalid}");
    let fixed = cmd(&client, "consume", spend("fixable", "0.5")).await;
    assert!(code(&fixed).is_none(), "{fixed}");
    indexed(&servers, &client).await;
    ledger.stop().await.unwrap();

    // Enough credits now, from a process of its own: the key keeps its refusal.
    let other = spawn_ledger(&servers, "command", &[]);
    wait_for_instances(&client, 1).await;
    let r = cmd(
        &client,
        "grant",
        json!({"idempotency_key": "more", "account_id": "keys",
               "bucket": "general", "credits": "10", "source": "promotion"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    assert_eq!(
        cmd(&client, "consume", spend("too-much", "5")).await,
        refused
    );
    drop(other);
    for _ in 0..100 {
        if ledger_instances(&client).await == 0 {
            break;
        }
    }

    // The index wiped and rebuilt from the log, and a process that must look
    // the key up there (its memory holds 2 keys, and 10 newer ones came).
    let out = run_ledger(&servers, &["index", "rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(index_checkpoint(&servers).await, 0);
    let mut settings = servers.config();
    settings
        .ledger
        .limits
        .idempotency_keys_cached_per_account_max = 2;
    let ledger = ledger_cli::start_command(&settings).await.unwrap();
    for i in 0..10 {
        let r = cmd(&client, "consume", spend(&format!("n-{i}"), "0.1")).await;
        assert!(code(&r).is_none(), "{r}");
    }
    indexed(&servers, &client).await;
    let r = cmd(&client, "consume", spend("last", "0.1")).await;
    assert!(code(&r).is_none(), "{r}");
    let balance = general(&client).await;
    assert_eq!(
        cmd(&client, "consume", spend("too-much", "5")).await,
        refused
    );
    assert_eq!(
        cmd(&client, "consume", spend("fixable", "0.5")).await,
        fixed
    );
    assert_eq!(general(&client).await, balance);
    let refusals = log_of(&client, "keys")
        .await
        .iter()
        .filter(|e| matches!(e.body, EventData::CommandRefused(_)))
        .count();
    assert_eq!(refusals, 1, "the refusal is one event, remembered since");
    let audit = verify_stream(&servers, &client).await;
    assert!(
        audit.findings.iter().all(|f| f.rule != "refusal"),
        "{:?}",
        audit.findings
    );

    // An index entry the log does not back (a hand-edited row): the key is
    // refused as an internal error, never decided as new.
    let db = servers.db().await;
    db.execute(
        "INSERT INTO ledger_cmd.key_index VALUES ('keys', 'forged', 999999, 'x', now())",
        &[],
    )
    .await
    .unwrap();
    let balance = general(&client).await;
    let r = cmd(&client, "consume", spend("forged", "0.1")).await;
    assert_eq!(code(&r), Some("internal"), "{r}");
    assert_eq!(general(&client).await, balance);
    drop(db);
    ledger.stop().await.unwrap();
}
