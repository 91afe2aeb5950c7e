//! Reading events back: an aggregate's last message (direct get), and its
//! events after a known sequence (an ordered consumer on its subject), each
//! checked against the `Ledger-Chain` as it is read.

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

/// Events on `subject` after stream sequence `after`, up to the subject's
/// current last event, checking that each links to the one before, starting
/// from `chain` (the chain value at `after`).
pub async fn events_after(
    stream: &Stream,
    subject: &str,
    after: u64,
    mut chain: ChainHash,
) -> Result<Vec<StoredEvent>, StoreError> {
    let Some((last, _)) = last_on_subject(stream, subject).await? else {
        return Ok(Vec::new());
    };
    if last <= after {
        return Ok(Vec::new());
    }
    let mut messages =
        ledger_projections::projector::ordered_from(stream, after + 1, Some(subject))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let mut out = Vec::new();
    while let Some(next) = messages.next().await {
        let msg = next.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let info = msg
            .info()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let seq = info.stream_sequence;
        let pending = info.pending;
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
        if seq >= last || pending == 0 {
            break;
        }
    }
    Ok(out)
}
