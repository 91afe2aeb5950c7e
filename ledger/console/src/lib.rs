//! The ledger's pages, served by its HTTP server beside the API:
//!
//! - the billing console under `/console/` ([`console`]): a customer signs
//!   in with a console token (what the platform's own sign-in hands over),
//!   sees My Credits and each service's credits, tops up through Razorpay
//!   Checkout ([`billing`]), follows the top-up to "Credits added", and
//!   reads, filters, pages and downloads the credit history ([`history`]);
//! - the operations dashboard under `/ops/` ([`ops`]) for `ops` and `admin`
//!   tokens: projectors and lag, top-ups by status with the stuck ones and
//!   "reconcile now", usage per day per service, command outcomes.
//!
//! Pages are rendered on the server (maud: checked at compile time); the
//! little JavaScript the checkout needs is one static file
//! (`assets/console.js`), so the Content-Security-Policy allows no inline
//! script. Sessions are encrypted cookies ([`session`]): no server-side
//! store, so any `ledger` process sharing `console_session_key` serves
//! any session. Every page calls the same functions as the JSON API (the
//! read models' queries, the gateway's top-up flow): nothing is computed
//! twice.

// Handlers answer `Result<Response, Response>`: a refusal is a page (or a
// contract error for the dialog's script), as axum's extractors reject.
#![allow(clippy::result_large_err)]

pub mod alerts;
pub mod billing;
pub mod format;
pub mod history;
mod layout;
pub mod ops;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum_extra::extract::cookie::Key;
use deadpool_postgres::Pool;
use figment::Figment;
use figment::providers::Serialized;
use ledger::api::auth::Tokens;
use ledger::config::{Config, Secret};
use ledger::metrics::Metrics;
use ledger_gateway_adapter::service::Gateway;
use serde::{Deserialize, Serialize};

/// The pages' settings, read from the same sources as the rest of the
/// process (top-level keys, `LEDGER_CONSOLE_*` variables).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// The key session cookies are encrypted and signed with (at least 32
    /// bytes). Every process that serves the pages of one deployment needs
    /// the same key; without one, a process makes its own at start and its
    /// sessions end with it.
    pub console_session_key: Option<Secret>,
    /// How long a session lasts after sign-in.
    pub console_session_ttl_s: u64,
    /// Razorpay Checkout's script: Razorpay's in production, the fake
    /// Razorpay's (`<fake>/v1/checkout.js`) in development and tests.
    pub console_checkout_js_url: String,
    /// The name Checkout shows for the merchant.
    pub console_merchant_name: String,
    /// A top-up still awaiting payment this long after it was created is
    /// shown as stuck on the operations dashboard.
    pub ops_stuck_after_s: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            console_session_key: None,
            console_session_ttl_s: 8 * 3600,
            console_checkout_js_url: "https://checkout.razorpay.com/v1/checkout.js".into(),
            console_merchant_name: "Credits".into(),
            ops_stuck_after_s: 15 * 60,
        }
    }
}

impl ConsoleConfig {
    pub fn from_sources(sources: &Figment) -> anyhow::Result<Self> {
        let config: ConsoleConfig = Figment::from(Serialized::defaults(Self::default()))
            .merge(sources.clone())
            .extract()?;
        config.key()?;
        anyhow::ensure!(
            config.console_checkout_js_url.starts_with("https://")
                || config.console_checkout_js_url.starts_with("http://"),
            "console_checkout_js_url must be an http(s) URL"
        );
        Ok(config)
    }

    /// The cookie key: derived from the configured one, else made now.
    fn key(&self) -> anyhow::Result<Key> {
        match &self.console_session_key {
            Some(k) => {
                anyhow::ensure!(
                    k.expose().len() >= 32,
                    "console_session_key must be at least 32 bytes"
                );
                Ok(Key::derive_from(k.expose().as_bytes()))
            }
            None => Ok(Key::generate()),
        }
    }
}

/// What the pages need of the process.
#[derive(Clone)]
pub struct Pages {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: Tokens,
    key: Key,
    pool: Pool,
    stream: async_nats::jetstream::stream::Stream,
    gateway: Gateway,
    metrics: Arc<Metrics>,
    /// The configured services, in order.
    services: Vec<String>,
    checkout_js: String,
    merchant: String,
    csp: HeaderValue,
    secure_cookies: bool,
    session_ttl: Duration,
    page_size: u32,
    csv_rows_max: u32,
    stuck_after: Duration,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages").finish_non_exhaustive()
    }
}

impl FromRef<Pages> for Key {
    fn from_ref(p: &Pages) -> Key {
        p.inner.key.clone()
    }
}

/// The scheme, host and port of a URL (`https://checkout.razorpay.com`).
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(url.len());
    &url[..end]
}

impl Pages {
    pub fn new(
        ledger: &Config,
        config: &ConsoleConfig,
        p: &ledger::serve::Process,
        gateway: Gateway,
    ) -> anyhow::Result<Self> {
        if config.console_session_key.is_none() {
            tracing::warn!(
                "console_session_key is not set: this process signs sessions with a key of \
                 its own, so they end when it stops and no other process accepts them"
            );
        }
        let checkout = origin(&config.console_checkout_js_url);
        // Razorpay Checkout runs in frames of its own origins.
        let csp = format!(
            "default-src 'self'; script-src 'self' {checkout}; \
             frame-src {checkout} https://api.razorpay.com https://checkout.razorpay.com; \
             connect-src 'self'; img-src 'self' data:; style-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        Ok(Pages {
            inner: Arc::new(Inner {
                tokens: p.tokens.clone(),
                key: config.key()?,
                pool: p.pool.clone(),
                stream: p.store.stream().clone(),
                gateway,
                metrics: p.metrics.clone(),
                services: ledger
                    .catalog()?
                    .services()
                    .map(|s| s.to_string())
                    .collect(),
                checkout_js: config.console_checkout_js_url.clone(),
                merchant: config.console_merchant_name.clone(),
                csp: HeaderValue::from_str(&csp)?,
                secure_cookies: ledger.http_tls_cert.is_some(),
                session_ttl: Duration::from_secs(config.console_session_ttl_s),
                page_size: ledger.limits.history_page_size_max.min(50),
                csv_rows_max: ledger.limits.history_csv_rows_max,
                stuck_after: Duration::from_secs(config.ops_stuck_after_s),
            }),
        })
    }

    /// A read-model connection, or a page saying they cannot be read now
    /// (`what` names what the page wanted).
    async fn client(
        &self,
        what: &str,
    ) -> Result<deadpool_postgres::Object, axum::response::Response> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| layout::unavailable(what, &e.to_string()))
    }

    /// Every page route: `/console/…` and `/ops/…`.
    pub fn router(self) -> Router {
        let csp = self.inner.csp.clone();
        Router::new()
            .merge(billing::routes())
            .merge(history::routes())
            .merge(ops::routes())
            .merge(session::routes())
            .route("/console/assets/console.js", get(script))
            .route("/console/assets/console.css", get(style))
            .with_state(self)
            .layer(axum::middleware::map_response(
                move |mut r: axum::response::Response| {
                    let csp = csp.clone();
                    async move {
                        let h = r.headers_mut();
                        h.insert(header::CONTENT_SECURITY_POLICY, csp);
                        h.insert(
                            header::X_CONTENT_TYPE_OPTIONS,
                            HeaderValue::from_static("nosniff"),
                        );
                        h.insert(
                            header::REFERRER_POLICY,
                            HeaderValue::from_static("same-origin"),
                        );
                        h.entry(header::CACHE_CONTROL)
                            .or_insert(HeaderValue::from_static("no-store"));
                        r
                    }
                },
            ))
    }
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/console.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/console.css"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_script_addresses() {
        assert_eq!(
            origin("https://checkout.razorpay.com/v1/checkout.js"),
            "https://checkout.razorpay.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:9/v1/checkout.js"),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn a_short_session_key_is_refused() {
        let c = ConsoleConfig {
            console_session_key: Some(Secret::new("short")),
            ..ConsoleConfig::default()
        };
        assert!(c.key().is_err());
    }
}
