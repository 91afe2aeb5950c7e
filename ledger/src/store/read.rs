//! Reading events back: an aggregate's last message (direct get), and its
//! events after a known sequence (batched direct gets), each judged against
//! its subject's chain as it is read: a message the ledger did not write is
//! skipped, and the aggregate goes on from its last genuine event.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt;
use ledger_projections::projector::TAIL_STALL;
use ledger_schemas::genuine::{self, Signature};
use ledger_schemas::signing::{self, PublicKeys};
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
    keys: &PublicKeys,
    subject: &str,
    after: u64,
    chain: ChainHash,
) -> Result<SubjectRead, StoreError> {
    let fetched = fetch_after(client, stream, subject, after).await?;
    // Judged on the chain first: when the newest event so judged is a head
    // the ledger signed, the chain links every earlier one to it and one
    // signature proves them all. Otherwise (a forged message that links,
    // or a signature missing) each is judged by its own append's signature.
    let unchecked = vec![Signature::NotChecked; fetched.len()];
    let read = judge_all(subject, after, chain, &fetched, &unchecked)?;
    let newest = read
        .events
        .last()
        .and_then(|e| fetched.iter().find(|f| f.seq == e.seq));
    let Some(newest) = newest else {
        // No event to prove: an empty read, or only messages that do not
        // even link (foreign whatever their signature).
        return Ok(read);
    };
    let mut signers = Signers::new(stream, keys);
    if signers.is_signed_head(subject, newest).await? {
        return Ok(read);
    }
    let mut verdicts = Vec::with_capacity(fetched.len());
    for f in &fetched {
        verdicts.push(signers.covers(subject, f).await?);
    }
    let signatures: Vec<Signature<'_>> = verdicts
        .iter()
        .map(|v| match v {
            Ok(()) => Signature::Verified,
            Err(why) => Signature::Missing(why),
        })
        .collect();
    judge_all(subject, after, chain, &fetched, &signatures)
}

/// One message as fetched.
struct Fetched {
    seq: u64,
    headers: Option<async_nats::HeaderMap>,
    payload: Bytes,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }
}

/// Judges `fetched` in order against the chain from `chain`, each with its
/// signature verdict in `signatures`.
fn judge_all(
    subject: &str,
    after: u64,
    mut chain: ChainHash,
    fetched: &[Fetched],
    signatures: &[Signature<'_>],
) -> Result<SubjectRead, StoreError> {
    let mut read = SubjectRead {
        events: Vec::new(),
        last_seq: after,
        chain,
        foreign: Vec::new(),
    };
    for (f, signature) in fetched.iter().zip(signatures) {
        let seq = f.seq;
        read.last_seq = seq;
        let m =
            ledger_projections::sift::message(subject, f.headers.as_ref(), &f.payload, *signature);
        let verdict = match decode(seq, &f.payload) {
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
            Err(why) => read.foreign.push((seq, why.to_string())),
        }
    }
    for (seq, why) in &read.foreign {
        tracing::warn!(seq, subject, reason = %why, "skipping a message the ledger did not write");
    }
    read.chain = chain;
    Ok(read)
}

/// The signatures of the appends a subject's messages belong to, each
/// fetched and checked once.
struct Signers<'a> {
    stream: &'a Stream,
    keys: &'a PublicKeys,
    opened: std::collections::HashMap<u64, Result<Vec<signing::Head>, String>>,
}

impl<'a> Signers<'a> {
    fn new(stream: &'a Stream, keys: &'a PublicKeys) -> Self {
        Self {
            stream,
            keys,
            opened: Default::default(),
        }
    }

    /// The heads signed by the append `f` belongs to, with `f`'s position:
    /// its last message sits `n - i` after it.
    async fn heads(
        &mut self,
        f: &Fetched,
    ) -> Result<(usize, &Result<Vec<signing::Head>, String>), StoreError> {
        let Some((i, n)) = f
            .header(signing::BATCH_HEADER)
            .and_then(signing::parse_position)
        else {
            self.opened
                .insert(0, Err(format!("no valid {} header", signing::BATCH_HEADER)));
            return Ok((0, &self.opened[&0]));
        };
        let last = f.seq + (n - i) as u64;
        if !self.opened.contains_key(&last) {
            let opened = if last == f.seq {
                signing::open_seal(
                    self.keys,
                    n,
                    f.header(signing::HEADS_HEADER),
                    f.header(signing::SIGNATURE_HEADER),
                )
                .map_err(|e| e.0)
            } else {
                match stored(self.stream, last).await {
                    Ok(m) => {
                        let get = |name: &str| m.headers.get(name).map(|v| v.as_str());
                        if get(signing::BATCH_HEADER) != Some(format!("{n}/{n}").as_str()) {
                            Err(format!("stream seq {last} does not end an append of {n}"))
                        } else {
                            signing::open_seal(
                                self.keys,
                                n,
                                get(signing::HEADS_HEADER),
                                get(signing::SIGNATURE_HEADER),
                            )
                            .map_err(|e| e.0)
                        }
                    }
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Err(format!(
                        "its append's last message (seq {last}) is not stored"
                    )),
                    Err(e) => return Err(StoreError::Unavailable(e.to_string())),
                }
            };
            self.opened.insert(last, opened);
        }
        Ok((i, &self.opened[&last]))
    }

    /// Whether `f` is a head its append's valid signature names exactly.
    async fn is_signed_head(&mut self, subject: &str, f: &Fetched) -> Result<bool, StoreError> {
        let chain = f.header(CHAIN_HEADER).unwrap_or_default().to_owned();
        let (i, heads) = self.heads(f).await?;
        Ok(heads.as_ref().is_ok_and(|heads| {
            heads
                .iter()
                .any(|h| h.position == i && h.subject == subject && h.chain == chain)
        }))
    }

    /// Whether a valid signature covers `f`, or why not.
    async fn covers(
        &mut self,
        subject: &str,
        f: &Fetched,
    ) -> Result<Result<(), String>, StoreError> {
        let (i, heads) = self.heads(f).await?;
        Ok(match heads {
            Ok(heads) if signing::covers(heads, i, subject) => Ok(()),
            Ok(_) => Err("its append's signature does not cover it".into()),
            Err(why) => Err(why.clone()),
        })
    }
}

/// The message at `seq`, the last of an append whose earlier message was
/// read: an append is stored whole, but a reader may see its first
/// messages a moment before the rest, so a missing one is waited for (up to
/// [`TAIL_STALL`]) before it counts as never stored (a foreign message
/// claiming a place in an append that never ends).
async fn stored(
    stream: &Stream,
    seq: u64,
) -> Result<async_nats::jetstream::message::StreamMessage, DirectGetError> {
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(2);
    loop {
        match stream.direct_get(seq).await {
            Err(e)
                if matches!(e.kind(), DirectGetErrorKind::NotFound)
                    && started.elapsed() < TAIL_STALL =>
            {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(250));
            }
            got => return got,
        }
    }
}

/// Every message on `subject` after stream sequence `after`, up to the
/// subject's last message when the read began.
///
/// Read with batched direct gets (ADR-31: `next_by_subj` with `batch`, ended
/// by a `204 EOB` status), so loading an aggregate creates no consumer: a
/// process that loads thousands of accounts at once does not run into the
/// server's consumer limits.
async fn fetch_after(
    client: &Client,
    stream: &Stream,
    subject: &str,
    after: u64,
) -> Result<Vec<Fetched>, StoreError> {
    let mut out = Vec::new();
    let Some((last, _)) = last_on_subject(stream, subject).await? else {
        return Ok(out);
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
            out.push(Fetched {
                seq,
                headers: msg.headers,
                payload: msg.payload,
            });
        }
        if got == 0 {
            break;
        }
    }
    Ok(out)
}

/// How long one batched direct get waits for each reply.
const DIRECT_GET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
