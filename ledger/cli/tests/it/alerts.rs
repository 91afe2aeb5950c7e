//! Balance alerts as deployed: a `ledger` process of its own, many
//! concurrent commands around a threshold, a webhook receiver that is down
//! for a while, and a subscriber on `ledger.alerts.<account_id>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &str = "alert-webhook-secret-for-tests";

/// What the webhook receiver got: per event id, how many deliveries, and
/// whether every signature checked.
#[derive(Default)]
struct Received {
    count: BTreeMap<String, u32>,
    bad_signatures: u32,
}

fn signed(secret: &str, t: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn receiver(port: u16, received: Arc<Mutex<Received>>) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let received = received.clone();
            async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let id = header("x-ledger-event-id");
                let signature = header("x-ledger-signature");
                let (t, v1) = signature
                    .split_once(",v1=")
                    .map(|(t, v)| (t.trim_start_matches("t=").to_owned(), v.to_owned()))
                    .unwrap_or_default();
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut r = received.lock().unwrap();
                if v1 != signed(SECRET, &t, &body) || event["event_id"] != id.as_str() {
                    r.bad_signatures += 1;
                }
                *r.count.entry(id).or_default() += 1;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// Opens `account` with 10 credits and an alert at 5 on its total; the
/// subscription to its alerts on the bus.
async fn watched(client: &async_nats::Client, account: &str) -> async_nats::Subscriber {
    let published = client
        .subscribe(format!("ledger.alerts.{account}"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    funded(client, account, "10").await;
    let r = cmd(
        client,
        "set_alert",
        json!({"idempotency_key": "alert", "account_id": account, "threshold": "5"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    published
}

/// Consumes (SMS) or grants (general) `credits` on `account`, the `i`th
/// such command; it must be accepted.
async fn spend_or_grant(
    client: &async_nats::Client,
    account: &str,
    spend: bool,
    i: usize,
    credits: &str,
) {
    let r = if spend {
        cmd(
            client,
            "consume",
            json!({"idempotency_key": format!("c-{i}"), "account_id": account,
                "service": "sms", "quantity": 1, "credits": credits}),
        )
        .await
    } else {
        cmd(
            client,
            "grant",
            json!({"idempotency_key": format!("g-{i}"), "account_id": account,
                "bucket": "general", "credits": credits, "source": "promotion"}),
        )
        .await
    };
    assert!(code(&r).is_none(), "{r}");
}

/// Starts the webhook receiver on `port` and waits until it has every
/// alert of `ids`, then a little longer: each arrived once, signed, and
/// nothing else arrived. The receiver keeps running.
async fn each_delivered_once(port: u16, ids: &[String]) -> tokio::task::JoinHandle<()> {
    let received = Arc::new(Mutex::new(Received::default()));
    let server = receiver(port, received.clone()).await;
    wait_for(Duration::from_secs(60), || async {
        let r = received.lock().unwrap();
        ids.iter().all(|id| r.count.contains_key(id)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = received.lock().unwrap();
    assert_eq!(r.bad_signatures, 0);
    assert_eq!(r.count.len(), ids.len(), "only the log's alerts");
    assert!(
        r.count.values().all(|n| *n == 1),
        "each once: {:?}",
        r.count
    );
    server
}

fn credits(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_consumptions_around_a_threshold_fire_once_per_crossing_and_each_delivery_arrives_once()
 {
    let servers = Servers::start().await;
    let port = free_port().await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let (mut process, _url) = serve_ledger(
        &servers,
        "all",
        &[
            ("LEDGER_ALERT_WEBHOOK_URL", hook.as_str()),
            ("LEDGER_ALERT_WEBHOOK_SECRET", SECRET),
            ("LEDGER_ALERT_WEBHOOK_BACKOFF_MAX_S", "2"),
        ],
    )
    .await;
    let client = servers.client().await;
    // Operations (NATS account OPS) set the alert and follow the alerts,
    // and so does a platform service, across the accounts' import.
    let ops = servers.client_as("ops").await;
    let sms = servers.client_as("sms").await;
    let mut published = ops.subscribe("ledger.alerts.al").await.unwrap();
    let mut to_sms = sms.subscribe("ledger.alerts.>").await.unwrap();
    ops.flush().await.unwrap();
    sms.flush().await.unwrap();
    funded(&client, "al", "550").await;
    let r = cmd(
        &ops,
        "set_alert",
        json!({"idempotency_key": "alert-total", "account_id": "al", "threshold": "550"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");

    // 1,000 spends and 1,000 grants of one credit, in random order, 40 at a
    // time: the total wanders around 550 and crosses it again and again.
    let mut order: Vec<bool> = (0..2000).map(|i| i % 2 == 0).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let results = futures::stream::iter(order.into_iter().enumerate())
        .map(|(i, spend)| {
            let client = client.clone();
            async move { spend_or_grant(&client, "al", spend, i, "1").await }
        })
        .buffer_unordered(40)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(results.len(), 2000);

    // From the log alone: the total after each event, the crossings it
    // shows, and the alerts recorded.
    let log = log_of(&client, "al").await;
    let threshold = Decimal::from(550);
    let (mut total, mut below) = (Decimal::ZERO, false);
    let (mut downs, mut ups) = (0, 0);
    let mut alerts: Vec<(String, String)> = Vec::new();
    let mut previous_crossed = false;
    // Crossings count once the alert is set (its state then: not low).
    let mut armed = false;
    for e in &log {
        let v = serde_json::to_value(e).unwrap();
        match v["type"].as_str().unwrap() {
            "credits_granted" => total += credits(&v["data"]["credits"]),
            "credits_consumed" => total -= credits(&v["data"]["credits"]),
            "balance_alert" => {
                assert!(previous_crossed, "an alert right after a crossing: {v}");
                alerts.push((
                    v["event_id"].as_str().unwrap().to_owned(),
                    v["data"]["state"].as_str().unwrap().to_owned(),
                ));
                previous_crossed = false;
                continue;
            }
            "alert_set" => {
                armed = true;
                below = false;
            }
            _ => {}
        }
        if !armed {
            continue;
        }
        let now_below = total < threshold;
        previous_crossed = now_below != below;
        match (below, now_below) {
            (false, true) => downs += 1,
            (true, false) => ups += 1,
            _ => {}
        }
        below = now_below;
    }
    assert_eq!(total, threshold, "1,000 spent, 1,000 granted");
    assert!(
        downs > 1,
        "the load crossed the threshold repeatedly ({downs})"
    );
    let lows = alerts.iter().filter(|(_, s)| s == "low").count();
    let recovered = alerts.iter().filter(|(_, s)| s == "recovered").count();
    assert_eq!((lows, recovered), (downs, ups), "one alert per crossing");

    // The audit agrees: every alert at a crossing of its replay.
    let out = run_ledger(&servers, &["audit", "verify", "--no-read-models"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");

    // The receiver was down all along; up now, it gets each alert once,
    // signed.
    let ids: Vec<String> = alerts.iter().map(|(id, _)| id.clone()).collect();
    let server = each_delivered_once(port, &ids).await;
    let db = servers.db().await;
    let failed: i64 = db
        .query_one(
            "SELECT count(*) FROM ledger_cmd.alert_outbox WHERE attempts > 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        failed > 0,
        "deliveries were retried while the receiver was down"
    );

    // Published on ledger.alerts.al, every one.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < ids.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), published.next())
            .await
            .expect("every alert published")
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .to_string();
        seen.insert(id);
    }
    assert_eq!(seen, ids.iter().cloned().collect());
    let first = tokio::time::timeout(Duration::from_secs(10), to_sms.next())
        .await
        .expect("a platform service follows the alerts")
        .unwrap();
    assert_eq!(first.subject.as_str(), "ledger.alerts.al");

    // Under a threshold, the usage reply says so.
    let r = cmd(
        &client,
        "set_alert",
        json!({"idempotency_key": "alert-sms", "account_id": "al", "service": "sms",
            "threshold": "1000000"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    let r = cmd(
        &client,
        "consume",
        json!({"idempotency_key": "c-last", "account_id": "al", "service": "sms",
            "quantity": 1, "credits": "1"}),
    )
    .await;
    let below = r["below_threshold"].as_array().expect("below_threshold");
    assert!(
        below
            .iter()
            .any(|b| b["service"] == "sms" && b["threshold"] == "1000000"),
        "{r}"
    );
    assert_eq!(
        r["event"]["type"], "credits_consumed",
        "the reply's event is the command's"
    );
    server.abort();
    process.kill().await.unwrap();
}

/// A webhook receiver that takes every connection and never answers.
async fn black_hole(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    })
}

async fn next_alert(sub: &mut async_nats::Subscriber) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("an alert on the bus while its delivery hangs")
        .unwrap();
    serde_json::from_slice(&m.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_holds_up_no_alert_and_done_rows_are_swept() {
    let servers = Servers::start().await;
    let port = free_port().await;
    let hole = black_hole(port).await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    // Each delivery waits a minute for its answer.
    let settings = [
        ("LEDGER_ALERT_WEBHOOK_URL", hook.as_str()),
        ("LEDGER_ALERT_WEBHOOK_SECRET", SECRET),
        ("LEDGER_ALERT_WEBHOOK_TIMEOUT_MS", "60000"),
    ];
    let (mut process, _url) = serve_ledger(&servers, "all", &settings).await;
    let client = servers.client().await;
    let mut published = watched(&client, "hole").await;
    spend_or_grant(&client, "hole", true, 0, "6").await;
    let low = next_alert(&mut published).await;
    assert_eq!(low["data"]["state"], "low", "{low}");
    // The first alert's delivery now hangs; the second still reaches the
    // bus at once.
    spend_or_grant(&client, "hole", false, 1, "6").await;
    let recovered = next_alert(&mut published).await;
    assert_eq!(recovered["data"]["state"], "recovered", "{recovered}");
    process.kill().await.unwrap();
    hole.abort();

    // Outbox retention: a row delivered 40 days ago goes when a dispatcher
    // takes over; one never delivered stays, however old.
    let db = servers.db().await;
    let ids = [&low, &recovered].map(|e| {
        e["event_id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap()
    });
    db.execute(
        "UPDATE ledger_cmd.alert_outbox SET published_at = now() - interval '40 days', \
         delivered_at = CASE WHEN event_id = $1 THEN now() - interval '40 days' END",
        &[&ids[0]],
    )
    .await
    .unwrap();
    let (mut process, _url) = serve_ledger(&servers, "all", &settings).await;
    let remaining = || async {
        db.query("SELECT event_id FROM ledger_cmd.alert_outbox", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, uuid::Uuid>(0))
            .collect::<Vec<_>>()
    };
    wait_for(Duration::from_secs(30), || async {
        (!remaining().await.contains(&ids[0])).then_some(())
    })
    .await;
    assert_eq!(remaining().await, [ids[1]], "the undelivered alert stays");
    process.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_dispatcher_takes_over_and_every_alert_arrives_once() {
    let servers = Servers::start().await;
    let port = free_port().await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let settings = [
        ("LEDGER_ALERT_WEBHOOK_URL", hook.as_str()),
        ("LEDGER_ALERT_WEBHOOK_SECRET", SECRET),
        ("LEDGER_ALERT_WEBHOOK_BACKOFF_MAX_S", "1"),
    ];
    let (mut commands, _) = serve_ledger(&servers, "command", &[]).await;
    let (mut first, _) = serve_ledger(&servers, "projections", &settings).await;
    let client = servers.client().await;
    let mut published = watched(&client, "standby").await;
    let step = |spend: bool, i: usize| spend_or_grant(&client, "standby", spend, i, "6");
    // The first projections process dispatches the first alert (the
    // receiver is down: published, not delivered).
    step(true, 0).await;
    let m = tokio::time::timeout(Duration::from_secs(20), published.next())
        .await
        .expect("the first alert published")
        .unwrap();
    let mut ids = vec![m.headers.unwrap().get("Nats-Msg-Id").unwrap().to_string()];
    // A second one stands by; the first is killed.
    let (mut second, _) = serve_ledger(&servers, "projections", &settings).await;
    first.kill().await.unwrap();
    step(false, 1).await;
    step(true, 2).await;
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(30), published.next())
            .await
            .expect("the standby publishes the later alerts")
            .unwrap();
        ids.push(m.headers.unwrap().get("Nats-Msg-Id").unwrap().to_string());
    }
    let logged: Vec<String> = log_of(&client, "standby")
        .await
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|v| v["type"] == "balance_alert")
        .map(|v| v["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, logged, "each alert of the log published, in order");
    // The receiver comes up: the standby delivers all three, each once.
    let server = each_delivered_once(port, &ids).await;
    server.abort();
    second.kill().await.unwrap();
    commands.kill().await.unwrap();
}
