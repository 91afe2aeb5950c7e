//! The gateway's Prometheus metrics, registered into the process's
//! registry (served by `GET /metrics` with the ledger's own).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `accepted`, `duplicate`, `invalid_signature`, `invalid`, `processed`, `failed`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopupEventLabels {
    /// The event type the gateway recorded.
    pub event: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct GatewayMetrics {
    pub webhooks: Family<WebhookLabels, Counter>,
    pub topup_events: Family<TopupEventLabels, Counter>,
    pub topup_syncs_failed: Counter,
}

impl GatewayMetrics {
    /// New metrics, registered into `metrics`.
    pub fn registered(metrics: &ledger::metrics::Metrics) -> Self {
        let m = GatewayMetrics::default();
        metrics.register(
            "razorpay_webhooks",
            "Razorpay webhooks by result",
            m.webhooks.clone(),
        );
        metrics.register(
            "topup_events",
            "Events the gateway recorded on top-ups, by type",
            m.topup_events.clone(),
        );
        metrics.register(
            "topup_syncs_failed",
            "Syncs of a top-up with Razorpay that did not finish (retried by polling)",
            m.topup_syncs_failed.clone(),
        );
        m
    }

    pub fn webhook(&self, result: &'static str) {
        self.webhooks.get_or_create(&WebhookLabels { result }).inc();
    }

    pub fn topup_event(&self, event: &'static str) {
        self.topup_events
            .get_or_create(&TopupEventLabels { event })
            .inc();
    }
}
