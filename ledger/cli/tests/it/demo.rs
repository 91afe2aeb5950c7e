//! The README's first command ends in `ledger demo` against a running
//! `ledger serve --role all` and the fake Razorpay: the same, run here, so
//! it cannot rot.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_a_served_ledger_and_the_audit_finds_nothing() {
    // As deployed: nats-server with the shipped accounts and permissions.
    let servers = Servers::start_secured().await;
    let (mut process, url, fake_url) = serve_with_fake_razorpay(&servers).await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["demo", "--url", &url, "--fake-razorpay", &fake_url])
        .env("LEDGER_ADMIN_TOKEN", ADMIN)
        .env("LEDGER_RAZORPAY_KEY_SECRET", FAKE_RAZORPAY.1)
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
