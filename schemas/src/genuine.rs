//! Telling the ledger's own events from anything else on stream `LEDGER`.
//!
//! A message is the ledger's when it links to its subject's chain (its
//! `Ledger-Chain` is `SHA-256(previous || payload)`, `previous` being the
//! chain value of the subject's last genuine event), and its headers and
//! envelope agree: `Nats-Msg-Id` is the event id, `Ledger-Event-Type` its
//! type, and the subject the account's (or the top-up's) own. Anything else
//! is foreign: every reader (account writers, projectors, indexes, audit)
//! skips it, and the subject's chain goes on from its last genuine event.
//!
//! Every reader uses [`judge`], so they all agree on what is genuine; the
//! writer that appends next chains from the same event the readers expect.
//! A genuine event whose body this code cannot read (a newer schema) is not
//! foreign: a reader that cannot read it stops rather than skip it.

use std::borrow::Cow;

use crate::chain::{CHAIN_HEADER, ChainHash};
use crate::event::{EventEnvelope, EventType};

/// The header naming an event's type.
pub const EVENT_TYPE_HEADER: &str = "Ledger-Event-Type";
/// JetStream's de-duplication header; the ledger sets it to the event id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// One stored message as a reader sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub subject: &'a str,
    pub msg_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub chain: Option<&'a str>,
    pub payload: &'a [u8],
    /// What the reader found of its append's signature
    /// ([`crate::signing`]).
    pub signature: Signature<'a>,
}

/// Whether a signature of the ledger covers a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature<'a> {
    /// Its append's signature verifies and covers it.
    Verified,
    /// None covers it: why.
    Missing(&'a str),
    /// The reader does not check signatures (an auditor without the
    /// public keys); the chain and envelope rules still apply.
    NotChecked,
}

/// Refuses a message no signature covers.
fn signed(m: &Message<'_>) -> Result<(), Foreign> {
    match m.signature {
        Signature::Missing(why) => Err(Foreign {
            rule: "signature",
            reason: format!("not signed by the ledger: {why}"),
        }),
        Signature::Verified | Signature::NotChecked => Ok(()),
    }
}

/// Why a message is not one the ledger wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// The rule it breaks, as `ledger audit verify` names it: `signature`,
    /// `chain`, `envelope`, `header` or `subject`.
    pub rule: &'static str,
    pub reason: String,
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.reason)
    }
}

/// What of the envelope must agree with the headers and the subject; the
/// rest of the body is skipped unread.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    account_id: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<DataHead<'a>>,
}

#[derive(serde::Deserialize)]
struct DataHead<'a> {
    #[serde(default, borrow)]
    topup_id: Option<Cow<'a, str>>,
}

/// Whether `m` links to its subject's chain after `previous`: its chain
/// value when it does.
pub fn links(m: &Message<'_>, previous: &ChainHash) -> Result<ChainHash, Foreign> {
    let foreign = |reason: String| {
        Err(Foreign {
            rule: "chain",
            reason,
        })
    };
    let Some(stored) = m.chain else {
        return foreign(format!("no {CHAIN_HEADER} header"));
    };
    let stored: ChainHash = match stored.parse() {
        Ok(c) => c,
        Err(e) => return foreign(e.to_string()),
    };
    let expected = previous.next(m.payload);
    if stored != expected {
        return foreign(format!(
            "{CHAIN_HEADER} {stored} does not follow the subject's chain (expected {expected})"
        ));
    }
    Ok(stored)
}

/// The headers and the subject agree with the envelope's id, type, account
/// and top-up: a top-up's events live on `…topup.<topup_id>`, every other
/// event on `…acct.<account_id>`.
fn agrees(
    m: &Message<'_>,
    event_id: &str,
    kind: &str,
    account: &str,
    topup: Option<&str>,
) -> Result<(), Foreign> {
    let foreign = |rule: &'static str, reason: String| Err(Foreign { rule, reason });
    if m.msg_id != Some(event_id) {
        return foreign(
            "header",
            format!(
                "{MSG_ID_HEADER} {:?} is not the event id {event_id}",
                m.msg_id
            ),
        );
    }
    if m.event_type != Some(kind) {
        return foreign(
            "header",
            format!(
                "{EVENT_TYPE_HEADER} {:?} is not the event type {kind}",
                m.event_type
            ),
        );
    }
    let on = |kind: &str, id: &str| {
        m.subject
            .strip_suffix(id)
            .and_then(|s| s.strip_suffix(kind))
            .is_some_and(|s| s.ends_with('.'))
    };
    let of_topup = EventType::parse(kind).is_some_and(EventType::of_topup);
    let own = match (of_topup, topup) {
        (true, Some(t)) => on("topup.", t),
        (true, None) => false,
        (false, _) => on("acct.", account),
    };
    if !own {
        return foreign(
            "subject",
            format!(
                "a {kind} event of account {account} on subject {}",
                m.subject
            ),
        );
    }
    Ok(())
}

/// Whether `m` is the ledger's event following `previous` (the chain value
/// of its subject's last genuine event, [`ChainHash::GENESIS`] for none):
/// its chain value when it is, and why not when it is not. Reads only the
/// envelope's id, type, account and top-up, so it judges events of types
/// and versions this code cannot read in full.
pub fn judge(m: &Message<'_>, previous: &ChainHash) -> Result<ChainHash, Foreign> {
    let chain = links(m, previous)?;
    let head: Head<'_> = serde_json::from_slice(m.payload).map_err(|e| Foreign {
        rule: "envelope",
        reason: format!("not an event envelope: {e}"),
    })?;
    let topup = head.data.as_ref().and_then(|d| d.topup_id.as_deref());
    agrees(m, &head.event_id, &head.kind, &head.account_id, topup)?;
    signed(m)?;
    Ok(chain)
}

/// [`judge`] for a message whose payload decoded as `envelope` (the same
/// verdict, without reading the payload again).
pub fn judge_event(
    m: &Message<'_>,
    previous: &ChainHash,
    envelope: &EventEnvelope,
) -> Result<ChainHash, Foreign> {
    let chain = links(m, previous)?;
    let topup = envelope.body.topup_id().map(|t| t.to_string());
    agrees(
        m,
        &envelope.event_id.to_string(),
        envelope.event_type().as_str(),
        envelope.account_id.as_str(),
        topup.as_deref(),
    )?;
    signed(m)?;
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "ledger.events.acct.acme";

    fn payload(event_id: &str, kind: &str, account: &str) -> String {
        format!(
            r#"{{"event_id":"{event_id}","type":"{kind}","account_id":"{account}","data":{{}},"schema_version":1}}"#
        )
    }

    fn genuine<'a>(body: &'a str, chain: &'a str) -> Message<'a> {
        Message {
            subject: SUBJECT,
            msg_id: Some("e1"),
            event_type: Some("credits_granted"),
            chain: Some(chain),
            payload: body.as_bytes(),
            signature: Signature::Verified,
        }
    }

    #[test]
    fn the_ledgers_event_is_genuine_and_gives_its_chain_value() {
        let body = payload("e1", "credits_granted", "acme");
        let chain = ChainHash::GENESIS.next(body.as_bytes()).to_hex();
        let m = genuine(&body, &chain);
        assert_eq!(judge(&m, &ChainHash::GENESIS).unwrap().to_hex(), chain);
    }

    #[test]
    fn each_disagreement_makes_a_message_foreign() {
        let body = payload("e1", "credits_granted", "acme");
        let chain = ChainHash::GENESIS.next(body.as_bytes()).to_hex();
        let ok = genuine(&body, &chain);
        let reason = |m: Message<'_>| judge(&m, &ChainHash::GENESIS).unwrap_err().to_string();
        assert!(reason(Message { chain: None, ..ok }).contains("no Ledger-Chain"));
        let unsigned = Message {
            signature: Signature::Missing("no header"),
            ..ok
        };
        assert!(reason(unsigned).starts_with("signature: not signed"));
        let other = ChainHash::GENESIS.next(b"x").to_hex();
        assert!(
            reason(Message {
                chain: Some(&other),
                ..ok
            })
            .contains("does not follow")
        );
        // The right chain value from another predecessor does not link either.
        let later = ChainHash::GENESIS.next(b"x");
        assert!(judge(&ok, &later).is_err());
        assert!(
            reason(Message {
                msg_id: Some("e2"),
                ..ok
            })
            .contains("Nats-Msg-Id")
        );
        assert!(reason(Message { msg_id: None, ..ok }).contains("Nats-Msg-Id"));
        let typed = Message {
            event_type: Some("credits_consumed"),
            ..ok
        };
        assert!(reason(typed).contains("Ledger-Event-Type"));
        let elsewhere = Message {
            subject: "ledger.events.acct.acme2",
            ..ok
        };
        assert!(reason(elsewhere).contains("on subject"));
        let suffix = Message {
            subject: "ledger.events.acct.xacme",
            ..ok
        };
        assert!(reason(suffix).contains("on subject"));
        let text = "not json";
        let chained = ChainHash::GENESIS.next(text.as_bytes()).to_hex();
        let junk = Message {
            payload: text.as_bytes(),
            chain: Some(&chained),
            ..ok
        };
        assert!(reason(junk).contains("not an event envelope"));
    }

    #[test]
    fn a_topup_event_belongs_on_its_topups_subject() {
        let id = "0190b7a4-1111-7000-8000-000000000001";
        let body = format!(
            r#"{{"event_id":"e1","type":"topup_quoted","account_id":"acme","data":{{"topup_id":"{id}"}}}}"#
        );
        let chain = ChainHash::GENESIS.next(body.as_bytes()).to_hex();
        let subject = format!("ledger.events.topup.{id}");
        let m = Message {
            subject: &subject,
            msg_id: Some("e1"),
            event_type: Some("topup_quoted"),
            chain: Some(&chain),
            payload: body.as_bytes(),
            signature: Signature::Verified,
        };
        assert!(judge(&m, &ChainHash::GENESIS).is_ok());
        let wrong = Message {
            subject: "ledger.events.topup.other",
            ..m
        };
        assert!(judge(&wrong, &ChainHash::GENESIS).is_err());
    }
}
