//! A thin Razorpay client over `reqwest`: orders, an order's payments,
//! payments and refunds. It tolerates unknown fields and statuses and `notes`
//! as `[]` or `{}`; retries 429 and 5xx with bounded backoff; and after a
//! timeout on order creation it looks the order up by receipt before
//! creating another, so one top-up never gets two orders.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An order (only the fields the ledger reads; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_paid: i64,
    pub currency: String,
    #[serde(default)]
    pub receipt: Option<String>,
    /// `created`, `attempted`, `paid`, or one this code does not know yet.
    pub status: String,
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    /// `created`, `authorized`, `captured`, `refunded`, `failed`, or newer.
    pub status: String,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub captured: bool,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    #[serde(default)]
    pub status: String,
}

/// A dispute (chargeback) raised on a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub payment_id: String,
    /// Disputed paise.
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    /// `open`, `under_review`, `won`, `lost`, `closed`, or one Razorpay adds later.
    pub status: String,
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub created_at: i64,
}

impl Dispute {
    /// Still to be decided: the credits stay held.
    pub fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "open" | "under_review")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collection<T> {
    pub count: usize,
    pub items: Vec<T>,
}

/// Razorpay's error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub description: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub metadata: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RazorpayError {
    /// Razorpay refused the request (4xx other than 429): do not retry as is.
    #[error("Razorpay refused: {status} {code}: {description}")]
    Refused {
        status: u16,
        code: String,
        description: String,
    },
    /// Down, overloaded or unreachable after the retries: retry later.
    #[error("Razorpay unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    key_id: String,
    key_secret: String,
    /// Attempts of one call at most (the first and the retries).
    pub attempts_max: u32,
    pub backoff_first: Duration,
}

/// Never shows the key secret.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(base_url: &str, key_id: &str, key_secret: &str, timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("an HTTP client"),
            base_url: base_url.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            key_secret: key_secret.to_owned(),
            attempts_max: 4,
            backoff_first: Duration::from_millis(100),
        }
    }

    /// One call with retries of 429, 5xx and transport failures. A timeout
    /// is returned as soon as it happens when `timeouts_retry` is false (the
    /// caller must find out what happened first).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, &str)],
        timeouts_retry: bool,
    ) -> Result<T, CallError> {
        let mut wait = self.backoff_first;
        let mut last = String::new();
        for attempt in 1..=self.attempts_max {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base_url))
                .basic_auth(&self.key_id, Some(&self.key_secret))
                .query(query);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        return serde_json::from_str(&text).map_err(|e| {
                            CallError::Failed(RazorpayError::Unavailable(format!(
                                "unreadable answer ({e}): {text}"
                            )))
                        });
                    }
                    if status == 429 || status >= 500 {
                        last = format!("{status}: {text}");
                    } else {
                        let e: Option<ErrorEnvelope> = serde_json::from_str(&text).ok();
                        return Err(CallError::Failed(RazorpayError::Refused {
                            status,
                            code: e.as_ref().map(|e| e.error.code.clone()).unwrap_or_default(),
                            description: e.map(|e| e.error.description).unwrap_or(text),
                        }));
                    }
                }
                Err(e) if e.is_timeout() && !timeouts_retry => return Err(CallError::TimedOut),
                Err(e) => last = e.to_string(),
            }
            if attempt < self.attempts_max {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(CallError::Failed(RazorpayError::Unavailable(last)))
    }

    /// Creates an INR order for `amount_paise` with `receipt` (the top-up id),
    /// or finds the one an earlier, unanswered attempt created.
    pub async fn create_order(
        &self,
        amount_paise: i64,
        receipt: &str,
        notes: Value,
    ) -> Result<Order, RazorpayError> {
        let body = serde_json::json!({"amount": amount_paise, "currency": "INR", "receipt": receipt,
            "notes": notes});
        for _ in 0..self.attempts_max {
            match self
                .call::<Order>(
                    reqwest::Method::POST,
                    "/v1/orders",
                    &[],
                    Some(&body),
                    &[],
                    false,
                )
                .await
            {
                Ok(o) => return Ok(o),
                Err(CallError::Failed(e)) => return Err(e),
                Err(CallError::TimedOut) => {
                    // It may exist: look before creating another.
                    if let Some(o) = self.order_by_receipt(receipt).await? {
                        return Ok(o);
                    }
                }
            }
        }
        Err(RazorpayError::Unavailable(
            "order creation kept timing out".into(),
        ))
    }

    pub async fn order_by_receipt(&self, receipt: &str) -> Result<Option<Order>, RazorpayError> {
        let c: Collection<Order> = self
            .call(
                reqwest::Method::GET,
                "/v1/orders",
                &[("receipt", receipt)],
                None,
                &[],
                true,
            )
            .await
            .map_err(CallError::into_error)?;
        Ok(c.items
            .into_iter()
            .find(|o| o.receipt.as_deref() == Some(receipt)))
    }

    pub async fn order(&self, id: &str) -> Result<Order, RazorpayError> {
        self.get(&format!("/v1/orders/{id}")).await
    }

    pub async fn order_payments(&self, order_id: &str) -> Result<Vec<Payment>, RazorpayError> {
        let c: Collection<Payment> = self.get(&format!("/v1/orders/{order_id}/payments")).await?;
        Ok(c.items)
    }

    pub async fn payment(&self, id: &str) -> Result<Payment, RazorpayError> {
        self.get(&format!("/v1/payments/{id}")).await
    }

    /// Refunds `amount_paise` of a payment; `idempotency_key` makes a retry safe.
    /// Every refund of a payment.
    pub async fn payment_refunds(&self, payment_id: &str) -> Result<Vec<Refund>, RazorpayError> {
        let c: Collection<Refund> = self
            .get(&format!("/v1/payments/{payment_id}/refunds"))
            .await?;
        Ok(c.items)
    }

    pub async fn dispute(&self, id: &str) -> Result<Dispute, RazorpayError> {
        self.get(&format!("/v1/disputes/{id}")).await
    }

    pub async fn refund(
        &self,
        payment_id: &str,
        amount_paise: i64,
        idempotency_key: &str,
    ) -> Result<Refund, RazorpayError> {
        let body = serde_json::json!({"amount": amount_paise});
        self.call(
            reqwest::Method::POST,
            &format!("/v1/payments/{payment_id}/refund"),
            &[],
            Some(&body),
            &[("X-Refund-Idempotency", idempotency_key)],
            true,
        )
        .await
        .map_err(CallError::into_error)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RazorpayError> {
        self.call(reqwest::Method::GET, path, &[], None, &[], true)
            .await
            .map_err(CallError::into_error)
    }
}

enum CallError {
    TimedOut,
    Failed(RazorpayError),
}

impl CallError {
    fn into_error(self) -> RazorpayError {
        match self {
            CallError::TimedOut => RazorpayError::Unavailable("timed out".into()),
            CallError::Failed(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_of_notes_shapes_and_unknown_fields() {
        for notes in ["[]", "{\"k\":\"v\"}"] {
            let o: Order = serde_json::from_str(&format!(
                r#"{{"id":"order_1","entity":"order","amount":100,"amount_paid":0,"currency":"INR",
                   "receipt":"r","status":"some_new_status","attempts":0,"notes":{notes},
                   "created_at":1,"offer_id":null,"brand_new_field":{{"x":1}}}}"#
            ))
            .unwrap();
            assert_eq!(o.status, "some_new_status");
        }
    }
}
