//! Razorpay's signatures, checked in constant time.
//!
//! - Checkout success handler: `HMAC_SHA256(order_id + "|" + payment_id, key_secret)`,
//!   lowercase hex, in `razorpay_signature`.
//! - Webhooks: `HMAC_SHA256(raw body, webhook_secret)`, lowercase hex, in
//!   `X-Razorpay-Signature`; computed over the body exactly as received, so a
//!   re-serialised body does not verify.
//!
//! A valid signature only says who sent a message: credits are granted only
//! after the capture is confirmed through Razorpay's API.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn verify(message: &[u8], signature_hex: &str, secret: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    mac.verify_slice(&signature).is_ok()
}

/// Signs `message` (for the fake Razorpay and for tests).
pub fn sign(message: &[u8], secret: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The checkout success handler's signature.
pub fn checkout_valid(
    order_id: &str,
    payment_id: &str,
    signature_hex: &str,
    key_secret: &str,
) -> bool {
    verify(
        format!("{order_id}|{payment_id}").as_bytes(),
        signature_hex,
        key_secret,
    )
}

/// A webhook's signature over its raw body.
pub fn webhook_valid(raw_body: &[u8], signature_hex: &str, webhook_secret: &str) -> bool {
    verify(raw_body, signature_hex, webhook_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_signature() {
        let sig = sign(b"order_EKwxwAgItmmXdp|pay_29QQoUBi66xm2f", "s3cret");
        assert!(checkout_valid(
            "order_EKwxwAgItmmXdp",
            "pay_29QQoUBi66xm2f",
            &sig,
            "s3cret"
        ));
        assert!(!checkout_valid(
            "order_EKwxwAgItmmXdp",
            "pay_other",
            &sig,
            "s3cret"
        ));
        assert!(!checkout_valid(
            "order_EKwxwAgItmmXdp",
            "pay_29QQoUBi66xm2f",
            &sig,
            "old-secret"
        ));
        assert!(!checkout_valid(
            "order_EKwxwAgItmmXdp",
            "pay_29QQoUBi66xm2f",
            "zz",
            "s3cret"
        ));
    }

    #[test]
    fn webhook_signature_is_over_the_raw_bytes() {
        let body =
            br#"{"event":"payment.captured","payload":{"payment":{"entity":{"id":"pay_1"}}}}"#;
        let sig = sign(body, "whsec");
        assert!(webhook_valid(body, &sig, "whsec"));
        // Tampered, re-serialised (same JSON, other spacing), old secret.
        let tampered =
            br#"{"event":"payment.captured","payload":{"payment":{"entity":{"id":"pay_2"}}}}"#;
        assert!(!webhook_valid(tampered, &sig, "whsec"));
        let reserialised = br#"{"event": "payment.captured", "payload": {"payment": {"entity": {"id": "pay_1"}}}}"#;
        assert!(!webhook_valid(reserialised, &sig, "whsec"));
        assert!(!webhook_valid(body, &sig, "old-whsec"));
    }
}
