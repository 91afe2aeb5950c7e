//! Reading events back: an aggregate's last message (direct get), and its
//! events after a known sequence (batched direct gets), each judged against
//! its subject's chain as it is read: a message the ledger did not write is
//! skipped, and the aggregate goes on from its last genuine event.

use async_nats::Client;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt;
use ledger_schemas::genuine;
use ledger_schemas::{CHAIN_HEADER, ChainHash, EventEnvelope};

use super::StoreError;

/// One event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub envelope: EventEnvelope,
    pub chain: ChainHash,
}

/// A subject's genuine events after a position, and where it stands.
#[derive(Debug, Clone)]
pub struct SubjectRead {
    pub events: Vec<StoredEvent>,
    /// The subject's last stream seq read, foreign messages included: the
    /// sequence the next append expects.
    pub last_seq: u64,
    /// The chain value of the last genuine event: the next append's link.
    pub chain: ChainHash,
    /// Messages skipped as not the ledger's: (stream seq, why).
    pub foreign: Vec<(u64, String)>,
}

fn chain_of(headers: &async_nats::HeaderMap) -> Option<ChainHash> {
    headers.get(CHAIN_HEADER)?.as_str().parse().ok()
}

fn decode(seq: u64, payload: &Bytes) -> Result<EventEnvelope, StoreError> {
    serde_json::from_slice(payload)
        .map_err(|e| StoreError::Corrupt(format!("seq {seq}: unreadable event: {e}")))
}

/// The last message on `subject`: its sequence and chain value (`None`
/// when it has none: not the ledger's), or `None` when the subject holds
/// nothing yet.
pub async fn last_on_subject(
    stream: &Stream,
    subject: &str,
) -> Result<Option<(u64, Option<ChainHash>)>, StoreError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some((m.sequence, chain_of(&m.headers)))),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
    }
}

/// Messages asked for in one batched direct get.
const DIRECT_BATCH_MAX: usize = 1000;

/// The genuine events on `subject` after stream sequence `after`, up to the
/// subject's current last message, each judged against the chain from
/// `chain` (the chain value of the last genuine event at or before `after`).
/// A genuine event this code cannot read is an error.
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
) -> Result<SubjectRead, StoreError> {
    let mut read = SubjectRead {
        events: Vec::new(),
        last_seq: after,
        chain,
        foreign: Vec::new(),
    };
    let Some((last, _)) = last_on_subject(stream, subject).await? else {
        return Ok(read);
    };
    let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string());
    let api = format!("$JS.API.DIRECT.GET.{}", stream.cached_info().config.name);
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
            next = seq + 1;
            got += 1;
            read.last_seq = seq;
            let m = ledger_projections::sift::message(subject, msg.headers.as_ref(), &msg.payload);
            let verdict = match decode(seq, &msg.payload) {
                Ok(envelope) => genuine::judge_event(&m, &chain, &envelope).map(|c| (c, envelope)),
                Err(unreadable) => match genuine::judge(&m, &chain) {
                    // The ledger's, and this code cannot read it.
                    Ok(_) => return Err(unreadable),
                    Err(why) => Err(why),
                },
            };
            match verdict {
                Ok((stored, envelope)) => {
                    chain = stored;
                    read.events.push(StoredEvent {
                        seq,
                        envelope,
                        chain,
                    });
                }
                Err(why) => {
                    tracing::warn!(seq, subject, reason = %why,
                        "skipping a message the ledger did not write");
                    read.foreign.push((seq, why.to_string()));
                }
            }
        }
        if got == 0 {
            break;
        }
    }
    read.chain = chain;
    Ok(read)
}

/// How long one batched direct get waits for each reply.
const DIRECT_GET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
