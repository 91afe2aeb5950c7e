//! `fake-razorpay [ADDR]`: the fake Razorpay on ADDR (default 127.0.0.1:8090),
//! with key `rzp_test_fake` / secret `fake_secret` unless
//! `FAKE_RAZORPAY_KEY_ID` / `FAKE_RAZORPAY_KEY_SECRET` say otherwise.
//! Webhooks go to `FAKE_RAZORPAY_WEBHOOK_URL`, signed with
//! `FAKE_RAZORPAY_WEBHOOK_SECRET` (default `fake_webhook_secret`), when set;
//! `POST /_fake/webhooks` can set them later.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let key_id = env("FAKE_RAZORPAY_KEY_ID", "rzp_test_fake");
    let secret = env("FAKE_RAZORPAY_KEY_SECRET", "fake_secret");
    let mut fake = ledger_gateway_adapter::fake::Fake::new(&key_id, &secret);
    if let Ok(url) = std::env::var("FAKE_RAZORPAY_WEBHOOK_URL") {
        let webhook_secret = env("FAKE_RAZORPAY_WEBHOOK_SECRET", "fake_webhook_secret");
        fake = fake.with_webhooks(&url, &webhook_secret);
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("fake Razorpay on http://{}", listener.local_addr()?);
    axum::serve(listener, fake.router()).await
}
