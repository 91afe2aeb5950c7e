//! Group commit across accounts.
//!
//! Account writers hand their ready appends to one committer, which packs as
//! many as fit (at most `batch_messages_max` messages) into one atomic batch:
//! with `sync_interval: always` a batch costs one fsync whatever its size, so
//! a full batch is ~1000 times cheaper per event than lone publishes. A lone
//! command still goes out at once in a batch of its own. Several batches may
//! be awaiting their acks at a time; they never share an account, because a
//! writer waits for its append before sending the next.
//!
//! A batch refused because one account's expectation was stale is split: each
//! account's append is sent on its own, so only the stale one sees a conflict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use ledger_schemas::signing::SigningKey;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::gather::Gather;
use crate::metrics::Metrics;
use crate::store::{AppendMessage, Appended, StoreError, batch};

struct Append {
    messages: Vec<AppendMessage>,
    done: oneshot::Sender<Result<Appended, StoreError>>,
}

#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Append>,
}

impl Committer {
    /// Starts the committer task. With `group` off, each account's append
    /// goes out on its own at once: a single event as a plain publish (up to
    /// `appends_in_flight_max` awaiting acks), several as their own atomic
    /// batch (up to `batches_in_flight_max`, the server allowing 50 per stream).
    /// The limits are `limits`' (`group_commit`, `batch_messages_max`,
    /// `batches_in_flight_max`, `appends_in_flight_max`,
    /// `publish_timeout_ms`); every append is signed with `key`.
    pub fn spawn(
        client: Client,
        key: SigningKey,
        limits: &crate::config::Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let group = limits.group_commit;
        let batch_messages_max = limits.batch_messages_max;
        let timeout = Duration::from_millis(limits.publish_timeout_ms);
        let (batches_in_flight_max, appends_in_flight_max) =
            (limits.batches_in_flight_max, limits.appends_in_flight_max);
        // Enough room for every writer's one outstanding append and more.
        let (tx, rx) = mpsc::channel(batch_messages_max * 4);
        let slots = Slots {
            batches: Arc::new(Semaphore::new(batches_in_flight_max)),
            singles: Arc::new(Semaphore::new(appends_in_flight_max)),
        };
        let batch_max = if group { batch_messages_max } else { 1 };
        tokio::spawn(run(
            rx,
            (client, Arc::new(key)),
            batch_max,
            slots,
            timeout,
            metrics,
        ));
        Self { tx }
    }

    /// Appends `messages` atomically, possibly in one batch with other accounts'.
    pub async fn append(&self, messages: Vec<AppendMessage>) -> Result<Appended, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Append { messages, done })
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("the committer dropped the append".into()))?
    }
}

/// Limits on what awaits an ack at once.
struct Slots {
    batches: Arc<Semaphore>,
    singles: Arc<Semaphore>,
}

async fn run(
    rx: mpsc::Receiver<Append>,
    (client, key): (Client, Arc<SigningKey>),
    batch_messages_max: usize,
    slots: Slots,
    timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let mut queue = Gather::new(rx);
    while let Some(first) = queue.first().await {
        // Wait for a slot before gathering: while all slots are busy, more
        // appends queue up and the next batch is fuller. A lone single event
        // needs no batch, and takes a cheaper slot when not grouping.
        let single = batch_messages_max == 1 && first.messages.len() == 1;
        let semaphore = if single {
            &slots.singles
        } else {
            &slots.batches
        };
        let permit = match semaphore.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        // At most `batch_messages_max` messages, and heads that fit one
        // batch's headers (a writer's append holds one subject, so the
        // appends' heads add up).
        let mut messages = first.messages.len();
        let mut heads = batch::heads_bytes(&first.messages);
        let group = queue.fill_while(first, |a| {
            let (m, h) = (a.messages.len(), batch::heads_bytes(&a.messages));
            let fits = messages + m <= batch_messages_max
                && heads + h <= ledger_schemas::signing::HEADS_BYTES_MAX;
            if fits {
                messages += m;
                heads += h;
            }
            fits
        });
        let client = client.clone();
        let key = key.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            publish_group((&client, &key), group, timeout, &metrics).await;
            drop(permit);
        });
    }
}

async fn publish_group(
    (client, key): (&Client, &SigningKey),
    group: Vec<Append>,
    timeout: Duration,
    metrics: &Metrics,
) {
    let all: Vec<AppendMessage> = group
        .iter()
        .flat_map(|a| a.messages.iter().cloned())
        .collect();
    let started = Instant::now();
    let result = batch::append(client, &all, timeout, key).await;
    metrics.observe_batch(all.len(), started.elapsed(), result.is_ok());
    match result {
        Ok(ack) => {
            let mut next = ack.first_seq();
            for a in group {
                let count = a.messages.len();
                next += count as u64;
                let _ = a.done.send(Ok(Appended {
                    last_seq: next - 1,
                    count,
                }));
            }
        }
        Err(StoreError::Conflict { .. }) if group.len() > 1 => {
            metrics.batch_splits.inc();
            let alone = group.into_iter().map(|a| async move {
                let r = batch::append(client, &a.messages, timeout, key).await;
                let _ = a.done.send(r);
            });
            futures::future::join_all(alone).await;
        }
        Err(e) => {
            // Atomic: nothing of the batch is stored, or (after a timeout)
            // possibly all of it; each writer checks its own subject.
            for a in group {
                let _ = a.done.send(Err(e.clone()));
            }
        }
    }
}
