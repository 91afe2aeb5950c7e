//! Messages the ledger did not write, published straight onto stream
//! `LEDGER` while a `ledger serve --role all` process serves load: nothing
//! stops, every account keeps working, every reader skips them, and the
//! audit names each one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::support::*;

const ACCOUNTS: [&str; 3] = ["fa", "fb", "fc"];

async fn get(url: &str) -> Value {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// The accounts' `general` credits as the read models show them.
async fn projected(url: &str) -> Decimal {
    let mut total = Decimal::ZERO;
    for a in ACCOUNTS {
        let b = get(&format!("{url}/v1/accounts/{a}/balances")).await;
        total += Decimal::from_str_exact(b["buckets"]["general"].as_str().unwrap()).unwrap();
    }
    total
}

fn general(balance: &Value) -> Decimal {
    balance["balances"]["general"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Consumes 0.01 credits from each account in turn until `stop`, counting
/// successes; any other outcome fails the test.
fn load(
    client: async_nats::Client,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let account = ACCOUNTS[(i % 3) as usize];
            let r = cmd(
                &client,
                "consume",
                json!({"idempotency_key": format!("load-{i}"), "account_id": account,
                       "service": "email", "quantity": 1, "credits": "0.01"}),
            )
            .await;
            assert!(
                code(&r).is_none(),
                "consume on {account} under forgeries: {r}"
            );
            done.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_stop_nothing_and_every_reader_skips_them() {
    let servers = Servers::start().await;
    let (mut process, url) = serve_ledger(&servers, "all", &[]).await;
    let client = servers.client().await;
    for a in ACCOUNTS {
        funded(&client, a, "100").await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let loader = load(client.clone(), stop.clone(), done.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. A forged grant of 1000 credits, its chain value made up.
    let forged = json!({"event_id": "01900000-0000-7000-8000-00000000f001",
        "type": "credits_granted", "schema_version": 1, "account_id": "fa",
        "occurred_at": "2026-01-01T00:00:00.000Z", "recorded_at": "2026-01-01T00:00:00.000Z",
        "actor": "system", "idempotency_key": "after-fa", "request_hash": "forged",
        "data": {"bucket": "general", "credits": "1000", "source": "promotion"},
        "postings": [{"debit": "platform:adjustments", "credit": "customer:fa:general", "amount": "1000"}]});
    let made_up = "ab".repeat(32);
    let seq_forged = publish_raw(
        &client,
        "ledger.events.acct.fa",
        &[
            ("Nats-Msg-Id", "01900000-0000-7000-8000-00000000f001"),
            ("Ledger-Event-Type", "credits_granted"),
            ("Ledger-Chain", &made_up),
        ],
        forged.to_string(),
    )
    .await;
    // 2. Not JSON, no headers at all.
    let seq_junk = publish_raw(&client, "ledger.events.acct.fb", &[], "\u{0}garbage").await;
    // 3. A genuine-looking event of a type no ledger writes, its headers
    //    agreeing with it, but not on the subject's chain.
    let unknown = json!({"event_id": "01900000-0000-7000-8000-00000000f003",
        "type": "credits_minted", "schema_version": 1, "account_id": "fc", "data": {}});
    let seq_unknown = publish_raw(
        &client,
        "ledger.events.acct.fc",
        &[
            ("Nats-Msg-Id", "01900000-0000-7000-8000-00000000f003"),
            ("Ledger-Event-Type", "credits_minted"),
            ("Ledger-Chain", &"00".repeat(32)),
        ],
        unknown.to_string(),
    )
    .await;
    // The load goes on past them.
    let before = done.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(20), || async {
        (done.load(Ordering::Relaxed) >= before + 30).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    let consumed = done.load(Ordering::Relaxed);

    // Every account works, the forged one too, and none counts a forgery:
    // the key the forgery carries is decided afresh, not answered from it.
    let mut total = Decimal::ZERO;
    for a in ACCOUNTS {
        let r = cmd(
            &client,
            "consume",
            json!({"idempotency_key": format!("after-{a}"),
            "account_id": a, "service": "sms", "quantity": 1, "credits": "1"}),
        )
        .await;
        assert!(code(&r).is_none(), "{a}: {r}");
        let b = cmd(&client, "get_balance", json!({"account_id": a})).await;
        total += general(&b);
    }
    let spent = Decimal::new(consumed as i64, 2) + Decimal::from(3);
    assert_eq!(total, Decimal::from(300) - spent, "no forged credit counts");

    // The projectors catch up past every forgery and quarantine each.
    let head = stream_head(&client).await;
    wait_for(Duration::from_secs(30), || async {
        let p = get(&format!("{url}/v1/ops/projections")).await;
        let list = p["projections"].as_array().unwrap().clone();
        list.iter()
            .all(|p| p["checkpoint"].as_u64() == Some(head))
            .then_some(())
    })
    .await;
    let db = servers.db().await;
    let quarantined: Vec<(i64, String, String)> = db
        .query(
            "SELECT stream_seq, subject, reason FROM ledger.quarantine ORDER BY stream_seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let seqs: Vec<u64> = quarantined.iter().map(|q| q.0 as u64).collect();
    assert_eq!(seqs, [seq_forged, seq_junk, seq_unknown], "{quarantined:?}");
    assert!(
        quarantined[0].2.contains("does not follow"),
        "{quarantined:?}"
    );
    assert!(
        quarantined[1].2.contains("no Ledger-Chain"),
        "{quarantined:?}"
    );
    assert_eq!(
        projected(&url).await,
        total,
        "the read models agree with the command side"
    );
    // A rebuild from the whole log sifts them out the same way.
    let rebuilt = run_ledger(&servers, &["projections", "rebuild"]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(
        projected(&url).await,
        total,
        "the rebuilt read models count no forgery"
    );
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ledger_quarantined_messages 3"),
        "{metrics}"
    );

    // A genuine event of a newer version: the projectors stop on it, say
    // so, and nothing else stops.
    let newer = json!({"event_id": "01900000-0000-7000-8000-00000000f004",
        "type": "credits_granted", "schema_version": 2, "account_id": "fd", "data": {}});
    let seq_newer = publish_chained(&client, "ledger.events.acct.fd", &newer).await;
    let ready = wait_for(Duration::from_secs(30), || async {
        let r = get(&format!("{url}/readyz")).await;
        let stopped = r["stopped"].as_array().map_or(0, Vec::len);
        (stopped == 2).then_some(r)
    })
    .await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    for s in ready["stopped"].as_array().unwrap() {
        assert_eq!(s["stream_seq"].as_u64(), Some(seq_newer), "{ready}");
        assert!(
            s["reason"].as_str().unwrap().contains("schema_version 2"),
            "{ready}"
        );
    }
    let r = cmd(
        &client,
        "consume",
        json!({"idempotency_key": "still", "account_id": "fa",
        "service": "email", "quantity": 1, "credits": "1"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    assert!(
        process.try_wait().unwrap().is_none(),
        "the process still runs"
    );

    // The audit names each message, and the event it cannot read.
    let out = run_ledger(&servers, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for (seq, rule) in [
        (seq_forged, "chain"),
        (seq_junk, "chain"),
        (seq_unknown, "chain"),
        (seq_newer, "envelope"),
    ] {
        let line = format!("finding: stream seq {seq} on ");
        let found = text.lines().find(|l| l.starts_with(&line));
        assert!(
            found.is_some_and(|l| l.contains(&format!(": {rule}: "))),
            "seq {seq} ({rule}) in:\n{text}"
        );
    }
    drop(db);
    process.kill().await.unwrap();
}
