//! The event store against a real nats-server.

use std::time::Duration;

use async_nats::jetstream::stream;
use bytes::Bytes;
use ledger::store::{AppendMessage, EventStore, StoreError, StreamSettings, batch, read};
use ledger_schemas::ChainHash;
use ledger_testkit::NatsServer;

use crate::support::test_keys;

const TIMEOUT: Duration = Duration::from_secs(5);

fn key() -> ledger_schemas::signing::SigningKey {
    test_keys().signing.unwrap()
}

fn genesis() -> ChainHash {
    ChainHash::GENESIS
}

async fn open(nats: &NatsServer) -> EventStore {
    let client = async_nats::connect(nats.url()).await.unwrap();
    EventStore::open(client, StreamSettings::default(), test_keys())
        .await
        .unwrap()
}

/// Messages for `subject` continuing its chain from `chain`.
fn messages(
    subject: &str,
    bodies: &[&str],
    expected: Option<u64>,
    chain: &mut ChainHash,
) -> Vec<AppendMessage> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let payload = Bytes::from(body.to_string());
            *chain = chain.next(&payload);
            AppendMessage {
                subject: subject.to_owned(),
                payload,
                event_id: uuid::Uuid::now_v7().to_string(),
                event_type: "account_opened",
                chain: chain.to_hex(),
                expected_last_subject_seq: if i == 0 { expected } else { None },
            }
        })
        .collect()
}

async fn info(store: &EventStore) -> stream::Info {
    let mut s = store.stream().clone();
    s.info().await.unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_the_stream_with_safe_settings() {
    let nats = NatsServer::start().await.unwrap();
    let store = open(&nats).await;
    let info = info(&store).await;
    let c = &info.config;
    assert!(c.deny_delete && c.deny_purge && c.allow_atomic_publish && c.allow_direct);
    assert!(!c.allow_rollup);
    assert_eq!(c.discard, stream::DiscardPolicy::New);
    assert_eq!(c.storage, stream::StorageType::File);
    // Opening again verifies and accepts the same stream.
    open(&nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_stream_that_could_lose_events() {
    let nats = NatsServer::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let settings = StreamSettings::default();
    js.create_stream(stream::Config {
        name: settings.name.clone(),
        subjects: settings.subjects(),
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = EventStore::open(client, settings, test_keys())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_age must be unlimited"), "{err}");
    assert!(err.contains("deny_delete must be set"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_batches_atomically_and_reads_them_back() {
    let nats = NatsServer::start().await.unwrap();
    let store = open(&nats).await;
    let settings = store.settings().clone();
    let (a, b) = ("ledger.events.acct.a", "ledger.events.acct.b");
    let (mut chain_a, mut chain_b) = (ChainHash::GENESIS, ChainHash::GENESIS);

    let one = messages(a, &["a1"], Some(0), &mut chain_a);
    let appended = batch::append(store.client(), &one, TIMEOUT, &key())
        .await
        .unwrap();
    assert_eq!((appended.last_seq, appended.count), (1, 1));

    // Two subjects in one batch, each with its expectation on its first message.
    let mut both = messages(a, &["a2", "a3"], Some(1), &mut chain_a);
    both.extend(messages(b, &["b1"], Some(0), &mut chain_b));
    let appended = batch::append(store.client(), &both, TIMEOUT, &key())
        .await
        .unwrap();
    assert_eq!((appended.first_seq(), appended.last_seq), (2, 4));

    // Bodies are not event envelopes here: chained, but not the ledger's
    // events, so a reader skips every one, and the subject's next append
    // expects seq 3 and chains from genesis.
    let read_a = store.events_after(a, 0, ChainHash::GENESIS).await.unwrap();
    assert!(read_a.events.is_empty());
    let skipped: Vec<u64> = read_a.foreign.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(skipped, [1, 2, 3]);
    assert!(
        read_a.foreign[0].1.contains("not an event envelope"),
        "{:?}",
        read_a.foreign
    );
    assert_eq!((read_a.last_seq, read_a.chain), (3, ChainHash::GENESIS));
    let (last, chain) = read::last_on_subject(store.stream(), a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((last, chain), (3, Some(chain_a)));
    assert_eq!(
        read::last_on_subject(
            store.stream(),
            &settings.account_subject(&ledger_schemas::AccountId::parse("nobody").unwrap())
        )
        .await
        .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expectation_refuses_the_whole_batch() {
    let nats = NatsServer::start().await.unwrap();
    let store = open(&nats).await;
    let (a, b) = ("ledger.events.acct.a", "ledger.events.acct.b");
    let (mut chain_a, mut chain_b) = (ChainHash::GENESIS, ChainHash::GENESIS);
    batch::append(
        store.client(),
        &messages(b, &["b1"], Some(0), &mut chain_b),
        TIMEOUT,
        &key(),
    )
    .await
    .unwrap();

    let mut stale = messages(a, &["a1", "a2"], Some(0), &mut chain_a);
    stale.extend(messages(b, &["b2"], Some(0), &mut chain_b)); // b is at 1, not 0
    let err = batch::append(store.client(), &stale, TIMEOUT, &key())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        info(&store).await.state.messages,
        1,
        "nothing of the refused batch is stored"
    );

    let single = messages(a, &["a1"], Some(5), &mut genesis());
    let err = batch::append(store.client(), &single, TIMEOUT, &key())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_message_id_is_not_stored_twice() {
    let nats = NatsServer::start().await.unwrap();
    let store = open(&nats).await;
    let a = "ledger.events.acct.a";
    let msgs = messages(a, &["a1", "a2"], Some(0), &mut genesis());
    batch::append(store.client(), &msgs, TIMEOUT, &key())
        .await
        .unwrap();
    let again = batch::append(store.client(), &msgs[..1], TIMEOUT, &key()).await;
    assert_eq!(info(&store).await.state.messages, 2, "{again:?}");
}
