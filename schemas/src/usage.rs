//! The usage message a service publishes to `ledger.usage.<service>.<account_id>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;
use crate::values::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageMessage {
    /// The service's own id for this usage; also its `Nats-Msg-Id`.
    pub usage_id: UsageId,
    pub account_id: AccountId,
    pub service: Service,
    pub quantity: Quantity,
    /// Given credits; null means "price by the rate card".
    #[serde(default)]
    pub credits: Option<Credits>,
    pub occurred_at: Timestamp,
    /// The service's own details (message id, recipient country, …), kept as given.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// Up to 1,000 usages of one service, for any accounts, as one message on
/// `ledger.usage_batch.<service>` (`Nats-Msg-Id` = the batch's own id).
/// Each usage is still decided exactly once on its usage id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub usages: Vec<UsageMessage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_decodes() {
        let m: UsageMessage = serde_json::from_str(
            r#"{"usage_id": "msg-8812", "account_id": "acme", "service": "sms",
                "quantity": 1, "credits": null, "occurred_at": "2026-11-21T10:00:00.000Z",
                "attributes": {}}"#,
        )
        .unwrap();
        assert_eq!(m.usage_id.as_str(), "msg-8812");
        assert_eq!(m.credits, None);
    }
}
