//! Who wrote an event: every atomic append the ledger makes is signed.
//!
//! The chain (`Ledger-Chain`) proves order, not authorship: anyone who may
//! publish on a subject can recompute it. So the ledger signs, once per
//! atomic append, the chain heads the append advances (Ed25519, by key id;
//! `schemas/SIGNATURES.md` is the format). Headers:
//!
//! - `Ledger-Batch: <i>/<n>` on every message: its position in its append.
//! - On the last message (`i == n`) also `Ledger-Heads`, the heads it
//!   advances as `<position> <subject> <chain>` entries joined by `;`, in
//!   position order (each subject's last message in the append), and
//!   `Ledger-Signature: <key id>:<base64 signature>` over the bytes
//!   `ledger-batch-v1\n<n>\n<Ledger-Heads>`.
//!
//! An append's messages occupy consecutive stream sequences (JetStream
//! stores an atomic batch whole), so the message at position `i` of a
//! signed append whose last message is at seq `s` is at seq `s - n + i`:
//! no other message can sit there. A message is the ledger's only if such a
//! signature covers it: its subject is listed with a position at or after
//! its own. Readers in stream order check each append once ([`Gate`]);
//! readers of one subject check the newest head they read (the chain links
//! every earlier event to it).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};

use crate::chain::CHAIN_HEADER;

/// Position in the append: `<i>/<n>`.
pub const BATCH_HEADER: &str = "Ledger-Batch";
/// The heads an append advances (on its last message).
pub const HEADS_HEADER: &str = "Ledger-Heads";
/// `<key id>:<base64 Ed25519 signature>` (on its last message).
pub const SIGNATURE_HEADER: &str = "Ledger-Signature";
/// What a batch signature signs starts with this line.
pub const BATCH_DOMAIN: &str = "ledger-batch-v1";
/// The most `Ledger-Heads` may hold: JetStream refuses a message whose
/// headers pass 64 KiB, and the last message's other headers need room.
/// An append of many subjects is cut into batches that fit.
pub const HEADS_BYTES_MAX: usize = 56 * 1024;

/// The most messages one append holds (JetStream's atomic batch limit): a
/// stream-order reader that starts at seq `s` reads from `s - 999` so that
/// it sees the start of the append `s` belongs to.
pub const APPEND_MESSAGES_MAX: u64 = 1000;

/// What one head entry of `subject` adds to `Ledger-Heads` at most
/// (a four-digit position, two separators, 64 hex digits, `;`).
pub fn head_bytes(subject: &str) -> usize {
    subject.len() + 4 + 2 + 64 + 1
}

/// Why something is not signed by a key the reader trusts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsigned(pub String);

/// A key id: `[A-Za-z0-9_-]{1,32}`.
fn check_key_id(id: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key id {id:?} must be 1 to 32 of A-Z, a-z, 0-9, '_' and '-'"
        ))
    }
}

/// `<key id>:<base64 of 32 bytes>`.
fn split_key(text: &str, what: &str) -> Result<(String, [u8; 32]), String> {
    let (id, b64) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{what} must be '<key id>:<base64 of 32 bytes>'"))?;
    check_key_id(id)?;
    let bytes = B64
        .decode(b64)
        .map_err(|e| format!("{what} {id}: not base64 ({e})"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{what} {id}: {} bytes, not 32", b.len()))?;
    Ok((id.to_owned(), bytes))
}

/// The ledger's signing key: an Ed25519 secret key and its id.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From configuration: `<key id>:<base64 of the 32-byte secret seed>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, seed) = split_key(text, "signing_key")?;
        Ok(Self {
            id,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// A new key with a random seed, as configuration text.
    pub fn generate(id: &str) -> Result<String, String> {
        check_key_id(id)?;
        let seed: [u8; 32] = rand_seed();
        Ok(format!("{id}:{}", B64.encode(seed)))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `<key id>:<base64 signature>` of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        let signature = self.key.sign(message);
        format!("{}:{}", self.id, B64.encode(signature.to_bytes()))
    }
}

/// 32 random bytes from the operating system.
fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random source");
    seed
}

/// A public key and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub id: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// `<key id>:<base64 of the 32-byte public key>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, bytes) = split_key(text, "public key")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|e| format!("public key {id}: not an Ed25519 point ({e})"))?;
        Ok(Self { id, key })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.id, B64.encode(self.key.as_bytes()))
    }

    /// As `ledger audit keys` lists it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "key_id": self.id,
            "algorithm": "ed25519",
            "public_key": B64.encode(self.key.as_bytes()),
        })
    }
}

/// The public keys a reader trusts, by id.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(HashMap<String, PublicKey>);

impl PublicKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self(keys.into_iter().map(|k| (k.id.clone(), k)).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted by id.
    pub fn all(&self) -> Vec<&PublicKey> {
        let mut v: Vec<_> = self.0.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Reads keys from `ledger audit keys` output (`{"keys": [...]}`), or
    /// from `<key id>:<base64>` text, one per line.
    pub fn parse_document(text: &str) -> Result<Self, String> {
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) {
            let keys = doc["keys"]
                .as_array()
                .ok_or("a keys document has a 'keys' list")?;
            let mut out = Vec::new();
            for k in keys {
                let id = k["key_id"].as_str().ok_or("each key has a key_id")?;
                let public = k["public_key"]
                    .as_str()
                    .ok_or("each key has a public_key")?;
                if k["algorithm"].as_str() != Some("ed25519") {
                    return Err(format!("key {id}: the algorithm must be ed25519"));
                }
                out.push(PublicKey::parse(&format!("{id}:{public}"))?);
            }
            return Ok(Self::new(out));
        }
        let keys = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(PublicKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(keys))
    }

    /// Checks `signature` (`<key id>:<base64>`) over `message`: the key id
    /// it names, or why not.
    pub fn verify<'s>(&self, message: &[u8], signature: &'s str) -> Result<&'s str, Unsigned> {
        let (id, b64) = signature
            .split_once(':')
            .ok_or_else(|| Unsigned(format!("signature {signature:?} names no key id")))?;
        let key = self
            .0
            .get(id)
            .ok_or_else(|| Unsigned(format!("signed by key {id:?}, which is not trusted")))?;
        let bytes = B64
            .decode(b64)
            .map_err(|_| Unsigned(format!("the signature by key {id} is not base64")))?;
        let signature = ed25519_dalek::Signature::from_slice(&bytes)
            .map_err(|_| Unsigned(format!("the signature by key {id} is not 64 bytes")))?;
        key.key
            .verify(message, &signature)
            .map_err(|_| Unsigned(format!("the signature by key {id} does not verify")))?;
        Ok(id)
    }
}

/// What a process signs with and checks by.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// Set on processes that append (the command and gateway roles).
    pub signing: Option<SigningKey>,
    /// The signing key's public half and every older key still trusted.
    pub public: PublicKeys,
}

impl Keys {
    /// The signing key (if any) and the public keys of `verify`, the
    /// signing key's own public key included.
    pub fn new(signing: Option<SigningKey>, verify: Vec<PublicKey>) -> Self {
        let mine = signing.as_ref().map(SigningKey::public);
        Self {
            public: PublicKeys::new(verify.into_iter().chain(mine)),
            signing,
        }
    }

    pub fn signer(&self) -> Result<&SigningKey, Unsigned> {
        self.signing
            .as_ref()
            .ok_or_else(|| Unsigned("this process has no signing_key".into()))
    }
}

/// One head of a signed append: the last message of a subject in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// 1-based position in the append.
    pub position: usize,
    pub subject: String,
    pub chain: String,
}

/// The headers that seal an append of messages `(subject, chain)`, in
/// order: `Ledger-Heads` and `Ledger-Signature` for its last message.
pub fn seal<'a>(
    key: &SigningKey,
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (String, String) {
    let mut last: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut n = 0;
    for (i, (subject, chain)) in messages.into_iter().enumerate() {
        last.insert(subject, (i + 1, chain));
        n = i + 1;
    }
    let mut heads: Vec<(usize, &str, &str)> =
        last.into_iter().map(|(s, (i, c))| (i, s, c)).collect();
    heads.sort_unstable();
    let heads = heads
        .iter()
        .map(|(i, s, c)| format!("{i} {s} {c}"))
        .collect::<Vec<_>>()
        .join(";");
    let signature = key.sign(&batch_statement(n, &heads));
    (heads, signature)
}

/// The bytes a batch signature signs.
pub fn batch_statement(n: usize, heads: &str) -> Vec<u8> {
    format!("{BATCH_DOMAIN}\n{n}\n{heads}").into_bytes()
}

/// `<i>/<n>` of a `Ledger-Batch` header.
pub fn parse_position(value: &str) -> Option<(usize, usize)> {
    let (i, n) = value.split_once('/')?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (1 <= i && i <= n).then_some((i, n))
}

/// Checks the seal on the last message of an append of `n` messages: its
/// heads, in position order, when the signature verifies.
pub fn open_seal(
    keys: &PublicKeys,
    n: usize,
    heads: Option<&str>,
    signature: Option<&str>,
) -> Result<Vec<Head>, Unsigned> {
    let heads = heads.ok_or_else(|| Unsigned(format!("no {HEADS_HEADER} header")))?;
    let signature = signature.ok_or_else(|| Unsigned(format!("no {SIGNATURE_HEADER} header")))?;
    keys.verify(&batch_statement(n, heads), signature)?;
    let mut out: Vec<Head> = Vec::new();
    for entry in heads.split(';') {
        let mut parts = entry.split(' ');
        let (Some(i), Some(subject), Some(chain), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Unsigned(format!("a signed head {entry:?} is malformed")));
        };
        let position: usize = i
            .parse()
            .map_err(|_| Unsigned(format!("a signed head {entry:?} has no position")))?;
        if position == 0 || position > n || out.last().is_some_and(|h| h.position >= position) {
            return Err(Unsigned(format!("a signed head {entry:?} is out of order")));
        }
        out.push(Head {
            position,
            subject: subject.to_owned(),
            chain: chain.to_owned(),
        });
    }
    Ok(out)
}

/// Whether the message at `position` on `subject` is covered by `heads`:
/// its subject is listed at or after it.
pub fn covers(heads: &[Head], position: usize, subject: &str) -> bool {
    heads
        .iter()
        .any(|h| h.subject == subject && h.position >= position)
}

/// What a stream-order reader needs of a message.
pub trait Sealable {
    fn seq(&self) -> u64;
    fn subject(&self) -> &str;
    fn header(&self, name: &str) -> Option<&str>;
}

/// The signature's verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seal {
    /// Covered by a valid signature of its append.
    Signed,
    /// Not covered: not the ledger's.
    Unsigned(String),
    /// A message on the checkpoint subject (checked on its own terms).
    Checkpoint,
}

/// What a stream-order reader trusts: the public keys, and the subject of
/// checkpoints (which are not events).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Arc<PublicKeys>,
    pub checkpoint_subject: String,
}

/// Checks appends in stream order: holds each message until the last one
/// of its append arrives, then releases them all with the verdict of the
/// append's signature. A message that cannot belong to a complete signed
/// append is released at once as unsigned; messages held are never
/// released out of order.
#[derive(Debug)]
pub struct Gate<T> {
    keys: Arc<PublicKeys>,
    checkpoint_subject: String,
    run: Vec<(T, usize, usize)>,
}

impl<T: Sealable> Gate<T> {
    pub fn new(trust: &Trust) -> Self {
        Self {
            keys: trust.keys.clone(),
            checkpoint_subject: trust.checkpoint_subject.clone(),
            run: Vec::new(),
        }
    }

    /// Releases what is held as unsigned: the reader has read past the
    /// stream's head and waited, and JetStream stores an atomic append
    /// whole (a reader may see its first messages a moment before the
    /// rest, never some without the others for long), so no message of
    /// this append can still come.
    pub fn finish(&mut self, out: &mut Vec<(T, Seal)>) {
        self.flush("its append never ended with a signature", out);
    }

    /// The first stream seq held, waiting for its append's last message.
    pub fn held_from(&self) -> Option<u64> {
        self.run.first().map(|(t, _, _)| t.seq())
    }

    fn flush(&mut self, why: &str, out: &mut Vec<(T, Seal)>) {
        for (t, _, _) in self.run.drain(..) {
            out.push((t, Seal::Unsigned(why.to_owned())));
        }
    }

    /// Takes the next message in stream order; appends to `out` what it
    /// releases, in order.
    pub fn push(&mut self, item: T, out: &mut Vec<(T, Seal)>) {
        if item.subject() == self.checkpoint_subject {
            self.flush("its append never ended with a signature", out);
            out.push((item, Seal::Checkpoint));
            return;
        }
        let Some((i, n)) = item.header(BATCH_HEADER).and_then(parse_position) else {
            self.flush("its append never ended with a signature", out);
            let why = format!("no valid {BATCH_HEADER} header: not part of a signed append");
            out.push((item, Seal::Unsigned(why)));
            return;
        };
        let continues = self
            .run
            .last()
            .is_some_and(|(t, pi, pn)| t.seq() + 1 == item.seq() && *pi + 1 == i && *pn == n);
        if !continues {
            self.flush("its append never ended with a signature", out);
            if i != 1 {
                let why = format!("position {i}/{n} without the start of its append");
                out.push((item, Seal::Unsigned(why)));
                return;
            }
        }
        self.run.push((item, i, n));
        if i < n {
            return;
        }
        let last = &self.run.last().expect("just pushed").0;
        let verdict = open_seal(
            &self.keys,
            n,
            last.header(HEADS_HEADER),
            last.header(SIGNATURE_HEADER),
        )
        .and_then(|heads| {
            for h in &heads {
                let (t, _, _) = &self.run[h.position - 1];
                if t.subject() != h.subject || t.header(CHAIN_HEADER) != Some(h.chain.as_str()) {
                    return Err(Unsigned(format!(
                        "the message at position {} is not the signed head of {}",
                        h.position, h.subject
                    )));
                }
            }
            Ok(heads)
        });
        for (t, i, _) in self.run.drain(..) {
            let seal = match &verdict {
                Ok(heads) if covers(heads, i, t.subject()) => Seal::Signed,
                Ok(_) => Seal::Unsigned("its append's signature does not cover it".into()),
                Err(why) => Seal::Unsigned(why.0.clone()),
            };
            out.push((t, seal));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainHash;

    struct M {
        seq: u64,
        subject: String,
        headers: HashMap<String, String>,
    }

    impl Sealable for M {
        fn seq(&self) -> u64 {
            self.seq
        }
        fn subject(&self) -> &str {
            &self.subject
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(String::as_str)
        }
    }

    fn key(id: &str) -> SigningKey {
        SigningKey::parse(&SigningKey::generate(id).unwrap()).unwrap()
    }

    /// An append of `subjects` starting at stream seq `first`.
    fn append(key: &SigningKey, first: u64, subjects: &[&str]) -> Vec<M> {
        let chains: Vec<String> = subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                ChainHash::GENESIS
                    .next(format!("{s}{first}{i}").as_bytes())
                    .to_hex()
            })
            .collect();
        let (heads, signature) = seal(
            key,
            subjects
                .iter()
                .copied()
                .zip(chains.iter().map(String::as_str)),
        );
        let n = subjects.len();
        subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut headers = HashMap::from([
                    (BATCH_HEADER.to_owned(), format!("{}/{n}", i + 1)),
                    (CHAIN_HEADER.to_owned(), chains[i].clone()),
                ]);
                if i + 1 == n {
                    headers.insert(HEADS_HEADER.into(), heads.clone());
                    headers.insert(SIGNATURE_HEADER.into(), signature.clone());
                }
                M {
                    seq: first + i as u64,
                    subject: (*s).to_owned(),
                    headers,
                }
            })
            .collect()
    }

    fn trust(keys: &PublicKeys) -> Trust {
        Trust {
            keys: Arc::new(keys.clone()),
            checkpoint_subject: "ledger.checkpoints".into(),
        }
    }

    fn run(keys: &PublicKeys, messages: Vec<M>) -> Vec<(u64, Seal)> {
        let mut gate = Gate::new(&trust(keys));
        let mut out = Vec::new();
        for m in messages {
            gate.push(m, &mut out);
        }
        out.into_iter().map(|(m, s)| (m.seq, s)).collect()
    }

    #[test]
    fn a_signed_append_is_released_whole_when_its_last_message_arrives() {
        let k = key("k1");
        let keys = PublicKeys::new([k.public()]);
        let mut gate = Gate::new(&trust(&keys));
        let mut out = Vec::new();
        let mut messages = append(&k, 5, &["a", "b", "a"]).into_iter();
        gate.push(messages.next().unwrap(), &mut out);
        gate.push(messages.next().unwrap(), &mut out);
        assert!(out.is_empty());
        assert_eq!(gate.held_from(), Some(5));
        gate.push(messages.next().unwrap(), &mut out);
        let seals: Vec<_> = out.iter().map(|(m, s)| (m.seq, s.clone())).collect();
        assert_eq!(
            seals,
            [(5, Seal::Signed), (6, Seal::Signed), (7, Seal::Signed)]
        );
        assert_eq!(gate.held_from(), None);
    }

    #[test]
    fn unsigned_foreign_and_other_keys_are_told_apart() {
        let k = key("k1");
        let other = key("k2");
        let keys = PublicKeys::new([k.public()]);
        // Under an untrusted key.
        let seals = run(&keys, append(&other, 1, &["a", "b"]));
        assert!(
            seals
                .iter()
                .all(|(_, s)| matches!(s, Seal::Unsigned(w) if w.contains("not trusted")))
        );
        // A lone message without headers between two signed appends.
        let mut messages = append(&k, 1, &["a"]);
        messages.push(M {
            seq: 2,
            subject: "a".into(),
            headers: HashMap::new(),
        });
        messages.extend(append(&k, 3, &["a", "b"]));
        let seals = run(&keys, messages);
        assert_eq!(seals[0], (1, Seal::Signed));
        assert!(matches!(&seals[1], (2, Seal::Unsigned(_))));
        assert_eq!(&seals[2..], [(3, Seal::Signed), (4, Seal::Signed)]);
        // A forged message claiming to open an append that a genuine one follows.
        let mut forged = append(&k, 1, &["a", "b"]);
        forged.truncate(1);
        forged.extend(append(&k, 2, &["b"]));
        let seals = run(&keys, forged);
        assert!(matches!(&seals[0], (1, Seal::Unsigned(_))));
        assert_eq!(seals[1], (2, Seal::Signed));
        // Heads that name another chain value.
        let mut changed = append(&k, 1, &["a", "b"]);
        changed[1]
            .headers
            .insert(CHAIN_HEADER.into(), ChainHash::GENESIS.to_hex());
        assert!(run(&keys, changed).iter().all(|(_, s)| *s != Seal::Signed));
        // A checkpoint message passes through, flushing nothing genuine.
        let mut with_checkpoint = append(&k, 1, &["a"]);
        with_checkpoint.push(M {
            seq: 2,
            subject: "ledger.checkpoints".into(),
            headers: HashMap::new(),
        });
        assert_eq!(run(&keys, with_checkpoint)[1], (2, Seal::Checkpoint));
    }

    #[test]
    fn keys_round_trip_through_their_text_and_documents() {
        let k = key("k-1");
        let public = k.public();
        assert_eq!(PublicKey::parse(&public.to_text()).unwrap(), public);
        let doc = serde_json::json!({"keys": [public.to_json()]}).to_string();
        let keys = PublicKeys::parse_document(&doc).unwrap();
        let signature = k.sign(b"x");
        assert_eq!(keys.verify(b"x", &signature).unwrap(), "k-1");
        assert!(keys.verify(b"y", &signature).is_err());
        assert!(SigningKey::parse("bad id:AAAA").is_err());
        assert!(SigningKey::parse("k:AAAA").is_err());
        assert_ne!(
            SigningKey::generate("a").unwrap(),
            SigningKey::generate("a").unwrap()
        );
    }
}
