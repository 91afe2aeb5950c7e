//! The services the platform sells and their versioned rate card.

use std::collections::BTreeMap;

use ledger_schemas::{Bucket, Credits, Service};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the rate card must price the service '{0}'")]
    MissingService(&'static str),
}

/// Known services with their price per unit, under one rate card version.
/// A usage of a service not listed here is refused as `unknown_service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    rate_card_version: u32,
    unit_prices: BTreeMap<Service, Credits>,
}

impl Catalog {
    /// The services every deployment has.
    pub const BUILT_IN: [&'static str; 2] = ["email", "sms"];

    pub fn new(
        rate_card_version: u32,
        unit_prices: BTreeMap<Service, Credits>,
    ) -> Result<Self, CatalogError> {
        for s in Self::BUILT_IN {
            if !unit_prices.keys().any(|k| k.as_str() == s) {
                return Err(CatalogError::MissingService(s));
            }
        }
        Ok(Self {
            rate_card_version,
            unit_prices,
        })
    }

    pub fn rate_card_version(&self) -> u32 {
        self.rate_card_version
    }

    pub fn price(&self, service: &Service) -> Option<Credits> {
        self.unit_prices.get(service).copied()
    }

    pub fn knows(&self, service: &Service) -> bool {
        self.unit_prices.contains_key(service)
    }

    /// `general` and the bucket of every known service.
    pub fn knows_bucket(&self, bucket: &Bucket) -> bool {
        bucket.service().is_none_or(|s| self.knows(&s))
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.unit_prices.keys()
    }

    /// `general` first, then every service bucket.
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        std::iter::once(Bucket::general()).chain(self.services().map(Bucket::from))
    }
}
