//! The README's first command ends in `ledger demo` against a running
//! `ledger serve --role all` and the fake Razorpay: the same, run here, so
//! it cannot rot.

use ledger_gateway_adapter::fake::Fake;

use crate::support::*;

const KEY_ID: &str = "rzp_test_demo";
const KEY_SECRET: &str = "demo-key-secret";
const WEBHOOK_SECRET: &str = "demo-webhook-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_a_served_ledger_and_the_audit_finds_nothing() {
    // As deployed: nats-server with the shipped accounts and permissions.
    let servers = Servers::start_secured().await;
    let fake = Fake::new(KEY_ID, KEY_SECRET);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    let router = fake.clone().router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let env = [
        ("LEDGER_RAZORPAY_BASE_URL", fake_url.as_str()),
        ("LEDGER_RAZORPAY_KEY_ID", KEY_ID),
        ("LEDGER_RAZORPAY_KEY_SECRET", KEY_SECRET),
        ("LEDGER_RAZORPAY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("LEDGER_FX_USD_INR", "83.12"),
    ];
    let (mut process, url) = serve_ledger(&servers, "all", &env).await;
    let webhooks = serde_json::json!({"url": format!("{url}/v1/webhooks/razorpay"),
        "secret": WEBHOOK_SECRET});
    let r = reqwest::Client::new()
        .post(format!("{fake_url}/_fake/webhooks"))
        .json(&webhooks)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["demo", "--url", &url, "--fake-razorpay", &fake_url])
        .env("LEDGER_ADMIN_TOKEN", ADMIN)
        .env("LEDGER_RAZORPAY_KEY_SECRET", KEY_SECRET)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "== Top up: the customer enters USD 25.00",
        "== The customer pays by UPI",
        "== The same SMS request again",
        "== Balances",
        "== Credit history, newest first",
    ] {
        assert!(text.contains(step), "'{step}' missing from:\n{text}");
    }
    let verify = run_ledger(&servers, &["audit", "verify"]);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(report.contains(" 0 finding(s)"), "{report}");
    process.kill().await.unwrap();
}
