//! The gateway's settings: Razorpay, FX, top-up limits and reconciliation.
//!
//! Read from the same sources as the rest of the process (defaults, the
//! TOML file, then `LEDGER_*` variables: `LEDGER_RAZORPAY_KEY_ID`,
//! `LEDGER_FX_USD_INR`, …), as top-level keys beside the ledger's own.

use figment::Figment;
use figment::providers::Serialized;
use ledger::config::{Secret, decimal_text, decimal_text_opt};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    pub razorpay_base_url: Option<String>,
    pub razorpay_key_id: Option<String>,
    pub razorpay_key_secret: Option<Secret>,
    pub razorpay_webhook_secret: Option<Secret>,
    /// A fixed INR-per-USD base rate (development); `fx_rate_file` wins when set.
    #[serde(deserialize_with = "decimal_text_opt")]
    pub fx_usd_inr: Option<String>,
    /// A JSON rate file operations update: `{"usd_inr", "source", "as_of"}`.
    pub fx_rate_file: Option<String>,
    /// Added to the base rate, in basis points.
    pub fx_spread_bps: u32,
    /// How long a quote is honoured.
    pub fx_quote_ttl_s: u64,
    /// A rate file older than this is refused (top-ups answer `unavailable`).
    pub fx_rate_file_age_max_s: u64,
    #[serde(deserialize_with = "decimal_text")]
    pub credits_per_usd: String,
    /// The largest top-up, in USD (the smallest is 1.00).
    #[serde(deserialize_with = "decimal_text")]
    pub topup_usd_max: String,
    /// A top-up with no captured payment after this long is marked abandoned
    /// (and still reconciled until the horizon).
    pub topup_abandon_after_s: u64,
    /// Delay before an open top-up is first polled.
    pub reconcile_first_s: u64,
    /// The longest wait between two polls of one top-up.
    pub reconcile_interval_max_s: u64,
    /// How long after creation a top-up is polled (covers late authorisation).
    pub reconcile_horizon_s: u64,
    /// How often the poller looks for due top-ups.
    pub reconcile_tick_ms: u64,
    /// How long one call to Razorpay may take.
    pub razorpay_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            razorpay_base_url: None,
            razorpay_key_id: None,
            razorpay_key_secret: None,
            razorpay_webhook_secret: None,
            fx_usd_inr: None,
            fx_rate_file: None,
            fx_spread_bps: 0,
            fx_quote_ttl_s: 900,
            fx_rate_file_age_max_s: 24 * 3600,
            credits_per_usd: "1".into(),
            topup_usd_max: "10000.00".into(),
            topup_abandon_after_s: 24 * 3600,
            reconcile_first_s: 30,
            reconcile_interval_max_s: 6 * 3600,
            reconcile_horizon_s: 7 * 24 * 3600,
            reconcile_tick_ms: 1000,
            razorpay_timeout_ms: 10_000,
        }
    }
}

impl GatewayConfig {
    /// The settings `sources` ([`ledger::config::sources`]) give, over the
    /// defaults; checked as the gateway will use them.
    pub fn from_sources(sources: &Figment) -> anyhow::Result<Self> {
        let config: GatewayConfig = Figment::from(Serialized::defaults(Self::default()))
            .merge(sources.clone())
            .extract()?;
        crate::service::Settings::from_config(&config)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // figment's test jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn decimals_from_the_environment_stay_exact() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEDGER_FX_USD_INR", "83.12");
            jail.set_env("LEDGER_CREDITS_PER_USD", "2");
            jail.set_env("LEDGER_TOPUP_USD_MAX", "250.50");
            let sources = ledger::config::sources(None).expect("sources");
            let c = GatewayConfig::from_sources(&sources).expect("loads");
            assert_eq!(c.fx_usd_inr.as_deref(), Some("83.12"));
            assert_eq!(c.credits_per_usd, "2");
            assert_eq!(c.topup_usd_max, "250.5");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        let c = GatewayConfig {
            razorpay_key_secret: Some(Secret::new("rzp-s3cret")),
            razorpay_webhook_secret: Some(Secret::new("whk-s3cret")),
            ..GatewayConfig::default()
        };
        let printed = ledger::config::toml_like(&serde_json::to_value(&c).unwrap());
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("razorpay_key_secret = \"[hidden]\""),
            "{printed}"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
