//! The usage intake.
//!
//! Services publish usage to `ledger.usage.<service>.<account>` with
//! `Nats-Msg-Id` = their usage id; the JetStream ack means "durably
//! accepted". A durable consumer turns each usage into `credits_consumed` or,
//! when credits are short, `usage_rejected` — exactly once per usage id,
//! through the ledger's own idempotency (key `usage:<service>:<usage id>`) —
//! and publishes the outcome on core NATS `ledger.outcome.<service>.<account>`.
//! A service may also publish up to `batch_items_max` usages as one message
//! on `ledger.usage_batch.<service>` (`{"usages": [...]}`): each usage is
//! decided exactly once on its own usage id, the batch is acknowledged once
//! every outcome is in the log.
//!
//! Usages are decided many at a time (up to `usage_ack_pending_max` in
//! flight), so the account writers group them and the committer appends them
//! in shared atomic batches. A usage is acknowledged only once its outcome is
//! in the log; a lost acknowledgement means a redelivery, answered from the
//! key's remembered outcome.
//!
//! A usage that cannot become an event (unparsable, subject and body
//! disagreeing, unknown account, the same usage id with a different body) is
//! not lost and does not block the intake: it is copied to the dead-letter
//! stream with the reason in a header, counted, and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use ledger_schemas::*;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::domain::{Command, Shortfall};
use crate::engine::{CommandRequest, Engine, EngineError, Outcome};

pub const DEAD_REASON_HEADER: &str = "Ledger-Dead-Reason";
pub const DEAD_SUBJECT_HEADER: &str = "Ledger-Original-Subject";
const CONSUMER_NAME: &str = "ledger-intake";
/// How long a usage waits before it is retried after a passing failure.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct IntakeSettings {
    pub stream: String,
    pub dead_stream: String,
    /// `ledger`: usage on `ledger.usage.*.*`, outcomes on `ledger.outcome.*.*`.
    pub prefix: String,
    pub duplicate_window: Duration,
    pub ack_pending_max: i64,
    /// Usages in one batch message at most.
    pub batch_items_max: usize,
    /// The streams' replicas and placement (as `LEDGER`'s).
    pub replication: crate::store::Replication,
}

impl IntakeSettings {
    fn usage_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.usage.*.*", self.prefix),
            format!("{}.usage_batch.*", self.prefix),
        ]
    }

    fn dead_subject(&self, service: &str) -> String {
        format!("{}.usage_dead.{service}", self.prefix)
    }
}

/// Creates (or finds) the usage and dead-letter streams.
pub async fn ensure_streams(js: &jetstream::Context, s: &IntakeSettings) -> anyhow::Result<()> {
    let usage = s.replication.apply(stream::Config {
        name: s.stream.clone(),
        subjects: s.usage_subjects(),
        storage: stream::StorageType::File,
        // Each usage is removed once the ledger has recorded its outcome; until
        // then it is kept whatever its age, and a full stream refuses new ones.
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        duplicate_window: s.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    });
    // Updated in place when it exists: a stream made before batch messages
    // gains their subject.
    js.create_or_update_stream(usage).await?;
    let dead = s.replication.apply(stream::Config {
        name: s.dead_stream.clone(),
        subjects: vec![format!("{}.usage_dead.*", s.prefix)],
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    });
    js.get_or_create_stream(dead).await?;
    Ok(())
}

/// The idempotency key of a usage: unique per service and usage id.
pub fn usage_key(service: &Service, usage_id: &UsageId) -> IdempotencyKey {
    let direct = format!("usage:{service}:{usage_id}");
    IdempotencyKey::parse(direct).unwrap_or_else(|_| {
        // Too long with the prefix: a digest keeps it unique and in bounds.
        let digest = hex::encode(Sha256::digest(usage_id.as_str().as_bytes()));
        IdempotencyKey::parse(format!("usage:{service}:{digest}")).expect("a bounded key")
    })
}

/// Runs the intake until `shutdown` resolves.
pub async fn run(
    engine: Engine,
    settings: IntakeSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let js = engine.store().jetstream().clone();
    // A cluster that has just formed may answer late: try for a while.
    let consumer = crate::retry::patiently(
        "usage intake: creating its streams and consumer",
        crate::retry::STARTUP_WAIT,
        || setup(&js, &settings),
    )
    .await?;
    let permits = Arc::new(Semaphore::new(settings.ack_pending_max.max(1) as usize));
    let settings = Arc::new(settings);
    tokio::pin!(shutdown);
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "usage intake: cannot pull; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(RETRY_DELAY) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                n = messages.next() => n,
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "usage intake: pull interrupted");
                    break;
                }
                None => break,
            };
            let permit = permits.clone().acquire_owned().await?;
            let engine = engine.clone();
            let settings = settings.clone();
            let js = js.clone();
            tokio::spawn(async move {
                handle(&engine, &js, &settings, message).await;
                drop(permit);
            });
        }
    }
}

/// The usage streams and the intake's durable consumer.
async fn setup(
    js: &jetstream::Context,
    settings: &IntakeSettings,
) -> anyhow::Result<consumer::PullConsumer> {
    ensure_streams(js, settings).await?;
    let usage = js.get_stream(&settings.stream).await?;
    Ok(usage
        .get_or_create_consumer(
            CONSUMER_NAME,
            consumer::pull::Config {
                durable_name: Some(CONSUMER_NAME.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: settings.ack_pending_max,
                ..Default::default()
            },
        )
        .await?)
}

/// Why a usage cannot become an event.
struct Dead(String);

async fn handle(
    engine: &Engine,
    js: &jetstream::Context,
    settings: &IntakeSettings,
    message: jetstream::Message,
) {
    if let Ok(info) = message.info() {
        let lag = ::time::OffsetDateTime::now_utc() - info.published;
        engine
            .metrics()
            .intake_lag_seconds
            .set(lag.as_seconds_f64().max(0.0));
    }
    let batch = format!("{}.usage_batch.", settings.prefix);
    if message.subject.starts_with(batch.as_str()) {
        return handle_batch(engine, js, settings, message).await;
    }
    let result = match to_request(&message, &settings.prefix) {
        Ok(request) => outcome(engine, request, &settings.prefix).await,
        Err(dead) => Ok(Err(dead)),
    };
    match result {
        Ok(Ok(result)) => {
            engine.metrics().intake(result);
            ack(&message).await;
        }
        Ok(Err(Dead(reason))) => {
            let payload = message.payload.clone();
            let id = msg_id(&message);
            match dead_letter(engine, js, settings, &message.subject, id, payload, &reason).await {
                true => ack(&message).await,
                false => nak(&message).await,
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "usage will be retried");
            nak(&message).await;
        }
    }
}

/// Copies a usage that cannot become an event to the dead-letter stream,
/// with the reason; whether it was stored.
/// `msg_id` de-duplicates a usage dead-lettered again within the dead
/// stream's duplicate window (a redelivery, or a batch sent twice).
async fn dead_letter(
    engine: &Engine,
    js: &jetstream::Context,
    settings: &IntakeSettings,
    subject: &str,
    msg_id: Option<&str>,
    payload: bytes::Bytes,
    reason: &str,
) -> bool {
    let service = subject.split('.').nth(2).unwrap_or("unknown");
    let mut headers = HeaderMap::new();
    headers.insert(DEAD_REASON_HEADER, reason);
    headers.insert(DEAD_SUBJECT_HEADER, subject);
    if let Some(id) = msg_id {
        headers.insert("Nats-Msg-Id", id);
    }
    let stored = match js
        .publish_with_headers(settings.dead_subject(service), headers, payload)
        .await
    {
        Ok(ack_future) => ack_future.await.is_ok(),
        Err(_) => false,
    };
    if stored {
        tracing::warn!(subject, reason, "usage dead-lettered");
        engine.metrics().intake("dead_letter");
    }
    stored
}

/// A batch message: every usage decided at once, each on its own key; the
/// message is acknowledged once every outcome is in the log (or dead-lettered),
/// and redelivered whole after a passing failure (the usages already decided
/// then answer from their keys).
async fn handle_batch(
    engine: &Engine,
    js: &jetstream::Context,
    settings: &IntakeSettings,
    message: jetstream::Message,
) {
    let subject = message.subject.to_string();
    let service = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let batch: UsageBatch = match decode_request(&message.payload) {
        Ok(b) => b,
        Err(e) => {
            let reason = format!("{}: {}", e.error.code.as_str(), e.error.message);
            let payload = message.payload.clone();
            let id = msg_id(&message);
            return match dead_letter(engine, js, settings, &subject, id, payload, &reason).await {
                true => ack(&message).await,
                false => nak(&message).await,
            };
        }
    };
    if batch.usages.is_empty() || batch.usages.len() > settings.batch_items_max {
        let reason = format!(
            "invalid_request: a batch holds from 1 to {} usages (batch_items_max), this one {}",
            settings.batch_items_max,
            batch.usages.len()
        );
        let payload = message.payload.clone();
        let id = msg_id(&message);
        return match dead_letter(engine, js, settings, &subject, id, payload, &reason).await {
            true => ack(&message).await,
            false => nak(&message).await,
        };
    }
    let results = futures::future::join_all(batch.usages.into_iter().map(|usage| {
        let service = service.clone();
        async move {
            match usage_request(usage.clone(), &service) {
                Ok(request) => (usage, outcome(engine, request, &settings.prefix).await),
                Err(dead) => (usage, Ok(Err(dead))),
            }
        }
    }))
    .await;
    let mut whole = true;
    for (usage, result) in results {
        match result {
            Ok(Ok(result)) => engine.metrics().intake(result),
            Ok(Err(Dead(reason))) => {
                // The one usage goes to the dead letters, as it would alone.
                let payload = serde_json::to_vec(&usage).expect("usages serialise").into();
                let own = format!("{}.usage.{}.{}", settings.prefix, service, usage.account_id);
                let id = format!("batch-usage:{}:{}", usage.service, usage.usage_id);
                whole &= dead_letter(engine, js, settings, &own, Some(&id), payload, &reason).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "a usage of a batch will be retried");
                whole = false;
            }
        }
    }
    match whole {
        true => ack(&message).await,
        false => nak(&message).await,
    }
}

/// The message's own `Nats-Msg-Id`, if it has one.
fn msg_id(message: &jetstream::Message) -> Option<&str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str())
}

async fn ack(message: &jetstream::Message) {
    // A plain ack: the outcome is in the log already, so a lost ack only
    // means a redelivery, answered from the usage's key.
    if let Err(e) = message.ack().await {
        tracing::debug!(error = %e, "usage ack not sent");
    }
}

async fn nak(message: &jetstream::Message) {
    let _ = message
        .ack_with(jetstream::AckKind::Nak(Some(RETRY_DELAY)))
        .await;
}

fn to_request(message: &jetstream::Message, prefix: &str) -> Result<CommandRequest, Dead> {
    let tokens: Vec<&str> = message.subject.split('.').collect();
    let usage_tokens = prefix.split('.').count() + 1;
    let (service, account) = match tokens.get(usage_tokens..) {
        Some([s, a]) => (*s, *a),
        _ => {
            return Err(Dead(
                "the subject is not <prefix>.usage.<service>.<account>".into(),
            ));
        }
    };
    let usage: UsageMessage = decode_request(&message.payload)
        .map_err(|e| Dead(format!("{}: {}", e.error.code.as_str(), e.error.message)))?;
    if usage.account_id.as_str() != account {
        return Err(Dead(format!(
            "invalid_request: the subject names {service}/{account}, the body {}/{}",
            usage.service, usage.account_id
        )));
    }
    usage_request(usage, service)
}

/// The command of one usage, published for `service`.
fn usage_request(usage: UsageMessage, service: &str) -> Result<CommandRequest, Dead> {
    if usage.service.as_str() != service {
        return Err(Dead(format!(
            "invalid_request: the subject names service {service}, the usage {}",
            usage.service
        )));
    }
    let hash = ledger_schemas::request_hash(None, &usage);
    let actor = Actor::parse(format!("service:{service}")).map_err(|e| Dead(e.to_string()))?;
    Ok(CommandRequest {
        account: usage.account_id.clone(),
        key: Some(usage_key(&usage.service, &usage.usage_id)),
        request_hash: hash,
        command: Command::Consume {
            service: usage.service,
            usage_id: usage.usage_id.clone(),
            quantity: usage.quantity,
            credits: usage.credits,
            shortfall: Shortfall::Record,
        },
        actor,
        occurred_at: Some(usage.occurred_at),
        correlation_id: None,
        causation_id: Some(usage.usage_id.to_string()),
    })
}

/// Runs the usage: `Ok(Ok(result))` recorded, `Ok(Err(dead))` refused for
/// good, `Err` a passing failure to retry.
async fn outcome(
    engine: &Engine,
    request: CommandRequest,
    prefix: &str,
) -> Result<Result<&'static str, Dead>, EngineError> {
    let account = request.account.clone();
    match engine.execute(request).await? {
        Outcome::Accepted(reply) => {
            let service = match &reply.event.body {
                EventData::CreditsConsumed(e) => e.service.clone(),
                EventData::UsageRejected(e) => e.service.clone(),
                other => {
                    return Ok(Err(Dead(format!(
                        "internal: a usage produced {}",
                        other.event_type()
                    ))));
                }
            };
            let subject = format!("{prefix}.outcome.{service}.{account}");
            let body = reply.event_json();
            // Core NATS: a missed outcome is still in the log and the read models.
            let _ = engine.store().client().publish(subject, body).await;
            Ok(Ok(match reply.event.body {
                EventData::UsageRejected(_) => "rejected",
                _ => "consumed",
            }))
        }
        Outcome::Refused(e) => Ok(Err(Dead(format!(
            "{}: {}",
            e.error.code.as_str(),
            e.error.message
        )))),
    }
}
