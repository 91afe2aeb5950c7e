//! A fake Razorpay for development and tests, over real HTTP: orders, an
//! order's payments, payments, refunds and disputes, with Razorpay's Basic
//! auth, error envelope, id shapes and states, and signed webhooks.
//!
//! Test-only controls under `/_fake/`:
//! - `POST /_fake/orders/{id}/pay` `{method, outcome?, amount?}`: a customer
//!   pays (captured, authorized or failed; any amount; on a paid order too);
//! - `POST /_fake/payments/{id}/late_authorize`: a failed payment turns out
//!   authorised and is captured (a bank's late confirmation);
//! - `POST /_fake/payments/{id}/capture`: an authorised payment is captured;
//! - `POST /_fake/payments/{id}/refund` `{amount}`: a refund from the dashboard;
//! - `POST /_fake/payments/{id}/dispute` `{amount?}`: a chargeback is raised;
//! - `POST /_fake/disputes/{id}/resolve` `{outcome: won|lost}`;
//! - `POST /_fake/faults` `{path_prefix, kind: 429|500|lost, count}`;
//! - `POST /_fake/webhooks` `{url, secret}`: where webhooks go;
//! - `POST /_fake/webhooks/mode` `{copies, reverse, delay_ms, drop, bad_signature}`;
//! - `GET /_fake/webhooks/deliveries`: every delivery attempt and its answer.
//!
//! Checkout, as a customer meets it: `GET /v1/checkout.js` defines
//! `Razorpay` with the real script's constructor, options (`key`,
//! `order_id`, `amount`, `currency`, `name`, `description`, `prefill`,
//! `notes`, `handler`, `modal.ondismiss`), `open()` and
//! `on('payment.failed', …)`; `open()` shows the payment page
//! (`GET /checkout/pay`) in a frame over the merchant's page: UPI by id
//! (`failure@razorpay` fails, as in Razorpay's test mode) or by QR
//! (`GET /checkout/qr.svg`, a real QR code of the `upi://pay` address),
//! cards (`4000 0000 0000 0002` is declined) with an OTP step (`000000`
//! fails), netbanking (a bank, then the bank's success or failure page) and
//! wallets. The page pays through `POST /checkout/orders/{id}/pay`, which
//! records the payment as `/_fake/orders/{id}/pay` does and answers the
//! handler's three `razorpay_*` fields, signed with the key secret.
//!
//! Webhooks are signed over the raw body (`X-Razorpay-Signature`), carry
//! `X-Razorpay-Event-Id`, and are retried with backoff while the receiver
//! answers anything but 2xx, as Razorpay does (compressed from hours to
//! seconds).

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

use crate::razorpay::{Dispute, Order, Payment, Refund};
use crate::signature::sign;

/// A fault the next matching requests get.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// Requests whose path starts with this.
    pub path_prefix: String,
    /// `429`, `500`, or `lost` (the request takes effect, the answer never comes).
    pub kind: String,
    pub count: u32,
}

/// How webhooks are delivered (all off by default: each event once, in order).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookMode {
    /// Send every event this many times (0 and 1 mean once).
    pub copies: u32,
    /// Send each action's events in reverse order.
    pub reverse: bool,
    /// Wait this long before sending.
    pub delay_ms: u64,
    /// Send nothing.
    pub drop: bool,
    /// Sign with a wrong secret.
    pub bad_signature: bool,
}

/// Where webhooks go.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// One delivery attempt of a webhook.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    pub event_id: String,
    pub event: String,
    pub attempt: u32,
    /// The receiver's HTTP status; `None` when it could not be reached.
    pub status: Option<u16>,
}

#[derive(Debug, Default)]
struct Books {
    orders: BTreeMap<String, Order>,
    payments: BTreeMap<String, Payment>,
    refunds: BTreeMap<String, Refund>,
    refund_keys: BTreeMap<String, String>,
    disputes: BTreeMap<String, Dispute>,
    faults: Vec<Fault>,
    webhook: Option<WebhookTarget>,
    mode: WebhookMode,
    deliveries: Vec<Delivery>,
    next: u64,
}

impl Books {
    /// Razorpay-shaped ids: a prefix and 14 characters, never repeated.
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
    /// Delivery attempts per webhook, and the first wait between them.
    pub webhook_attempts: u32,
    pub webhook_backoff: Duration,
    http: reqwest::Client,
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
        // Ids start from the clock, so a restarted fake never hands out an
        // id an earlier run did (Razorpay's ids never repeat, and a ledger's
        // database outlives the fake's books).
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let books = Books {
            next: (since_epoch.as_millis() % 100_000_000_000) as u64 * 1000,
            ..Books::default()
        };
        Self {
            books: Arc::new(Mutex::new(books)),
            key_id: key_id.to_owned(),
            key_secret: key_secret.to_owned(),
            lost_delay: Duration::from_secs(5),
            webhook_attempts: 6,
            webhook_backoff: Duration::from_millis(200),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Sends webhooks to `url`, signed with `secret`.
    pub fn with_webhooks(self, url: &str, secret: &str) -> Self {
        self.books.lock().expect("books").webhook = Some(WebhookTarget {
            url: url.to_owned(),
            secret: secret.to_owned(),
        });
        self
    }

    /// Sends the events of one action (name and payload each) as webhooks,
    /// in the background, as the current mode says.
    fn emit(&self, events: Vec<(&'static str, Value)>) {
        let (target, mode, bodies) = {
            let mut b = self.books.lock().expect("books");
            let Some(target) = b.webhook.clone() else {
                return;
            };
            let mode = b.mode.clone();
            let bodies: Vec<(String, &'static str, String)> = events
                .into_iter()
                .map(|(name, payload)| {
                    let id = b.id("evt");
                    let contains: Vec<&String> = payload
                        .as_object()
                        .map(|o| o.keys().collect())
                        .unwrap_or_default();
                    let body = json!({"entity": "event", "account_id": "acc_FakeAccount01",
                        "event": name, "contains": contains, "payload": payload,
                        "created_at": now()});
                    (id, name, body.to_string())
                })
                .collect();
            (target, mode, bodies)
        };
        if mode.drop {
            return;
        }
        let fake = self.clone();
        tokio::spawn(async move {
            if mode.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(mode.delay_ms)).await;
            }
            let mut bodies = bodies;
            if mode.reverse {
                bodies.reverse();
            }
            let secret = if mode.bad_signature {
                format!("{}-old", target.secret)
            } else {
                target.secret.clone()
            };
            for (id, name, body) in &bodies {
                for _ in 0..mode.copies.max(1) {
                    fake.deliver(&target.url, &secret, id, name, body).await;
                }
            }
        });
    }

    /// One webhook, retried with backoff until the receiver answers 2xx.
    async fn deliver(&self, url: &str, secret: &str, id: &str, name: &str, body: &str) {
        let signature = sign(body.as_bytes(), secret);
        let mut wait = self.webhook_backoff;
        for attempt in 1..=self.webhook_attempts {
            let status = self
                .http
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("X-Razorpay-Signature", &signature)
                .header("X-Razorpay-Event-Id", id)
                .body(body.to_owned())
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            self.books.lock().expect("books").deliveries.push(Delivery {
                event_id: id.to_owned(),
                event: name.to_owned(),
                attempt,
                status,
            });
            if status.is_some_and(|s| (200..300).contains(&s)) {
                return;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
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
            .route("/v1/payments/{id}/refunds", get(payment_refunds))
            .route("/v1/disputes/{id}", get(fetch_dispute))
            .route("/_fake/orders/{id}/pay", post(pay))
            .route("/_fake/payments/{id}/late_authorize", post(late_authorize))
            .route("/_fake/payments/{id}/capture", post(capture))
            .route("/_fake/payments/{id}/refund", post(dashboard_refund))
            .route("/_fake/payments/{id}/dispute", post(open_dispute))
            .route("/_fake/disputes/{id}/resolve", post(resolve_dispute))
            .route("/_fake/faults", post(add_fault))
            .route("/_fake/webhooks", post(set_webhooks))
            .route("/_fake/webhooks/mode", post(set_mode))
            .route("/_fake/webhooks/deliveries", get(deliveries))
            .route("/v1/checkout.js", get(checkout_js))
            .route("/checkout/pay", get(checkout_page))
            .route("/checkout/qr.svg", get(checkout_qr))
            .route("/checkout/orders/{id}/pay", post(checkout_pay))
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

fn entity<T: serde::Serialize>(e: &T) -> Value {
    json!({"entity": e})
}

/// The webhooks of a payment's capture.
fn captured_events(p: &Payment, o: &Order) -> Vec<(&'static str, Value)> {
    vec![
        ("payment.authorized", json!({"payment": entity(p)})),
        ("payment.captured", json!({"payment": entity(p)})),
        (
            "order.paid",
            json!({"payment": entity(p), "order": entity(o)}),
        ),
    ]
}

impl Books {
    /// Refunds `amount` paise of payment `id`; a repeated key answers with the
    /// first refund (`bool` says whether this one is new).
    fn refund(
        &mut self,
        id: &str,
        amount: i64,
        key: Option<String>,
    ) -> Result<(Refund, bool), Box<Response>> {
        if let Some(existing) = key.as_ref().and_then(|k| self.refund_keys.get(k)) {
            return Ok((self.refunds[existing].clone(), false));
        }
        let Some(p) = self.payments.get(id).cloned() else {
            return Err(Box::new(unknown_id()));
        };
        if p.status != "captured" && p.status != "refunded" {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST_ERROR",
                "The payment has not been captured",
            )));
        }
        if amount <= 0 || p.amount_refunded + amount > p.amount {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST_ERROR",
                "The refund amount is invalid",
            )));
        }
        let rid = self.id("rfnd");
        let r = Refund {
            id: rid.clone(),
            payment_id: id.to_owned(),
            amount,
            status: "processed".into(),
        };
        self.refunds.insert(rid.clone(), r.clone());
        if let Some(k) = key {
            self.refund_keys.insert(k, rid);
        }
        let p = self.payments.get_mut(id).expect("checked above");
        p.amount_refunded += amount;
        if p.amount_refunded == p.amount {
            p.status = "refunded".into();
        }
        Ok((r, true))
    }
}

impl Fake {
    fn emit_refund(&self, r: &Refund) {
        let p = self.books.lock().expect("books").payments[&r.payment_id].clone();
        let payload = json!({"refund": entity(r), "payment": entity(&p)});
        self.emit(vec![
            ("refund.created", payload.clone()),
            ("refund.processed", payload),
        ]);
    }
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
    let made = f.books.lock().expect("books").refund(&id, body.amount, key);
    match made {
        Ok((r, new)) => {
            if new {
                f.emit_refund(&r);
            }
            Json(r).into_response()
        }
        Err(e) => *e,
    }
}

async fn payment_refunds(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/payments/").await {
        return r;
    }
    let b = f.books.lock().expect("books");
    if !b.payments.contains_key(&id) {
        return unknown_id();
    }
    let items: Vec<&Refund> = b.refunds.values().filter(|r| r.payment_id == id).collect();
    collection(&items)
}

async fn fetch_dispute(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = f.gate(&headers, "/v1/disputes/").await {
        return r;
    }
    found(f.books.lock().expect("books").disputes.get(&id).cloned())
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

/// Marks payment `id` captured and its order paid; the webhooks to send.
fn mark_captured(b: &mut Books, id: &str) -> Vec<(&'static str, Value)> {
    let p = b.payments.get_mut(id).expect("a known payment");
    p.status = "captured".into();
    p.captured = true;
    p.error_code = None;
    p.error_description = None;
    let p = p.clone();
    let order_id = p.order_id.clone().unwrap_or_default();
    let o = b.orders.get_mut(&order_id).expect("a payment's order");
    o.status = "paid".into();
    o.amount_paid += p.amount;
    captured_events(&p, &o.clone())
}

/// A customer pays order `id` (`method`; `outcome` captured, authorized or
/// failed; `amount` paise, the order's when absent): the payment recorded,
/// its webhooks sent; `None` for an unknown order.
fn record_payment(
    f: &Fake,
    id: &str,
    method: &str,
    outcome: &str,
    amount: Option<i64>,
) -> Option<Payment> {
    let (p, events) = {
        let mut b = f.books.lock().expect("books");
        let order = b.orders.get(id).cloned()?;
        let pid = b.id("pay");
        let failed = outcome == "failed";
        let p = Payment {
            id: pid.clone(),
            amount: amount.unwrap_or(order.amount),
            currency: order.currency.clone(),
            status: if outcome == "captured" {
                "authorized".into()
            } else {
                outcome.to_owned()
            },
            order_id: Some(id.to_owned()),
            method: Some(method.to_owned()),
            captured: false,
            amount_refunded: 0,
            error_code: failed.then(|| "BAD_REQUEST_ERROR".into()),
            error_description: failed.then(|| "Payment failed".into()),
            notes: json!([]),
            created_at: now(),
        };
        b.payments.insert(pid.clone(), p.clone());
        if b.orders[id].status == "created" {
            b.orders.get_mut(id).expect("checked above").status = "attempted".into();
        }
        let events = match outcome {
            "captured" => mark_captured(&mut b, &pid),
            "failed" => vec![("payment.failed", json!({"payment": entity(&p)}))],
            _ => vec![("payment.authorized", json!({"payment": entity(&p)}))],
        };
        (b.payments[&pid].clone(), events)
    };
    f.emit(events);
    Some(p)
}

/// Test control: a customer pays an order.
async fn pay(State(f): State<Fake>, Path(id): Path<String>, body: Json<PayBody>) -> Response {
    let outcome = body.outcome.as_deref().unwrap_or("captured");
    match record_payment(&f, &id, &body.method, outcome, body.amount) {
        Some(p) => Json(p).into_response(),
        None => unknown_id(),
    }
}

/// Test control: a payment changes state (`from` → captured).
async fn capture_from(f: &Fake, id: &str, from: &str) -> Response {
    let (p, events) = {
        let mut b = f.books.lock().expect("books");
        let Some(p) = b.payments.get(id) else {
            return unknown_id();
        };
        if p.status != from {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST_ERROR",
                &format!("The payment is {}, not {from}", p.status),
            );
        }
        let events = mark_captured(&mut b, id);
        (b.payments[id].clone(), events)
    };
    f.emit(events);
    Json(p).into_response()
}

/// Test control: a failed payment is authorised late by the bank and captured.
async fn late_authorize(State(f): State<Fake>, Path(id): Path<String>) -> Response {
    capture_from(&f, &id, "failed").await
}

/// Test control: an authorised payment is captured.
async fn capture(State(f): State<Fake>, Path(id): Path<String>) -> Response {
    capture_from(&f, &id, "authorized").await
}

/// Test control: a refund made from Razorpay's dashboard.
async fn dashboard_refund(
    State(f): State<Fake>,
    Path(id): Path<String>,
    body: Json<RefundBody>,
) -> Response {
    let made = f
        .books
        .lock()
        .expect("books")
        .refund(&id, body.amount, None);
    match made {
        Ok((r, _)) => {
            f.emit_refund(&r);
            Json(r).into_response()
        }
        Err(e) => *e,
    }
}

#[derive(Debug, Deserialize)]
struct DisputeBody {
    /// Disputed paise; the whole payment when absent.
    #[serde(default)]
    amount: Option<i64>,
}

/// Test control: the customer's bank raises a chargeback.
async fn open_dispute(
    State(f): State<Fake>,
    Path(id): Path<String>,
    body: Json<DisputeBody>,
) -> Response {
    let (d, p) = {
        let mut b = f.books.lock().expect("books");
        let Some(p) = b.payments.get(&id).cloned() else {
            return unknown_id();
        };
        let did = b.id("disp");
        let d = Dispute {
            id: did.clone(),
            payment_id: id.clone(),
            amount: body.amount.unwrap_or(p.amount),
            currency: p.currency.clone(),
            status: "open".into(),
            reason_code: Some("chargeback".into()),
            created_at: now(),
        };
        b.disputes.insert(did, d.clone());
        (d, p)
    };
    f.emit(vec![(
        "payment.dispute.created",
        json!({"dispute": entity(&d), "payment": entity(&p)}),
    )]);
    Json(d).into_response()
}

#[derive(Debug, Deserialize)]
struct ResolveBody {
    /// `won` or `lost`.
    outcome: String,
}

/// Test control: a dispute is decided.
async fn resolve_dispute(
    State(f): State<Fake>,
    Path(id): Path<String>,
    body: Json<ResolveBody>,
) -> Response {
    let event = match body.outcome.as_str() {
        "won" => "payment.dispute.won",
        "lost" => "payment.dispute.lost",
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST_ERROR",
                "outcome must be won or lost",
            );
        }
    };
    let (d, p) = {
        let mut b = f.books.lock().expect("books");
        let Some(d) = b.disputes.get_mut(&id) else {
            return unknown_id();
        };
        d.status = body.outcome.clone();
        let d = d.clone();
        let p = b.payments[&d.payment_id].clone();
        (d, p)
    };
    f.emit(vec![(
        event,
        json!({"dispute": entity(&d), "payment": entity(&p)}),
    )]);
    Json(d).into_response()
}

/// Test control: the next matching requests fail as asked.
async fn add_fault(State(f): State<Fake>, body: Json<Fault>) -> StatusCode {
    f.books.lock().expect("books").faults.push(body.0);
    StatusCode::NO_CONTENT
}

/// Test control: where webhooks go.
async fn set_webhooks(State(f): State<Fake>, body: Json<WebhookTarget>) -> StatusCode {
    f.books.lock().expect("books").webhook = Some(body.0);
    StatusCode::NO_CONTENT
}

/// Test control: how webhooks are delivered from now on.
async fn set_mode(State(f): State<Fake>, body: Json<WebhookMode>) -> StatusCode {
    f.books.lock().expect("books").mode = body.0;
    StatusCode::NO_CONTENT
}

/// Test control: every delivery attempt so far.
async fn deliveries(State(f): State<Fake>) -> Json<Vec<Delivery>> {
    Json(f.books.lock().expect("books").deliveries.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_fake_never_repeats_an_id() {
        let first = Fake::new("k", "s").books.lock().unwrap().id("order");
        std::thread::sleep(Duration::from_millis(2));
        let again = Fake::new("k", "s").books.lock().unwrap().id("order");
        assert_ne!(first, again);
        for id in [&first, &again] {
            let tail = id.strip_prefix("order_").unwrap();
            assert_eq!(tail.len(), 14, "{id}");
            assert!(tail.bytes().all(|b| b.is_ascii_uppercase()), "{id}");
        }
    }
}

async fn checkout_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/checkout.js"),
    )
        .into_response()
}

async fn checkout_page() -> Response {
    axum::response::Html(include_str!("../assets/checkout.html")).into_response()
}

#[derive(Debug, Deserialize)]
struct QrParams {
    order_id: String,
}

/// The QR code a UPI app scans: `upi://pay` for the order's amount.
async fn checkout_qr(State(f): State<Fake>, Query(q): Query<QrParams>) -> Response {
    let Some(order) = f
        .books
        .lock()
        .expect("books")
        .orders
        .get(&q.order_id)
        .cloned()
    else {
        return unknown_id();
    };
    let uri = format!(
        "upi://pay?pa=fake@razorpay&pn=Fake%20Razorpay&am={}.{:02}&cu={}&tr={}",
        order.amount / 100,
        order.amount % 100,
        order.currency,
        order.id
    );
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .build(),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER_ERROR",
            &e.to_string(),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutPay {
    key_id: String,
    /// `upi`, `card`, `netbanking`, `wallet`.
    method: String,
    /// The customer's bank, card or UPI app declined.
    #[serde(default)]
    fail: bool,
}

/// The payment page pays: the handler's fields, or Checkout's error.
async fn checkout_pay(
    State(f): State<Fake>,
    Path(id): Path<String>,
    body: Json<CheckoutPay>,
) -> Response {
    if body.key_id != f.key_id {
        return error(
            StatusCode::UNAUTHORIZED,
            "BAD_REQUEST_ERROR",
            "The api key provided is invalid",
        );
    }
    if !["upi", "card", "netbanking", "wallet"].contains(&body.method.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST_ERROR",
            "The payment method is not offered",
        );
    }
    let outcome = if body.fail { "failed" } else { "captured" };
    let Some(p) = record_payment(&f, &id, &body.method, outcome, None) else {
        return unknown_id();
    };
    if body.fail {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {
                "code": "BAD_REQUEST_ERROR",
                "description": "Your payment was declined by the bank",
                "source": "bank",
                "step": "payment_authorization",
                "reason": "payment_failed",
                "metadata": {"order_id": id, "payment_id": p.id},
            }})),
        )
            .into_response();
    }
    let signature = sign(format!("{id}|{}", p.id).as_bytes(), &f.key_secret);
    Json(json!({
        "razorpay_payment_id": p.id,
        "razorpay_order_id": id,
        "razorpay_signature": signature,
    }))
    .into_response()
}
