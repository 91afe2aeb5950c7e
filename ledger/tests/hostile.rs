//! Hostile input: every decoder that takes bytes from outside the ledger
//! (command requests, usage messages, events read back from the stream,
//! export records) is fed arbitrary bytes and mangled requests. None may
//! panic; a request that is refused is refused with the contract's error.
//! Requests that parse are decided on a funded account, whose state must
//! stay within range whatever was asked.

use std::collections::BTreeMap;

use ledger::api::{CommandName, Parsed, parse};
use ledger::audit::{Record, Verifier};
use ledger::domain::{Account, Catalog, Context, decide};
use ledger_schemas::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn actor() -> Actor {
    Actor::parse("service:fuzz").unwrap()
}

fn catalog() -> Catalog {
    let price = |p: &str| Credits::parse(p).unwrap();
    let prices = BTreeMap::from([
        (Service::parse("email").unwrap(), price("0.001")),
        (Service::parse("sms").unwrap(), price("0.0075")),
    ]);
    Catalog::new(1, prices).unwrap()
}

/// JSON values a confused or hostile client might send in any field.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(1e300)),
        Just(json!(5.0)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("1000000000000000")),
        Just(json!("1000000000000000.000001")),
        Just(json!("-1000000000000000")),
        Just(json!("0.0000001")),
        Just(json!("00.5")),
        Just(json!("1e3")),
        Just(json!("\u{0}\u{1f}")),
        Just(json!("general")),
        Just(json!("email")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A well-formed request of `name`, the starting point for mangling.
fn request(name: CommandName) -> Value {
    let id = "0190b7a4-1111-7000-8000-000000000001";
    let base = json!({"idempotency_key": "k-1", "account_id": "acme"});
    let mut v = base.as_object().unwrap().clone();
    let extra = match name {
        CommandName::OpenAccount => json!({"display_name": "Acme"}),
        CommandName::Consume => json!({"service": "email", "quantity": 3, "credits": "1.5"}),
        CommandName::Reserve => json!({"service": "sms", "credits": "2", "expires_in_s": 60}),
        CommandName::Capture => json!({"reservation_id": id, "credits": "1"}),
        CommandName::Release => json!({"reservation_id": id}),
        CommandName::Transfer => {
            json!({"from_bucket": "general", "to_bucket": "email", "credits": "1"})
        }
        CommandName::Grant => {
            json!({"bucket": "general", "credits": "10", "source": "promotion"})
        }
        CommandName::Adjust => json!({"bucket": "sms", "delta": "-3", "reason": "fix"}),
        CommandName::Reverse => json!({"bucket": "general", "credits": "1", "refund_id": "rfnd_1",
            "topup_id": id}),
        CommandName::GetBalance => json!({}),
        CommandName::SetAlert => json!({"service": "sms", "threshold": "5"}),
        CommandName::ConsumeBatch => {
            return json!({"items": [request(CommandName::Consume), request(CommandName::Consume)]});
        }
    };
    v.extend(extra.as_object().unwrap().clone());
    if name == CommandName::GetBalance {
        v.remove("idempotency_key");
    }
    Value::Object(v)
}

fn command_name() -> impl Strategy<Value = CommandName> {
    prop::sample::select(CommandName::ALL.to_vec())
}

/// A funded account with a reservation open, to decide requests against.
fn funded() -> Account {
    let account = AccountId::parse("acme").unwrap();
    let mut a = Account::new(account.clone());
    a.evolve(&EventData::AccountOpened(AccountOpened {
        display_name: None,
    }));
    for (bucket, credits) in [("general", "999999999999999"), ("email", "1000")] {
        a.evolve(&EventData::CreditsGranted(CreditsGranted {
            bucket: Bucket::parse(bucket).unwrap(),
            credits: Credits::parse(credits).unwrap(),
            source: GrantSource::Promotion,
            topup_id: None,
            payment_id: None,
            reason: None,
        }));
    }
    a
}

/// What a request refused at parsing must look like: `invalid_request`.
fn refused_as_contract(e: &ErrorBody) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.code(), ErrorCode::InvalidRequest, "{:?}", e);
    let text = serde_json::to_value(e).unwrap();
    prop_assert!(
        text["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    Ok(())
}

/// Decides a parsed request on a funded account; the state it leads to
/// stays in range (evolving it would panic otherwise).
fn decided(parsed: Parsed) {
    let ctx = Context {
        now: Timestamp::now(),
        catalog: &catalog(),
    };
    let mut account = funded();
    let requests = match parsed {
        Parsed::Command(c) => vec![*c],
        Parsed::Batch(items) => items.into_iter().flatten().map(|c| *c).collect(),
        Parsed::Balance(_) => vec![],
    };
    for request in requests {
        if let Ok(events) = decide(&account, &request.command, &ctx) {
            for e in events {
                account.evolve(&e.data);
            }
            let _ = account.balances().count();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_any_command_are_refused_in_the_contracts_shape(
        name in command_name(),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        match parse(name, &bytes, &actor(), 1000) {
            Ok(parsed) => decided(parsed),
            Err(e) => refused_as_contract(&e)?,
        }
    }

    #[test]
    fn a_mangled_request_never_panics_and_what_parses_stays_in_range(
        name in command_name(),
        field in ".{0,16}",
        value in any_json(),
        drop in any::<bool>(),
    ) {
        let mut v = request(name);
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        // Mangle a field the request has (or add one it has not).
        let key = keys.iter().find(|k| k.starts_with(&field)).cloned().unwrap_or(field);
        if drop {
            v.as_object_mut().unwrap().remove(&key);
        } else {
            v[&key] = value;
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        match parse(name, &bytes, &actor(), 1000) {
            Ok(parsed) => decided(parsed),
            Err(e) => refused_as_contract(&e)?,
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_not_a_stack_overflow(depth in 100usize..5000) {
        let bytes = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for name in CommandName::ALL {
            if let Err(e) = parse(name, bytes.as_bytes(), &actor(), 1000) {
                refused_as_contract(&e)?;
            }
        }
    }

    #[test]
    fn usage_messages_of_any_bytes_decode_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        value in any_json(),
    ) {
        for payload in [bytes, serde_json::to_vec(&value).unwrap()] {
            if let Err(e) = decode_request::<UsageMessage>(&payload) {
                refused_as_contract(&e)?;
            }
            if let Err(e) = decode_request::<UsageBatch>(&payload) {
                refused_as_contract(&e)?;
            }
        }
    }

    #[test]
    fn messages_read_back_from_the_stream_are_judged_never_trusted(
        payload in prop::collection::vec(any::<u8>(), 0..256),
        value in any_json(),
        chain in proptest::option::of("[0-9a-f]{64}"),
        msg_id in proptest::option::of(".{0,40}"),
        kind in proptest::option::of("[a-z_]{0,20}"),
    ) {
        // Signature headers as a hostile publisher may write them.
        let text = String::from_utf8_lossy(&payload).into_owned();
        let _ = ledger_schemas::signing::parse_position(&text);
        let keys = ledger_schemas::signing::PublicKeys::default();
        let _ = ledger_schemas::signing::open_seal(&keys, 3, Some(&text), Some(&text));
        let _ = ledger_schemas::signing::PublicKeys::parse_document(&text);
        let _ = serde_json::from_slice::<ledger_schemas::checkpoint::Proof>(&payload);
        for payload in [payload, serde_json::to_vec(&value).unwrap()] {
            let m = genuine::Message {
                subject: "ledger.events.acct.acme",
                msg_id: msg_id.as_deref(),
                event_type: kind.as_deref(),
                chain: chain.as_deref(),
                payload: &payload,
                signature: genuine::Signature::Verified,
            };
            let _ = genuine::judge(&m, &ChainHash::GENESIS);
            let _ = ledger_projections::fold::decode(1, &payload);
            if let Ok(e) = serde_json::from_slice::<EventEnvelope>(&payload) {
                let _ = genuine::judge_event(&m, &ChainHash::GENESIS, &e);
            }
        }
    }

    #[test]
    fn an_auditor_reads_any_export_record_without_panicking(
        records in prop::collection::vec(
            (0u64..8, ".{0,30}", proptest::option::of(".{0,70}"), any_json()),
            1..8,
        ),
    ) {
        let mut verifier = Verifier::new("ledger.events");
        for (seq, subject, chain, payload) in records {
            let line = json!({"seq": seq, "subject": subject, "chain": chain,
                "payload": payload.to_string()});
            if let Ok(r) = serde_json::from_value::<Record>(line) {
                verifier.check(&r);
            }
        }
        verifier.finish();
    }
}
