//! The JSON Schema files under `schemas/json/`, generated from the Rust types.
//!
//! `cargo run -p ledger-schemas --bin generate-json-schemas` writes them; the
//! test `committed_files_match_the_types` fails when the committed files drift.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

use crate::command::*;
use crate::error::ErrorBody;
use crate::event::{EventEnvelope, EventType};
use crate::usage::{UsageBatch, UsageMessage};

fn root<T: JsonSchema>() -> Value {
    SchemaGenerator::new(SchemaSettings::draft2020_12())
        .into_root_schema_for::<T>()
        .to_value()
}

/// The schema of one event type: the envelope with `type` fixed and `data`
/// replaced by that type's data schema.
fn event_schema(t: EventType) -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
    let data = t.data_schema(&mut generator).to_value();
    let mut envelope = generator.root_schema_for::<EventEnvelope>().to_value();
    let obj = envelope.as_object_mut().expect("an object schema");
    // The flattened `EventData` shows up as a `oneOf` over every type; this
    // file is about one type, so put its `type` and `data` in as properties.
    obj.remove("oneOf");
    let props = obj
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .expect("envelope properties");
    props.insert("type".into(), serde_json::json!({"const": t.as_str()}));
    props.insert("data".into(), data);
    let required = obj
        .get_mut("required")
        .and_then(Value::as_array_mut)
        .expect("envelope required list");
    for field in ["type", "data"] {
        if !required.iter().any(|v| v == field) {
            required.push(field.into());
        }
    }
    obj.insert("title".into(), format!("Event {}", t.as_str()).into());
    // Keep only the definitions this type reaches: files stay small and a
    // change to one event type's data shows in that file alone.
    let defs = generator.take_definitions(true);
    obj.insert("$defs".into(), Value::Object(defs));
    prune_unused_defs(&mut envelope);
    envelope
}

/// Removes `$defs` entries no `$ref` in the document reaches.
fn prune_unused_defs(doc: &mut Value) {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    if let Some(name) = r.strip_prefix("#/$defs/") {
                        out.push(name.to_owned());
                    }
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let Some(defs) = doc.get("$defs").and_then(Value::as_object).cloned() else {
        return;
    };
    let mut keep: Vec<String> = Vec::new();
    let mut body = doc.clone();
    body.as_object_mut().map(|m| m.remove("$defs"));
    refs(&body, &mut keep);
    let mut i = 0;
    while i < keep.len() {
        if let Some(d) = defs.get(&keep[i]) {
            refs(d, &mut keep);
        }
        i += 1;
    }
    let kept: serde_json::Map<String, Value> =
        defs.into_iter().filter(|(k, _)| keep.contains(k)).collect();
    let obj = doc.as_object_mut().expect("an object schema");
    if kept.is_empty() {
        obj.remove("$defs");
    } else {
        obj.insert("$defs".into(), Value::Object(kept));
    }
}

/// Every schema file: its path under `schemas/json/` and its content.
pub fn all() -> Vec<(String, Value)> {
    let mut files: Vec<(String, Value)> = EventType::ALL
        .iter()
        .map(|t| (format!("events/{}.json", t.as_str()), event_schema(*t)))
        .collect();
    let mut add = |path: &str, v: Value| files.push((path.to_owned(), v));
    add("events/envelope.json", root::<EventEnvelope>());
    add("commands/open_account.json", root::<OpenAccountRequest>());
    add("commands/consume.json", root::<ConsumeRequest>());
    add("commands/consume_batch.json", root::<ConsumeBatchRequest>());
    add("commands/grant.json", root::<GrantRequest>());
    add("commands/reserve.json", root::<ReserveRequest>());
    add("commands/capture.json", root::<CaptureRequest>());
    add("commands/release.json", root::<ReleaseRequest>());
    add("commands/transfer.json", root::<TransferRequest>());
    add("commands/adjust.json", root::<AdjustRequest>());
    add("commands/reverse.json", root::<ReverseRequest>());
    add("commands/set_alert.json", root::<SetAlertRequest>());
    add("commands/get_balance.json", root::<GetBalanceRequest>());
    add("http/create_topup.json", root::<CreateTopupRequest>());
    add("http/checkout.json", root::<CheckoutRequest>());
    add("replies/command_reply.json", root::<CommandReply>());
    add("replies/balance_reply.json", root::<BalanceReply>());
    add(
        "replies/consume_batch_reply.json",
        root::<ConsumeBatchReply>(),
    );
    add("usage/usage_message.json", root::<UsageMessage>());
    add("usage/usage_batch.json", root::<UsageBatch>());
    add("error.json", root::<ErrorBody>());
    add(
        "audit/checkpoint.json",
        root::<crate::checkpoint::Checkpoint>(),
    );
    add("audit/proof.json", root::<crate::checkpoint::Proof>());
    files
}

/// The text written for a schema: pretty JSON with a final newline.
pub fn render(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a schema serialises");
    s.push('\n');
    s
}
