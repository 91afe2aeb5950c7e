//! The ledger on a three-node JetStream cluster (R3 streams, `sync_interval:
//! always`, the shipped accounts and permissions), as a platform that
//! outgrows one machine runs it: the stream leader killed under load, a
//! member down for a while and back, the whole cluster restarted.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_testkit::{NatsCluster, NatsOptions, Postgres};
use serde_json::json;

use crate::support::*;

/// How long commands may stall while the cluster elects a new leader.
const ELECTION_WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    nats: NatsCluster,
    pg: Postgres,
}

impl Cluster {
    async fn start() -> Self {
        let options = NatsOptions {
            accounts: true,
            sync_always: true,
            ..Default::default()
        };
        let (nats, pg) = tokio::join!(NatsCluster::start(3, options), Postgres::start());
        let cluster = Cluster {
            nats: nats.expect("the cluster starts"),
            pg: pg.expect("postgres starts"),
        };
        prepare_database(&cluster.pg).await;
        cluster
    }

    /// The ledger's settings: every member's address, R3 streams, and the
    /// members' monitoring addresses for the fsync check.
    fn config(&self) -> ledger_cli::Settings {
        let mut c = ledger::config::Config {
            nats_url: self.nats.urls(),
            nats_user: Some("ledger".into()),
            nats_password: Some(ledger::config::Secret::new(nats_password("ledger"))),
            database_url: format!("postgres://ledger@127.0.0.1:{}/ledger", self.pg.port()),
            http_addr: "127.0.0.1:0".into(),
            admin_token: Some(ledger::config::Secret::new(ADMIN)),
            signing_key: Some(ledger::config::Secret::new(SIGNING_KEY)),
            stream_replicas: 3,
            nats_monitor_urls: self.nats.monitor_urls(),
            ..Default::default()
        };
        c.limits.publish_timeout_ms = 2000;
        ledger_cli::Settings {
            ledger: c,
            ..Default::default()
        }
    }

    /// An operator client that knows every member (and moves between them).
    async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(
            "operator".into(),
            nats_password("operator"),
        )
        .connect(self.nats.urls().split(',').collect::<Vec<_>>())
        .await
        .unwrap()
    }

    /// The member that leads stream `LEDGER` now.
    async fn leader(&self, client: &async_nats::Client) -> String {
        wait_for(ELECTION_WAIT, || async {
            info(client).await?.cluster?.leader
        })
        .await
    }

    /// The stream's last sequence, once a leader answers.
    async fn head(&self, client: &async_nats::Client) -> u64 {
        wait_for(ELECTION_WAIT, || async {
            Some(info(client).await?.state.last_sequence)
        })
        .await
    }

    /// Waits until every replica of `LEDGER` is current with no lag.
    async fn all_current(&self, client: &async_nats::Client) {
        wait_for(Duration::from_secs(30), || async {
            let cluster = info(client).await?.cluster?;
            let ok = cluster.leader.is_some()
                && cluster.replicas.len() == 2
                && cluster
                    .replicas
                    .iter()
                    .all(|r| r.current && !r.offline && r.lag.unwrap_or(0) == 0);
            ok.then_some(())
        })
        .await;
    }
}

/// Stream `LEDGER`'s info, or `None` while no member answers (an
/// election, a member restarting).
async fn info(client: &async_nats::Client) -> Option<async_nats::jetstream::stream::Info> {
    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream("LEDGER").await.ok()?;
    s.info().await.ok().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_under_load_loses_no_acknowledged_command() {
    let mut cluster = Cluster::start().await;
    let running = ledger_cli::start(&cluster.config(), ledger_cli::Role::Command)
        .await
        .expect("the ledger starts on the cluster");
    let client = cluster.client().await;
    let config = info(&client).await.expect("the stream answers").config;
    assert_eq!(config.num_replicas, 3, "LEDGER is R3");
    let accounts: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    for a in &accounts {
        funded(&client, a, "100000").await;
    }
    // Load: four workers, each on its own account, one command at a time.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for a in accounts.clone() {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("{a}-{i}");
                if try_consume(&client, &key, &a).await == Some(true) {
                    acked.lock().unwrap().push((key, Instant::now()));
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = cluster.leader(&client).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "no command succeeded before the kill");
    let killed_at = Instant::now();
    cluster
        .nats
        .node_mut(&leader)
        .expect("the leader is a member")
        .kill()
        .await
        .unwrap();
    // Commands go on once another member leads.
    let resumed = wait_for(ELECTION_WAIT, || async {
        acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > killed_at)
            .map(|(_, at)| at.duration_since(killed_at))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let new_leader = cluster.leader(&client).await;
    assert_ne!(new_leader, leader, "another member leads");
    // Every acknowledged command is in the log, once; no key twice; the
    // balance each account reports is its log's.
    let acked: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    acknowledged_exactly_once(&client, &accounts, &acked, 100_000).await;
    println!(
        "{} commands acknowledged ({before} before the kill); commands resumed {resumed:?} after \
         the leader {leader} was killed; {new_leader} leads",
        acked.len()
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_for_a_while_catches_up_and_the_whole_cluster_restarted_is_rejoined() {
    let mut cluster = Cluster::start().await;
    let running = ledger_cli::start(&cluster.config(), ledger_cli::Role::Command)
        .await
        .expect("the ledger starts on the cluster");
    let client = cluster.client().await;
    funded(&client, "m", "1000").await;
    let leader = cluster.leader(&client).await;
    let follower = cluster
        .nats
        .nodes
        .iter()
        .map(|n| n.server_name().to_owned())
        .find(|n| *n != leader)
        .unwrap();
    // A follower away while commands land.
    cluster
        .nats
        .node_mut(&follower)
        .unwrap()
        .stop()
        .await
        .unwrap();
    // (A client connected to the stopped member moves to another; a
    // command without an answer is sent again under its key.)
    let mut done = BTreeSet::new();
    for i in 0..40 {
        let key = format!("m-{i}");
        wait_for(ELECTION_WAIT, || async {
            try_consume(&client, &key, "m").await.filter(|ok| *ok)
        })
        .await;
        done.insert(key);
    }
    let head = cluster.head(&client).await;
    cluster
        .nats
        .node_mut(&follower)
        .unwrap()
        .start_again()
        .await
        .unwrap();
    cluster.all_current(&client).await;
    // Without the leader that served the commands, the returned member
    // and the third carry the stream: everything is there.
    cluster
        .nats
        .node_mut(&leader)
        .unwrap()
        .stop()
        .await
        .unwrap();
    let now_leading = cluster.leader(&client).await;
    assert_ne!(now_leading, leader);
    assert_eq!(cluster.head(&client).await, head, "messages lost");
    let keys = keys_in_log(&client, &["m".to_owned()]).await;
    assert_eq!(keys.keys().cloned().collect::<BTreeSet<_>>(), done);
    cluster
        .nats
        .node_mut(&leader)
        .unwrap()
        .start_again()
        .await
        .unwrap();
    cluster.all_current(&client).await;

    // The whole cluster stopped and started again: the same ledger process
    // reconnects by itself and serves commands.
    for n in cluster.nats.nodes.iter_mut() {
        n.stop().await.unwrap();
    }
    let starts = cluster.nats.nodes.iter_mut().map(|n| n.start_again());
    for r in futures::future::join_all(starts).await {
        r.unwrap();
    }
    wait_for(Duration::from_secs(60), || async {
        try_consume(&client, "m-after-restart", "m")
            .await
            .filter(|ok| *ok)
    })
    .await;
    // The usage intake too: a usage message published now is consumed.
    // (Sent again until the usage stream, too, has a leader.)
    let js = async_nats::jetstream::new(client.clone());
    let usage = json!({"usage_id": "u-after-restart", "account_id": "m", "service": "sms",
        "quantity": 1, "credits": null, "occurred_at": "2026-11-21T10:00:00.000Z",
        "attributes": {}});
    wait_for(ELECTION_WAIT, || async {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "u-after-restart");
        js.publish_with_headers("ledger.usage.sms.m", h, usage.to_string().into())
            .await
            .ok()?
            .await
            .ok()
    })
    .await;
    wait_for(Duration::from_secs(30), || async {
        let b = cmd(&client, "get_balance", json!({"account_id": "m"})).await;
        // One SMS at the rate card's 0.0075.
        (b["balances"]["general"] == "958.9925").then_some(())
    })
    .await;
    // Every task of the ledger is still alive: none ended in an error.
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_streams_are_refused_on_servers_that_do_not_fsync_each_write() {
    let nats = ledger_testkit::NatsServer::start().await.unwrap();
    let replication = ledger::store::Replication {
        replicas: 3,
        placement_tags: vec![],
    };
    let monitor = vec![nats.monitor_url()];
    let e = ledger::store::check_sync_always(&replication, &monitor, false)
        .await
        .expect_err("a server without sync_interval: always is refused");
    assert!(e.to_string().contains("sync_interval"), "{e}");
    let e = ledger::store::check_sync_always(&replication, &[], false)
        .await
        .expect_err("without monitoring addresses nothing can be checked");
    assert!(e.to_string().contains("nats_monitor_urls"), "{e}");
    ledger::store::check_sync_always(&replication, &monitor, true)
        .await
        .expect("told otherwise");
    let always = ledger_testkit::NatsServer::start_with(NatsOptions {
        sync_always: true,
        ..Default::default()
    })
    .await
    .unwrap();
    ledger::store::check_sync_always(&replication, &[always.monitor_url()], false)
        .await
        .expect("a server that fsyncs each write");
}
