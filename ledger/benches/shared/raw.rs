//! The raw JetStream limit both benchmarks measure the ledger against:
//! event-sized messages appended as atomic batches of 1,000, eight in
//! flight (what the ledger's group commit sends). Included by
//! `ledger/benches/ledger.rs` and `ledger/cli/benches/cluster.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::store::{AppendMessage, StoreError, batch};
use ledger_schemas::ChainHash;

/// A ~200-byte event body, like a `credits_consumed` event's.
pub fn body(i: usize) -> bytes::Bytes {
    let pad = "x".repeat(120);
    bytes::Bytes::from(format!(
        "{{\"event_id\":\"{i:016}\",\"type\":\"credits_consumed\",\"pad\":\"{pad}\"}}"
    ))
}

/// Creates stream `name` on `<prefix>.>` with `replicas`, then appends `n`
/// messages over `accounts` subjects in atomic batches: messages/s.
pub async fn raw_batches(
    client: &async_nats::Client,
    name: &str,
    prefix: &str,
    replicas: usize,
    n: usize,
    accounts: usize,
) -> f64 {
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("{prefix}.>")],
        num_replicas: replicas,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .unwrap();
    // A replicated stream just made answers once its members elect a leader.
    let started = Instant::now();
    while replicas > 1 && !led(&js, name).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} has no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages: Vec<AppendMessage> = (0..n)
        .map(|i| AppendMessage {
            subject: format!("{prefix}.acct.a{}", i % accounts),
            payload: body(i),
            event_id: format!("{i}"),
            event_type: "credits_consumed",
            chain: ChainHash::GENESIS.to_hex(),
            expected_last_subject_seq: None,
        })
        .collect();
    // Signed as the ledger signs its appends, so the limit bears that cost too.
    let key = Arc::new(
        ledger_schemas::signing::SigningKey::parse(
            &ledger_schemas::signing::SigningKey::generate("raw").unwrap(),
        )
        .unwrap(),
    );
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for chunk in batch::split_to_fit(&messages) {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            // A cluster just formed may not route to the stream's leader
            // yet ("no responders": nothing was stored); try again shortly.
            let mut tries = 0;
            loop {
                match batch::append(&client, &chunk, Duration::from_secs(30), &key).await {
                    Ok(_) => break,
                    Err(StoreError::Unavailable(e)) if tries < 100 => {
                        tries += 1;
                        eprintln!("raw batch: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("raw batch: {e}"),
                }
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Whether stream `name` has a leader now.
async fn led(js: &async_nats::jetstream::Context, name: &str) -> bool {
    let Ok(mut stream) = js.get_stream(name).await else {
        return false;
    };
    stream
        .info()
        .await
        .ok()
        .and_then(|i| i.cluster.clone())
        .and_then(|c| c.leader)
        .is_some()
}
