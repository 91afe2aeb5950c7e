//! The Razorpay client against the fake Razorpay, over real HTTP.

use std::time::Duration;

use ledger_gateway_adapter::fake::Fake;
use ledger_gateway_adapter::razorpay::{Client, RazorpayError};
use serde_json::json;

async fn start(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake.router()).await });
    url
}

fn client(url: &str) -> Client {
    let mut c = Client::new(url, "rzp_test_k", "s3cret", Duration::from_millis(500));
    c.backoff_first = Duration::from_millis(10);
    c
}

async fn control(url: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn an_order_is_paid_and_refunded_once_per_key() {
    let url = start(Fake::new("rzp_test_k", "s3cret")).await;
    let c = client(&url);
    let order = c.create_order(83_120, "topup-1", json!({})).await.unwrap();
    assert!(
        order.id.starts_with("order_") && order.id.len() == 20,
        "{}",
        order.id
    );
    assert_eq!((order.status.as_str(), order.amount), ("created", 83_120));
    let paid = control(
        &url,
        &format!("/_fake/orders/{}/pay", order.id),
        json!({"method": "upi"}),
    )
    .await;
    let payments = c.order_payments(&order.id).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].id, paid["id"].as_str().unwrap());
    assert_eq!(
        (payments[0].status.as_str(), payments[0].method.as_deref()),
        ("captured", Some("upi"))
    );
    assert_eq!(c.order(&order.id).await.unwrap().status, "paid");

    let r1 = c.refund(&payments[0].id, 20_000, "refund-a").await.unwrap();
    let r2 = c.refund(&payments[0].id, 20_000, "refund-a").await.unwrap();
    assert_eq!(r1, r2, "the same key refunds once");
    assert_eq!(
        c.payment(&payments[0].id).await.unwrap().amount_refunded,
        20_000
    );
    let too_much = c
        .refund(&payments[0].id, 70_000, "refund-b")
        .await
        .unwrap_err();
    assert!(
        matches!(too_much, RazorpayError::Refused { status: 400, .. }),
        "{too_much}"
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let url = start(Fake::new("rzp_test_k", "s3cret")).await;
    let c = client(&url);
    control(
        &url,
        "/_fake/faults",
        json!({"path_prefix": "/v1/orders", "kind": "429", "count": 2}),
    )
    .await;
    let order = c.create_order(10_000, "topup-2", json!({})).await.unwrap();
    control(
        &url,
        "/_fake/faults",
        json!({"path_prefix": "/v1/orders/", "kind": "500", "count": 3}),
    )
    .await;
    assert_eq!(c.order_payments(&order.id).await.unwrap().len(), 0);
    // More failures than attempts: a retryable error, not a wrong answer.
    control(
        &url,
        "/_fake/faults",
        json!({"path_prefix": "/v1/orders/", "kind": "500", "count": 10}),
    )
    .await;
    assert!(matches!(
        c.order(&order.id).await,
        Err(RazorpayError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_lost_answer_on_order_creation_never_makes_a_second_order() {
    let mut fake = Fake::new("rzp_test_k", "s3cret");
    fake.lost_delay = Duration::from_secs(2);
    let books = fake.clone();
    let url = start(fake).await;
    let c = client(&url);
    control(
        &url,
        "/_fake/faults",
        json!({"path_prefix": "/v1/orders", "kind": "lost", "count": 1}),
    )
    .await;
    let order = c.create_order(10_000, "topup-3", json!({})).await.unwrap();
    let orders = books.orders();
    assert_eq!(orders.len(), 1, "one order for one top-up");
    assert_eq!(orders[0].id, order.id);
}

#[tokio::test]
async fn wrong_keys_are_refused() {
    let url = start(Fake::new("rzp_test_k", "s3cret")).await;
    let c = Client::new(&url, "rzp_test_k", "wrong", Duration::from_millis(500));
    let e = c
        .create_order(10_000, "topup-4", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RazorpayError::Refused { status: 401, .. }),
        "{e}"
    );
}
