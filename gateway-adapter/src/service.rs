//! The top-up service: runs the pure parts of this crate (quotes, rounding,
//! signatures, the top-up aggregate and [`next_step`]) against the event
//! store, the ledger's command service and Razorpay:
//!
//! - creating a top-up records `topup_quoted`, creates the Razorpay order
//!   (receipt = top-up id; retried inside the request without a second
//!   order) and records `gateway_order_created`;
//! - the checkout callback, webhooks and the reconciliation poller all call
//!   [`Gateway::sync`], which re-fetches the order's payments from Razorpay
//!   and applies [`next_step`] until nothing is left to do;
//! - grants and reversals go to the command service over NATS
//!   (`ledger.cmd.grant`, `ledger.cmd.reverse`) with keys derived from
//!   Razorpay's ids, so a repeated step changes nothing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use ledger::config::Secret;
use ledger::domain::{Catalog, CommandName};
use ledger::store::{AppendMessage, EventStore, Origin, StoreError, batch};
use ledger_schemas::views::{RazorpayCheckout, TopupRow, TopupView};
use ledger_schemas::*;
use rust_decimal::Decimal;
use serde_json::json;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::fx::{QuoteProvider, RateSource};
use crate::metrics::GatewayMetrics;
use crate::money::{credits_for, inr_paise};
use crate::razorpay;
use crate::reconcile::Schedule;
use crate::topup::{Done, Effect, Observed, Topup, next_step};

/// The actor on every event the gateway records or causes.
pub const ACTOR: &str = "gateway:razorpay";
/// Steps one sync may take before it stops (each records one event).
const SYNC_STEPS_MAX: usize = 64;
/// How long one append or command request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Razorpay's side: configured, or not (then top-ups answer `unavailable`).
#[derive(Debug, Clone)]
pub(crate) struct Razorpay {
    pub(crate) client: razorpay::Client,
    key_id: String,
    key_secret: Secret,
    pub(crate) webhook_secret: Secret,
    fx: QuoteProvider,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub credits_per_usd: Decimal,
    pub usd_min: UsdAmount,
    pub usd_max: UsdAmount,
    pub abandon_after: Duration,
    pub schedule: Schedule,
    pub tick: Duration,
}

impl Settings {
    pub fn from_config(config: &GatewayConfig) -> anyhow::Result<Self> {
        let usd_max = UsdAmount::parse(&config.topup_usd_max)
            .map_err(|e| anyhow::anyhow!("topup_usd_max {}", e.rule))?;
        let usd_min = UsdAmount::parse("1.00").expect("a valid amount");
        anyhow::ensure!(usd_max >= usd_min, "topup_usd_max must be at least 1.00");
        let credits_per_usd: Decimal = config
            .credits_per_usd
            .parse()
            .context("credits_per_usd must be a decimal")?;
        credits_for(usd_min, credits_per_usd).context("credits_per_usd")?;
        Ok(Settings {
            credits_per_usd,
            usd_min,
            usd_max,
            abandon_after: Duration::from_secs(config.topup_abandon_after_s),
            schedule: Schedule {
                first: Duration::from_secs(config.reconcile_first_s),
                interval_max: Duration::from_secs(config.reconcile_interval_max_s),
                horizon: Duration::from_secs(config.reconcile_horizon_s),
            },
            tick: Duration::from_millis(config.reconcile_tick_ms.max(10)),
        })
    }
}

fn razorpay_from(config: &GatewayConfig) -> anyhow::Result<Option<Razorpay>> {
    let (Some(base), Some(key_id), Some(key_secret), Some(webhook_secret)) = (
        &config.razorpay_base_url,
        &config.razorpay_key_id,
        &config.razorpay_key_secret,
        &config.razorpay_webhook_secret,
    ) else {
        return Ok(None);
    };
    let source = match (&config.fx_rate_file, &config.fx_usd_inr) {
        (Some(file), _) => RateSource::File(file.into()),
        (None, Some(rate)) => RateSource::Fixed(
            rate.parse()
                .with_context(|| format!("fx_usd_inr '{rate}' is not a decimal"))?,
        ),
        (None, None) => anyhow::bail!(
            "Razorpay is configured but no FX rate is: set fx_usd_inr or fx_rate_file"
        ),
    };
    Ok(Some(Razorpay {
        client: razorpay::Client::new(
            base,
            key_id,
            key_secret.expose(),
            Duration::from_millis(config.razorpay_timeout_ms),
        ),
        key_id: key_id.clone(),
        key_secret: key_secret.clone(),
        webhook_secret: webhook_secret.clone(),
        fx: QuoteProvider {
            source,
            spread_bps: config.fx_spread_bps,
            quote_ttl: Duration::from_secs(config.fx_quote_ttl_s),
            file_age_max: Duration::from_secs(config.fx_rate_file_age_max_s),
        },
    }))
}

/// A top-up with where its log ends.
struct Loaded {
    topup: Topup,
    last_seq: u64,
    chain: ChainHash,
    /// When its last event was recorded.
    updated_at: Timestamp,
}

/// A quote's amounts for one USD amount.
struct Price {
    quote: crate::fx::Quote,
    paise: Paise,
    credits: Credits,
}

/// [`Gateway::preview`]'s answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preview {
    pub amount_inr_paise: i64,
    pub fx_rate: String,
    pub credits: Credits,
    pub expires_at: Timestamp,
}

/// Hints from a webhook: disputes to look at.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub dispute_ids: Vec<String>,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: GatewayMetrics,
    store: EventStore,
    prefix: String,
    pool: Pool,
    catalog: Catalog,
    razorpay: Option<Razorpay>,
    settings: Settings,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("razorpay", &self.inner.razorpay.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// `prefix` is the subject prefix of the ledger's commands (`ledger`);
    /// `catalog` names the buckets a top-up may credit.
    pub fn new(
        config: &GatewayConfig,
        catalog: Catalog,
        prefix: &str,
        store: EventStore,
        pool: Pool,
        metrics: GatewayMetrics,
    ) -> anyhow::Result<Self> {
        Ok(Gateway {
            inner: Arc::new(Inner {
                metrics,
                store,
                prefix: prefix.to_owned(),
                pool,
                catalog,
                razorpay: razorpay_from(config)?,
                settings: Settings::from_config(config)?,
            }),
        })
    }

    /// Whether Razorpay is configured (else top-ups answer `unavailable`).
    pub fn configured(&self) -> bool {
        self.inner.razorpay.is_some()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A pooled connection, or `unavailable`.
    pub async fn conn(&self) -> Result<deadpool_postgres::Object, GatewayError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(GatewayError::unavailable)
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    pub(crate) fn razorpay(&self) -> Result<&Razorpay, GatewayError> {
        self.inner
            .razorpay
            .as_ref()
            .ok_or(GatewayError::NotConfigured)
    }

    fn subject(&self, id: Id) -> String {
        format!("{}.topup.{id}", self.inner.store.settings().prefix)
    }

    async fn load(&self, id: Id) -> Result<Option<Loaded>, GatewayError> {
        let events = self
            .inner
            .store
            .events_after(&self.subject(id), 0, ChainHash::GENESIS)
            .await
            .map_err(|e| match e {
                StoreError::Corrupt(d) => {
                    GatewayError::internal(format!("the top-up's log is corrupt: {d}"))
                }
                other => GatewayError::unavailable(other),
            })?;
        // Messages the ledger did not write are skipped: the next append
        // expects the subject's last sequence and chains from the last
        // genuine event.
        let Some(last) = events.events.last() else {
            return Ok(None);
        };
        let (last_seq, chain, updated_at) =
            (events.last_seq, events.chain, last.envelope.recorded_at);
        let topup = Topup::from_events(events.events.iter().map(|e| &e.envelope))
            .map_err(GatewayError::internal)?
            .ok_or_else(|| GatewayError::internal("an empty top-up log"))?;
        Ok(Some(Loaded {
            topup,
            last_seq,
            chain,
            updated_at,
        }))
    }

    /// Appends one event to a top-up's subject after `last_seq`. `Ok(false)`
    /// when another writer got there first (reload and decide again).
    async fn append(
        &self,
        account: &AccountId,
        id: Id,
        last_seq: u64,
        chain: ChainHash,
        data: EventData,
        causation: &str,
    ) -> Result<bool, GatewayError> {
        let actor = Actor::parse(ACTOR).expect("a valid actor");
        let correlation = id.to_string();
        let origin = Origin {
            account,
            idempotency_key: None,
            request_hash: "",
            correlation_id: Some(&correlation),
            causation_id: Some(causation),
            actor: &actor,
            occurred_at: None,
        };
        let envelope = origin.envelope(data, Vec::new(), Timestamp::now());
        let (mut message, _) = AppendMessage::chained(&self.subject(id), &envelope, chain);
        message.expected_last_subject_seq = Some(last_seq);
        let key = self
            .inner
            .store
            .signer()
            .map_err(GatewayError::unavailable)?;
        match batch::append(self.inner.store.client(), &[message], REQUEST_TIMEOUT, key).await {
            Ok(_) => {
                self.inner
                    .metrics
                    .topup_event(envelope.event_type().as_str());
                Ok(true)
            }
            // A timeout may or may not have stored it: reloading tells.
            Err(StoreError::Conflict { .. }) | Err(StoreError::Timeout(_)) => Ok(false),
            Err(e) => Err(GatewayError::unavailable(e)),
        }
    }

    /// Sends a command to the ledger's command service.
    /// An account's balances from the command service: every event
    /// appended before the request (fresher than the read models).
    pub async fn balance(&self, account: &AccountId) -> Result<BalanceReply, GatewayError> {
        self.command(
            CommandName::GetBalance,
            &GetBalanceRequest {
                account_id: account.clone(),
            },
        )
        .await
    }

    /// Sets a balance alert for `actor` (the pages, having checked that
    /// the actor may).
    pub async fn set_alert(
        &self,
        request: &ledger_schemas::SetAlertRequest,
        actor: &ledger_schemas::Actor,
    ) -> Result<ledger_schemas::CommandReply, GatewayError> {
        self.command_as(CommandName::SetAlert, request, actor.as_str())
            .await
    }

    async fn command<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        name: CommandName,
        request: &T,
    ) -> Result<R, GatewayError> {
        self.command_as(name, request, ACTOR).await
    }

    async fn command_as<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        name: CommandName,
        request: &T,
        actor: &str,
    ) -> Result<R, GatewayError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ledger::api::nats::ACTOR_HEADER, actor);
        let body = serde_json::to_vec(request).expect("requests serialise");
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.inner.store.client().request_with_headers(
                format!("{}.cmd.{}", self.inner.prefix, name.as_str()),
                headers,
                body.into(),
            ),
        )
        .await
        .map_err(|_| GatewayError::unavailable("the ledger's command service did not answer"))?
        .map_err(|e| GatewayError::unavailable(format!("the ledger's command service: {e}")))?;
        if let Ok(e) = serde_json::from_slice::<ErrorBody>(&reply.payload) {
            return Err(GatewayError::from_ledger(e));
        }
        serde_json::from_slice(&reply.payload).map_err(|e| {
            GatewayError::internal(format!("an unreadable reply from the ledger: {e}"))
        })
    }

    /// What Razorpay says about a top-up now.
    async fn observe(&self, t: &Topup, hints: &Hints) -> Result<Observed, GatewayError> {
        let rp = self.razorpay()?;
        let mut observed = Observed::default();
        let Some(order) = &t.order else {
            observed.order = rp.client.order_by_receipt(&t.id().to_string()).await?;
            return Ok(observed);
        };
        observed.payments = rp.client.order_payments(&order.order_id).await?;
        if let (Some(c), Some(_)) = (&t.captured, &t.credited) {
            observed.refunds = rp.client.payment_refunds(&c.payment_id).await?;
            let mut ids: Vec<&String> = hints.dispute_ids.iter().collect();
            ids.extend(
                t.disputes
                    .iter()
                    .filter(|(_, (_, closed))| closed.is_none())
                    .map(|(id, _)| id),
            );
            ids.sort();
            ids.dedup();
            for id in ids {
                observed.disputes.push(rp.client.dispute(id).await?);
            }
        }
        Ok(observed)
    }

    /// Brings a top-up up to date with Razorpay; `None` when there is no such
    /// top-up. `cause` names what asked (checkout, a webhook's event id, the
    /// poller) and is recorded as the events' causation.
    pub async fn sync(
        &self,
        id: Id,
        hints: &Hints,
        cause: &str,
    ) -> Result<Option<Topup>, GatewayError> {
        let mut observed: Option<(Option<String>, Observed)> = None;
        for _ in 0..SYNC_STEPS_MAX {
            let Some(Loaded {
                topup,
                last_seq,
                chain,
                ..
            }) = self.load(id).await?
            else {
                return Ok(None);
            };
            let order = topup.order.as_ref().map(|o| o.order_id.clone());
            let fresh = match observed.take() {
                Some((for_order, o)) if for_order == order => o,
                _ => self.observe(&topup, hints).await?,
            };
            let Some(step) = next_step(
                &topup,
                &fresh,
                Timestamp::now(),
                self.inner.settings.abandon_after,
            ) else {
                return Ok(Some(topup));
            };
            let mut refetch = false;
            let done = match &step.effect {
                None => Done::Nothing,
                Some(Effect::Grant {
                    key,
                    credits,
                    reason,
                }) => {
                    let (credits, reason) = (*credits, reason.clone());
                    let payment_id = topup.captured.as_ref().map(|c| c.payment_id.clone());
                    let reply: CommandReply = self
                        .command(
                            CommandName::Grant,
                            &GrantRequest {
                                idempotency_key: IdempotencyKey::parse(key).map_err(|e| {
                                    GatewayError::internal(format!("a grant key: {}", e.rule))
                                })?,
                                account_id: topup.account.clone(),
                                bucket: topup.quote.bucket.clone(),
                                credits,
                                source: GrantSource::Topup,
                                reason: reason.and_then(|r| Text::parse(r).ok()),
                                topup_id: Some(id),
                                payment_id,
                            },
                        )
                        .await?;
                    Done::Granted {
                        stream_seq: reply.stream_seq,
                    }
                }
                Some(Effect::Reverse {
                    key,
                    refund_id,
                    credits,
                }) => {
                    self.command::<_, CommandReply>(
                        CommandName::Reverse,
                        &ReverseRequest {
                            idempotency_key: IdempotencyKey::parse(key).map_err(|e| {
                                GatewayError::internal(format!("a reversal key: {}", e.rule))
                            })?,
                            account_id: topup.account.clone(),
                            bucket: topup.quote.bucket.clone(),
                            credits: *credits,
                            refund_id: refund_id.clone(),
                            topup_id: id,
                            payment_id: topup.captured.as_ref().map(|c| c.payment_id.clone()),
                        },
                    )
                    .await?;
                    Done::Nothing
                }
                Some(Effect::Refund {
                    payment_id,
                    amount_inr_paise,
                    key,
                }) => {
                    let refund = self
                        .razorpay()?
                        .client
                        .refund(payment_id, amount_inr_paise.get(), key)
                        .await?;
                    refetch = true;
                    Done::Refunded {
                        refund_id: refund.id,
                    }
                }
            };
            let record = step.finish(done);
            let stored = self
                .append(&topup.account, id, last_seq, chain, record, cause)
                .await?;
            if stored && !refetch {
                observed = Some((order, fresh));
            }
        }
        Err(GatewayError::internal(format!(
            "top-up {id} still had steps left after {SYNC_STEPS_MAX}"
        )))
    }

    /// `POST /v1/accounts/{id}/topups`.
    pub async fn create(
        &self,
        account: &AccountId,
        request: CreateTopupRequest,
        actor: &Actor,
        key: Option<IdempotencyKey>,
    ) -> Result<TopupView, GatewayError> {
        self.in_range(request.amount_usd)?;
        let bucket = request.bucket.clone().unwrap_or_else(Bucket::general);
        if !bucket.is_general()
            && !self
                .inner
                .catalog
                .services()
                .any(|svc| svc.as_str() == bucket.as_str())
        {
            return Err(GatewayError::UnknownBucket(bucket.to_string()));
        }
        let rp = self.razorpay()?;
        // The account must exist: the command service is the authority.
        let _: BalanceReply = self
            .command(
                CommandName::GetBalance,
                &GetBalanceRequest {
                    account_id: account.clone(),
                },
            )
            .await?;
        let (id, repeated) = match &key {
            Some(k) => self.claim(account, k, &request).await?,
            None => (Id::new_v7(), false),
        };
        let cause = format!("create:{}", actor.as_str());
        let earlier = if repeated { self.load(id).await? } else { None };
        let paise = match earlier {
            Some(l) if l.topup.order.is_some() => return Ok(self.view(&l.topup)),
            Some(l) => l.topup.quote.amount_inr_paise,
            None => self.quote(account, id, bucket, &request, &cause).await?,
        };
        let notes = json!({"topup_id": id, "account_id": account, "phone": request.phone});
        // A repeat finishes what the first request started: the order may exist.
        let found = if repeated {
            rp.client.order_by_receipt(&id.to_string()).await?
        } else {
            None
        };
        let order = match found {
            Some(o) => o,
            None => rp
                .client
                .create_order(paise.get(), &id.to_string(), notes)
                .await
                .map_err(|e| match GatewayError::from(e) {
                    GatewayError::Unavailable(reason) => GatewayError::OrderPending {
                        topup_id: id,
                        reason,
                    },
                    other => other,
                })?,
        };
        // Record the order (unless the poller found it first).
        for _ in 0..SYNC_STEPS_MAX {
            let loaded = self
                .load(id)
                .await?
                .ok_or_else(|| GatewayError::internal("the top-up vanished"))?;
            if loaded.topup.order.is_some() {
                break;
            }
            let created = EventData::GatewayOrderCreated(GatewayOrderCreated {
                topup_id: id,
                order_id: order.id.clone(),
                amount_inr_paise: paise,
                currency: order.currency.clone(),
                receipt: id.to_string(),
            });
            if self
                .append(account, id, loaded.last_seq, loaded.chain, created, &cause)
                .await?
            {
                break;
            }
        }
        self.set_order(id, &order.id).await?;
        let loaded = self
            .load(id)
            .await?
            .ok_or_else(|| GatewayError::internal("the top-up vanished"))?;
        Ok(self.view(&loaded.topup))
    }

    /// Binds `key` to a top-up id: `(id, true)` when an identical request
    /// holds it already; `idempotency_conflict` when a different one does.
    async fn claim(
        &self,
        account: &AccountId,
        key: &IdempotencyKey,
        request: &CreateTopupRequest,
    ) -> Result<(Id, bool), GatewayError> {
        let hash = request_hash(None, request);
        let fresh = Id::new_v7();
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "INSERT INTO ledger_cmd.topup_keys (account_id, key, request_hash, topup_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, key) \
                 DO UPDATE SET account_id = EXCLUDED.account_id \
                 RETURNING topup_id, request_hash",
                &[&account.as_str(), &key.as_str(), &hash, &fresh.uuid()],
            )
            .await
            .map_err(GatewayError::unavailable)?;
        if row.get::<_, String>(1) != hash {
            return Err(GatewayError::KeyConflict);
        }
        let id = Id::try_from(row.get::<_, uuid::Uuid>(0))
            .map_err(|e| GatewayError::internal(e.rule))?;
        Ok((id, id != fresh))
    }

    /// Refuses an amount outside the configured top-up range.
    fn in_range(&self, amount_usd: UsdAmount) -> Result<(), GatewayError> {
        let s = &self.inner.settings;
        if amount_usd < s.usd_min || amount_usd > s.usd_max {
            return Err(GatewayError::Invalid {
                field: "amount_usd",
                message: format!(
                    "amount_usd must be from {} to {}.",
                    s.usd_min.get(),
                    s.usd_max.get()
                ),
                rule: "topup_usd_max",
            });
        }
        Ok(())
    }

    /// What `amount_usd` costs and buys at the current quote: checked
    /// against the configured range and Razorpay's INR 1.00 minimum.
    fn price(&self, amount_usd: UsdAmount) -> Result<Price, GatewayError> {
        let s = &self.inner.settings;
        self.in_range(amount_usd)?;
        let rp = self.razorpay()?;
        let quote = rp
            .fx
            .quote(Timestamp::now())
            .map_err(|e| GatewayError::unavailable(format!("no FX quote ({e})")))?;
        let out_of_range = |e: crate::money::MoneyError| GatewayError::Invalid {
            field: "amount_usd",
            message: e.to_string(),
            rule: "range",
        };
        let paise = inr_paise(amount_usd, quote.rate).map_err(out_of_range)?;
        if paise.get() < 100 {
            return Err(GatewayError::Invalid {
                field: "amount_usd",
                message: "The amount converts to less than INR 1.00, Razorpay's minimum.".into(),
                rule: "razorpay_minimum",
            });
        }
        let credits = credits_for(amount_usd, s.credits_per_usd).map_err(out_of_range)?;
        Ok(Price {
            quote,
            paise,
            credits,
        })
    }

    /// A quote shown before a top-up exists (the console's dialog): the
    /// same rate, INR amount and credits a top-up made now would record;
    /// nothing is recorded.
    pub fn preview(&self, amount_usd: UsdAmount) -> Result<Preview, GatewayError> {
        let Price {
            quote,
            paise,
            credits,
        } = self.price(amount_usd)?;
        Ok(Preview {
            amount_inr_paise: paise.get(),
            fx_rate: quote.rate.to_string(),
            credits,
            expires_at: quote.expires_at,
        })
    }

    /// Quotes a new top-up and records `topup_quoted`; the INR amount.
    async fn quote(
        &self,
        account: &AccountId,
        id: Id,
        bucket: Bucket,
        request: &CreateTopupRequest,
        cause: &str,
    ) -> Result<Paise, GatewayError> {
        let s = &self.inner.settings;
        let Price {
            quote,
            paise,
            credits,
        } = self.price(request.amount_usd)?;
        let now = quote.quoted_at;
        let quoted = EventData::TopupQuoted(TopupQuoted {
            topup_id: id,
            bucket,
            amount_usd: request.amount_usd,
            amount_inr_paise: paise,
            fx_rate: quote.rate.to_string(),
            fx_source: quote.source.clone(),
            fx_quoted_at: quote.quoted_at,
            quote_id: quote.id,
            quote_expires_at: quote.expires_at,
            credits,
            credits_per_usd: s.credits_per_usd.normalize().to_string(),
        });
        if !self
            .append(account, id, 0, ChainHash::GENESIS, quoted, cause)
            .await?
        {
            return Err(GatewayError::InProgress);
        }
        self.track(id, account, now).await?;
        Ok(paise)
    }

    /// `POST /v1/topups/{id}/checkout`: the checkout success handler's data.
    /// The signature proves the callback came from Checkout; the credits come
    /// only from what Razorpay's API then shows.
    pub async fn checkout(
        &self,
        topup: &Topup,
        request: &CheckoutRequest,
    ) -> Result<TopupView, GatewayError> {
        let rp = self.razorpay()?;
        if !crate::signature::checkout_valid(
            &request.razorpay_order_id,
            &request.razorpay_payment_id,
            &request.razorpay_signature,
            rp.key_secret.expose(),
        ) {
            return Err(GatewayError::InvalidSignature {
                field: "razorpay_signature",
                what: "the order and payment",
            });
        }
        if topup.order.as_ref().map(|o| o.order_id.as_str())
            != Some(request.razorpay_order_id.as_str())
        {
            return Err(GatewayError::Invalid {
                field: "razorpay_order_id",
                message: "razorpay_order_id is not this top-up's order.".into(),
                rule: "order_mismatch",
            });
        }
        let cause = format!("checkout:{}", request.razorpay_payment_id);
        let synced = self
            .sync(topup.id(), &Hints::default(), &cause)
            .await?
            .ok_or_else(|| GatewayError::internal("the top-up vanished"))?;
        Ok(self.view(&synced))
    }

    /// A top-up as its own log tells it (not the read model).
    pub async fn get(&self, id: Id) -> Result<Option<Topup>, GatewayError> {
        Ok(self.load(id).await?.map(|l| l.topup))
    }

    /// The top-up's read-model row, once the projector has written it.
    pub async fn projected(&self, id: Id) -> Result<Option<TopupRow>, GatewayError> {
        let client = self.conn().await?;
        ledger_projections::query::topup(&**client, id.uuid())
            .await
            .map_err(|e| GatewayError::unavailable(format!("the read models: {e}")))
    }

    /// The top-up as its read-model row will show it, from its own log (for
    /// a top-up the projector has not reached yet).
    pub async fn row_from_log(&self, id: Id) -> Result<Option<TopupRow>, GatewayError> {
        let Some(l) = self.load(id).await? else {
            return Ok(None);
        };
        let t = &l.topup;
        let normal = |text: &str| {
            text.parse::<Decimal>()
                .map(|d| d.normalize().to_string())
                .unwrap_or_else(|_| text.to_owned())
        };
        Ok(Some(TopupRow {
            topup_id: t.id().to_string(),
            account_id: t.account.to_string(),
            status: t.status(),
            bucket: Some(t.quote.bucket.to_string()),
            amount_usd: Some(normal(&t.quote.amount_usd.get().to_string())),
            amount_inr_paise: Some(t.quote.amount_inr_paise.get()),
            fx_rate: Some(normal(&t.quote.fx_rate)),
            credits: Some(normal(&t.quote.credits.to_string())),
            order_id: t.order.as_ref().map(|o| o.order_id.clone()),
            transaction_id: t.captured.as_ref().map(|c| c.payment_id.clone()),
            method: t.captured.as_ref().map(|c| c.method.clone()),
            created_at: t.created_at,
            updated_at: l.updated_at,
        }))
    }

    /// The top-up as the API shows it.
    pub fn view(&self, t: &Topup) -> TopupView {
        let key_id = self.inner.razorpay.as_ref().map(|r| r.key_id.clone());
        TopupView {
            topup_id: t.id().to_string(),
            account_id: t.account.to_string(),
            status: t.status(),
            bucket: t.quote.bucket.to_string(),
            amount_usd: t.quote.amount_usd,
            amount_inr_paise: t.quote.amount_inr_paise.get(),
            fx_rate: t.quote.fx_rate.clone(),
            fx_source: t.quote.fx_source.clone(),
            quote_id: t.quote.quote_id.to_string(),
            quote_expires_at: t.quote.quote_expires_at,
            credits: t.quote.credits,
            transaction_id: t.captured.as_ref().map(|c| c.payment_id.clone()),
            method: t.captured.as_ref().map(|c| c.method.clone()),
            razorpay: RazorpayCheckout {
                key_id,
                order_id: t.order.as_ref().map(|o| o.order_id.clone()),
            },
            created_at: t.created_at,
        }
    }

    /// Starts polling a new top-up.
    async fn track(&self, id: Id, account: &AccountId, now: Timestamp) -> Result<(), GatewayError> {
        let first = self
            .inner
            .settings
            .schedule
            .due_after(0)
            .unwrap_or_default();
        let next = now.datetime() + chrono::Duration::from_std(first).unwrap_or_default();
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO ledger_cmd.topup_polls (topup_id, account_id, created_at, next_poll_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (topup_id) DO NOTHING",
            &[&id.uuid(), &account.as_str(), &now.datetime(), &next],
        )
        .await
        .map_err(GatewayError::unavailable)?;
        Ok(())
    }

    async fn set_order(&self, id: Id, order_id: &str) -> Result<(), GatewayError> {
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE ledger_cmd.topup_polls SET order_id = $2, updated_at = now() \
             WHERE topup_id = $1",
            &[&id.uuid(), &order_id],
        )
        .await
        .map_err(GatewayError::unavailable)?;
        Ok(())
    }

    /// The top-up of a Razorpay order.
    pub async fn topup_of_order(&self, order_id: &str) -> Result<Option<Id>, GatewayError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT topup_id FROM ledger_cmd.topup_polls WHERE order_id = $1",
                &[&order_id],
            )
            .await
            .map_err(GatewayError::unavailable)?;
        Ok(row.and_then(|r| Id::try_from(r.get::<_, uuid::Uuid>(0)).ok()))
    }

    /// Looks at a top-up again soon (a webhook could not be processed).
    pub async fn poll_soon(&self, id: Id) -> Result<(), GatewayError> {
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE ledger_cmd.topup_polls SET next_poll_at = now() + $2 * interval '1 second', \
             updated_at = now() WHERE topup_id = $1",
            &[
                &id.uuid(),
                &(self.inner.settings.schedule.first.as_secs_f64()),
            ],
        )
        .await
        .map_err(GatewayError::unavailable)?;
        Ok(())
    }
}
