//! Starting the command side against real servers, and talking to it.

use std::time::Duration;

use ledger::audit::{self, Verifier};
use ledger::config::{Config, Secret};
use ledger::serve::Running;
use ledger::store::read;
use ledger_cli::{Settings, start_command};
use ledger_schemas::{AccountId, ChainHash, EventEnvelope};
use ledger_testkit::{NatsServer, Postgres};
use serde_json::{Value, json};

pub const ADMIN: &str = "test-admin-token";

/// The tests' signing key (`<key id>:<base64 seed>`; a fixed seed).
pub const SIGNING_KEY: &str = "test-1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The tests' signing key and the public keys it gives.
pub fn test_keys() -> ledger_schemas::signing::Keys {
    let key = ledger_schemas::signing::SigningKey::parse(SIGNING_KEY).unwrap();
    ledger_schemas::signing::Keys::new(Some(key), Vec::new())
}

/// What stream-order readers of the tests' stream trust.
pub fn trust() -> ledger_schemas::signing::Trust {
    ledger_schemas::signing::Trust {
        keys: std::sync::Arc::new(test_keys().public),
        checkpoint_subject: "ledger.checkpoints".into(),
    }
}

/// Real servers for one test.
pub struct Servers {
    pub nats: NatsServer,
    pub pg: Postgres,
    /// Whether nats-server runs the shipped accounts and permissions (the
    /// ledger then connects as user `ledger`).
    pub secured: bool,
}

/// Like a real deployment (and deploy/local): an unprivileged role named
/// `ledger` owning database `ledger` (made over the Unix socket: a server
/// may refuse plain TCP).
pub async fn prepare_database(pg: &Postgres) {
    pg.create_owned_database("ledger")
        .await
        .expect("role and database ledger");
}

/// The development password of each user of deploy/nats/accounts.conf.
pub fn nats_password(user: &str) -> String {
    format!("{user}-dev")
}

impl Servers {
    /// nats-server with deploy/nats/accounts.conf, as deployed (the
    /// ledger connects as `ledger`, test clients as `operator`).
    pub async fn start() -> Self {
        Self::start_secured().await
    }

    /// The same, said where the permissions are what a test is about.
    pub async fn start_secured() -> Self {
        Self::start_with(ledger_testkit::NatsOptions {
            accounts: true,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(options: ledger_testkit::NatsOptions) -> Self {
        Self::start_with_both(options, Default::default()).await
    }

    pub async fn start_with_both(
        options: ledger_testkit::NatsOptions,
        pg_options: ledger_testkit::PostgresOptions,
    ) -> Self {
        let secured = options.accounts;
        let (nats, pg) = tokio::join!(
            NatsServer::start_with(options),
            Postgres::start_with(pg_options)
        );
        let servers = Servers {
            nats: nats.expect("nats-server starts"),
            pg: pg.expect("postgres starts"),
            secured,
        };
        prepare_database(&servers.pg).await;
        servers
    }

    pub fn config(&self) -> Settings {
        let mut c = Config {
            nats_url: self.nats.url(),
            database_url: format!("postgres://ledger@127.0.0.1:{}/ledger", self.pg.port()),
            http_addr: "127.0.0.1:0".into(),
            admin_token: Some(Secret::new(ADMIN)),
            signing_key: Some(Secret::new(SIGNING_KEY)),
            checkpoint_interval_s: 1,
            reservation_sweep_interval_ms: 100,
            ..Config::default()
        };
        c.limits.publish_timeout_ms = 2000;
        if self.secured {
            c.nats_user = Some("ledger".into());
            c.nats_password = Some(Secret::new(nats_password("ledger")));
        }
        Settings {
            ledger: c,
            ..Settings::default()
        }
    }

    pub async fn ledger(&self) -> Running {
        start_command(&self.config())
            .await
            .expect("the command side starts")
    }

    /// A connection to the ledger's database, as the ledger's role.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (db, conn) =
            tokio_postgres::connect(&self.config().ledger.database_url, tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        db
    }

    /// A client: on a secured server, the operator (the ledger's account,
    /// every permission).
    pub async fn client(&self) -> async_nats::Client {
        if self.secured {
            return self.client_as("operator").await;
        }
        async_nats::connect(self.nats.url()).await.unwrap()
    }

    /// A client connected as `user` of deploy/nats/accounts.conf.
    pub async fn client_as(&self, user: &str) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(user.into(), nats_password(user))
            .connect(self.nats.url())
            .await
            .unwrap()
    }

    /// `LEDGER_*` variables that reach these servers (as user `ledger` on
    /// a secured server).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let config = self.config();
        let mut env = vec![
            ("LEDGER_NATS_URL", config.ledger.nats_url.clone()),
            ("LEDGER_DATABASE_URL", config.ledger.database_url.clone()),
            ("LEDGER_SIGNING_KEY", SIGNING_KEY.into()),
            ("LEDGER_CHECKPOINT_INTERVAL_S", "1".into()),
        ];
        if self.secured {
            env.push(("LEDGER_NATS_USER", "ledger".into()));
            env.push(("LEDGER_NATS_PASSWORD", nats_password("ledger")));
        }
        env
    }
}

/// A `ledger serve --role ROLE` process of its own against these servers,
/// with `env` on top (killed on drop).
pub fn spawn_ledger(servers: &Servers, role: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ledger"));
    command
        .args(["serve", "--role", role])
        .envs(servers.env())
        .env("LEDGER_HTTP_ADDR", "127.0.0.1:0")
        .env("LEDGER_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("the ledger binary starts")
}

/// A loopback port nothing listens on (for a process's HTTP address).
pub async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A `ledger serve --role ROLE` process with its HTTP on a known address,
/// once it answers `/readyz`.
pub async fn serve_ledger(
    servers: &Servers,
    role: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port().await);
    let mut env = env.to_vec();
    env.push(("LEDGER_HTTP_ADDR", &addr));
    let child = spawn_ledger(servers, role, &env);
    let url = format!("http://{addr}");
    wait_for(Duration::from_secs(60), || async {
        let r = reqwest::get(format!("{url}/readyz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    (child, url)
}

/// The fake Razorpay's key id, key secret and webhook secret for
/// [`serve_with_fake_razorpay`].
pub const FAKE_RAZORPAY: (&str, &str, &str) = ("rzp_test_it", "it-key-secret", "it-webhook");

/// A `ledger serve --role all` process that pays through the fake Razorpay
/// (over HTTP on a port of its own, its webhooks sent to the ledger): the
/// process, its URL and the fake's URL.
pub async fn serve_with_fake_razorpay(
    servers: &Servers,
) -> (tokio::process::Child, String, String) {
    serve_with_fake_razorpay_and(servers, &[]).await
}

/// The same with `extra` variables (the console's Checkout script is the
/// fake's).
pub async fn serve_with_fake_razorpay_and(
    servers: &Servers,
    extra: &[(&str, &str)],
) -> (tokio::process::Child, String, String) {
    let (key_id, key_secret, webhook_secret) = FAKE_RAZORPAY;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    let router = ledger_gateway_adapter::fake::Fake::new(key_id, key_secret).router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let checkout_js = format!("{fake_url}/v1/checkout.js");
    let mut env = vec![
        ("LEDGER_RAZORPAY_BASE_URL", fake_url.as_str()),
        ("LEDGER_RAZORPAY_KEY_ID", key_id),
        ("LEDGER_RAZORPAY_KEY_SECRET", key_secret),
        ("LEDGER_RAZORPAY_WEBHOOK_SECRET", webhook_secret),
        ("LEDGER_FX_USD_INR", "83.12"),
        ("LEDGER_CONSOLE_CHECKOUT_JS_URL", checkout_js.as_str()),
    ];
    env.extend_from_slice(extra);
    let (process, url) = serve_ledger(servers, "all", &env).await;
    let webhooks = json!({"url": format!("{url}/v1/webhooks/razorpay"), "secret": webhook_secret});
    let r = reqwest::Client::new()
        .post(format!("{fake_url}/_fake/webhooks"))
        .json(&webhooks)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "the fake takes its webhook address"
    );
    (process, url, fake_url)
}

/// Runs `ledger ARGS` against these servers to its end.
pub fn run_ledger(servers: &Servers, args: &[&str]) -> std::process::Output {
    run_ledger_with(servers, args, &[])
}

/// The same, with `env` on top.
pub fn run_ledger_with(
    servers: &Servers,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .envs(servers.env())
        .envs(env.iter().copied())
        .output()
        .expect("the ledger binary runs")
}

/// Services answering `$SRV.PING.ledger`.
pub async fn ledger_instances(client: &async_nats::Client) -> usize {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply("$SRV.PING.ledger", inbox, "".into())
        .await
        .unwrap();
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        n += 1;
    }
    n
}

/// Waits until `n` ledger processes serve commands.
pub async fn wait_for_instances(client: &async_nats::Client, n: usize) {
    for _ in 0..200 {
        if ledger_instances(client).await == n {
            return;
        }
    }
    panic!("{n} ledger processes never served");
}

/// Publishes onto JetStream with `Nats-Msg-Id` = `msg_id` and waits until
/// it is durably accepted.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    msg_id: &str,
    subject: &str,
    body: impl ToString,
) {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(subject.to_owned(), h, body.to_string().into())
        .await
        .unwrap()
        .await
        .expect("durably accepted");
}

/// Publishes `payload` straight onto stream `LEDGER` with `headers`, as a
/// client on the bus could; its stream seq once stored.
pub async fn publish_raw(
    client: &async_nats::Client,
    subject: &str,
    headers: &[(&str, &str)],
    payload: impl Into<bytes::Bytes>,
) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    js.publish_with_headers(subject.to_owned(), h, payload.into())
        .await
        .unwrap()
        .await
        .expect("stored")
        .sequence
}

/// Publishes `event` onto `subject` exactly as the ledger writes: its id as
/// `Nats-Msg-Id`, its type header, the chain value that follows the
/// subject's last message, and signed with the tests' key (a newer
/// ledger's event).
pub async fn publish_chained(client: &async_nats::Client, subject: &str, event: &Value) -> u64 {
    publish_chained_with(client, subject, event, true).await
}

/// The same unsigned: a forgery by a client that may publish there and
/// recomputes the chain.
pub async fn publish_forged(client: &async_nats::Client, subject: &str, event: &Value) -> u64 {
    publish_chained_with(client, subject, event, false).await
}

async fn publish_chained_with(
    client: &async_nats::Client,
    subject: &str,
    event: &Value,
    signed: bool,
) -> u64 {
    use ledger_schemas::signing;
    let stream = stream(client).await;
    let previous = match read::last_on_subject(&stream, subject).await.unwrap() {
        Some((_, chain)) => chain.expect("the subject's last message is chained"),
        None => ChainHash::GENESIS,
    };
    let payload = event.to_string();
    let chain = previous.next(payload.as_bytes()).to_hex();
    let key = test_keys().signing.unwrap();
    let (heads, signature) = signing::seal(&key, [(subject, chain.as_str())]);
    let mut headers = vec![
        ("Nats-Msg-Id", event["event_id"].as_str().unwrap()),
        ("Ledger-Event-Type", event["type"].as_str().unwrap()),
        ("Ledger-Chain", chain.as_str()),
    ];
    if signed {
        headers.extend([
            (signing::BATCH_HEADER, "1/1"),
            (signing::HEADS_HEADER, heads.as_str()),
            (signing::SIGNATURE_HEADER, signature.as_str()),
        ]);
    }
    publish_raw(client, subject, &headers, payload).await
}

/// Polls `probe` until it gives something, at most `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} in vain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends command `name` over NATS and returns the JSON reply.
pub async fn cmd(client: &async_nats::Client, name: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(format!("ledger.cmd.{name}"), body.to_string().into()),
    )
    .await
    .expect("a reply in time")
    .expect("a reply");
    serde_json::from_slice(&reply.payload).expect("a JSON reply")
}

pub fn code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

/// Opens `account` and grants it `credits` in `general`.
pub async fn funded(client: &async_nats::Client, account: &str, credits: &str) {
    let r = cmd(
        client,
        "open_account",
        json!({"idempotency_key": format!("open-{account}"), "account_id": account}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    let r = cmd(
        client,
        "grant",
        json!({"idempotency_key": format!("fund-{account}"), "account_id": account,
               "bucket": "general", "credits": credits, "source": "promotion"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
}

/// Every event on the account's subject, read straight from the stream.
pub async fn log_of(client: &async_nats::Client, account: &str) -> Vec<EventEnvelope> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("LEDGER").await.unwrap();
    let subject = format!("ledger.events.acct.{account}");
    read::events_after(
        client,
        &stream,
        &test_keys().public,
        &subject,
        0,
        ChainHash::GENESIS,
    )
    .await
    .expect("the log reads")
    .events
    .into_iter()
    .map(|e| e.envelope)
    .collect()
}

/// The account folded from its log alone.
pub async fn replayed(client: &async_nats::Client, account: &str) -> ledger::domain::Account {
    let events = log_of(client, account).await;
    ledger::domain::Account::replay(
        AccountId::parse(account).unwrap(),
        events.iter().map(|e| &e.body),
    )
}

/// Messages in stream `LEDGER`.
pub async fn stream_len(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("LEDGER").await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// The Prometheus text a running process serves.
pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `ledger audit verify` over the whole stream, read models included.
pub async fn verify_stream(servers: &Servers, client: &async_nats::Client) -> Verifier {
    let mut v = Verifier::new("ledger.events").with_keys(test_keys().public);
    let (at, rows) = audit::read_models(&servers.config().ledger.database_url)
        .await
        .unwrap();
    v.compare_with(at, rows);
    audit::read_stream(&stream(client).await, 1, None, |r| v.check_owned(r))
        .await
        .unwrap();
    v.finish();
    v
}

pub fn rules(v: &Verifier) -> Vec<(u64, String, &'static str)> {
    v.findings
        .iter()
        .map(|f| (f.seq, f.subject.clone(), f.rule))
        .collect()
}

/// The last stream seq of `LEDGER`.
pub async fn stream_head(client: &async_nats::Client) -> u64 {
    stream(client)
        .await
        .info()
        .await
        .unwrap()
        .state
        .last_sequence
}

/// Stream `LEDGER`.
pub async fn stream(client: &async_nats::Client) -> async_nats::jetstream::stream::Stream {
    async_nats::jetstream::new(client.clone())
        .get_stream("LEDGER")
        .await
        .unwrap()
}

/// A consume of one credit from the `sms` service.
pub fn consume_one(key: &str, account: &str) -> serde_json::Value {
    json!({"idempotency_key": key, "account_id": account, "service": "sms", "quantity": 1,
        "credits": "1"})
}

/// One consume through `client`, with a deadline: whether it succeeded,
/// or `None` without an answer.
pub async fn try_consume(client: &async_nats::Client, key: &str, account: &str) -> Option<bool> {
    try_consume_on(client, "ledger.cmd.consume", key, account).await
}

/// The same on `subject` (`ledger.cmd.consume.<account>`, …).
pub async fn try_consume_on(
    client: &async_nats::Client,
    subject: &str,
    key: &str,
    account: &str,
) -> Option<bool> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(
            subject.to_owned(),
            consume_one(key, account).to_string().into(),
        ),
    )
    .await
    .ok()?
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    Some(code(&v).is_none())
}

/// Every consume key in the accounts' logs, with how many times it occurs.
pub async fn keys_in_log(
    client: &async_nats::Client,
    accounts: &[String],
) -> std::collections::BTreeMap<String, usize> {
    let mut keys = std::collections::BTreeMap::new();
    for a in accounts {
        for e in log_of(client, a).await {
            if let (Some(k), ledger_schemas::EventType::CreditsConsumed) =
                (&e.idempotency_key, e.body.event_type())
            {
                *keys.entry(k.to_string()).or_insert(0) += 1;
            }
        }
    }
    keys
}

/// After a fault under load: every acknowledged consume (`acked` keys, one
/// credit each, keys `<account>-…`) is in the log once, no key twice, and
/// each account's balance (funded with `funded` credits) is its log's.
pub async fn acknowledged_exactly_once(
    client: &async_nats::Client,
    accounts: &[String],
    acked: &[String],
    funded: u64,
) {
    let keys = keys_in_log(client, accounts).await;
    let missing: Vec<&String> = acked.iter().filter(|k| !keys.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the log: {missing:?}"
    );
    let twice: Vec<(&String, &usize)> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "in the log more than once: {twice:?}");
    for a in accounts {
        let b = cmd(client, "get_balance", json!({"account_id": a})).await;
        let consumed = keys
            .keys()
            .filter(|k| k.starts_with(&format!("{a}-")))
            .count() as u64;
        assert_eq!(
            b["balances"]["general"],
            json!((funded - consumed).to_string()),
            "{a}: {b}"
        );
    }
}
