//! Signed appends and signed checkpoints, as deployed: a `ledger` process
//! of its own, forgeries published onto the stream by a client that may
//! publish there, and the auditor's command line on exports and proofs.

use std::time::Duration;

use ledger_schemas::checkpoint::{Checkpoint, Proof};
use serde_json::{Value, json};

use crate::support::*;

/// The newest checkpoint on the stream once one covers stream seq `seq`.
async fn checkpoint_covering(client: &async_nats::Client, seq: u64) -> Checkpoint {
    let stream = stream(client).await;
    wait_for(Duration::from_secs(30), || async {
        let all = ledger::audit::checkpoints(&stream, "ledger.checkpoints")
            .await
            .unwrap();
        all.into_iter()
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| c.seq >= seq)
    })
    .await
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn credits(v: &Value) -> rust_decimal::Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("credits in {v}"))
        .parse()
        .unwrap()
}

/// A forged grant on `account`'s subject whose chain follows the subject's
/// last message, published unsigned by the operator (who may publish on
/// the ledger's subjects).
async fn forge_grant(client: &async_nats::Client, account: &str, credits: &str) -> (u64, String) {
    let forged = json!({"event_id": "01900000-0000-7000-8000-00000000f501",
        "type": "credits_granted", "schema_version": 1, "account_id": account,
        "occurred_at": "2026-01-01T00:00:00.000Z", "recorded_at": "2026-01-01T00:00:00.000Z",
        "actor": "system", "idempotency_key": "forged-grant", "request_hash": "forged",
        "data": {"bucket": "general", "credits": credits, "source": "promotion"},
        "postings": [{"debit": "platform:adjustments",
            "credit": format!("customer:{account}:general"), "amount": credits}]});
    let seq = publish_forged(client, &format!("ledger.events.acct.{account}"), &forged).await;
    (seq, forged.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_with_a_recomputed_chain_counts_nowhere_and_no_checkpoint_signs_it() {
    let servers = Servers::start().await;
    let (mut first, url) = serve_ledger(&servers, "all", &[]).await;
    let client = servers.client().await;
    funded(&client, "sg", "100").await;
    let spend = |key: &'static str| {
        let client = client.clone();
        async move {
            let r = cmd(
                &client,
                "consume",
                json!({"idempotency_key": key, "account_id": "sg", "service": "sms",
                    "quantity": 1, "credits": "1"}),
            )
            .await;
            assert!(code(&r).is_none(), "{r}");
        }
    };
    spend("before").await;
    // The forgery follows the chain exactly: only its missing signature
    // tells it apart.
    let (seq_forged, forged_body) = forge_grant(&client, "sg", "1000").await;
    // The process that had the account loaded appends after it...
    spend("after").await;
    let b = cmd(&client, "get_balance", json!({"account_id": "sg"})).await;
    assert_eq!(credits(&b["balances"]["general"]), 98.into(), "{b}");
    // ...and a process loading the account afresh counts it neither.
    let (mut second, second_url) = serve_ledger(&servers, "command", &[]).await;
    let read = reqwest::Client::new()
        .post(format!("{second_url}/v1/commands/get_balance"))
        .bearer_auth(ADMIN)
        .json(&json!({"account_id": "sg"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(credits(&read["balances"]["general"]), 98.into(), "{read}");
    second.kill().await.unwrap();

    // The projectors quarantine it as unsigned; the read model agrees.
    let head = stream_head(&client).await;
    let db = servers.db().await;
    let reason: String = wait_for(Duration::from_secs(30), || async {
        db.query_opt(
            "SELECT reason FROM ledger.quarantine WHERE stream_seq = $1",
            &[&(seq_forged as i64)],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
    })
    .await;
    assert!(reason.contains("signature"), "{reason}");
    let projected = wait_for(Duration::from_secs(30), || async {
        let r = reqwest::Client::new()
            .get(format!("{url}/v1/accounts/sg/balances"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        (r["as_of_seq"].as_u64().unwrap_or(0) >= head).then_some(r)
    })
    .await;
    assert_eq!(
        credits(&projected["buckets"]["general"]),
        98.into(),
        "{projected}"
    );

    // A checkpoint after it signs the account's genuine head, not the forgery.
    let c = checkpoint_covering(&client, seq_forged).await;
    let keys = test_keys().public;
    assert_eq!(c.verify(&keys).unwrap(), "test-1");
    let out = run_ledger(&servers, &["audit", "verify", "--no-read-models"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "the forgery is a finding: {text}");
    let findings: Vec<&str> = text.lines().filter(|l| l.starts_with("finding:")).collect();
    assert_eq!(findings.len(), 1, "{text}");
    assert!(
        findings[0].starts_with(&format!(
            "finding: stream seq {seq_forged} on ledger.events.acct.sg: signature:"
        )),
        "{text}"
    );
    assert!(text.contains("covered by the signed checkpoint"), "{text}");

    // The customer's proof: the genuine events only, verified by the
    // public key alone.
    let dir = tempfile::tempdir().unwrap();
    let proof_path = dir.path().join("proof.json");
    let keys_path = dir.path().join("keys.json");
    let out = run_ledger(&servers, &["audit", "keys"]);
    assert!(out.status.success(), "{}", stdout(&out));
    std::fs::write(&keys_path, &out.stdout).unwrap();
    let out = run_ledger(
        &servers,
        &[
            "audit",
            "prove",
            "--account",
            "sg",
            "--output",
            proof_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let proof: Proof = serde_json::from_slice(&std::fs::read(&proof_path).unwrap()).unwrap();
    assert_eq!(credits(&json!(proof.balances["general"])), 98.into());
    assert!(proof.events.iter().all(|e| !e.contains("forged-grant")));
    let verify_proof = |path: &std::path::Path, key: &std::path::Path| {
        run_ledger(
            &servers,
            &[
                "audit",
                "verify-proof",
                "--file",
                path.to_str().unwrap(),
                "--public-key",
                key.to_str().unwrap(),
            ],
        )
    };
    let out = verify_proof(&proof_path, &keys_path);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("proof verified: account sg"));

    // A proof for a changed balance, with the forged event, or under
    // another key: each refused.
    let refused = |proof: &Proof, key: &std::path::Path, why: &str| {
        let path = dir.path().join(format!("{why}.json"));
        std::fs::write(&path, serde_json::to_vec(proof).unwrap()).unwrap();
        let out = verify_proof(&path, key);
        assert_eq!(out.status.code(), Some(1), "{why}: {}", stdout(&out));
        assert!(stdout(&out).contains("proof refused"), "{why}");
    };
    let mut richer = proof.clone();
    richer.balances.insert("general".into(), "1098".into());
    refused(&richer, &keys_path, "changed-balance");
    let mut with_forgery = proof.clone();
    with_forgery.events.push(forged_body);
    with_forgery
        .balances
        .insert("general".into(), "1098".into());
    refused(&with_forgery, &keys_path, "forged-event");
    let other_key = dir.path().join("other.txt");
    let other = ledger_schemas::signing::SigningKey::generate("test-1").unwrap();
    let other = ledger_schemas::signing::SigningKey::parse(&other).unwrap();
    std::fs::write(&other_key, other.public().to_text()).unwrap();
    refused(&proof, &other_key, "another-key");

    drop(db);
    first.kill().await.unwrap();
}
