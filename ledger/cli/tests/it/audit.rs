//! Auditor tools against a real log: a clean log verifies; tampering with the
//! stream, an export or a read model is found and named; replay as of a time
//! equals what the read models held then.

use std::collections::BTreeMap;
use std::time::Duration;

use ledger::audit::{self, Format, Verifier};
use ledger_cli::{Role, start};
use serde_json::{Value, json};

use crate::support::*;

async fn load(client: &async_nats::Client) {
    for a in ["aud1", "aud2"] {
        funded(client, a, "10").await;
        for i in 0..15 {
            let r = cmd(
                client,
                "consume",
                json!({"idempotency_key": format!("{a}-{i}"),
                "account_id": a, "service": if i % 2 == 0 { "sms" } else { "email" },
                "quantity": 1, "credits": "0.25"}),
            )
            .await;
            assert!(code(&r).is_none(), "{r}");
        }
        let r = cmd(
            client,
            "reserve",
            json!({"idempotency_key": format!("{a}-r"),
            "account_id": a, "service": "sms", "credits": "1", "expires_in_s": 600}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
    }
}

async fn projected(servers: &Servers, client: &async_nats::Client) -> u64 {
    let head = stream_head(client).await;
    let url = servers.config().ledger.database_url;
    for _ in 0..400 {
        if let Ok((at, _)) = audit::read_models(&url).await {
            if at >= head {
                return head;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("read models did not reach {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_log_verifies_and_a_bypassing_event_is_named() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    load(&client).await;
    projected(&servers, &client).await;
    let clean = verify_stream(&servers, &client).await;
    assert_eq!(rules(&clean), vec![], "{:?}", clean.findings);
    assert!(clean.events > 30);

    // The binary agrees, with exit status 0.
    let run = |args: &[&str]| run_ledger(&servers, args);
    let out = run(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 finding(s)"));

    // Someone publishes straight onto an account subject, past the ledger.
    let js = async_nats::jetstream::new(client.clone());
    let forged = json!({"event_id": "01900000-0000-7000-8000-0000000000f1", "type": "credits_granted",
        "schema_version": 1, "account_id": "aud1", "occurred_at": "2026-11-21T10:00:00.000Z",
        "recorded_at": "2026-11-21T10:00:00.000Z", "actor": "system",
        "data": {"bucket": "general", "credits": "1000", "source": "promotion"},
        "postings": [{"debit": "platform:adjustments", "credit": "customer:aud1:general", "amount": "1000"}]});
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "01900000-0000-7000-8000-0000000000f1");
    h.insert("Ledger-Event-Type", "credits_granted");
    h.insert("Ledger-Chain", "00".repeat(32).as_str());
    let ack = js
        .publish_with_headers("ledger.events.acct.aud1", h, forged.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let out = run(&["audit", "verify", "--no-read-models"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "findings make the exit status non-zero"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "stream seq {} on ledger.events.acct.aud1: chain",
            ack.sequence
        )),
        "{text}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_export_is_found_and_named() {
    let servers = Servers::start().await;
    let running = servers.ledger().await;
    let client = servers.client().await;
    load(&client).await;
    running.stop().await.unwrap();
    let s = stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let check_file = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let mut v = Verifier::new("ledger.events");
        audit::read_export(&path, |r| v.check(&r)).unwrap();
        v.finish();
        rules(&v)
    };
    let mut out = Vec::new();
    audit::export(&s, 1, Format::Jsonl, &mut out).await.unwrap();
    let lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(check_file("clean.jsonl", &lines), vec![]);
    let seq_of = |line: &str| {
        serde_json::from_str::<Value>(line).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };

    // One byte changed inside an event's credits.
    let target = lines
        .iter()
        .position(|l| l.contains("credits_consumed"))
        .unwrap();
    let mut changed = lines.clone();
    changed[target] = changed[target].replacen("0.25", "0.35", 1);
    assert_ne!(changed[target], lines[target]);
    let found = check_file("changed.jsonl", &changed);
    assert!(
        found
            .iter()
            .any(|(seq, _, rule)| *seq == seq_of(&lines[target]) && *rule == "chain"),
        "{found:?}"
    );

    // One line removed: the sequence has a gap and that subject's chain breaks.
    let mut removed = lines.clone();
    let gone = removed.remove(10);
    let found = check_file("removed.jsonl", &removed);
    assert!(
        found
            .iter()
            .any(|(seq, _, rule)| *seq == seq_of(&gone) + 1 && *rule == "contiguity"),
        "{found:?}"
    );

    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(12, 13);
    let found = check_file("swapped.jsonl", &swapped);
    assert!(
        found.iter().any(|(_, _, rule)| *rule == "order"),
        "{found:?}"
    );

    // A file that is not an export is refused, never passed as clean.
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "hello\nworld\n").unwrap();
    let err = audit::read_export(&junk, |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("neither a JSON-lines nor a CSV export"),
        "{err}"
    );

    // The CSV form checks the same.
    let mut csv = Vec::new();
    audit::export(&s, 1, Format::Csv, &mut csv).await.unwrap();
    let csv_lines: Vec<String> = String::from_utf8(csv)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(check_file("clean.csv", &csv_lines), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_changed_by_hand_is_found() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    load(&client).await;
    projected(&servers, &client).await;
    running.stop().await.unwrap();
    let db = servers.db().await;
    db.execute(
        "UPDATE ledger.service_balances SET balance = balance + 1 \
         WHERE account_id = 'aud2' AND bucket = 'general'",
        &[],
    )
    .await
    .unwrap();
    let v = verify_stream(&servers, &client).await;
    let found: Vec<_> = v
        .findings
        .iter()
        .filter(|f| f.rule == "read_model")
        .collect();
    assert_eq!(found.len(), 1, "{:?}", v.findings);
    assert!(
        found[0].detail.starts_with("aud2/general"),
        "{}",
        found[0].detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_as_of_equals_what_the_read_models_held() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    let s = stream(&client).await;
    funded(&client, "asof", "10").await;
    let mut snapshots = Vec::new();
    for round in 0..4 {
        for i in 0..5 {
            let r = cmd(
                &client,
                "consume",
                json!({"idempotency_key": format!("a{round}-{i}"),
                "account_id": "asof", "service": "sms", "quantity": 1, "credits": "0.5"}),
            )
            .await;
            assert!(code(&r).is_none(), "{r}");
        }
        let head = projected(&servers, &client).await;
        let (_, rows) = audit::read_models(&servers.config().ledger.database_url)
            .await
            .unwrap();
        let held: BTreeMap<String, String> = rows
            .iter()
            .filter(|((a, _), _)| a == "asof")
            .map(|((_, b), (bal, _))| (b.clone(), bal.normalize().to_string()))
            .collect();
        // The account's last event (a checkpoint may follow it on the stream).
        let last = s
            .direct_get_last_for_subject("ledger.events.acct.asof")
            .await
            .unwrap();
        assert!(last.sequence <= head);
        let event: ledger_schemas::EventEnvelope = serde_json::from_slice(&last.payload).unwrap();
        snapshots.push((event.recorded_at, held));
        // Later events get later times.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (at, held) in snapshots {
        let account = ledger_schemas::AccountId::parse("asof").unwrap();
        let v = audit::replay_as_of(
            &s,
            "ledger.events",
            Some(test_keys().public),
            at,
            Some(&account),
        )
        .await
        .unwrap();
        let replayed: BTreeMap<String, String> =
            serde_json::from_value(v["accounts"]["asof"]["buckets"].clone()).unwrap();
        let held: BTreeMap<String, String> = held
            .into_iter()
            .filter(|(b, _)| replayed.contains_key(b))
            .collect();
        assert_eq!(replayed, held, "as of {at}");
    }
    running.stop().await.unwrap();
}
