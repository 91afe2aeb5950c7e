//! Razorpay webhooks: what the gateway needs from one, read tolerantly.
//!
//! The body is only a hint of which top-up to look at: the gateway verifies
//! the signature over the raw body, then re-fetches everything it acts on
//! from Razorpay's API. Unknown events and fields are accepted and ignored.

use serde::Deserialize;
use serde_json::Value;

/// Razorpay's header with the event's unique id (for de-duplication).
pub const EVENT_ID_HEADER: &str = "x-razorpay-event-id";
/// Razorpay's header with the signature of the raw body.
pub const SIGNATURE_HEADER: &str = "x-razorpay-signature";

/// The parts of a webhook the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `payment.captured`, `order.paid`, `refund.processed`, …
    pub event: String,
    pub order_id: Option<String>,
    pub payment_id: Option<String>,
    pub dispute_id: Option<String>,
    /// The order's receipt, when the payload carries the order (the top-up id).
    pub receipt: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    event: String,
    #[serde(default)]
    payload: Value,
}

fn entity<'a>(payload: &'a Value, name: &str) -> Option<&'a Value> {
    payload.get(name)?.get("entity")
}

fn text(v: Option<&Value>, field: &str) -> Option<String> {
    v?.get(field)?.as_str().map(str::to_owned)
}

impl Webhook {
    /// Reads a webhook body; refuses only what is not a Razorpay event at all.
    pub fn parse(body: &[u8]) -> Result<Webhook, String> {
        let e: Envelope =
            serde_json::from_slice(body).map_err(|e| format!("not a Razorpay event: {e}"))?;
        let order = entity(&e.payload, "order");
        let payment = entity(&e.payload, "payment");
        let refund = entity(&e.payload, "refund");
        let dispute = entity(&e.payload, "dispute");
        Ok(Webhook {
            order_id: text(order, "id").or_else(|| text(payment, "order_id")),
            payment_id: text(payment, "id")
                .or_else(|| text(refund, "payment_id"))
                .or_else(|| text(dispute, "payment_id")),
            dispute_id: text(dispute, "id"),
            receipt: text(order, "receipt"),
            event: e.event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_from_any_entity() {
        let w = Webhook::parse(
            br#"{"entity":"event","account_id":"acc_1","event":"order.paid","contains":["payment","order"],
            "payload":{"payment":{"entity":{"id":"pay_1","order_id":"order_1","notes":[]}},
                       "order":{"entity":{"id":"order_1","receipt":"r1","notes":{}}}},"created_at":1}"#,
        )
        .unwrap();
        assert_eq!(w.event, "order.paid");
        assert_eq!(w.order_id.as_deref(), Some("order_1"));
        assert_eq!(w.payment_id.as_deref(), Some("pay_1"));
        assert_eq!(w.receipt.as_deref(), Some("r1"));
        let d = Webhook::parse(
            br#"{"event":"payment.dispute.created","payload":{"dispute":{"entity":{"id":"disp_1","payment_id":"pay_9"}}}}"#,
        )
        .unwrap();
        assert_eq!(d.payment_id.as_deref(), Some("pay_9"));
        assert_eq!(d.dispute_id.as_deref(), Some("disp_1"));
        assert_eq!(d.order_id, None);
        let unknown =
            Webhook::parse(br#"{"event":"virtual_account.credited","payload":{}}"#).unwrap();
        assert_eq!(unknown.payment_id, None);
        assert!(Webhook::parse(b"[1,2]").is_err());
    }
}
