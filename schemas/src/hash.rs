//! The request hash: what a repeated idempotency key is compared by.
//!
//! Stored with every keyed outcome (in events and in the gateway's key
//! table), so its bytes must never change: SHA-256, lowercase hex, of the
//! request's JSON as serde writes it, after `name` and a zero byte when a
//! name is given (command requests hash their command name; usages and
//! top-up requests do not).

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The request hash of `request`, named `name` if it has a name.
pub fn request_hash<T: Serialize + ?Sized>(name: Option<&str>, request: &T) -> String {
    let mut h = Sha256::new();
    if let Some(name) = name {
        h.update(name.as_bytes());
        h.update([0]);
    }
    h.update(serde_json::to_vec(request).expect("requests serialise"));
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_and_every_field_count() {
        let a = serde_json::json!({"account_id": "acme", "credits": "1"});
        let b = serde_json::json!({"account_id": "acme", "credits": "2"});
        assert_ne!(request_hash(None, &a), request_hash(None, &b));
        assert_ne!(
            request_hash(Some("consume"), &a),
            request_hash(Some("reserve"), &a)
        );
        assert_ne!(request_hash(Some("consume"), &a), request_hash(None, &a));
        // The stored form: these bytes are in logs already.
        assert_eq!(
            request_hash(None, &serde_json::json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
