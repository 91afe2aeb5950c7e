//! `fake-razorpay [ADDR]`: the fake Razorpay on ADDR (default 127.0.0.1:8090),
//! with key `rzp_test_fake` / secret `fake_secret` unless
//! `FAKE_RAZORPAY_KEY_ID` / `FAKE_RAZORPAY_KEY_SECRET` say otherwise.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let key_id = std::env::var("FAKE_RAZORPAY_KEY_ID").unwrap_or_else(|_| "rzp_test_fake".into());
    let secret = std::env::var("FAKE_RAZORPAY_KEY_SECRET").unwrap_or_else(|_| "fake_secret".into());
    let fake = ledger_gateway_adapter::fake::Fake::new(&key_id, &secret);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("fake Razorpay on http://{}", listener.local_addr()?);
    axum::serve(listener, fake.router()).await
}
