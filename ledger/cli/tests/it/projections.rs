//! Read models against the log: equal to a fold of it, unchanged by crashes,
//! rebuilt without readers noticing, and paged exactly once.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ledger_cli::{Role, start};
use ledger_projections::projector::{Projection, Projector, StatusBoard};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

fn db_url(servers: &Servers, db: &str) -> String {
    format!("postgres://ledger@127.0.0.1:{}/{db}", servers.pg.port())
}

/// Waits until every projector of `db` has applied the whole stream.
async fn wait_projected(servers: &Servers, db: &str) {
    let client = servers.client().await;
    let head = stream_head(&client).await;
    let c = pg(&db_url(servers, db)).await;
    for _ in 0..600 {
        let rows = c
            .query("SELECT stream_seq FROM ledger.projection_checkpoints", &[])
            .await
            .unwrap_or_default();
        if rows.len() == Projection::ALL.len()
            && rows.iter().all(|r| r.get::<_, i64>(0) as u64 >= head)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the projectors of {db} did not reach stream seq {head}");
}

async fn stream_head(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream("LEDGER").await.unwrap();
    s.info().await.unwrap().state.last_sequence
}

/// Every read-model row of `db`, as text, in a fixed order.
async fn dump(servers: &Servers, db: &str) -> Vec<String> {
    let c = pg(&db_url(servers, db)).await;
    let mut out = Vec::new();
    for (table, order) in [
        ("service_balances", "account_id, bucket"),
        ("credit_history", "stream_seq, line"),
        ("usage_daily", "account_id, service, day"),
        ("topups", "topup_id"),
    ] {
        let rows = c
            .query(
                &format!("SELECT t::text FROM ledger.{table} t ORDER BY {order}"),
                &[],
            )
            .await
            .unwrap();
        out.extend(
            rows.iter()
                .map(|r| format!("{table} {}", r.get::<_, String>(0))),
        );
    }
    out
}

async fn twin(servers: &Servers, name: &str) {
    let admin = pg(&servers.pg.connection_string()).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER ledger"))
        .await
        .unwrap();
    let pool = ledger_projections::db::pool(&db_url(servers, name)).unwrap();
    ledger_projections::db::migrate(&pool).await.unwrap();
}

/// Runs every projector into `db` until it has applied the whole stream.
async fn project_fully(servers: &Servers, db: &str) {
    let client = servers.client().await;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("LEDGER").await.unwrap();
    let token = CancellationToken::new();
    let mut tasks = Vec::new();
    for projection in Projection::ALL {
        let p = Projector {
            projection,
            database_url: db_url(servers, db),
            stream: stream.clone(),
            trust: trust(),
            status: Default::default(),
        };
        tasks.push(tokio::spawn(p.run(token.clone())));
    }
    wait_projected(servers, db).await;
    token.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// A deterministic mix of every command over `accounts` accounts.
async fn mixed_load(client: &async_nats::Client, accounts: usize, rounds: usize, tag: &str) {
    let mut tasks = Vec::new();
    for a in 0..accounts {
        let client = client.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let account = format!("{tag}{a}");
            funded(&client, &account, "50").await;
            let mut open_reservation: Option<String> = None;
            for i in 0..rounds {
                let key = format!("{account}-{i}");
                let (name, body) = match (i + a) % 7 {
                    0 | 1 => ("consume", json!({"idempotency_key": key, "account_id": account,
                        "service": if i % 2 == 0 { "sms" } else { "email" }, "quantity": 1 + i % 5})),
                    2 => ("consume", json!({"idempotency_key": key, "account_id": account,
                        "service": "sms", "quantity": 1, "credits": format!("{}.25", i % 4)})),
                    3 => ("transfer", json!({"idempotency_key": key, "account_id": account,
                        "from_bucket": "general", "to_bucket": "sms", "credits": "0.5"})),
                    4 => match open_reservation.take() {
                        Some(id) if i % 2 == 0 => ("capture", json!({"idempotency_key": key,
                            "account_id": account, "reservation_id": id, "credits": "0.4"})),
                        Some(id) => ("release", json!({"idempotency_key": key,
                            "account_id": account, "reservation_id": id})),
                        None => ("reserve", json!({"idempotency_key": key, "account_id": account,
                            "service": "email", "credits": "1.5", "expires_in_s": 600})),
                    },
                    5 => ("adjust", json!({"idempotency_key": key, "account_id": account,
                        "bucket": "email", "delta": if i % 3 == 0 { "-0.1" } else { "0.3" },
                        "reason": "test"})),
                    _ => ("grant", json!({"idempotency_key": key, "account_id": account,
                        "bucket": "general", "credits": "2", "source": "promotion"})),
                };
                let r = cmd(&client, name, body).await;
                if let Some(id) = r["reservation_id"].as_str() {
                    open_reservation = Some(id.to_owned());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_equal_a_fold_of_the_log() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    mixed_load(&client, 12, 30, "fold").await;
    wait_projected(&servers, "ledger").await;

    let c = pg(&db_url(&servers, "ledger")).await;
    for a in 0..12 {
        let account = format!("fold{a}");
        let log = log_of(&client, &account).await;
        let folded = replayed(&client, &account).await;
        let rows = c
            .query(
                "SELECT bucket, balance, reserved FROM ledger.service_balances WHERE account_id = $1",
                &[&account],
            )
            .await
            .unwrap();
        let model: BTreeMap<String, (Decimal, Decimal)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let reserved = folded.reserved();
        for (bucket, balance) in folded.balances() {
            let (b, res) = model.get(bucket.as_str()).copied().unwrap_or_default();
            assert_eq!(b, balance.get(), "{account} {bucket} balance");
            let want = bucket
                .service()
                .and_then(|s| reserved.get(&s).copied())
                .unwrap_or_default();
            assert_eq!(res, want.get(), "{account} {bucket} reserved");
        }
        // One history row per customer side of every posting, in log order,
        // each bucket's last balance_after equal to its balance.
        let sides: usize = log
            .iter()
            .flat_map(|e| &e.postings)
            .map(|p| {
                [&p.debit, &p.credit]
                    .iter()
                    .filter(|s| s.to_string().starts_with("customer:"))
                    .count()
            })
            .sum();
        let history = c
            .query(
                "SELECT bucket, balance_after FROM ledger.credit_history WHERE account_id = $1 \
                 ORDER BY stream_seq, line",
                &[&account],
            )
            .await
            .unwrap();
        assert_eq!(
            history.len(),
            sides,
            "{account}: one row per bucket movement"
        );
        let mut last: BTreeMap<String, Decimal> = BTreeMap::new();
        for r in &history {
            last.insert(r.get(0), r.get(1));
        }
        for (bucket, after) in last {
            assert_eq!(
                after, model[&bucket].0,
                "{account} {bucket}: last balance_after"
            );
        }
        // Daily usage adds up to the consumptions.
        let (mut quantity, mut credits) = (0i64, Decimal::ZERO);
        for e in &log {
            let v = serde_json::to_value(e).unwrap();
            if v["type"] == "credits_consumed" {
                quantity += v["data"]["quantity"].as_i64().unwrap();
                credits += dec(v["data"]["credits"].as_str().unwrap());
            }
            if v["type"] == "reservation_captured" {
                credits += dec(v["data"]["credits"].as_str().unwrap());
            }
        }
        let usage = c
            .query_one(
                "SELECT coalesce(sum(quantity), 0)::int8, coalesce(sum(credits), 0) \
                 FROM ledger.usage_daily WHERE account_id = $1",
                &[&account],
            )
            .await
            .unwrap();
        assert_eq!(
            (usage.get::<_, i64>(0), usage.get::<_, Decimal>(1)),
            (quantity, credits)
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_at_random_points_ends_like_an_uninterrupted_one() {
    let servers = Servers::start().await;
    let running = servers.ledger().await; // command side only
    let client = servers.client().await;
    mixed_load(&client, 10, 60, "kill").await;
    running.stop().await.unwrap();

    twin(&servers, "calm").await;
    project_fully(&servers, "calm").await;

    twin(&servers, "crashy").await;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("LEDGER").await.unwrap();
    let head = stream_head(&client).await;
    let c = pg(&db_url(&servers, "crashy")).await;
    let mut kills = 0;
    for round in 0..200u64 {
        let token = CancellationToken::new();
        let tasks: Vec<_> = Projection::ALL
            .into_iter()
            .map(|projection| {
                let p = Projector {
                    projection,
                    database_url: db_url(&servers, "crashy"),
                    stream: stream.clone(),
                    trust: trust(),
                    status: Default::default(),
                };
                tokio::spawn(p.run(token.clone()))
            })
            .collect();
        // A pseudo-random moment, anywhere in a batch: abort the tasks, which
        // drops their connections mid-transaction.
        tokio::time::sleep(Duration::from_millis(3 + (round * 7919) % 23)).await;
        for t in tasks {
            t.abort();
        }
        kills += 1;
        let done = c
            .query("SELECT stream_seq FROM ledger.projection_checkpoints", &[])
            .await
            .unwrap()
            .iter()
            .filter(|r| r.get::<_, i64>(0) as u64 >= head)
            .count();
        if done == Projection::ALL.len() {
            break;
        }
    }
    assert!(
        kills > 3,
        "the projectors were interrupted several times ({kills})"
    );
    project_fully(&servers, "crashy").await;
    let (calm, crashy) = (dump(&servers, "calm").await, dump(&servers, "crashy").await);
    assert!(calm.len() > 500, "a real amount of rows ({})", calm.len());
    assert_eq!(calm, crashy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_swaps_in_identical_tables_unnoticed() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    mixed_load(&client, 6, 20, "pre").await;
    wait_projected(&servers, "ledger").await;

    // Commands keep coming, and a reader keeps reading, during the rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = cmd(
                    &client,
                    "consume",
                    json!({"idempotency_key": format!("during-{i}"),
                    "account_id": "pre0", "service": "sms", "quantity": 1, "credits": "0.01"}),
                )
                .await;
                assert!(
                    code(&r).is_none() || code(&r) == Some("insufficient_credits"),
                    "{r}"
                );
                i += 1;
            }
        })
    };
    let reader = {
        let stop = stop.clone();
        let base = format!("http://{}", running.http_addr);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for path in [
                    "/v1/accounts/pre1/balances",
                    "/v1/accounts/pre1/history?limit=5",
                ] {
                    let resp = http
                        .get(format!("{base}{path}"))
                        .bearer_auth(ADMIN)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap();
                    assert!(
                        status.is_success(),
                        "a read failed during the rebuild: {status} {body}"
                    );
                    reads += 1;
                }
            }
            reads
        })
    };
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("LEDGER").await.unwrap();
    for projection in Projection::ALL {
        ledger_projections::rebuild::rebuild(
            &db_url(&servers, "ledger"),
            &stream,
            &trust(),
            projection,
            |_, _| {},
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    wait_projected(&servers, "ledger").await;

    twin(&servers, "fresh").await;
    project_fully(&servers, "fresh").await;
    assert_eq!(
        dump(&servers, "ledger").await,
        dump(&servers, "fresh").await
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_return_every_row_once_newest_first_with_filters_kept() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    funded(&client, "pages", "100").await;
    for i in 0..40 {
        let service = if i % 3 == 0 { "email" } else { "sms" };
        let r = cmd(
            &client,
            "consume",
            json!({"idempotency_key": format!("p{i}"),
            "account_id": "pages", "service": service, "quantity": 1, "credits": "0.5"}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
    }
    wait_projected(&servers, "ledger").await;
    let http = reqwest::Client::new();
    let get = |q: String| {
        let http = http.clone();
        let url = format!("http://{}/v1/accounts/pages/history{q}", running.http_addr);
        async move {
            let resp = http.get(url).bearer_auth(ADMIN).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let mut query = "?service=sms&kind=credits_consumed&limit=7".to_owned();
    loop {
        let (status, page) = get(query.clone()).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["service"], "sms", "the filter holds on every page");
            seen.push((
                item["stream_seq"].as_i64().unwrap(),
                item["line"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            // Later pages name only the cursor: the filters travel inside it.
            Some(c) => query = format!("?limit=7&cursor={c}"),
            None => break,
        }
    }
    let expected = (0..40).filter(|i| i % 3 != 0).count();
    assert_eq!(seen.len(), expected, "every sms row once");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, no repeats");

    let (_, first) = get("?service=sms&limit=3".into()).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) = get(format!("?service=email&cursor={cursor}")).await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = get("?limit=0".into()).await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("invalid_request")),
        "{body}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_schema_version_stops_the_projector_with_the_event_named() {
    let servers = Servers::start().await;
    let running = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "ok", "1").await;
    running.stop().await.unwrap();
    // An event from a future version of the ledger: genuine (chained, its
    // headers and envelope agree), but not one this version can read.
    let js = async_nats::jetstream::new(client.clone());
    let future = json!({"event_id": "01900000-0000-7000-8000-000000000009", "type": "credits_granted",
        "schema_version": 99, "account_id": "future", "data": {}});
    let seq = publish_chained(&client, "ledger.events.acct.future", &future).await;
    twin(&servers, "strict").await;
    let stream = js.get_stream("LEDGER").await.unwrap();
    let status = StatusBoard::default();
    let p = Projector {
        projection: Projection::Accounts,
        database_url: db_url(&servers, "strict"),
        stream,
        trust: trust(),
        status: status.clone(),
    };
    let token = CancellationToken::new();
    let run = tokio::spawn(p.run(token.clone()));
    // It stops on the event, records where and why, and ends nothing else:
    // it waits for the process's shutdown.
    let c = pg(&db_url(&servers, "strict")).await;
    let stopped = wait_for(Duration::from_secs(20), || async {
        c.query_opt(
            "SELECT stream_seq, stopped_at_seq, stopped_reason FROM ledger.projection_checkpoints \
             WHERE projection = 'accounts' AND stopped_at_seq IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
    })
    .await;
    let (cp, at, reason): (i64, i64, String) = (stopped.get(0), stopped.get(1), stopped.get(2));
    assert_eq!(at as u64, seq);
    assert!(reason.contains("schema_version 99"), "{reason}");
    // Everything before it was applied; nothing after.
    assert_eq!(cp as u64, seq - 1);
    let board = status.lock().unwrap()["accounts"].clone();
    assert!(!board.active);
    assert!(
        board
            .stopped
            .unwrap()
            .contains(&format!("stream seq {seq}"))
    );
    assert!(
        !run.is_finished(),
        "a stopped projector does not end its process"
    );
    token.cancel();
    run.await.unwrap().unwrap();
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_and_outages_are_waited_out() {
    let mut servers = Servers::start().await;
    let running = servers.ledger().await;
    let client = servers.client().await;
    mixed_load(&client, 6, 30, "ha").await;
    running.stop().await.unwrap();
    twin(&servers, "calm").await;
    project_fully(&servers, "calm").await;
    twin(&servers, "ha").await;

    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("LEDGER").await.unwrap();
    let spawn = |token: CancellationToken| {
        let p = Projector {
            projection: Projection::Accounts,
            database_url: db_url(&servers, "ha"),
            stream: stream.clone(),
            trust: trust(),
            status: Default::default(),
        };
        tokio::spawn(p.run(token))
    };
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let a = spawn(first.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = spawn(second.clone());
    // The active one dies; the standby must finish the work.
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.abort();
    // Both servers go away for a moment while it runs.
    servers.pg.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    servers.pg.start_again().await.unwrap();
    servers.nats.restart().await.unwrap();
    let topups = spawn_topups(&servers, db_url(&servers, "ha")).await;
    wait_projected(&servers, "ha").await;
    second.cancel();
    b.await.unwrap().unwrap();
    topups.cancel();
    assert_eq!(dump(&servers, "calm").await, dump(&servers, "ha").await);
}

async fn spawn_topups(servers: &Servers, url: String) -> CancellationToken {
    let client = servers.client().await;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("LEDGER").await.unwrap();
    let token = CancellationToken::new();
    let p = Projector {
        projection: Projection::Topups,
        database_url: url,
        stream,
        trust: trust(),
        status: Default::default(),
    };
    tokio::spawn(p.run(token.clone()));
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_see_each_projector_and_its_lag() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    funded(&client, "ops", "3").await;
    wait_projected(&servers, "ledger").await;
    let base = format!("http://{}", running.http_addr);
    let http = reqwest::Client::new();
    let v: Value = http
        .get(format!("{base}/v1/ops/projections"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = stream_head(&client).await;
    let list = v["projections"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    for p in list {
        assert_eq!(p["stream_head"].as_u64(), Some(head), "{p}");
        assert_eq!(p["lag"].as_u64(), Some(0), "{p}");
    }
    let metrics = metrics_text(running.http_addr).await;
    assert!(
        metrics.contains("ledger_projection_lag_events{projection=\"accounts\"} 0"),
        "{metrics}"
    );
    let denied = http
        .get(format!("{base}/v1/ops/projections"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_polling_balances_while_commands_land_never_sees_a_torn_read() {
    let servers = Servers::start().await;
    let running = start(&servers.config(), Role::All).await.unwrap();
    let client = servers.client().await;
    funded(&client, "torn", "1000").await;
    funded(&client, "other", "1000").await;
    let url = format!("http://{}/v1/accounts/torn/balances", running.http_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = http.get(&url).bearer_auth(ADMIN).send().await.unwrap();
                if r.status() == 200 {
                    let b: Value = r.json().await.unwrap();
                    let general = Decimal::from_str(b["buckets"]["general"].as_str().unwrap());
                    seen.push((b["as_of_seq"].as_u64().unwrap(), general.unwrap()));
                }
            }
            seen
        })
    };
    // Commands land on the account and on another one (which moves the
    // checkpoint without moving this account's rows).
    for i in 0..150 {
        for account in ["torn", "other"] {
            let r = cmd(
                &client,
                "consume",
                json!({"idempotency_key": format!("t-{i}"),
                "account_id": account, "service": "email", "quantity": 1, "credits": "0.01"}),
            )
            .await;
            assert!(code(&r).is_none(), "{r}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.await.unwrap();
    // The balance after every event of the account, by stream seq.
    let stream = stream(&client).await;
    let log = ledger::store::read::events_after(
        &client,
        &stream,
        &test_keys().public,
        "ledger.events.acct.torn",
        0,
        ledger_schemas::ChainHash::GENESIS,
    )
    .await
    .unwrap()
    .events;
    let mut account =
        ledger::domain::Account::new(ledger_schemas::AccountId::parse("torn").unwrap());
    let mut after: Vec<(u64, Decimal)> = Vec::new();
    for e in &log {
        account.evolve(&e.envelope.body);
        after.push((e.seq, account.balance(&ledger_schemas::Bucket::general())));
    }
    assert!(
        seen.len() > 50,
        "the reader read while commands landed: {}",
        seen.len()
    );
    let distinct: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.0).collect();
    assert!(
        distinct.len() > 10,
        "reads spread over the load: {distinct:?}"
    );
    for (as_of, general) in &seen {
        let want = after
            .iter()
            .take_while(|(seq, _)| seq <= as_of)
            .last()
            .map(|(_, b)| *b)
            .unwrap();
        assert_eq!(
            *general, want,
            "as_of_seq {as_of} with the balance of another position"
        );
    }
    running.stop().await.unwrap();
}
