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

/// [`publish_raw`] with headers given as owned values.
async fn publish_with(
    client: &async_nats::Client,
    subject: &str,
    headers: &[(&str, String)],
    payload: String,
) -> u64 {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    publish_raw(client, subject, &headers, payload).await
}

/// A grant of `credits` on `account`'s subject as the ledger writes it.
fn grant_event(account: &str, id: &str, credits: &str) -> Value {
    json!({"event_id": id, "type": "credits_granted", "schema_version": 1,
        "account_id": account, "occurred_at": "2026-01-01T00:00:00.000Z",
        "recorded_at": "2026-01-01T00:00:00.000Z", "actor": "system",
        "idempotency_key": format!("grant-{id}"), "request_hash": "h",
        "data": {"bucket": "general", "credits": credits, "source": "promotion"},
        "postings": [{"debit": "platform:adjustments",
            "credit": format!("customer:{account}:general"), "amount": credits}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_read_while_an_append_is_half_visible_waits_for_its_signature() {
    use ledger_schemas::signing;
    let servers = Servers::start().await;
    // No checkpoint for an hour: nothing but the test's messages lands in
    // between (as nothing can inside an append).
    let (mut process, _url) =
        serve_ledger(&servers, "all", &[("LEDGER_CHECKPOINT_INTERVAL_S", "3600")]).await;
    let client = servers.client().await;
    funded(&client, "half", "10").await;
    // An append of two grants whose second message (with the signature)
    // is stored two seconds after the first: a reader sees the first alone
    // for a while, as it may for a moment while an append is stored.
    let subject = "ledger.events.acct.half";
    let s = stream(&client).await;
    let (_, previous) = ledger::store::read::last_on_subject(&s, subject)
        .await
        .unwrap()
        .unwrap();
    let first = grant_event("half", "01900000-0000-7000-8000-00000000f701", "100").to_string();
    let second = grant_event("half", "01900000-0000-7000-8000-00000000f702", "1000").to_string();
    let chain1 = previous.unwrap().next(first.as_bytes());
    let chain2 = chain1.next(second.as_bytes());
    let (chain1, chain2) = (chain1.to_hex(), chain2.to_hex());
    let key = test_keys().signing.unwrap();
    let (heads, signature) = signing::seal(
        &key,
        [(subject, chain1.as_str()), (subject, chain2.as_str())],
    );
    // The headers the ledger writes on each message of the append.
    let headers = |event: &str, chain: &str, position: &str| -> Vec<(&'static str, String)> {
        let event: Value = serde_json::from_str(event).unwrap();
        vec![
            (
                "Nats-Msg-Id",
                event["event_id"].as_str().unwrap().to_owned(),
            ),
            (
                "Ledger-Event-Type",
                event["type"].as_str().unwrap().to_owned(),
            ),
            ("Ledger-Chain", chain.to_owned()),
            (signing::BATCH_HEADER, position.to_owned()),
        ]
    };
    let first_headers = headers(&first, &chain1, "1/2");
    let mut second_headers = headers(&second, &chain2, "2/2");
    second_headers.extend([
        (signing::HEADS_HEADER, heads),
        (signing::SIGNATURE_HEADER, signature),
    ]);
    publish_with(&client, subject, &first_headers, first).await;
    let rest = {
        let client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            publish_with(&client, subject, &second_headers, second).await
        })
    };
    // The process that has the account loaded finds the first message when
    // it appends, reads it while its signature is not yet stored, and
    // counts it (not judging it foreign and chaining past it).
    let r = cmd(&client, "consume", consume_one("half-spend", "half")).await;
    assert!(code(&r).is_none(), "{r}");
    rest.await.unwrap();
    let b = cmd(&client, "get_balance", json!({"account_id": "half"})).await;
    assert_eq!(credits(&b["balances"]["general"]), 1109.into(), "{b}");
    let out = run_ledger(&servers, &["audit", "verify", "--no-read-models"]);
    assert!(out.status.success(), "{}", stdout(&out));
    process.kill().await.unwrap();
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
    // Balances as of now, from the log alone: the forgery is not counted.
    let now = ledger_schemas::Timestamp::now().to_string();
    let out = run_ledger(
        &servers,
        &["audit", "replay", "--as-of", &now, "--account", "sg"],
    );
    let replayed: Value = serde_json::from_slice(&out.stdout).expect("replay prints JSON");
    assert_eq!(
        credits(&replayed["accounts"]["sg"]["buckets"]["general"]),
        98.into(),
        "{replayed}"
    );

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

/// Opens `account`, grants it 50 and spends three times, one command at a
/// time (so each append holds one account's events).
async fn history(client: &async_nats::Client, account: &str) {
    funded(client, account, "50").await;
    for i in 0..3 {
        let r = cmd(
            client,
            "consume",
            json!({"idempotency_key": format!("{account}-{i}"), "account_id": account,
                "service": "email", "quantity": 1, "credits": "2"}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
    }
}

fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_jsonl(path: &std::path::Path, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// What a forger hands over: no checkpoint records, stream seqs renumbered
/// so that none is missing.
fn without_checkpoints(records: Vec<Value>) -> Vec<Value> {
    records
        .into_iter()
        .filter(|r| r["subject"] != "ledger.checkpoints")
        .enumerate()
        .map(|(i, mut r)| {
            r["seq"] = json!(i as u64 + 1);
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_find_a_cut_tail_a_removed_aggregate_and_a_rewritten_history() {
    let servers = Servers::start().await;
    let (mut process, _url) = serve_ledger(&servers, "all", &[]).await;
    let client = servers.client().await;
    for a in ["ea", "eb", "ec"] {
        history(&client, a).await;
    }
    let head = stream_head(&client).await;
    let c = checkpoint_covering(&client, head).await;
    process.kill().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let out = run_ledger(&servers, &["audit", "keys"]);
    std::fs::write(path("keys.json"), &out.stdout).unwrap();
    let out = run_ledger(&servers, &["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let printed: Checkpoint = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, c, "the newest checkpoint");
    std::fs::write(path("checkpoint.json"), &out.stdout).unwrap();
    let out = run_ledger(
        &servers,
        &["audit", "export", "--output", &path("export.jsonl")],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let records = read_jsonl(std::path::Path::new(&path("export.jsonl")));

    let verify = |file: &str, key: bool, checkpoint: bool| {
        let mut args = vec![
            "audit".to_owned(),
            "verify".into(),
            "--file".into(),
            path(file),
        ];
        if key {
            args.extend(["--public-key".into(), path("keys.json")]);
        }
        if checkpoint {
            args.extend(["--checkpoint".into(), path("checkpoint.json")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ledger(&servers, &args)
    };
    // The export as given verifies, covered by the checkpoint.
    let out = verify("export.jsonl", true, true);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "covered by the signed checkpoint at stream seq {}",
            c.seq
        )),
        "{text}"
    );

    // 1. Its tail cut (at the end of an append, so every signature holds).
    let mut cut = without_checkpoints(records.clone());
    let last_append_end = cut
        .iter()
        .rposition(|r| !r["heads"].is_null() && r != cut.last().unwrap())
        .unwrap();
    cut.truncate(last_append_end + 1);
    write_jsonl(std::path::Path::new(&path("cut.jsonl")), &cut);
    // 2. One aggregate removed.
    let removed: Vec<Value> = without_checkpoints(
        records
            .iter()
            .filter(|r| r["subject"] != "ledger.events.acct.eb")
            .cloned()
            .collect(),
    );
    write_jsonl(std::path::Path::new(&path("removed.jsonl")), &removed);
    // 3. One aggregate's history rewritten: a grant of 5000, the chain
    //    recomputed over every event of the subject.
    let mut rewritten = without_checkpoints(records.clone());
    let mut chain = ledger_schemas::ChainHash::GENESIS;
    for r in rewritten
        .iter_mut()
        .filter(|r| r["subject"] == "ledger.events.acct.ec")
    {
        let mut event: Value = serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
        if event["type"] == "credits_granted" {
            event["data"]["credits"] = json!("5000");
            event["postings"][0]["amount"] = json!("5000");
        }
        let payload = event.to_string();
        chain = chain.next(payload.as_bytes());
        r["payload"] = json!(payload);
        r["chain"] = json!(chain.to_hex());
    }
    write_jsonl(std::path::Path::new(&path("rewritten.jsonl")), &rewritten);

    // Without the checkpoint each passes (the rewritten one checked as an
    // auditor without keys would); with it each is found.
    for (file, key_without) in [
        ("cut.jsonl", true),
        ("removed.jsonl", true),
        ("rewritten.jsonl", false),
    ] {
        let out = verify(file, key_without, false);
        assert!(
            out.status.success(),
            "{file} passes without: {}",
            stdout(&out)
        );
        let out = verify(file, true, true);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{file} found with: {text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("finding:") && l.contains(": checkpoint_")),
            "{file}: {text}"
        );
        assert!(
            !text.contains("covered by the signed checkpoint"),
            "{file}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_under_the_old_and_the_new_key_both_verify() {
    let servers = Servers::start().await;
    let client = servers.client().await;
    let (mut old, _) = serve_ledger(&servers, "all", &[]).await;
    history(&client, "ra").await;
    let first = checkpoint_covering(&client, stream_head(&client).await).await;
    old.kill().await.unwrap();

    // Rotated: a new signing key; the old one's public half still trusted.
    let new_key = ledger_schemas::signing::SigningKey::generate("test-2").unwrap();
    let old_public = test_keys().public.all()[0].to_text();
    let trusted = format!("[\"{old_public}\"]");
    let rotated = [
        ("LEDGER_SIGNING_KEY", new_key.as_str()),
        ("LEDGER_VERIFY_KEYS", trusted.as_str()),
    ];
    let (mut new, _) = serve_ledger(&servers, "all", &rotated).await;
    // The old key's events still count.
    let r = cmd(
        &client,
        "consume",
        json!({"idempotency_key": "ra-rotated", "account_id": "ra", "service": "sms",
            "quantity": 1, "credits": "4"}),
    )
    .await;
    assert_eq!(credits(&r["balances"]["general"]), 40.into(), "{r}");
    let second = checkpoint_covering(&client, stream_head(&client).await).await;
    new.kill().await.unwrap();

    let stream = stream(&client).await;
    let all = ledger::audit::checkpoints(&stream, "ledger.checkpoints")
        .await
        .unwrap();
    let both = ledger_schemas::signing::PublicKeys::new([
        test_keys().public.all()[0].clone(),
        ledger_schemas::signing::SigningKey::parse(&new_key)
            .unwrap()
            .public(),
    ]);
    let ids: Vec<&str> = all.iter().map(|(_, c)| c.verify(&both).unwrap()).collect();
    assert!(
        ids.contains(&"test-1") && ids.contains(&"test-2"),
        "{ids:?}"
    );
    assert!(all.iter().any(|(_, c)| *c == first) && all.last().unwrap().1 == second);
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].1.previous,
            pair[0].1.hash(),
            "one chain across keys"
        );
    }
    // The audit with both keys finds nothing; with the new key alone, the
    // old key's appends and checkpoints are not trusted.
    let out = run_ledger_with(&servers, &["audit", "verify", "--no-read-models"], &rotated);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(key test-2"), "{text}");
    let out = run_ledger_with(
        &servers,
        &["audit", "verify", "--no-read-models"],
        &[
            ("LEDGER_SIGNING_KEY", new_key.as_str()),
            ("LEDGER_VERIFY_KEYS", "[]"),
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(": checkpoint_signature: signed by key \"test-1\""),
        "{text}"
    );
}

/// Group commit packs many accounts' appends into one batch, and the
/// batch's signed heads must fit JetStream's 64 KiB of headers: 1,500
/// accounts opened at once, long account ids, all stored and signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_accounts_at_once_are_cut_into_batches_whose_signed_heads_fit_and_every_reader_judges_an_append_whole()
 {
    use futures::StreamExt;
    let servers = Servers::start().await;
    let running = servers.ledger().await;
    let client = servers.client().await;
    let id = |i: usize| format!("{i:04}-{}", "x".repeat(59));
    let opened = futures::stream::iter(0..1500)
        .map(|i| {
            let client = client.clone();
            async move {
                cmd(
                    &client,
                    "open_account",
                    json!({"idempotency_key": format!("open-{i}"), "account_id": id(i)}),
                )
                .await
            }
        })
        .buffer_unordered(1500)
        .collect::<Vec<Value>>()
        .await;
    for r in &opened {
        assert!(code(r).is_none(), "{r}");
    }
    // Some batches held hundreds of accounts (the committer gathered them).
    let metrics = metrics_text(running.http_addr).await;
    let biggest = metrics
        .lines()
        .filter(|l| l.starts_with("ledger_batch_messages_bucket") && !l.contains("+Inf"))
        .filter_map(|l| {
            let le = l
                .split("le=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse::<f64>()
                .ok()?;
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((le, n))
        })
        .collect::<Vec<_>>();
    let total: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ledger_batch_messages_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    let small = biggest
        .iter()
        .filter(|(le, _)| *le < 100.0)
        .map(|(_, n)| *n)
        .fold(0.0, f64::max);
    assert!(
        total > small,
        "a batch of more than 64: {biggest:?} of {total}"
    );
    let v = verify_stream(&servers, &client).await;
    assert_eq!(v.findings_total, 0, "{:?}", v.findings);
    assert_eq!(v.aggregates(), 1500);

    // A reader that starts inside an append (a projector or indexer
    // resuming from a checkpoint it took mid-append) still sees it signed.
    let s = stream(&client).await;
    let mut inside = None;
    for seq in 1..=stream_head(&client).await {
        let m = s.direct_get(seq).await.unwrap();
        let position = m.headers.get("Ledger-Batch").map(|v| v.to_string());
        if let Some((i, n)) = position
            .as_deref()
            .and_then(ledger_schemas::signing::parse_position)
        {
            if i > 1 && i < n {
                inside = Some(seq);
                break;
            }
        }
    }
    let inside = inside.expect("an append of several messages");
    let mut reader = ledger_projections::projector::Reader::open(&s, inside, &trust(), None)
        .await
        .unwrap();
    let first = reader.next().await.unwrap().unwrap();
    assert_eq!(first.seq, inside);
    assert_eq!(first.seal, ledger_schemas::signing::Seal::Signed);

    // A reader that ends inside one (a rebuild catching up to a live
    // projector's checkpoint, an audit reading to a head it saw while an
    // append was being stored) judges it whole too.
    let mut reader =
        ledger_projections::projector::Reader::open(&s, inside - 1, &trust(), Some(inside))
            .await
            .unwrap();
    for seq in [inside - 1, inside] {
        let raw = reader.next().await.unwrap().unwrap();
        assert_eq!(raw.seq, seq);
        assert_eq!(raw.seal, ledger_schemas::signing::Seal::Signed, "at {seq}");
    }
    let mut v = ledger::audit::Verifier::new("ledger.events").with_keys(test_keys().public);
    ledger::audit::read_stream(&s, 1, Some(inside), |r| v.check_owned(r))
        .await
        .unwrap();
    v.finish();
    assert_eq!(v.findings_total, 0, "{:?}", v.findings);

    // A foreign message at the stream's end claiming the first place of an
    // append that never ends (the ledger stopped: nothing follows it): the
    // bounded readers wait for its rest a while, then judge it foreign
    // instead of waiting for ever.
    running.stop().await.unwrap();
    let foreign = publish_raw(
        &client,
        "ledger.events.acct.0001",
        &[("Ledger-Batch", "1/2")],
        "{}",
    )
    .await;
    let bounded = async {
        let mut reader =
            ledger_projections::projector::Reader::open(&s, foreign, &trust(), Some(foreign))
                .await
                .unwrap();
        reader.next().await.unwrap().unwrap()
    };
    let audited = async {
        let mut v = ledger::audit::Verifier::new("ledger.events").with_keys(test_keys().public);
        ledger::audit::read_stream(&s, 1, None, |r| v.check_owned(r))
            .await
            .unwrap();
        v.finish();
        v
    };
    let (raw, v) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(bounded, audited)
    })
    .await
    .expect("bounded readers end");
    assert_eq!(raw.seq, foreign);
    assert!(
        matches!(raw.seal, ledger_schemas::signing::Seal::Unsigned(_)),
        "{:?}",
        raw.seal
    );
    let found: Vec<u64> = v.findings.iter().map(|f| f.seq).collect();
    assert_eq!(found, [foreign], "{:?}", v.findings);
}
