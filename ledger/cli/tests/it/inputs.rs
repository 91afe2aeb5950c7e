//! Bad input gets the contract's error code and leaves the log unchanged;
//! a domain refusal on an existing account is remembered as one
//! `command_refused` event, and nothing else reaches the log.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_code_and_change_nothing() {
    let servers = Servers::start().await;
    let ledger = servers.ledger().await;
    let client = servers.client().await;
    funded(&client, "acme", "5").await;
    let before = stream_len(&client).await;

    // Each case its own key: a refusal is recorded under its key, so reusing
    // one key with another body would (rightly) be an idempotency conflict.
    let n = std::cell::Cell::new(0);
    let consume = |extra: Value| {
        n.set(n.get() + 1);
        let mut v = json!({"idempotency_key": format!("bad-{}", n.get()), "account_id": "acme",
                           "service": "sms", "quantity": 1});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let oversized = format!(
        "{{\"idempotency_key\":\"k\",\"account_id\":\"acme\",\"service\":\"sms\",\"quantity\":1,\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "malformed JSON",
            "consume",
            "{\"idempotency_key\": ".into(),
            "invalid_request",
        ),
        (
            "not an object",
            "consume",
            "[1,2]".into(),
            "invalid_request",
        ),
        (
            "negative credits",
            "consume",
            consume(json!({"credits": "-1"})),
            "invalid_request",
        ),
        (
            "zero credits",
            "consume",
            consume(json!({"credits": "0"})),
            "invalid_request",
        ),
        (
            "credits as a number",
            "consume",
            consume(json!({"credits": 1.5})),
            "invalid_request",
        ),
        (
            "too many decimals",
            "consume",
            consume(json!({"credits": "0.0000001"})),
            "invalid_request",
        ),
        (
            "zero quantity",
            "consume",
            consume(json!({"quantity": 0})),
            "invalid_request",
        ),
        (
            "unknown field",
            "consume",
            consume(json!({"credit": "1"})),
            "invalid_request",
        ),
        (
            "unknown service",
            "consume",
            consume(json!({"service": "fax"})),
            "unknown_service",
        ),
        (
            "bad service name",
            "consume",
            consume(json!({"service": "SMS!"})),
            "invalid_request",
        ),
        (
            "unknown account",
            "consume",
            consume(json!({"account_id": "ghost"})),
            "unknown_account",
        ),
        (
            "bad account id",
            "consume",
            consume(json!({"account_id": "a b"})),
            "invalid_request",
        ),
        (
            "bad idempotency key",
            "consume",
            consume(json!({"idempotency_key": "has space"})),
            "invalid_request",
        ),
        ("oversized body", "consume", oversized, "invalid_request"),
        (
            "bad reservation id",
            "capture",
            json!({"idempotency_key": "c", "account_id": "acme",
            "reservation_id": "not-a-uuid", "credits": "1"})
            .to_string(),
            "invalid_request",
        ),
        (
            "unknown reservation",
            "capture",
            json!({"idempotency_key": "c2", "account_id": "acme",
            "reservation_id": "01900000-0000-7000-8000-000000000001", "credits": "1"})
            .to_string(),
            "reservation_not_found",
        ),
        (
            "negative grant",
            "grant",
            json!({"idempotency_key": "g", "account_id": "acme",
            "bucket": "general", "credits": "-5", "source": "promotion"})
            .to_string(),
            "invalid_request",
        ),
        (
            "open twice",
            "open_account",
            json!({"idempotency_key": "o2", "account_id": "acme"}).to_string(),
            "account_exists",
        ),
        (
            "too much",
            "consume",
            consume(json!({"credits": "6"})),
            "insufficient_credits",
        ),
    ];
    for (what, name, body, expected) in &cases {
        let reply = client
            .request(format!("ledger.cmd.{name}"), body.clone().into())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(code(&v), Some(*expected), "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }

    // The same over HTTP, with the statuses that go with the codes.
    let http = reqwest::Client::new();
    let base = format!("http://{}", ledger.http_addr);
    let post = |path: &str, body: String, key: Option<&str>, token: Option<&str>| {
        let mut r = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    struct Case {
        what: &'static str,
        path: &'static str,
        body: String,
        key: Option<&'static str>,
        token: Option<&'static str>,
        status: u16,
        code: &'static str,
    }
    let case = |what, path, body: String, key, token, status, code| Case {
        what,
        path,
        body,
        key,
        token,
        status,
        code,
    };
    let consumptions = "/v1/accounts/acme/consumptions";
    let http_cases = vec![
        case(
            "no token",
            consumptions,
            "{}".into(),
            Some("h1"),
            None,
            401,
            "unauthorized",
        ),
        case(
            "wrong token",
            consumptions,
            "{}".into(),
            Some("h1"),
            Some("nope"),
            401,
            "unauthorized",
        ),
        case(
            "no key",
            consumptions,
            json!({"service": "sms", "quantity": 1}).to_string(),
            None,
            Some(ADMIN),
            400,
            "invalid_request",
        ),
        case(
            "malformed",
            consumptions,
            "{".into(),
            Some("h2"),
            Some(ADMIN),
            400,
            "invalid_request",
        ),
        case(
            "bad path account",
            "/v1/accounts/a%20b/consumptions",
            "{}".into(),
            Some("h3"),
            Some(ADMIN),
            400,
            "invalid_request",
        ),
        case(
            "oversized",
            consumptions,
            format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024)),
            Some("h4"),
            Some(ADMIN),
            400,
            "invalid_request",
        ),
        case(
            "unknown service",
            consumptions,
            json!({"service": "fax", "quantity": 1}).to_string(),
            Some("h5"),
            Some(ADMIN),
            400,
            "unknown_service",
        ),
        case(
            "insufficient",
            consumptions,
            json!({"service": "sms", "quantity": 1, "credits": "99"}).to_string(),
            Some("h6"),
            Some(ADMIN),
            402,
            "insufficient_credits",
        ),
        case(
            "unknown command",
            "/v1/commands/teleport",
            "{}".into(),
            None,
            Some(ADMIN),
            400,
            "invalid_request",
        ),
    ];
    let remembered = |code: &str| {
        [
            "insufficient_credits",
            "reservation_not_found",
            "reservation_closed",
            "account_exists",
        ]
        .contains(&code)
    };
    let refusals_expected = cases.iter().filter(|c| remembered(c.3)).count()
        + http_cases.iter().filter(|c| remembered(c.code)).count();
    for c in http_cases {
        let resp = post(c.path, c.body, c.key, c.token).await.unwrap();
        assert_eq!(resp.status().as_u16(), c.status, "{}", c.what);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(code(&v), Some(c.code), "{}: {v}", c.what);
    }

    let refusals = log_of(&client, "acme")
        .await
        .iter()
        .filter(|e| matches!(e.body, ledger_schemas::EventData::CommandRefused(_)))
        .count();
    assert_eq!(refusals, refusals_expected, "one event per domain refusal");
    assert_eq!(
        stream_len(&client).await,
        before + refusals_expected as u64,
        "no other bad input reached the log"
    );
    ledger.stop().await.unwrap();
}
