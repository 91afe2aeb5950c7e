//! FX quotes: the INR-per-USD rate a top-up is charged at.
//!
//! The base rate comes either from configuration (a fixed rate, for
//! development) or from a rate file that operations update; the quoted rate
//! is the base plus a spread, rounded half-even to 4 decimals
//! ([`crate::money::quoted_rate`]). Each quote has an id, its rate, source,
//! time and expiry, all recorded in `topup_quoted`. A rate file older than
//! the configured age is refused rather than quoted from.
//!
//! Rate file (JSON):
//! `{"usd_inr": "83.1200", "source": "RBI reference rate", "as_of": "2026-11-21T09:00:00.000Z"}`

use std::path::PathBuf;
use std::time::Duration;

use ledger_schemas::{Id, Timestamp};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::money::{MoneyError, quoted_rate};

/// Where the base rate comes from.
#[derive(Debug, Clone)]
pub enum RateSource {
    Fixed(Decimal),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct QuoteProvider {
    pub source: RateSource,
    /// Added to the base rate, in basis points.
    pub spread_bps: u32,
    /// How long a quote is honoured.
    pub quote_ttl: Duration,
    /// A rate file older than this is refused.
    pub file_age_max: Duration,
}

/// One quote, as recorded in `topup_quoted`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub id: Id,
    /// INR per USD, spread included.
    pub rate: Decimal,
    pub source: String,
    pub quoted_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum FxError {
    #[error("the rate file {path} cannot be read: {reason}")]
    File { path: String, reason: String },
    #[error("the rate file {path} is {age_s} s old, more than the {limit_s} s allowed")]
    Stale {
        path: String,
        age_s: i64,
        limit_s: u64,
    },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

#[derive(Debug, Deserialize)]
struct RateFile {
    /// A decimal string, never a float.
    usd_inr: String,
    source: String,
    as_of: Timestamp,
}

impl QuoteProvider {
    /// A quote at `now`.
    pub fn quote(&self, now: Timestamp) -> Result<Quote, FxError> {
        let (base, source) = match &self.source {
            RateSource::Fixed(rate) => (*rate, "configured fixed rate".to_owned()),
            RateSource::File(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| FxError::File {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                let file: RateFile = serde_json::from_str(&text).map_err(|e| FxError::File {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                let age_s = (now.millis() - file.as_of.millis()) / 1000;
                if age_s > self.file_age_max.as_secs() as i64 {
                    return Err(FxError::Stale {
                        path: shown,
                        age_s,
                        limit_s: self.file_age_max.as_secs(),
                    });
                }
                let rate = file.usd_inr.parse::<Decimal>().map_err(|e| FxError::File {
                    path: shown.clone(),
                    reason: format!("usd_inr: {e}"),
                })?;
                (rate, format!("{} as of {}", file.source, file.as_of))
            }
        };
        let rate = quoted_rate(base, self.spread_bps)?;
        let source = if self.spread_bps == 0 {
            source
        } else {
            format!("{source}, spread {} bps", self.spread_bps)
        };
        Ok(Quote {
            id: Id::new_v7(),
            rate,
            source,
            quoted_at: now,
            expires_at: now.plus_seconds(self.quote_ttl.as_secs()).unwrap_or(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(source: RateSource, spread_bps: u32) -> QuoteProvider {
        QuoteProvider {
            source,
            spread_bps,
            quote_ttl: Duration::from_secs(900),
            file_age_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn fixed_rate_with_spread() {
        let now = Timestamp::parse("2026-11-21T10:00:00.000Z").unwrap();
        let q = provider(RateSource::Fixed("83.12".parse().unwrap()), 150)
            .quote(now)
            .unwrap();
        assert_eq!(q.rate.to_string(), "84.3668");
        assert_eq!(q.expires_at.to_string(), "2026-11-21T10:15:00.000Z");
        assert!(q.source.contains("150 bps"), "{}", q.source);
    }

    #[test]
    fn rate_file_is_read_and_refused_when_stale_or_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rate.json");
        std::fs::write(
            &path,
            r#"{"usd_inr": "83.50", "source": "treasury desk", "as_of": "2026-11-21T09:30:00.000Z"}"#,
        )
        .unwrap();
        let p = provider(RateSource::File(path.clone()), 0);
        let q = p
            .quote(Timestamp::parse("2026-11-21T10:00:00.000Z").unwrap())
            .unwrap();
        assert_eq!(q.rate.to_string(), "83.50");
        assert!(q.source.starts_with("treasury desk as of"), "{}", q.source);
        let stale = p
            .quote(Timestamp::parse("2026-11-21T11:00:00.000Z").unwrap())
            .unwrap_err();
        assert!(
            matches!(stale, FxError::Stale { age_s: 5400, .. }),
            "{stale}"
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            p.quote(Timestamp::parse("2026-11-21T10:00:00.000Z").unwrap()),
            Err(FxError::File { .. })
        ));
    }
}
