//! Appending events: one message as a plain JetStream publish, several as one
//! atomic batch (ADR-50), where the server stores all of them or none.
//!
//! The batch protocol over the core client: every message carries
//! `Nats-Batch-Id` and `Nats-Batch-Sequence`; the first is sent as a request
//! and the server answers it with an *empty* reply once it has opened the
//! batch; the middle ones are plain publishes; the last also carries
//! `Nats-Batch-Commit: 1` and is answered with the publish ack of the whole
//! batch. A server that does not know batches would answer the first message
//! with an ordinary ack, having stored it alone: that answer stops the batch
//! (and the ledger refuses such servers at start anyway).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Request};
use bytes::Bytes;
use ledger_schemas::signing::{self, SigningKey};
use serde::Deserialize;

use super::StoreError;

/// The server's limit on messages in one atomic batch.
pub const BATCH_MESSAGES_MAX: usize = 1000;

pub const HEADER_EVENT_TYPE: &str = ledger_schemas::genuine::EVENT_TYPE_HEADER;
pub const HEADER_EXPECTED_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
const HEADER_MSG_ID: &str = ledger_schemas::genuine::MSG_ID_HEADER;
const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
const HEADER_BATCH_SEQ: &str = "Nats-Batch-Sequence";
const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// JetStream's error code for a failed expected-last-sequence check.
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;

/// One event ready to be appended.
#[derive(Debug, Clone)]
pub struct AppendMessage {
    pub subject: String,
    pub payload: Bytes,
    pub event_id: String,
    pub event_type: &'static str,
    /// The `Ledger-Chain` value of this event.
    pub chain: String,
    /// `Nats-Expected-Last-Subject-Sequence`: set on the first message of each
    /// subject in an append (0 = the subject must be empty).
    pub expected_last_subject_seq: Option<u64>,
}

/// Who and what an event comes from, beside its data: the envelope's
/// fields that neither the domain nor the store decides.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub account: &'a ledger_schemas::AccountId,
    pub idempotency_key: Option<&'a ledger_schemas::IdempotencyKey>,
    /// Recorded only with a key (it tells a repeat from a conflict).
    pub request_hash: &'a str,
    pub correlation_id: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    pub actor: &'a ledger_schemas::Actor,
    /// When it happened, if the request says; else when it is recorded.
    pub occurred_at: Option<ledger_schemas::Timestamp>,
}

impl Origin<'_> {
    /// The event's envelope: the one place account and top-up events are
    /// built, so both carry the same fields the same way.
    pub fn envelope(
        &self,
        data: ledger_schemas::EventData,
        postings: Vec<ledger_schemas::Posting>,
        now: ledger_schemas::Timestamp,
    ) -> ledger_schemas::EventEnvelope {
        ledger_schemas::EventEnvelope {
            event_id: ledger_schemas::Id::new_v7(),
            body: data,
            schema_version: ledger_schemas::SCHEMA_VERSION,
            account_id: self.account.clone(),
            occurred_at: self.occurred_at.unwrap_or(now),
            recorded_at: now,
            idempotency_key: self.idempotency_key.cloned(),
            correlation_id: self.correlation_id.map(str::to_owned),
            causation_id: self.causation_id.map(str::to_owned),
            actor: self.actor.clone(),
            request_hash: self.idempotency_key.map(|_| self.request_hash.to_owned()),
            postings,
        }
    }
}

impl AppendMessage {
    /// The message of `envelope` on `subject`, chained after `previous`;
    /// with the chain value that follows it. The one place an event's
    /// payload and `Ledger-Chain` are made.
    pub fn chained(
        subject: &str,
        envelope: &ledger_schemas::EventEnvelope,
        previous: ledger_schemas::ChainHash,
    ) -> (Self, ledger_schemas::ChainHash) {
        let payload = Bytes::from(serde_json::to_vec(envelope).expect("events serialise"));
        let chain = previous.next(&payload);
        let message = AppendMessage {
            subject: subject.to_owned(),
            payload,
            event_id: envelope.event_id.to_string(),
            event_type: envelope.event_type().as_str(),
            chain: chain.to_hex(),
            expected_last_subject_seq: None,
        };
        (message, chain)
    }

    /// Its headers as message `position` of an append of `n`; the last
    /// one carries the append's seal.
    fn headers(&self, position: usize, n: usize, seal: &(String, String)) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_MSG_ID, self.event_id.as_str());
        h.insert(HEADER_EVENT_TYPE, self.event_type);
        h.insert(ledger_schemas::CHAIN_HEADER, self.chain.as_str());
        h.insert(signing::BATCH_HEADER, format!("{position}/{n}").as_str());
        if position == n {
            h.insert(signing::HEADS_HEADER, seal.0.as_str());
            h.insert(signing::SIGNATURE_HEADER, seal.1.as_str());
        }
        if let Some(seq) = self.expected_last_subject_seq {
            h.insert(HEADER_EXPECTED_SUBJECT_SEQ, seq.to_string().as_str());
        }
        h
    }
}

/// Where an append landed: the stream sequence of its last message; the
/// others precede it one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub last_seq: u64,
    pub count: usize,
}

impl Appended {
    pub fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.count as u64
    }
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u64,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct PubAck {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    batch: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiError>,
}

/// The `Ledger-Heads` bytes an append of `messages` needs at most: one
/// entry per subject.
pub fn heads_bytes(messages: &[AppendMessage]) -> usize {
    let mut subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects.iter().map(|s| signing::head_bytes(s)).sum()
}

/// `messages` cut, in order, into appends that fit one batch: at most
/// [`BATCH_MESSAGES_MAX`] messages and [`signing::HEADS_BYTES_MAX`] of
/// heads. (One subject's messages may then span two appends.)
pub fn split_to_fit(messages: &[AppendMessage]) -> Vec<Vec<AppendMessage>> {
    let mut out: Vec<Vec<AppendMessage>> = Vec::new();
    let mut current: Vec<AppendMessage> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut bytes = 0;
    for m in messages {
        let add = if seen.contains(m.subject.as_str()) {
            0
        } else {
            signing::head_bytes(&m.subject)
        };
        if current.len() == BATCH_MESSAGES_MAX || bytes + add > signing::HEADS_BYTES_MAX {
            out.push(std::mem::take(&mut current));
            seen.clear();
            bytes = 0;
        }
        // New in this batch (always, when the batch was just cut).
        if seen.insert(&m.subject) {
            bytes += signing::head_bytes(&m.subject);
        }
        current.push(m.clone());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Appends `messages` in order, atomically, signed with `key` (one
/// signature over the chain heads they advance, on the last message).
/// `timeout` bounds each request.
pub async fn append(
    client: &Client,
    messages: &[AppendMessage],
    timeout: Duration,
    key: &SigningKey,
) -> Result<Appended, StoreError> {
    let seal = || {
        signing::seal(
            key,
            messages
                .iter()
                .map(|m| (m.subject.as_str(), m.chain.as_str())),
        )
    };
    match messages {
        [] => Err(StoreError::Refused("nothing to append".into())),
        [one] => {
            let reply = request(
                client,
                &one.subject,
                one.headers(1, 1, &seal()),
                one.payload.clone(),
                timeout,
            )
            .await?;
            let ack = parse_ack(&one.subject, &reply)?;
            Ok(Appended {
                last_seq: ack.seq,
                count: 1,
            })
        }
        many if many.len() > BATCH_MESSAGES_MAX => Err(StoreError::Refused(format!(
            "{} messages exceed the batch limit of {BATCH_MESSAGES_MAX}",
            many.len()
        ))),
        many if heads_bytes(many) > signing::HEADS_BYTES_MAX => Err(StoreError::Refused(format!(
            "the heads of {} subjects pass the {} bytes a batch's headers may hold",
            many.iter()
                .map(|m| m.subject.as_str())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            signing::HEADS_BYTES_MAX
        ))),
        many => append_batch(client, many, timeout, &seal()).await,
    }
}

async fn append_batch(
    client: &Client,
    messages: &[AppendMessage],
    timeout: Duration,
    seal: &(String, String),
) -> Result<Appended, StoreError> {
    let batch_id = uuid::Uuid::now_v7().simple().to_string();
    let last = messages.len();
    for (i, m) in messages.iter().enumerate() {
        let n = i + 1;
        let mut h = m.headers(n, last, seal);
        h.insert(HEADER_BATCH_ID, batch_id.as_str());
        h.insert(HEADER_BATCH_SEQ, n.to_string().as_str());
        if n == 1 {
            let reply = request(client, &m.subject, h, m.payload.clone(), timeout).await?;
            if !reply.is_empty() {
                // Either an error (batches disabled, bad header) or, from a
                // server that does not know batches, an ack for a message it
                // stored on its own. Both end the batch here.
                let ack = parse_ack(&m.subject, &reply)?;
                return Err(StoreError::Refused(format!(
                    "the server stored the first message of a batch on its own (seq {}): \
                     it does not support atomic batches",
                    ack.seq
                )));
            }
        } else if n < last {
            client
                .publish_with_headers(m.subject.clone(), h, m.payload.clone())
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        } else {
            h.insert(HEADER_BATCH_COMMIT, "1");
            let reply = request(client, &m.subject, h, m.payload.clone(), timeout).await?;
            let ack = parse_ack(&m.subject, &reply)?;
            let count = ack.count.unwrap_or(0) as usize;
            if ack.batch.as_deref() != Some(batch_id.as_str()) || count != last {
                return Err(StoreError::Refused(format!(
                    "unexpected batch ack: batch {:?}, count {count}, expected {batch_id} x {last}",
                    ack.batch
                )));
            }
            return Ok(Appended {
                last_seq: ack.seq,
                count,
            });
        }
    }
    unreachable!("the loop returns at the last message")
}

async fn request(
    client: &Client,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
    timeout: Duration,
) -> Result<Bytes, StoreError> {
    let req = Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(timeout));
    match client.send_request(subject.to_owned(), req).await {
        Ok(msg) => Ok(msg.payload),
        Err(e) => match e.kind() {
            async_nats::RequestErrorKind::TimedOut => Err(StoreError::Timeout(timeout)),
            // No responders: the stream is not there (or not yet, after a restart).
            _ => Err(StoreError::Unavailable(e.to_string())),
        },
    }
}

fn parse_ack(subject: &str, reply: &[u8]) -> Result<PubAck, StoreError> {
    let ack: PubAck = serde_json::from_slice(reply).map_err(|e| {
        StoreError::Refused(format!(
            "unreadable publish ack ({e}): {}",
            String::from_utf8_lossy(reply)
        ))
    })?;
    if let Some(err) = &ack.error {
        let detail = format!(
            "{} (code {}, err_code {})",
            err.description, err.code, err.err_code
        );
        return Err(if err.err_code == ERR_WRONG_LAST_SEQUENCE {
            StoreError::Conflict {
                subject: subject.to_owned(),
                detail,
            }
        } else if err.code == 503 || err.code == 429 {
            // Down, or too many batches in flight: both pass.
            StoreError::Unavailable(detail)
        } else {
            StoreError::Refused(detail)
        });
    }
    if ack.stream.is_empty() {
        return Err(StoreError::Refused(format!(
            "publish ack names no stream: {}",
            String::from_utf8_lossy(reply)
        )));
    }
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_cut_to_fit_a_batch_in_order() {
        let message = |i: usize| AppendMessage {
            subject: format!("ledger.events.acct.{i:04}-{}", "x".repeat(59)),
            payload: Bytes::new(),
            event_id: i.to_string(),
            event_type: "account_opened",
            chain: "00".repeat(32),
            expected_last_subject_seq: None,
        };
        // Every subject new: the heads bound the batches.
        let all: Vec<AppendMessage> = (0..1500).map(message).collect();
        let cut = split_to_fit(&all);
        assert!(cut.len() > 3, "{} batches", cut.len());
        assert!(
            cut.iter()
                .all(|b| heads_bytes(b) <= signing::HEADS_BYTES_MAX)
        );
        let ids: Vec<String> = cut.concat().into_iter().map(|m| m.event_id).collect();
        let want: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
        assert_eq!(ids, want);
        // One subject: the message count bounds them.
        let one: Vec<AppendMessage> = (0..2500)
            .map(|i| AppendMessage {
                event_id: i.to_string(),
                ..message(0)
            })
            .collect();
        let cut = split_to_fit(&one);
        assert_eq!(
            cut.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
    }
}
