//! Balance alerts on their way out.
//!
//! The ledger records a `balance_alert` event once per crossing, in the same
//! append as the event that crossed (`domain::decide`). The dispatcher (one
//! process at a time: an advisory lock) folds the log into
//! `ledger_cmd.alert_outbox` with its checkpoint in the same transaction,
//! judging every message as every reader does (chain and signature), then:
//!
//! - publishes each alert's event on `ledger.alerts.<account_id>` (core
//!   NATS, `Nats-Msg-Id` the event id), once it is in the outbox;
//! - delivers it to `alert_webhook_url`, signed (`X-Ledger-Signature:
//!   t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
//!   `alert_webhook_secret`), retried with exponential backoff up to
//!   `alert_webhook_backoff_max_s` until it answers 2xx. Delivery is at least
//!   once; `X-Ledger-Event-Id` lets the receiver drop a repeat.
//!
//! A crash anywhere loses nothing: the outbox row and the checkpoint move
//! together, and a row stays due until its delivery is recorded.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::stream::Stream;
use hmac::{Hmac, Mac};
use ledger_projections::projector::Reader;
use ledger_projections::sift::Sifter;
use ledger_schemas::signing::Trust;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

/// The advisory lock of the one active dispatcher.
const DISPATCHER_LOCK: i64 = 0x4c45_4447_0000_0201;
/// The dispatcher's name among the readers that keep chain heads.
const SIFTER: &str = "alerts";
/// Messages folded per transaction at most.
const BATCH_MAX: usize = 5000;
/// Deliveries tried per round at most.
const DELIVERIES_PER_ROUND_MAX: i64 = 100;
/// How often due deliveries are looked for.
const DELIVERY_POLL: Duration = Duration::from_millis(500);
/// How often what is past its retention is swept from the outbox.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
const RETRY_WAIT: Duration = Duration::from_secs(1);

/// Where alerts go.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// `ledger` → `ledger.alerts.<account_id>`.
    pub subject_prefix: String,
    pub webhook: Option<Webhook>,
    pub backoff_max: Duration,
    /// How long one webhook request may take.
    pub timeout: Duration,
    /// How long a row stays in the outbox once it is done with (published,
    /// and delivered when there is a webhook).
    pub retention: Duration,
}

/// The webhook alerts are delivered to.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: reqwest::Url,
    pub secret: String,
}

impl Webhook {
    /// HTTPS only, but for a loopback address (a receiver on the same
    /// machine, as in development and tests).
    pub fn new(url: &str, secret: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).context("alert_webhook_url is not a URL")?;
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        anyhow::ensure!(
            url.scheme() == "https" || (url.scheme() == "http" && loopback),
            "alert_webhook_url must be https (plain http only to a loopback address)"
        );
        anyhow::ensure!(
            secret.len() >= 16,
            "alert_webhook_secret must be at least 16 characters"
        );
        Ok(Self {
            url,
            secret: secret.to_owned(),
        })
    }

    /// `X-Ledger-Signature` of `body` sent at `t` (unix seconds).
    pub fn signature(&self, t: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The dispatcher of one process.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub database_url: String,
    pub stream: Stream,
    pub trust: Trust,
    pub client: async_nats::Client,
    pub settings: AlertSettings,
}

/// One alert event as the outbox holds it.
#[derive(serde::Deserialize)]
struct AlertHead {
    event_id: uuid::Uuid,
    #[serde(rename = "type")]
    kind: String,
    account_id: String,
}

impl Dispatcher {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.lead(&shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "alert dispatcher interrupted");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(RETRY_WAIT) => {}
                    }
                }
            }
        }
    }

    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (mut client, lock) = ledger_projections::db::own_connection(&self.database_url).await?;
        while !ledger_projections::db::try_advisory_lock(&client, DISPATCHER_LOCK).await? {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RETRY_WAIT) => {}
            }
        }
        self.purge(&client).await?;
        // Deliveries go on beside the fold, on a connection of their own: a
        // receiver that answers slowly or not at all holds up neither the
        // outbox nor the bus. Whichever ends first ends the other, before
        // the lock is let go.
        let (delivery_db, _delivery_conn) =
            ledger_projections::db::own_connection(&self.database_url).await?;
        tokio::select! {
            r = self.fold(&mut client, shutdown) => r,
            r = self.deliveries(&delivery_db, &lock, shutdown) => r,
        }
    }

    /// Folds the log into the outbox and publishes what it adds, until
    /// `shutdown`; sweeps what is past its retention every hour.
    async fn fold(
        &self,
        client: &mut tokio_postgres::Client,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut position = checkpoint(client).await?;
        let mut reader = Reader::open(&self.stream, position + 1, &self.trust, None)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut sifter = Sifter::new(SIFTER, false);
        let mut sweep =
            tokio::time::interval_at(tokio::time::Instant::now() + PURGE_EVERY, PURGE_EVERY);
        loop {
            self.publish(client).await?;
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = sweep.tick() => {
                    self.purge(client).await?;
                    continue;
                }
                b = reader.batch(BATCH_MAX) => b,
            };
            let batch = batch.ok_or_else(|| anyhow::anyhow!("the event stream ended"))??;
            let batch: Vec<_> = batch.into_iter().filter(|r| r.seq > position).collect();
            let Some(last) = batch.last().map(|r| r.seq) else {
                continue;
            };
            let tx = client.transaction().await?;
            sifter
                .load(&tx, batch.iter().map(|r| r.subject.as_str()))
                .await?;
            for raw in &batch {
                if raw.is_checkpoint() || !sifter.sift(raw.seq, &raw.message()) {
                    continue;
                }
                let Ok(head) = serde_json::from_slice::<AlertHead>(&raw.payload) else {
                    continue;
                };
                if head.kind != "balance_alert" {
                    continue;
                }
                tx.execute(
                    "INSERT INTO ledger_cmd.alert_outbox (event_id, stream_seq, account_id, payload) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
                    &[
                        &head.event_id,
                        &(raw.seq as i64),
                        &head.account_id,
                        &String::from_utf8_lossy(&raw.payload).as_ref(),
                    ],
                )
                .await?;
            }
            sifter.save(&tx).await?;
            tx.execute(
                "UPDATE ledger_cmd.alert_checkpoint SET stream_seq = $1, updated_at = now()",
                &[&(last as i64)],
            )
            .await?;
            tx.commit().await?;
            position = last;
        }
    }

    /// Delivers what falls due, round after round, while the lock's
    /// connection lives, until `shutdown`.
    async fn deliveries(
        &self,
        db: &tokio_postgres::Client,
        lock: &ledger_projections::db::ConnectionGuard,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(hook) = &self.settings.webhook else {
            shutdown.cancelled().await;
            return Ok(());
        };
        let http = reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .build()?;
        loop {
            anyhow::ensure!(!lock.is_finished(), "the dispatcher's lock was lost");
            // A full round of deliveries: more may be due at once.
            let delivered = self.deliver(db, &http, hook).await?;
            let wait = if delivered == DELIVERIES_PER_ROUND_MAX as usize {
                Duration::ZERO
            } else {
                DELIVERY_POLL
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn purge(&self, db: &tokio_postgres::Client) -> anyhow::Result<u64> {
        purge(db, self.settings.retention, self.settings.webhook.is_some()).await
    }

    /// Publishes what the outbox holds unpublished, in log order.
    async fn publish(&self, db: &tokio_postgres::Client) -> anyhow::Result<()> {
        let rows = db
            .query(
                "SELECT event_id, account_id, payload FROM ledger_cmd.alert_outbox \
                 WHERE published_at IS NULL ORDER BY stream_seq LIMIT 1000",
                &[],
            )
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: uuid::Uuid = row.get(0);
            let account: &str = row.get(1);
            let payload: &str = row.get(2);
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", id.to_string().as_str());
            h.insert("Ledger-Event-Type", "balance_alert");
            self.client
                .publish_with_headers(
                    format!("{}.alerts.{account}", self.settings.subject_prefix),
                    h,
                    payload.to_owned().into(),
                )
                .await?;
            done.push(id);
        }
        self.client.flush().await?;
        db.execute(
            "UPDATE ledger_cmd.alert_outbox SET published_at = now() WHERE event_id = ANY($1)",
            &[&done],
        )
        .await?;
        Ok(())
    }

    /// Delivers what is due to the webhook, in log order; a failure is put
    /// off with exponential backoff and ends the round (the receiver is
    /// likely down: the rest wait for the next round rather than each
    /// meeting the same failure).
    async fn deliver(
        &self,
        db: &tokio_postgres::Client,
        http: &reqwest::Client,
        hook: &Webhook,
    ) -> anyhow::Result<usize> {
        let mut delivered = 0;
        let rows = db
            .query(
                "SELECT event_id, payload, attempts FROM ledger_cmd.alert_outbox \
                 WHERE delivered_at IS NULL AND next_attempt_at <= now() \
                 ORDER BY stream_seq LIMIT $1",
                &[&DELIVERIES_PER_ROUND_MAX],
            )
            .await?;
        for row in rows {
            let id: uuid::Uuid = row.get(0);
            let payload: String = row.get(1);
            let attempts: i32 = row.get(2);
            let t = chrono::Utc::now().timestamp();
            let sent = http
                .post(hook.url.clone())
                .header("content-type", "application/json")
                .header("x-ledger-event-id", id.to_string())
                .header("x-ledger-signature", hook.signature(t, payload.as_bytes()))
                .body(payload)
                .send()
                .await;
            let failure = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("answered {}", r.status())),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => {
                    db.execute(
                        "UPDATE ledger_cmd.alert_outbox SET delivered_at = now(), \
                         attempts = attempts + 1, last_error = NULL WHERE event_id = $1",
                        &[&id],
                    )
                    .await?;
                    delivered += 1;
                }
                Some(error) => {
                    let wait = backoff(attempts as u32 + 1, self.settings.backoff_max);
                    tracing::warn!(event_id = %id, error, retry_in_s = wait.as_secs_f64(),
                        "an alert's webhook delivery failed");
                    db.execute(
                        "UPDATE ledger_cmd.alert_outbox SET attempts = attempts + 1, \
                         last_error = $2, next_attempt_at = now() + make_interval(secs => $3::float8) \
                         WHERE event_id = $1",
                        &[&id, &error, &wait.as_secs_f64()],
                    )
                    .await?;
                    break;
                }
            }
        }
        Ok(delivered)
    }
}

/// The wait before attempt `n + 1` after `n` failures: 1 s doubling, at
/// most `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = Duration::from_secs(1u64 << failures.saturating_sub(1).min(20));
    exp.min(max)
}

/// Deletes the outbox rows done with longer than `retention` ago: published,
/// and delivered or never to be (no webhook configured). What is still
/// due stays, however old. Returns how many went.
pub async fn purge(
    db: &tokio_postgres::Client,
    retention: Duration,
    webhook: bool,
) -> anyhow::Result<u64> {
    let gone = db
        .execute(
            "DELETE FROM ledger_cmd.alert_outbox WHERE published_at IS NOT NULL \
             AND coalesce(delivered_at, published_at) < now() - make_interval(secs => $1::float8) \
             AND (delivered_at IS NOT NULL OR $2)",
            &[&retention.as_secs_f64(), &!webhook],
        )
        .await?;
    if gone > 0 {
        tracing::info!(rows = gone, "alert outbox swept");
    }
    Ok(gone)
}

async fn checkpoint(c: &tokio_postgres::Client) -> anyhow::Result<u64> {
    Ok(
        c.query_one("SELECT stream_seq FROM ledger_cmd.alert_checkpoint", &[])
            .await?
            .get::<_, i64>(0) as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn webhooks_are_https_but_for_loopback_and_signed() {
        assert!(Webhook::new("http://example.com/hook", "0123456789abcdef").is_err());
        assert!(Webhook::new("https://example.com/hook", "short").is_err());
        let hook = Webhook::new("http://127.0.0.1:9/hook", "0123456789abcdef").unwrap();
        let a = hook.signature(1, b"{}");
        assert!(a.starts_with("t=1,v1="));
        assert_ne!(a, hook.signature(2, b"{}"));
        assert_ne!(a, hook.signature(1, b"{ }"));
    }
}
