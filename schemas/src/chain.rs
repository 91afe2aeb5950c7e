//! The `Ledger-Chain` header: per aggregate subject,
//! `chain_n = SHA-256(chain_{n-1} || payload_n)` with `chain_0` 32 zero bytes,
//! written in lowercase hex. Anyone holding the events can check it.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::values::ValueError;

/// The header that carries the chain value.
pub const CHAIN_HEADER: &str = "Ledger-Chain";

/// One link of a subject's hash chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash([u8; 32]);

impl ChainHash {
    /// `chain_0`: where every subject's chain starts.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// The link that follows `self` for an event whose body is `payload`.
    pub fn next(&self, payload: &[u8]) -> ChainHash {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(payload);
        ChainHash(h.finalize().into())
    }

    /// The link from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<ChainHash> {
        bytes.try_into().ok().map(ChainHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl FromStr for ChainHash {
    type Err = ValueError;
    /// Accepts lowercase hex only, as written; anything else is tampering.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::new(CHAIN_HEADER, "must be 64 lowercase hex digits");
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(ChainHash(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_link_is_sha256_of_zeros_and_payload() {
        let mut pre = vec![0u8; 32];
        pre.extend_from_slice(b"{}");
        let expected = hex::encode(Sha256::digest(&pre));
        assert_eq!(ChainHash::GENESIS.next(b"{}").to_hex(), expected);
    }

    #[test]
    fn links_depend_on_order_and_bytes() {
        let a = ChainHash::GENESIS.next(b"a").next(b"b");
        let b = ChainHash::GENESIS.next(b"b").next(b"a");
        assert_ne!(a, b);
        assert_ne!(
            ChainHash::GENESIS.next(b"a"),
            ChainHash::GENESIS.next(b"a ")
        );
        assert_eq!(a.to_hex().parse::<ChainHash>().unwrap(), a);
        assert!(a.to_hex().to_uppercase().parse::<ChainHash>().is_err());
        assert!("00".parse::<ChainHash>().is_err());
    }
}
