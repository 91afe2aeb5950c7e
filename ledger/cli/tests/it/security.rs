//! Only the ledger writes the log: nats-server runs the shipped accounts
//! and permissions (deploy/nats/accounts.conf), and each role is refused
//! what it may not do, by the server or by the ledger, with the log
//! unchanged; the actor of an event is the identity the server vouches for.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A request that may be refused by the server (a permission violation
/// leaves it unanswered): its reply, or why there is none.
async fn try_request(
    client: &async_nats::Client,
    subject: &str,
    body: Value,
) -> Result<Value, String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(subject.to_owned(), body.to_string().into()),
    )
    .await
    .map_err(|_| "no answer".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(serde_json::from_slice(&reply.payload).unwrap())
}

/// A publish the server may refuse; then flushed, so a violation has
/// reached the server before the log is looked at.
async fn try_publish(client: &async_nats::Client, subject: &str, body: &str) {
    let _ = client
        .publish(subject.to_owned(), body.to_owned().into())
        .await;
    let _ = client.flush().await;
}

fn consume(key: &str, service: &str, credits: &str) -> Value {
    json!({"idempotency_key": key, "account_id": "sec", "service": service, "quantity": 1,
        "credits": credits})
}

fn grant(key: &str, source: &str) -> Value {
    let mut g = json!({"idempotency_key": key, "account_id": "sec", "bucket": "general",
        "credits": "5", "source": source});
    if source == "topup" {
        g["topup_id"] = json!("0190b7a4-1111-7000-8000-000000000001");
        g["payment_id"] = json!(format!("pay_{key}"));
    }
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_may_not_do_and_the_log_is_unchanged() {
    let servers = Servers::start_secured().await;
    // No checkpoint during the test: the stream's head moves for events only.
    let mut config = servers.config();
    config.ledger.checkpoint_interval_s = 3600;
    let running = ledger_cli::start_command(&config).await.unwrap();
    let operator = servers.client().await;
    funded(&operator, "sec", "100").await;
    let (email, gateway, ops, auditor) = (
        servers.client_as("email").await,
        servers.client_as("gateway").await,
        servers.client_as("ops").await,
        servers.client_as("auditor").await,
    );
    let head = stream_head(&operator).await;

    // A service may not grant or adjust, nor spend for another service.
    for (subject, body) in [
        ("ledger.cmd.grant", grant("e-1", "promotion")),
        (
            "ledger.cmd.adjust",
            json!({"idempotency_key": "e-2", "account_id": "sec",
            "bucket": "general", "delta": "1000", "reason": "mine"}),
        ),
        (
            "ledger.cmd.open_account",
            json!({"idempotency_key": "e-3", "account_id": "x"}),
        ),
    ] {
        let r = try_request(&email, subject, body).await;
        assert!(r.is_err(), "{subject} answered {r:?}");
    }
    let r = try_request(&email, "ledger.cmd.consume", consume("e-4", "sms", "1")).await;
    assert_eq!(code(&r.unwrap()), Some("forbidden"));
    // Usage for another service is refused by the server.
    let js = async_nats::jetstream::new(email.clone());
    let usage = json!({"usage_id": "u-sms", "account_id": "sec", "service": "sms",
        "quantity": 1, "occurred_at": "2026-01-01T00:00:00.000Z"});
    let published = tokio::time::timeout(Duration::from_secs(2), async {
        js.publish("ledger.usage.sms.sec", usage.to_string().into())
            .await?
            .await
    })
    .await;
    assert!(!matches!(published, Ok(Ok(_))), "{published:?}");

    // Nobody but the ledger writes events: other accounts' subjects are
    // their own, and the auditor's and the operator's are refused.
    let forged =
        json!({"event_id": "01900000-0000-7000-8000-00000000f0f0", "type": "credits_granted"});
    for c in [&email, &gateway, &ops, &auditor] {
        try_publish(c, "ledger.events.acct.sec", &forged.to_string()).await;
    }
    // The auditor writes nothing and asks no command.
    assert!(
        try_request(&auditor, "ledger.cmd.grant", grant("a-1", "promotion"))
            .await
            .is_err()
    );
    // The gateway grants for top-ups only, and adjusts nothing.
    let r = try_request(&gateway, "ledger.cmd.grant", grant("g-1", "promotion")).await;
    assert_eq!(code(&r.unwrap()), Some("forbidden"));
    assert!(
        try_request(&gateway, "ledger.cmd.adjust", json!({}))
            .await
            .is_err()
    );
    // Ops may not spend.
    assert!(
        try_request(&ops, "ledger.cmd.consume", consume("o-1", "email", "1"))
            .await
            .is_err()
    );

    // None of it reached the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stream_head(&operator).await, head, "the log is unchanged");

    // The ledger itself may not change or cut its own streams; the
    // operator may look at them.
    let ledger_user = servers.client_as("ledger").await;
    for api in [
        "$JS.API.STREAM.DELETE.LEDGER",
        "$JS.API.STREAM.PURGE.LEDGER",
        "$JS.API.STREAM.UPDATE.LEDGER",
    ] {
        let r = try_request(&ledger_user, api, json!({"name": "LEDGER"})).await;
        assert!(r.is_err(), "{api}: {r:?}");
    }
    let js = async_nats::jetstream::new(operator.clone());
    assert!(js.get_stream("LEDGER").await.is_ok(), "the stream is there");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_is_who_the_server_vouches_for_whatever_the_headers() {
    let servers = Servers::start_secured().await;
    let running = servers.ledger().await;
    let operator = servers.client().await;
    funded(&operator, "sec", "100").await;
    let email = servers.client_as("email").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Ledger-Actor", "admin:root");
    headers.insert("Nats-Request-Info", r#"{"acc":"LEDGER","user":"operator"}"#);
    let reply = email
        .request_with_headers(
            "ledger.cmd.consume",
            headers,
            consume("v-1", "email", "2").to_string().into(),
        )
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(code(&r).is_none(), "{r}");
    assert_eq!(r["event"]["actor"], "service:email", "{r}");

    // Usage published by the service, with JetStream's acknowledgement
    // across accounts, is consumed for it.
    let js = async_nats::jetstream::new(email.clone());
    let usage = json!({"usage_id": "u-1", "account_id": "sec", "service": "email",
        "quantity": 1, "credits": "3", "occurred_at": "2026-01-01T00:00:00.000Z"});
    js.publish("ledger.usage.email.sec", usage.to_string().into())
        .await
        .unwrap()
        .await
        .expect("the usage stream acknowledges it");
    let consumed = wait_for(Duration::from_secs(20), || async {
        let log = log_of(&operator, "sec").await;
        log.into_iter().find(|e| {
            e.idempotency_key
                .as_ref()
                .is_some_and(|k| k.as_str().contains("u-1"))
        })
    })
    .await;
    assert_eq!(consumed.actor.as_str(), "service:email");

    // The gateway's top-up grant is recorded as the gateway's; ops' as ops'.
    let gateway = servers.client_as("gateway").await;
    let r = try_request(&gateway, "ledger.cmd.grant", grant("g-2", "topup"))
        .await
        .unwrap();
    assert_eq!(r["event"]["actor"], "gateway:gateway", "{r}");
    let ops = servers.client_as("ops").await;
    let r = try_request(&ops, "ledger.cmd.grant", grant("o-2", "promotion"))
        .await
        .unwrap();
    assert_eq!(r["event"]["actor"], "operator:ops", "{r}");

    // An auditor reads the whole log with its read-only user.
    let out = run_ledger_with(
        &servers,
        &["audit", "verify"],
        &[
            ("LEDGER_NATS_USER", "auditor"),
            ("LEDGER_NATS_PASSWORD", "auditor-dev"),
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("verified "),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tokens_are_held_to_their_role_and_accounts() {
    use ledger::config::{Role, Secret, TokenConfig};
    let servers = Servers::start_secured().await;
    let mut config = servers.config();
    let token = |name: &str, role, accounts: &[&str]| TokenConfig {
        name: name.into(),
        token: Secret::new(format!("{name}-token")),
        role,
        accounts: accounts
            .iter()
            .map(|a| ledger_schemas::AccountId::parse(*a).unwrap())
            .collect(),
    };
    config.ledger.tokens = vec![
        token("console-a", Role::Console, &["acct-a"]),
        token("sms", Role::Service, &[]),
    ];
    let running = ledger_cli::start(&config, ledger_cli::Role::All)
        .await
        .unwrap();
    let operator = servers.client().await;
    funded(&operator, "acct-a", "10").await;
    funded(&operator, "acct-b", "10").await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", running.http_addr);
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let (s, _) = call(
        get.clone(),
        "/v1/accounts/acct-a/history",
        "console-a-token",
        None,
    )
    .await;
    assert_eq!(s, 200);
    for path in [
        "/v1/accounts/acct-b/history",
        "/v1/accounts/acct-b/balances",
    ] {
        let (s, e) = call(get.clone(), path, "console-a-token", None).await;
        assert_eq!((s, code(&e)), (403, Some("forbidden")), "{path}: {e}");
    }
    let transfer = json!({"idempotency_key": "t-1", "account_id": "acct-b",
        "from_bucket": "general", "to_bucket": "sms", "credits": "1"});
    let (s, e) = call(
        post.clone(),
        "/v1/commands/transfer",
        "console-a-token",
        Some(transfer),
    )
    .await;
    assert_eq!((s, code(&e)), (403, Some("forbidden")), "{e}");
    let (s, e) = call(
        post.clone(),
        "/v1/commands/grant",
        "sms-token",
        Some(json!({
        "idempotency_key": "g-1", "account_id": "acct-a", "bucket": "general",
        "credits": "5", "source": "promotion"})),
    )
    .await;
    assert_eq!((s, code(&e)), (403, Some("forbidden")), "{e}");
    let (s, e) = call(get, "/v1/accounts/acct-a/balances", "not-a-token", None).await;
    assert_eq!((s, code(&e)), (401, Some("unauthorized")), "{e}");
    running.stop().await.unwrap();
}

/// A CA, and a certificate for 127.0.0.1 it signed: (CA, certificate, key)
/// PEM files in `dir`.
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_the_configured_ca_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let servers = Servers::start_with(ledger_testkit::NatsOptions {
        accounts: true,
        tls: Some((cert, key)),
        ..Default::default()
    })
    .await;
    let mut config = servers.config();
    config.ledger.nats_tls_ca = Some(ca.clone());
    let running = ledger_cli::start_command(&config)
        .await
        .expect("the ledger connects over TLS");
    let connect = |ca: Option<std::path::PathBuf>| {
        let mut options = async_nats::ConnectOptions::with_user_and_password(
            "operator".into(),
            nats_password("operator"),
        );
        if let Some(ca) = ca {
            options = options.add_root_certificates(ca).require_tls(true);
        }
        let url = servers.nats.url();
        async move { tokio::time::timeout(Duration::from_secs(5), options.connect(url)).await }
    };
    let client = connect(Some(ca))
        .await
        .unwrap()
        .expect("a client with the CA connects");
    funded(&client, "tls", "5").await;
    let b = cmd(&client, "get_balance", json!({"account_id": "tls"})).await;
    assert_eq!(b["balances"]["general"], "5", "{b}");
    // Without the CA (a plain client, or one trusting only the usual
    // roots) the server's certificate is not accepted: no connection.
    let plain = connect(None).await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a client without the CA connected"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_configured_certificate_and_no_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let servers = Servers::start().await;
    let mut config = servers.config();
    config.ledger.http_tls_cert = Some(cert);
    config.ledger.http_tls_key = Some(key);
    let running = ledger_cli::start(&config, ledger_cli::Role::All)
        .await
        .unwrap();
    let port = running.http_addr.port();
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let r = trusted
        .get(format!("https://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(r.status().as_u16(), 200);
    let r = trusted
        .get(format!("https://127.0.0.1:{port}/v1/ops/projections"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP gets no answer, nor does a client that trusts another CA.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
    assert!(
        !plain.is_ok_and(|r| r.status().is_success()),
        "plain HTTP answered"
    );
    let untrusting = reqwest::get(format!("https://127.0.0.1:{port}/readyz")).await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verified_against_the_configured_ca() {
    use ledger_projections::pg;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = certificates(other.path());
    let servers = Servers::start_with_both(
        ledger_testkit::NatsOptions {
            accounts: true,
            ..Default::default()
        },
        ledger_testkit::PostgresOptions {
            tls: Some((cert, key)),
            ..Default::default()
        },
    )
    .await;
    let port = servers.pg.port();
    let kv = |host: &str, params: String| {
        format!("host={host} hostaddr=127.0.0.1 port={port} user=ledger dbname=ledger {params}")
    };
    let verify =
        |mode: &str, ca: &std::path::Path| format!("sslmode={mode} sslrootcert='{}'", ca.display());
    // A plain client is refused by the server.
    let plain =
        tokio_postgres::connect(&kv("127.0.0.1", String::new()), tokio_postgres::NoTls).await;
    assert!(plain.is_err(), "a plain connection was accepted");
    let disabled = pg::connect(&kv("127.0.0.1", "sslmode=disable".into())).await;
    assert!(disabled.is_err(), "sslmode=disable connected");
    // A server whose certificate another CA signed is refused.
    let wrong_ca = pg::connect(&kv("127.0.0.1", verify("verify-full", &other_ca))).await;
    assert!(wrong_ca.is_err(), "verify-full trusted another CA");
    let wrong_ca = pg::connect(&kv("127.0.0.1", verify("require", &other_ca))).await;
    assert!(
        wrong_ca.is_err(),
        "require with a CA file trusted another CA"
    );
    // verify-full checks the name; verify-ca only the chain.
    let wrong_name = pg::connect(&kv("db.example", verify("verify-full", &ca))).await;
    assert!(
        wrong_name.is_err(),
        "verify-full accepted a name the certificate lacks"
    );
    for (host, mode) in [("db.example", "verify-ca"), ("127.0.0.1", "verify-full")] {
        pg::connect(&kv(host, verify(mode, &ca)))
            .await
            .unwrap_or_else(|e| panic!("{mode} to {host}: {e}"));
    }
    pg::connect(&kv("127.0.0.1", "sslmode=require".into()))
        .await
        .expect("require without a CA encrypts and checks nothing, as in libpq");

    // The whole service on it, the URL form of the same settings.
    let mut config = servers.config();
    config.ledger.database_url = format!(
        "postgres://ledger@127.0.0.1:{port}/ledger?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let running = ledger_cli::start(&config, ledger_cli::Role::All)
        .await
        .expect("the ledger connects over TLS");
    let operator = servers.client().await;
    funded(&operator, "pgtls", "7").await;
    let addr = running.http_addr;
    let balances = wait_for(Duration::from_secs(10), || async move {
        let r = reqwest::Client::new()
            .get(format!("http://{addr}/v1/accounts/pgtls/balances"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["buckets"]["general"] == "7").then_some(v)
    })
    .await;
    assert_eq!(balances["buckets"]["general"], "7", "{balances}");
    // Every connection the service holds is encrypted.
    let (admin, _c) = pg::connect(&kv("127.0.0.1", verify("verify-full", &ca)))
        .await
        .unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = 'ledger' AND a.backend_type = 'client backend' \
               AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        tls >= 2 && plain == 0,
        "{tls} TLS, {plain} plain connections"
    );
    running.stop().await.unwrap();
}
