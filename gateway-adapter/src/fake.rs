//! A fake Razorpay for development and tests, over real HTTP: orders, an
//! order's payments, payments and refunds, with Razorpay's Basic auth, error
//! envelope, id shapes and states; test-only control endpoints under
//! `/_fake/` to pay an order and to inject faults (429, 500, a lost answer).
//!
//! Still to come (issue 5): webhooks, disputes, late authorisation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::razorpay::{Order, Payment, Refund};

/// A fault the next matching requests get.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// Requests whose path starts with this.
    pub path_prefix: String,
    /// `429`, `500`, or `lost` (the request takes effect, the answer never comes).
    pub kind: String,
    pub count: u32,
}

#[derive(Debug, Default)]
struct Books {
    orders: BTreeMap<String, Order>,
    payments: BTreeMap<String, Payment>,
    refunds: BTreeMap<String, Refund>,
    refund_keys: BTreeMap<String, String>,
    faults: Vec<Fault>,
    next: u64,
}

impl Books {
    /// Razorpay-shaped ids: a prefix and 14 characters.
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        let digits = format!("{:014}", self.next);
        let letters: String = digits
            .bytes()
            .map(|b| (b'A' + (b - b'0')) as char)
            .collect();
        format!("{prefix}_{letters}")
    }

    fn take_fault(&mut self, path: &str) -> Option<String> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.count > 0 && path.starts_with(&f.path_prefix))?;
        f.count -= 1;
        Some(f.kind.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Fake {
    books: Arc<Mutex<Books>>,
    key_id: String,
    key_secret: String,
    /// How long a "lost" answer is held back (longer than clients wait).
    pub lost_delay: Duration,
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(
            json!({"error": {"code": code, "description": description, "source": "NA",
            "step": "NA", "reason": "NA", "metadata": {}}}),
        ),
    )
        .into_response()
}

/// Razorpay's answer for an id it does not know.
fn unknown_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST_ERROR",
        "The id provided does not exist",
    )
}

/// The entity, or Razorpay's unknown-id error.
fn found<T: serde::Serialize>(entity: Option<T>) -> Response {
    match entity {
        Some(e) => Json(e).into_response(),
        None => unknown_id(),
    }
}

/// Razorpay's list envelope.
fn collection<T: serde::Serialize>(items: &[T]) -> Response {
    Json(json!({"entity": "collection", "count": items.len(), "items": items})).into_response()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Fake {
    pub fn new(key_id: &str, key_secret: &str) -> Self {
        Self {
            books: Arc::default(),
            key_id: key_id.to_owned(),
            key_secret: key_secret.to_owned(),
            lost_delay: Duration::from_secs(5),
        }
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.key_id, self.key_secret));
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .is_some_and(|v| v == expected)
    }

    /// Auth and injected faults; `Some` answers the request at once.
    async fn gate(&self, headers: &HeaderMap, path: &str) -> Result<Option<()>, Response> {
        if !self.authorised(headers) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "BAD_REQUEST_ERROR",
                "The api key provided is invalid",
            ));
        }
        let fault = self.books.lock().expect("books").take_fault(path);
        match fault.as_deref() {
            Some("429") => Err(error(
                StatusCode::TOO_MANY_REQUESTS,
                "BAD_REQUEST_ERROR",
                "Too many requests",
            )),
            Some("500") => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER_ERROR",
                "The server encountered an error",
            )),
            Some("lost") => Ok(Some(())),
            _ => Ok(None),
        }
    }

    /// Orders in the books (for tests).
    pub fn orders(&self) -> Vec<Order> {
        self.books
            .lock()
            .expect("books")
            .orders
            .values()
            .cloned()
            .collect()
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/orders", post(create_order).get(list_orders))
            .route("/v1/orders/{id}", get(fetch_order))
            .route("/v1/orders/{id}/payments", get(order_payments))
            .route("/v1/payments/{id}", get(fetch_payment))
            .route("/v1/payments/{id}/refund", post(refund))
            .route("/_fake/orders/{id}/pay", post(pay))
            .route("/_fake/faults", post(add_fault))
            .with_state(self)
    }
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    amount: i64,
    currency: String,
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    notes: Value,
}

async fn create_order(State(f): State<Fake>, headers: HeaderMap, body: Json<NewOrder>) -> Response {
    let lost = match f.gate(&headers, "/v1/orders").await {
        Err(r) => return r,
        Ok(l) => l.is_some(),
    };
    if body.amount < 100 || body.currency != "INR" {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST_ERROR",
            "The amount must be at least INR 1.00",
        );
    }
    let order = {
        let mut b = f.books.lock().expect("books");
        if let Some(r) = &body.receipt {
            if b.orders.values().any(|o| o.receipt.as_deref() == Some(r)) {
                // Razorpay's receipts are unique.
                return error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST_ERROR",
                    "receipt already exists",
                );
            }
        }
        let id = b.id("order");
        let order = Order {
            id: id.clone(),
            amount: body.amount,
            amount_paid: 0,
            currency: body.currency.clone(),
            receipt: body.receipt.clone(),
            status: "created".into(),
            notes: if body.notes.is_null() {
                json!([])
            } else {
                body.notes.clone()
            },
            created_at: now(),
        };
        b.orders.insert(id, order.clone());
        order
    };
    if lost {
        tokio::time::sleep(f.lost_delay).await;
    }
    Json(order).into_response()
}

#[derive(Debug, Deserialize)]
struct OrderQuery {
    receipt: Option<String>,
}

async fn list_orders(State(f): State<Fake>, headers: HeaderMap, q: Query<OrderQuery>) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/orders?").await {
        return r;
    }
    let b = f.books.lock().expect("books");
    let items: Vec<&Order> = b
        .orders
        .values()
        .filter(|o| q.receipt.is_none() || o.receipt == q.receipt)
        .collect();
    collection(&items)
}

async fn fetch_order(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/orders/").await {
        return r;
    }
    found(f.books.lock().expect("books").orders.get(&id).cloned())
}

async fn order_payments(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/orders/").await {
        return r;
    }
    let b = f.books.lock().expect("books");
    if !b.orders.contains_key(&id) {
        return unknown_id();
    }
    let items: Vec<&Payment> = b
        .payments
        .values()
        .filter(|p| p.order_id.as_deref() == Some(&id))
        .collect();
    collection(&items)
}

async fn fetch_payment(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/payments/").await {
        return r;
    }
    found(f.books.lock().expect("books").payments.get(&id).cloned())
}

#[derive(Debug, Deserialize)]
struct RefundBody {
    amount: i64,
}

async fn refund(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Json<RefundBody>,
) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/payments/").await {
        return r;
    }
    let key = headers
        .get("X-Refund-Idempotency")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut b = f.books.lock().expect("books");
    if let Some(existing) = key.as_ref().and_then(|k| b.refund_keys.get(k)).cloned() {
        return Json(b.refunds[&existing].clone()).into_response();
    }
    let Some(p) = b.payments.get(&id).cloned() else {
        return unknown_id();
    };
    if p.status != "captured" && p.status != "refunded" {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST_ERROR",
            "The payment has not been captured",
        );
    }
    if body.amount <= 0 || p.amount_refunded + body.amount > p.amount {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST_ERROR",
            "The refund amount is invalid",
        );
    }
    let rid = b.id("rfnd");
    let r = Refund {
        id: rid.clone(),
        payment_id: id.clone(),
        amount: body.amount,
        status: "processed".into(),
    };
    b.refunds.insert(rid.clone(), r.clone());
    if let Some(k) = key {
        b.refund_keys.insert(k, rid);
    }
    let p = b.payments.get_mut(&id).expect("checked above");
    p.amount_refunded += body.amount;
    if p.amount_refunded == p.amount {
        p.status = "refunded".into();
    }
    Json(r).into_response()
}

#[derive(Debug, Deserialize)]
struct PayBody {
    /// `upi`, `card`, `netbanking`, `wallet`.
    method: String,
    /// `captured` (default), `authorized`, or `failed`.
    #[serde(default)]
    outcome: Option<String>,
    /// Pay this many paise instead of the order's amount (to test mismatches).
    #[serde(default)]
    amount: Option<i64>,
}

/// Test control: a customer pays an order.
async fn pay(State(f): State<Fake>, Path(id): Path<String>, body: Json<PayBody>) -> Response {
    let mut b = f.books.lock().expect("books");
    let Some(order) = b.orders.get(&id).cloned() else {
        return unknown_id();
    };
    let outcome = body.outcome.clone().unwrap_or_else(|| "captured".into());
    let pid = b.id("pay");
    let failed = outcome == "failed";
    let p = Payment {
        id: pid.clone(),
        amount: body.amount.unwrap_or(order.amount),
        currency: order.currency.clone(),
        status: outcome.clone(),
        order_id: Some(id.clone()),
        method: Some(body.method.clone()),
        captured: outcome == "captured",
        amount_refunded: 0,
        error_code: failed.then(|| "BAD_REQUEST_ERROR".into()),
        error_description: failed.then(|| "Payment failed".into()),
        notes: json!([]),
        created_at: now(),
    };
    b.payments.insert(pid, p.clone());
    let o = b.orders.get_mut(&id).expect("checked above");
    o.status = if outcome == "captured" {
        "paid".into()
    } else {
        "attempted".into()
    };
    if outcome == "captured" {
        o.amount_paid = p.amount;
    }
    Json(p).into_response()
}

/// Test control: the next matching requests fail as asked.
async fn add_fault(State(f): State<Fake>, body: Json<Fault>) -> StatusCode {
    f.books.lock().expect("books").faults.push(body.0);
    StatusCode::NO_CONTENT
}
