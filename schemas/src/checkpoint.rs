//! Signed checkpoints and inclusion proofs (`schemas/SIGNATURES.md`).
//!
//! A checkpoint states, for stream `LEDGER` up to a stream sequence, every
//! aggregate's (subject, last sequence, chain head) as the root of an RFC
//! 6962 Merkle tree (leaves sorted by subject), chained to the previous
//! checkpoint by its hash, and signed with Ed25519 by key id. With the
//! public keys alone, anyone can check an export against it (nothing cut,
//! nothing removed, nothing rewritten up to that sequence) and a customer
//! can check that their account's history is the one it signed.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::ChainHash;
use crate::merkle;
use crate::signing::{PublicKeys, SigningKey, Unsigned};

/// What a checkpoint signature signs starts with this line.
pub const CHECKPOINT_DOMAIN: &str = "ledger-checkpoint-v1";
/// The `previous` of the first checkpoint.
pub const NO_PREVIOUS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One aggregate as of a checkpoint: its subject, the stream sequence of
/// its last genuine event, and that event's chain value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Leaf {
    pub subject: String,
    pub seq: u64,
    pub chain: String,
}

impl Leaf {
    /// The leaf's bytes in the tree: `<subject>\n<seq>\n<chain>`.
    pub fn bytes(&self) -> Vec<u8> {
        format!("{}\n{}\n{}", self.subject, self.seq, self.chain).into_bytes()
    }

    pub fn hash(&self) -> merkle::Hash {
        merkle::leaf_hash(&self.bytes())
    }
}

/// Leaves in the tree's order (by subject, bytewise) and their root.
pub fn tree(mut leaves: Vec<Leaf>) -> (Vec<Leaf>, merkle::Hash) {
    leaves.sort_unstable_by(|a, b| a.subject.as_bytes().cmp(b.subject.as_bytes()));
    let hashes: Vec<_> = leaves.iter().map(Leaf::hash).collect();
    let root = merkle::root(&hashes);
    (leaves, root)
}

/// A signed checkpoint, as appended to `ledger.checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Checkpoint {
    /// Always `1`.
    pub version: u32,
    /// The stream it covers (`LEDGER`).
    pub stream: String,
    /// The stream sequence it covers: every message up to it.
    pub seq: u64,
    /// The number of aggregates (leaves).
    pub aggregates: u64,
    /// The Merkle root, lowercase hex.
    pub root: String,
    /// The previous checkpoint's hash ([`NO_PREVIOUS`] for the first).
    pub previous: String,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// `<key id>:<base64 Ed25519 signature>` over [`Checkpoint::statement`].
    pub signature: String,
}

impl Checkpoint {
    /// Builds and signs the checkpoint of `leaves` (in tree order) at `seq`.
    pub fn sign(
        key: &SigningKey,
        stream: &str,
        seq: u64,
        leaves: &[Leaf],
        root: merkle::Hash,
        previous: &str,
        created_at: String,
    ) -> Self {
        let mut c = Checkpoint {
            version: 1,
            stream: stream.to_owned(),
            seq,
            aggregates: leaves.len() as u64,
            root: hex::encode(root),
            previous: previous.to_owned(),
            created_at,
            signature: String::new(),
        };
        c.signature = key.sign(&c.statement());
        c
    }

    /// The bytes signed: one `name value` line per field after the domain.
    pub fn statement(&self) -> Vec<u8> {
        format!(
            "{CHECKPOINT_DOMAIN}\nstream {}\nseq {}\naggregates {}\nroot {}\nprevious {}\ncreated_at {}\n",
            self.stream, self.seq, self.aggregates, self.root, self.previous, self.created_at
        )
        .into_bytes()
    }

    /// SHA-256 of the statement, lowercase hex: the next one's `previous`.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.statement()))
    }

    /// The key id, when the signature verifies under a trusted key.
    pub fn verify<'a>(&'a self, keys: &PublicKeys) -> Result<&'a str, Unsigned> {
        if self.version != 1 {
            return Err(Unsigned(format!("checkpoint version {}", self.version)));
        }
        keys.verify(&self.statement(), &self.signature)
    }

    /// The Merkle root as bytes.
    pub fn root_bytes(&self) -> Option<merkle::Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.root, &mut out).ok()?;
        Some(out)
    }
}

/// What a customer can be handed with a statement: their account's events
/// up to a signed checkpoint, the balances they add up to, and the path
/// from the account's leaf to the checkpoint's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Proof {
    /// Always `1`.
    pub version: u32,
    pub account_id: String,
    pub checkpoint: Checkpoint,
    pub leaf: Leaf,
    /// The leaf's index in the tree.
    pub index: u64,
    /// The audit path, leaf to root, lowercase hex.
    pub path: Vec<String>,
    /// The account's events up to the checkpoint, bodies exactly as stored.
    pub events: Vec<String>,
    /// Per bucket, the sum of the events' postings into it less those out
    /// of it (reserved credits are out).
    pub balances: BTreeMap<String, String>,
}

/// Per bucket of `account`, the postings of `events` into it less those
/// out of it.
pub fn balances_from_postings(
    account: &str,
    events: &[crate::EventEnvelope],
) -> BTreeMap<String, Decimal> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    let bucket = |a: &crate::LedgerAccount| match a {
        crate::LedgerAccount::Customer(id, b) if id.as_str() == account => Some(b.to_string()),
        _ => None,
    };
    for e in events {
        for p in &e.postings {
            if let Some(b) = bucket(&p.credit) {
                *out.entry(b).or_default() += p.amount.get();
            }
            if let Some(b) = bucket(&p.debit) {
                *out.entry(b).or_default() -= p.amount.get();
            }
        }
    }
    out
}

/// What a proof that verifies shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proven {
    pub account_id: String,
    pub key_id: String,
    pub checkpoint_seq: u64,
    pub last_event_seq: u64,
    pub events: usize,
    pub balances: BTreeMap<String, String>,
}

impl Proof {
    /// Checks the proof with the public keys alone: the checkpoint's
    /// signature, the events' chain up to the leaf, the leaf's path to the
    /// root, and the balances the events' postings give.
    pub fn verify(&self, keys: &PublicKeys) -> Result<Proven, String> {
        let key_id = self.checkpoint.verify(keys).map_err(|e| e.0)?.to_owned();
        if !self
            .leaf
            .subject
            .ends_with(&format!(".acct.{}", self.account_id))
        {
            return Err(format!(
                "the leaf {} is not account {}'s",
                self.leaf.subject, self.account_id
            ));
        }
        if self.leaf.seq > self.checkpoint.seq {
            return Err("the leaf is after the checkpoint".into());
        }
        let mut chain = ChainHash::GENESIS;
        let mut envelopes = Vec::with_capacity(self.events.len());
        for (i, body) in self.events.iter().enumerate() {
            chain = chain.next(body.as_bytes());
            let e: crate::EventEnvelope = serde_json::from_str(body)
                .map_err(|e| format!("event {} is not an event: {e}", i + 1))?;
            if e.account_id.as_str() != self.account_id {
                return Err(format!("event {} is account {}'s", i + 1, e.account_id));
            }
            envelopes.push(e);
        }
        if chain.to_hex() != self.leaf.chain {
            return Err(format!(
                "the events' chain ends at {chain}, the signed leaf at {}",
                self.leaf.chain
            ));
        }
        let path = self
            .path
            .iter()
            .map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).map(|_| out)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the path is not hex hashes".to_owned())?;
        let root = self
            .checkpoint
            .root_bytes()
            .ok_or("the checkpoint's root is not a hex hash")?;
        if !merkle::verify(
            self.index,
            self.checkpoint.aggregates,
            &self.leaf.hash(),
            &path,
            &root,
        ) {
            return Err("the leaf's path does not lead to the checkpoint's root".into());
        }
        let computed = balances_from_postings(&self.account_id, &envelopes);
        let claimed: BTreeMap<String, Decimal> = self
            .balances
            .iter()
            .map(|(b, v)| {
                v.parse::<Decimal>()
                    .map(|d| (b.clone(), d.normalize()))
                    .map_err(|_| format!("balance {b} {v:?} is not a decimal"))
            })
            .collect::<Result<_, _>>()?;
        let computed_n: BTreeMap<String, Decimal> = computed
            .iter()
            .map(|(b, d)| (b.clone(), d.normalize()))
            .filter(|(b, d)| !d.is_zero() || claimed.contains_key(b))
            .collect();
        if computed_n != claimed {
            return Err(format!(
                "the balances stated {claimed:?} are not those the events give {computed_n:?}"
            ));
        }
        Ok(Proven {
            account_id: self.account_id.clone(),
            key_id,
            checkpoint_seq: self.checkpoint.seq,
            last_event_seq: self.leaf.seq,
            events: self.events.len(),
            balances: self.balances.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_under_its_key_only_and_changes_break_it() {
        let k = SigningKey::parse(&SigningKey::generate("k1").unwrap()).unwrap();
        let other = SigningKey::parse(&SigningKey::generate("k1").unwrap()).unwrap();
        let leaves = vec![
            Leaf {
                subject: "ledger.events.acct.b".into(),
                seq: 3,
                chain: ChainHash::GENESIS.next(b"b").to_hex(),
            },
            Leaf {
                subject: "ledger.events.acct.a".into(),
                seq: 2,
                chain: ChainHash::GENESIS.next(b"a").to_hex(),
            },
        ];
        let (leaves, root) = tree(leaves);
        assert_eq!(leaves[0].subject, "ledger.events.acct.a");
        let c = Checkpoint::sign(&k, "LEDGER", 3, &leaves, root, NO_PREVIOUS, "t".into());
        let keys = PublicKeys::new([k.public()]);
        assert_eq!(c.verify(&keys).unwrap(), "k1");
        assert!(c.verify(&PublicKeys::new([other.public()])).is_err());
        let moved = Checkpoint {
            seq: 4,
            ..c.clone()
        };
        assert!(moved.verify(&keys).is_err());
        assert_ne!(moved.hash(), c.hash());
    }
}
