//! Reading events back: an aggregate's last message (direct get), and its
//! events after a known sequence (an ordered consumer on its subject), each
//! checked against the `Ledger-Chain` as it is read.

use async_nats::Client;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt;
use ledger_schemas::{CHAIN_HEADER, ChainHash, EventEnvelope};

use super::StoreError;

/// One event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub envelope: EventEnvelope,
    pub chain: ChainHash,
}

fn chain_of(headers: Option<&async_nats::HeaderMap>, seq: u64) -> Result<ChainHash, StoreError> {
    let value = headers
        .and_then(|h| h.get(CHAIN_HEADER))
        .ok_or_else(|| StoreError::Corrupt(format!("seq {seq}: no {CHAIN_HEADER} header")))?;
    value
        .as_str()
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("seq {seq}: {e}")))
}

fn decode(seq: u64, payload: &Bytes) -> Result<EventEnvelope, StoreError> {
    serde_json::from_slice(payload)
        .map_err(|e| StoreError::Corrupt(format!("seq {seq}: unreadable event: {e}")))
}

/// The last event on `subject`: its sequence and chain, or `None` when the
/// subject holds nothing yet.
pub async fn last_on_subject(
    stream: &Stream,
    subject: &str,
) -> Result<Option<(u64, ChainHash)>, StoreError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some((m.sequence, chain_of(Some(&m.headers), m.sequence)?))),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
    }
}

/// Messages asked for in one batched direct get.
const DIRECT_BATCH_MAX: usize = 1000;

/// Events on `subject` after stream sequence `after`, up to the subject's
/// current last event, checking that each links to the one before, starting
/// from `chain` (the chain value at `after`).
///
/// Read with batched direct gets (ADR-31: `next_by_subj` with `batch`, ended
/// by a `204 EOB` status), so loading an aggregate creates no consumer: a
/// process that loads thousands of accounts at once does not run into the
/// server's consumer limits.
pub async fn events_after(
    client: &Client,
    stream: &Stream,
    subject: &str,
    after: u64,
    mut chain: ChainHash,
) -> Result<Vec<StoredEvent>, StoreError> {
    let Some((last, _)) = last_on_subject(stream, subject).await? else {
        return Ok(Vec::new());
    };
    let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string());
    let api = format!("$JS.API.DIRECT.GET.{}", stream.cached_info().config.name);
    let mut out = Vec::new();
    let mut next = after + 1;
    while next <= last {
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let request = serde_json::json!({"seq": next, "next_by_subj": subject,
            "batch": DIRECT_BATCH_MAX});
        client
            .publish_with_reply(api.clone(), inbox, request.to_string().into())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut got = 0;
        loop {
            let msg = tokio::time::timeout(DIRECT_GET_WAIT, replies.next())
                .await
                .map_err(|_| StoreError::Timeout(DIRECT_GET_WAIT))?
                .ok_or_else(|| StoreError::Unavailable("the reply subscription ended".into()))?;
            match msg.status.map(|s| s.as_u16()) {
                // End of this batch.
                Some(204) => break,
                // Nothing (more) on the subject from `next`.
                Some(404) => break,
                Some(code) => {
                    return Err(StoreError::Unavailable(format!(
                        "direct get on {subject} answered {code} {}",
                        msg.description.unwrap_or_default()
                    )));
                }
                None => {}
            }
            let seq = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_SEQUENCE))
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{subject}: a direct get reply without Nats-Sequence"
                    ))
                })?;
            if seq > last {
                continue;
            }
            let stored = chain_of(msg.headers.as_ref(), seq)?;
            let expected = chain.next(&msg.payload);
            if stored != expected {
                return Err(StoreError::Corrupt(format!(
                    "seq {seq} on {subject}: {CHAIN_HEADER} is {stored}, the chain gives {expected}"
                )));
            }
            chain = stored;
            out.push(StoredEvent {
                seq,
                envelope: decode(seq, &msg.payload)?,
                chain,
            });
            next = seq + 1;
            got += 1;
        }
        if got == 0 {
            break;
        }
    }
    Ok(out)
}

/// How long one batched direct get waits for each reply.
const DIRECT_GET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
