//! Hostile input to the gateway: webhook bodies and signatures, checkout
//! callbacks. Any bytes are read without a panic; a callback that is not
//! one is refused with `invalid_request`; no signature verifies but the
//! right one.

use ledger_gateway_adapter::signature::{checkout_valid, sign, webhook_valid};
use ledger_gateway_adapter::webhook::Webhook;
use ledger_schemas::{CheckoutRequest, ErrorCode, decode_request};
use proptest::prelude::*;
use serde_json::{Value, json};

fn razorpay_event() -> impl Strategy<Value = Value> {
    let text = ".{0,24}";
    (
        text,
        text,
        any::<i64>(),
        prop_oneof![Just(json!(null)), any::<f64>().prop_map(|f| json!(f))],
    )
        .prop_map(|(event, id, amount, odd)| {
            json!({"event": event, "payload": {
                "payment": {"entity": {"id": id, "order_id": odd, "amount": amount,
                    "currency": "INR", "status": "captured", "method": odd}},
                "order": {"entity": odd},
                "refund": {"entity": {"id": id, "amount": odd}},
                "dispute": odd}})
        })
}

proptest! {
    #[test]
    fn webhook_bodies_of_any_bytes_are_read_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        event in razorpay_event(),
    ) {
        let _ = Webhook::parse(&bytes);
        let _ = Webhook::parse(event.to_string().as_bytes());
    }

    #[test]
    fn only_the_right_signature_verifies(
        body in prop::collection::vec(any::<u8>(), 0..256),
        signature in ".{0,80}",
        secret in "[ -~]{1,40}",
    ) {
        let right = sign(&body, &secret);
        prop_assert!(webhook_valid(&body, &right, &secret));
        prop_assert_eq!(webhook_valid(&body, &signature, &secret), signature == right);
        let (order, payment) = ("order_X", "pay_Y");
        let right = sign(format!("{order}|{payment}").as_bytes(), &secret);
        prop_assert_eq!(checkout_valid(order, payment, &signature, &secret), signature == right);
    }

    #[test]
    fn checkout_callbacks_of_any_bytes_decode_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        fields in prop::collection::btree_map("razorpay_[a-z_]{0,12}", ".{0,30}", 0..5),
    ) {
        let mangled = serde_json::to_vec(&fields).unwrap();
        for body in [bytes, mangled] {
            if let Err(e) = decode_request::<CheckoutRequest>(&body) {
                prop_assert_eq!(e.code(), ErrorCode::InvalidRequest);
            }
        }
    }
}
