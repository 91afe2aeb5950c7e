//! Top-ups end to end: the ledger (`--role all`) against the fake Razorpay
//! over real HTTP, webhooks included. Each scenario ends in exactly one
//! credit, or none, as it should.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ledger::config::Secret;
use ledger::serve::Running;
use ledger_cli::{Role, Settings, start};
use ledger_gateway_adapter::fake::Fake;
use ledger_gateway_adapter::signature::sign;
use ledger_schemas::{EventData, GrantSource};
use serde_json::{Value, json};

use crate::support::{
    ADMIN, Servers, cmd, code, free_port, log_of, rules, serve_ledger, verify_stream,
};

const KEY_ID: &str = "rzp_test_k";
const KEY_SECRET: &str = "s3cret-key";
const WEBHOOK_SECRET: &str = "whsec-current";
/// INR per USD in these tests: $10.00 is 83,120 paise.
const RATE: &str = "83.12";

/// The servers, the fake Razorpay, and a ledger running every role.
struct Shop {
    servers: Servers,
    fake: String,
    fake_books: Fake,
    /// The process serving the gateway (every role, or the gateway alone).
    ledger: Option<Running>,
    /// The command side and projections, when they run in processes of their own.
    _others: Vec<Running>,
    addr: SocketAddr,
    config: Settings,
    http: reqwest::Client,
}

/// Which processes run the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One process runs every role.
    One,
    /// The command side, the projections and the gateway each in a process
    /// of their own, as a deployment would run them.
    Split,
    /// The command side and the gateway, and no projector: the read models
    /// never fill.
    NoProjections,
}

impl Shop {
    /// `reconcile_first_s`: how soon the poller looks at a new top-up.
    async fn open(reconcile_first_s: u64) -> Shop {
        Shop::open_as(reconcile_first_s, Layout::One).await
    }

    async fn open_as(reconcile_first_s: u64, layout: Layout) -> Shop {
        let servers = Servers::start().await;
        let mut fake = Fake::new(KEY_ID, KEY_SECRET);
        fake.webhook_backoff = Duration::from_millis(300);
        fake.webhook_attempts = 8;
        fake.lost_delay = Duration::from_secs(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_url = format!("http://{}", listener.local_addr().unwrap());
        let router = fake.clone().router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let port = free_port().await;
        let mut config = servers.config();
        config.ledger.http_addr = format!("127.0.0.1:{port}");
        config.gateway.razorpay_base_url = Some(fake_url.clone());
        config.gateway.razorpay_key_id = Some(KEY_ID.into());
        config.gateway.razorpay_key_secret = Some(Secret::new(KEY_SECRET));
        config.gateway.razorpay_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        config.gateway.razorpay_timeout_ms = 1000;
        config.gateway.fx_usd_inr = Some(RATE.into());
        config.gateway.reconcile_first_s = reconcile_first_s;
        config.gateway.reconcile_tick_ms = 100;
        let mut others = Vec::new();
        let apart: &[Role] = match layout {
            Layout::One => &[],
            Layout::Split => &[Role::Command, Role::Projections],
            Layout::NoProjections => &[Role::Command],
        };
        for role in apart {
            let mut c = config.clone();
            c.ledger.http_addr = "127.0.0.1:0".into();
            others.push(start(&c, *role).await.expect("a role starts"));
        }
        let role = if apart.is_empty() {
            Role::All
        } else {
            Role::Gateway
        };
        let ledger = start(&config, role).await.expect("the ledger starts");
        let addr = ledger.http_addr;
        let shop = Shop {
            servers,
            fake: fake_url,
            fake_books: fake,
            ledger: Some(ledger),
            _others: others,
            addr,
            config,
            http: reqwest::Client::new(),
        };
        shop.control(
            "/_fake/webhooks",
            json!({"url": format!("http://{addr}/v1/webhooks/razorpay"), "secret": WEBHOOK_SECRET}),
        )
        .await;
        shop
    }

    async fn restart(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.stop().await.unwrap();
        }
        self.ledger = Some(start(&self.config, Role::All).await.expect("restarts"));
    }

    async fn stop(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.stop().await.unwrap();
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.fake))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn webhook_mode(&self, mode: Value) {
        self.control("/_fake/webhooks/mode", mode).await;
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn account(&self, account: &str) {
        let nats = self.servers.client().await;
        let r = cmd(
            &nats,
            "open_account",
            json!({"idempotency_key": format!("open-{account}"), "account_id": account}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
    }

    /// A new top-up of `usd` for a fresh account; its id and order id.
    async fn topup(&self, account: &str, usd: &str) -> (String, String) {
        self.account(account).await;
        let (status, t) = self
            .api(
                reqwest::Method::POST,
                &format!("/v1/accounts/{account}/topups"),
                Some(json!({"amount_usd": usd, "phone": "+919876543210"})),
            )
            .await;
        assert_eq!(status, 201, "{t}");
        assert_eq!(t["status"], "awaiting_payment", "{t}");
        (
            t["topup_id"].as_str().unwrap().to_owned(),
            t["razorpay"]["order_id"].as_str().unwrap().to_owned(),
        )
    }

    /// The customer pays; the payment's id.
    async fn pay(&self, order: &str, body: Value) -> String {
        let p = self
            .control(&format!("/_fake/orders/{order}/pay"), body)
            .await;
        p["id"].as_str().unwrap().to_owned()
    }

    /// Checkout's success handler posts what Razorpay gave it.
    async fn checkout(&self, topup: &str, order: &str, payment: &str) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            &format!("/v1/topups/{topup}/checkout"),
            Some(
                json!({"razorpay_payment_id": payment, "razorpay_order_id": order,
                "razorpay_signature": sign(format!("{order}|{payment}").as_bytes(), KEY_SECRET)}),
            ),
        )
        .await
    }

    /// Waits until the read model shows the top-up in `status`.
    async fn wait_status(&self, topup: &str, status: &str) -> Value {
        let started = Instant::now();
        loop {
            let (code, t) = self
                .api(reqwest::Method::GET, &format!("/v1/topups/{topup}"), None)
                .await;
            if code == 200 && t["status"] == status {
                return t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "top-up {topup} never reached {status}: {t}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A GET without a token, its JSON answer.
    async fn get_json(&self, url: &str) -> Value {
        let resp = self.http.get(url).send().await.unwrap();
        resp.json().await.unwrap()
    }

    /// Waits until the fake has no webhook left to deliver (every event's
    /// last attempt answered 2xx, or given up).
    async fn webhooks_settled(&self, events_at_least: usize) {
        let started = Instant::now();
        loop {
            let d = self
                .get_json(&format!("{}/_fake/webhooks/deliveries", self.fake))
                .await;
            let ok = d
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["status"].as_u64().is_some_and(|s| s < 300))
                .count();
            if ok >= events_at_least {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "webhooks not delivered: {d}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The account's top-up grants, reversals and general balance, from the log.
    async fn credits(&self, account: &str) -> (Vec<String>, Vec<String>, rust_decimal::Decimal) {
        let nats = self.servers.client().await;
        let log = log_of(&nats, account).await;
        let mut grants = Vec::new();
        let mut reversals = Vec::new();
        let mut balance = rust_decimal::Decimal::ZERO;
        for e in &log {
            match &e.body {
                EventData::CreditsGranted(g) if g.source == GrantSource::Topup => {
                    grants.push(g.credits.to_string());
                    balance += g.credits.get();
                }
                EventData::CreditsReversed(r) => {
                    reversals.push(r.credits.to_string());
                    balance -= r.credits.get();
                }
                _ => {}
            }
        }
        (grants, reversals, balance)
    }

    /// A top-up of `usd` paid by card and credited, then disputed by the
    /// customer's bank; the top-up's and the dispute's ids.
    async fn disputed(&self, account: &str, usd: &str) -> (String, String) {
        let (t, o) = self.topup(account, usd).await;
        let p = self.pay(&o, paid("card")).await;
        self.wait_status(&t, "credited").await;
        let d = self
            .control(&format!("/_fake/payments/{p}/dispute"), json!({}))
            .await;
        self.wait_status(&t, "disputed").await;
        (t, d["id"].as_str().unwrap().to_owned())
    }

    /// A $6.00 payment fails, then the bank confirms it after all: one
    /// credit, for that payment.
    async fn late_authorisation(&self, account: &str) {
        let (t, o) = self.topup(account, "6.00").await;
        let p = self
            .pay(&o, json!({"method": "upi", "outcome": "failed"}))
            .await;
        self.wait_status(&t, "failed").await;
        self.control(&format!("/_fake/payments/{p}/late_authorize"), json!({}))
            .await;
        let row = self.wait_status(&t, "credited").await;
        assert_eq!(row["transaction_id"], p.as_str());
        self.assert_grants(account, &["6"]).await;
    }

    /// Runs the auditor once the read models caught up: the `topup_grant`
    /// findings are on exactly `flagged` subjects, and nothing else is found.
    async fn audited(&self, flagged: &[&str]) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let nats = self.servers.client().await;
        let v = verify_stream(&self.servers, &nats).await;
        let found: Vec<(String, &str)> = rules(&v).into_iter().map(|(_, s, r)| (s, r)).collect();
        let expected: Vec<(String, &str)> = flagged
            .iter()
            .map(|s| (s.to_string(), "topup_grant"))
            .collect();
        assert_eq!(found, expected, "{:?}", v.findings);
    }

    /// Waits a moment for stragglers (late webhooks, a poll), then checks the
    /// account holds exactly `grants` top-up grants.
    async fn assert_grants(&self, account: &str, grants: &[&str]) {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (got, _, _) = self.credits(account).await;
        assert_eq!(got, grants, "top-up grants of {account}");
    }
}

fn paid(method: &str) -> Value {
    json!({"method": method})
}

#[tokio::test]
async fn callbacks_and_webhooks_in_any_order_credit_once() {
    let shop = Shop::open(3600).await;

    // Callback first, webhooks after (held back 1.5 s).
    shop.webhook_mode(json!({"delay_ms": 1500})).await;
    let (t, o) = shop.topup("cb-first", "10.00").await;
    let p = shop.pay(&o, paid("upi")).await;
    let (status, view) = shop.checkout(&t, &o, &p).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "credited", "{view}");
    assert_eq!(view["transaction_id"], p.as_str());
    assert_eq!(view["method"], "upi");
    assert_eq!(view["amount_inr_paise"], 83_120);
    assert_eq!(view["credits"], "10");
    shop.webhooks_settled(3).await;
    shop.assert_grants("cb-first", &["10"]).await;

    // Webhooks first (payment.authorized, payment.captured and order.paid:
    // the last two both say "paid"), the callback after.
    shop.webhook_mode(json!({})).await;
    let (t, o) = shop.topup("wh-first", "5.50").await;
    let p = shop.pay(&o, paid("card")).await;
    let row = shop.wait_status(&t, "credited").await;
    assert_eq!(row["transaction_id"], p.as_str());
    assert_eq!(row["method"], "card");
    let (status, view) = shop.checkout(&t, &o, &p).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("credited")));
    shop.assert_grants("wh-first", &["5.5"]).await;

    // The same event three times.
    shop.webhook_mode(json!({"copies": 3})).await;
    let (t, o) = shop.topup("thrice", "2.00").await;
    shop.pay(&o, paid("netbanking")).await;
    shop.wait_status(&t, "credited").await;
    shop.webhooks_settled(3 + 3 + 9).await;
    shop.assert_grants("thrice", &["2"]).await;
    let metrics = crate::support::metrics_text(shop.addr).await;
    for line in [
        "ledger_razorpay_webhooks_total{result=\"duplicate\"}",
        "ledger_topup_events_total{event=\"topup_credited\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }

    // Events in reverse order (order.paid first).
    shop.webhook_mode(json!({"reverse": true})).await;
    let (t, o) = shop.topup("reversed", "3.00").await;
    shop.pay(&o, paid("wallet")).await;
    shop.wait_status(&t, "credited").await;
    shop.assert_grants("reversed", &["3"]).await;

    // Every processed webhook was recorded once by its event id.
    let (db, conn) =
        tokio_postgres::connect(&shop.config.ledger.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let dup: i64 = db
        .query_one(
            "SELECT count(*) FROM ledger_cmd.webhook_events WHERE processed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
}

#[tokio::test]
async fn failures_late_authorisation_second_payments_and_mismatches() {
    let shop = Shop::open(3600).await;

    // A failed attempt, then a success.
    let (t, o) = shop.topup("retry", "4.00").await;
    let failed = shop
        .pay(&o, json!({"method": "card", "outcome": "failed"}))
        .await;
    shop.wait_status(&t, "failed").await;
    shop.assert_grants("retry", &[]).await;
    let ok = shop.pay(&o, paid("upi")).await;
    let row = shop.wait_status(&t, "credited").await;
    assert_eq!(row["transaction_id"], ok.as_str());
    assert_ne!(failed, ok);
    shop.assert_grants("retry", &["4"]).await;

    // Late authorisation: the bank confirms a failed payment later.
    shop.late_authorisation("late").await;

    // A second payment on a paid order: credited once, the extra refunded.
    let (t, o) = shop.topup("twice", "7.00").await;
    let first = shop.pay(&o, paid("upi")).await;
    shop.wait_status(&t, "credited").await;
    let second = shop.pay(&o, paid("card")).await;
    let started = Instant::now();
    loop {
        let (_, view) = shop
            .api(reqwest::Method::GET, &format!("/v1/topups/{t}"), None)
            .await;
        let c = ledger_gateway_adapter::razorpay::Client::new(
            &shop.fake,
            KEY_ID,
            KEY_SECRET,
            Duration::from_secs(2),
        );
        let p2 = c.payment(&second).await.unwrap();
        if p2.status == "refunded" {
            assert_eq!(p2.amount_refunded, p2.amount);
            assert_eq!(view["status"], "credited", "{view}");
            assert_eq!(view["transaction_id"], first.as_str());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{p2:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.assert_grants("twice", &["7"]).await;
    let (_, reversals, _) = shop.credits("twice").await;
    assert!(reversals.is_empty(), "{reversals:?}");

    // An amount that is not the order's: quarantined, never credited.
    let (t, o) = shop.topup("short", "8.00").await;
    shop.pay(&o, json!({"method": "card", "amount": 60_000}))
        .await;
    shop.wait_status(&t, "quarantined").await;
    shop.assert_grants("short", &[]).await;
}

#[tokio::test]
async fn refunds_and_disputes_take_back_what_they_should() {
    let shop = Shop::open(3600).await;

    // Partial refunds reverse in proportion; all of them add up exactly.
    let (t, o) = shop.topup("refunded", "10.00").await;
    let p = shop.pay(&o, paid("upi")).await;
    shop.wait_status(&t, "credited").await;
    shop.control(
        &format!("/_fake/payments/{p}/refund"),
        json!({"amount": 27_707}),
    )
    .await;
    shop.wait_status(&t, "refunded").await;
    let started = Instant::now();
    while shop.credits("refunded").await.1.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, reversals, balance) = shop.credits("refunded").await;
    // 27,707 of 83,120 paise is 3.3333734… credits, half-even to 6 places.
    assert_eq!(reversals, vec!["3.333373"]);
    assert_eq!(balance.to_string(), "6.666627");
    shop.control(
        &format!("/_fake/payments/{p}/refund"),
        json!({"amount": 83_120 - 27_707}),
    )
    .await;
    let started = Instant::now();
    while shop.credits("refunded").await.1.len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (grants, reversals, balance) = shop.credits("refunded").await;
    assert_eq!(grants, vec!["10"]);
    assert_eq!(reversals.len(), 2);
    assert!(balance.is_zero(), "{balance}");

    // A lost dispute: the credits are held while it is open, and stay taken.
    let (t, d) = shop.disputed("disputed", "10.00").await;
    let started = Instant::now();
    while !shop.credits("disputed").await.2.is_zero() {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.control(
        &format!("/_fake/disputes/{d}/resolve"),
        json!({"outcome": "lost"}),
    )
    .await;
    shop.webhooks_settled(5).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (grants, reversals, balance) = shop.credits("disputed").await;
    assert_eq!((grants.len(), reversals.len()), (1, 1));
    assert!(balance.is_zero(), "{balance}");
    shop.wait_status(&t, "disputed").await;

    // A won dispute gives the held credits back.
    let (t, d) = shop.disputed("won", "2.00").await;
    shop.control(
        &format!("/_fake/disputes/{d}/resolve"),
        json!({"outcome": "won"}),
    )
    .await;
    shop.wait_status(&t, "credited").await;
    let (_, _, balance) = shop.credits("won").await;
    assert_eq!(balance.to_string(), "2");
    shop.audited(&[]).await;
}

#[tokio::test]
async fn signatures_and_bad_input_are_refused() {
    let shop = Shop::open(3600).await;
    let (t, o) = shop.topup("sig", "10.00").await;
    shop.webhook_mode(json!({"drop": true})).await;
    let p = shop.pay(&o, paid("upi")).await;

    let body = json!({"entity": "event", "event": "payment.captured",
        "payload": {"payment": {"entity": {"id": p, "order_id": o, "amount": 83_120,
        "currency": "INR", "status": "captured"}}}})
    .to_string();
    let post = |body: String, signature: String, id: &'static str| {
        let http = shop.http.clone();
        let url = format!("http://{}/v1/webhooks/razorpay", shop.addr);
        async move {
            let r = http
                .post(url)
                .header("X-Razorpay-Signature", signature)
                .header("X-Razorpay-Event-Id", id)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let good = sign(body.as_bytes(), WEBHOOK_SECRET);
    // Tampered: the amount changed after signing.
    let tampered = body.replace("83120", "93120");
    let (s, e) = post(tampered, good.clone(), "evt_tampered").await;
    assert_eq!((s, code(&e)), (400, Some("invalid_signature")), "{e}");
    // Re-serialised: the same JSON, other bytes.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
    let (s, e) = post(pretty, good.clone(), "evt_pretty").await;
    assert_eq!((s, code(&e)), (400, Some("invalid_signature")), "{e}");
    // Signed with an old secret.
    let old = sign(body.as_bytes(), "whsec-previous");
    let (s, e) = post(body.clone(), old, "evt_old").await;
    assert_eq!((s, code(&e)), (400, Some("invalid_signature")), "{e}");
    shop.assert_grants("sig", &[]).await;
    // A checkout callback with a forged signature.
    let (s, e) = shop
        .api(
            reqwest::Method::POST,
            &format!("/v1/topups/{t}/checkout"),
            Some(json!({"razorpay_payment_id": p, "razorpay_order_id": o,
                "razorpay_signature": sign(format!("{o}|{p}").as_bytes(), "guess")})),
        )
        .await;
    assert_eq!((s, code(&e)), (400, Some("invalid_signature")), "{e}");
    shop.assert_grants("sig", &[]).await;
    // The genuine webhook credits, once, however often it comes.
    for _ in 0..2 {
        let (s, e) = post(body.clone(), good.clone(), "evt_genuine").await;
        assert_eq!(s, 200, "{e}");
    }
    shop.wait_status(&t, "credited").await;
    shop.assert_grants("sig", &["10"]).await;

    // Creating top-ups: limits and unknown things are named.
    shop.account("limits").await;
    for (body, status, field) in [
        (
            json!({"amount_usd": "0.99", "phone": "+919876543210"}),
            400,
            "amount_usd",
        ),
        (
            json!({"amount_usd": "10000.01", "phone": "+919876543210"}),
            400,
            "amount_usd",
        ),
        (
            json!({"amount_usd": "1.001", "phone": "+919876543210"}),
            400,
            "amount_usd",
        ),
        (
            json!({"amount_usd": 5, "phone": "+919876543210"}),
            400,
            "amount_usd",
        ),
        (
            json!({"amount_usd": "5.00", "phone": "call me"}),
            400,
            "phone",
        ),
        (
            json!({"amount_usd": "5.00", "phone": "+919876543210", "bucket": "fax"}),
            400,
            "bucket",
        ),
    ] {
        let (s, e) = shop
            .api(
                reqwest::Method::POST,
                "/v1/accounts/limits/topups",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, status, "{body} → {e}");
        assert_eq!(e["error"]["details"]["field"], field, "{body} → {e}");
    }
    let (s, e) = shop
        .api(
            reqwest::Method::POST,
            "/v1/accounts/nobody/topups",
            Some(json!({"amount_usd": "5.00", "phone": "+919876543210"})),
        )
        .await;
    assert_eq!((s, code(&e)), (404, Some("unknown_account")), "{e}");
    let (s, e) = shop
        .checkout("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", &o, &p)
        .await;
    assert_eq!((s, code(&e)), (404, Some("unknown_topup")), "{e}");
    let (s, e) = shop.checkout(&t, "order_NotThisOne0001", &p).await;
    assert_eq!((s, code(&e)), (400, Some("invalid_request")), "{e}");

    // The OpenAPI document describes these endpoints, without a token.
    let doc = shop
        .get_json(&format!("http://{}/openapi.json", shop.addr))
        .await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/topups/{topup_id}/checkout"]["post"].is_object());
}

#[tokio::test]
async fn order_creation_survives_429_5xx_and_a_lost_answer() {
    let shop = Shop::open(3600).await;
    for (kind, count) in [("429", 2), ("500", 2), ("lost", 1)] {
        shop.control(
            "/_fake/faults",
            json!({"path_prefix": "/v1/orders", "kind": kind, "count": count}),
        )
        .await;
        let account = format!("fault-{kind}");
        let (t, o) = shop.topup(&account, "9.00").await;
        let orders: Vec<_> = shop
            .fake_books
            .orders()
            .into_iter()
            .filter(|x| x.receipt.as_deref() == Some(t.as_str()))
            .collect();
        assert_eq!(orders.len(), 1, "{kind}: one order per top-up");
        assert_eq!(orders[0].id, o);
        shop.pay(&o, paid("upi")).await;
        shop.wait_status(&t, "credited").await;
        shop.assert_grants(&account, &["9"]).await;
    }

    // With an Idempotency-Key, a request that failed (Razorpay down past the
    // retries) is finished by its repeat: same top-up, one order.
    shop.account("keyed").await;
    shop.control(
        "/_fake/faults",
        json!({"path_prefix": "/v1/orders", "kind": "500", "count": 4}),
    )
    .await;
    let create = |usd: &'static str| {
        let http = shop.http.clone();
        let url = format!("http://{}/v1/accounts/keyed/topups", shop.addr);
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", "console-click-1")
                .json(&json!({"amount_usd": usd, "phone": "+919876543210"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, first) = create("2.00").await;
    assert_eq!((s, code(&first)), (503, Some("unavailable")), "{first}");
    let topup_id = first["error"]["details"]["topup_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, again) = create("2.00").await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(again["topup_id"], topup_id.as_str());
    let (s, third) = create("2.00").await;
    assert_eq!(
        (s, &third["razorpay"]["order_id"]),
        (201, &again["razorpay"]["order_id"])
    );
    let orders = shop
        .fake_books
        .orders()
        .into_iter()
        .filter(|x| x.receipt.as_deref() == Some(topup_id.as_str()))
        .count();
    assert_eq!(orders, 1);
    let (s, other) = create("3.00").await;
    assert_eq!(
        (s, code(&other)),
        (422, Some("idempotency_conflict")),
        "{other}"
    );
}

#[tokio::test]
async fn reconciliation_completes_without_webhooks_and_across_restarts() {
    let mut shop = Shop::open(1).await;
    shop.webhook_mode(json!({"drop": true})).await;

    // No webhook at all: the poller finds the capture.
    let (t, o) = shop.topup("silent", "3.00").await;
    shop.pay(&o, paid("upi")).await;
    shop.wait_status(&t, "credited").await;
    shop.assert_grants("silent", &["3"]).await;

    // Late authorisation with no webhooks: polling covers it too.
    shop.late_authorisation("silent-late").await;

    // The adapter is down while the customer pays and the webhooks are
    // retried; after the restart, retries and polling credit it once.
    shop.webhook_mode(json!({})).await;
    let (t, o) = shop.topup("down", "4.00").await;
    shop.stop().await;
    shop.pay(&o, paid("upi")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    shop.restart().await;
    shop.wait_status(&t, "credited").await;
    shop.assert_grants("down", &["4"]).await;

    // A crash between the grant and its record: the grant went through
    // (same key), the top-up never said so. The next pass records it
    // without a second grant.
    shop.webhook_mode(json!({"drop": true})).await;
    let (t, o) = shop.topup("crashed", "5.00").await;
    let p = shop.pay(&o, paid("upi")).await;
    let nats = shop.servers.client().await;
    let r = cmd(
        &nats,
        "grant",
        json!({"idempotency_key": format!("topup:{p}"), "account_id": "crashed",
            "bucket": "general", "credits": "5.00", "source": "topup",
            "topup_id": t, "payment_id": p}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    shop.restart().await;
    shop.wait_status(&t, "credited").await;
    shop.assert_grants("crashed", &["5"]).await;

    // A crash between a refund's reversal and its record, likewise: the
    // reversal (same key, same request) went through, the record did not.
    let refund = shop
        .control(
            &format!("/_fake/payments/{p}/refund"),
            json!({"amount": 4_156}),
        )
        .await;
    let rid = refund["id"].as_str().unwrap();
    let r = cmd(
        &nats,
        "reverse",
        json!({"idempotency_key": format!("refund:{rid}"), "account_id": "crashed",
            "bucket": "general", "credits": "0.5", "refund_id": rid,
            "topup_id": t, "payment_id": p}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    shop.restart().await;
    shop.wait_status(&t, "refunded").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (grants, reversals, _) = shop.credits("crashed").await;
    assert_eq!(grants, vec!["5"]);
    assert_eq!(reversals, vec!["0.5"]);
    // The auditor sees the simulated crash for what it is: a grant before
    // its payment was recorded captured.
    shop.audited(&["ledger.events.acct.crashed"]).await;
}

#[tokio::test]
async fn the_gateway_runs_as_a_process_of_its_own() {
    let shop = Shop::open_as(3600, Layout::Split).await;
    let (t, o) = shop.topup("split", "10.00").await;
    let p = shop.pay(&o, paid("upi")).await;
    shop.wait_status(&t, "credited").await;
    let (status, view) = shop.checkout(&t, &o, &p).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("credited")));
    shop.assert_grants("split", &["10"]).await;
    shop.audited(&[]).await;
}

#[tokio::test]
async fn a_top_up_is_found_before_its_read_model_row_and_an_unknown_one_is_404() {
    // No projector runs: the read model never has the top-up's row, so what
    // GET answers comes from the top-up's own log.
    let shop = Shop::open_as(3600, Layout::NoProjections).await;
    let (t, o) = shop.topup("early", "10.00").await;
    let (status, view) = shop
        .api(reqwest::Method::GET, &format!("/v1/topups/{t}"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["topup_id"], t.as_str());
    assert_eq!(view["account_id"], "early");
    assert_eq!(view["status"], "awaiting_payment");
    assert_eq!(view["order_id"], o.as_str());
    assert_eq!(view["amount_inr_paise"], 83_120);
    assert_eq!(view["amount_usd"], "10");
    assert_eq!(view["credits"], "10");
    assert_eq!(view["fx_rate"], RATE);
    let p = shop.pay(&o, paid("upi")).await;
    let credited = shop.wait_status(&t, "credited").await;
    assert_eq!(credited["transaction_id"], p.as_str());
    assert_eq!(credited["method"], "upi");

    // An id no top-up has, and text that is no top-up id, on every endpoint.
    let nobody = "01930000-0000-7000-8000-000000000000";
    for id in [nobody, "not-a-topup"] {
        let (status, e) = shop
            .api(reqwest::Method::GET, &format!("/v1/topups/{id}"), None)
            .await;
        assert_eq!((status, code(&e)), (404, Some("unknown_topup")), "{e}");
        let (status, e) = shop.checkout(id, &o, &p).await;
        assert_eq!((status, code(&e)), (404, Some("unknown_topup")), "{e}");
    }
}

/// `POST /v1/commands/{name}` on the process at `url`.
async fn command_at(url: &str, name: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/commands/{name}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_second_process_without_razorpay_reads_fresh_and_steals_no_reconciliation() {
    let shop = Shop::open(1).await;
    shop.webhook_mode(json!({"drop": true})).await;
    // A second `ledger serve --role all` on the same accounts, without
    // Razorpay settings, its poller (if it had one) ticking fast.
    let (mut bare, bare_url) = serve_ledger(
        &shop.servers,
        "all",
        &[("LEDGER_RECONCILE_TICK_MS", "20"), ("RUST_LOG", "warn")],
    )
    .await;
    let shop_url = format!("http://{}", shop.addr);

    // Reads right after a write through the other process see the write,
    // over HTTP on each process and over NATS (either may answer).
    shop.account("fresh").await;
    let nats = shop.servers.client().await;
    let balance = |v: &Value| v["balances"]["general"].as_str().unwrap().to_owned();
    let mut expected = rust_decimal::Decimal::ZERO;
    for i in 0..6 {
        let (writer, reader) = if i % 2 == 0 {
            (&shop_url, &bare_url)
        } else {
            (&bare_url, &shop_url)
        };
        // The reader holds the account in memory before the write.
        let before = command_at(reader, "get_balance", json!({"account_id": "fresh"})).await;
        assert_eq!(balance(&before), expected.to_string(), "{before}");
        let r = command_at(
            writer,
            "grant",
            json!({"idempotency_key": format!("fresh-{i}"), "account_id": "fresh",
                   "bucket": "general", "credits": "10", "source": "promotion"}),
        )
        .await;
        assert!(code(&r).is_none(), "{r}");
        expected += rust_decimal::Decimal::from(10);
        let after = command_at(reader, "get_balance", json!({"account_id": "fresh"})).await;
        assert_eq!(
            balance(&after),
            expected.to_string(),
            "read after write: {after}"
        );
        let over_nats = cmd(&nats, "get_balance", json!({"account_id": "fresh"})).await;
        assert_eq!(balance(&over_nats), expected.to_string(), "{over_nats}");
    }

    // A top-up whose webhooks are all lost completes by reconciliation, on
    // the process that can reach Razorpay; the other takes none of it.
    for (i, usd) in ["3.00", "4.00", "5.00"].iter().enumerate() {
        let account = format!("lost-{i}");
        let (t, o) = shop.topup(&account, usd).await;
        shop.pay(&o, paid("upi")).await;
        shop.wait_status(&t, "credited").await;
        shop.assert_grants(&account, &[usd.trim_end_matches(".00")])
            .await;
    }
    let db = shop.servers.db().await;
    let attempts: i64 = db
        .query_one(
            "SELECT coalesce(max(attempts), 0)::int8 FROM ledger_cmd.topup_polls",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        attempts <= 3,
        "no failed attempts pushed a top-up back: {attempts}"
    );
    assert!(bare.try_wait().unwrap().is_none());
    drop(db);
    bare.kill().await.unwrap();
}
