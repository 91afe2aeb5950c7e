//! The committed JSON Schema files must be exactly what the types generate.
//! On failure: `cargo run -p ledger-schemas --bin generate-json-schemas`.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn committed_files_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let generated = ledger_schemas::json_schema::all();
    let mut drift = Vec::new();
    for (path, schema) in &generated {
        let want = ledger_schemas::json_schema::render(schema);
        match std::fs::read_to_string(dir.join(path)) {
            Ok(have) if have == want => {}
            Ok(_) => drift.push(format!("{path}: differs from the types")),
            Err(_) => drift.push(format!("{path}: missing")),
        }
    }
    let expected: BTreeSet<String> = generated.iter().map(|(p, _)| p.clone()).collect();
    for entry in walk(&dir) {
        if !expected.contains(&entry) {
            drift.push(format!("{entry}: no type generates it"));
        }
    }
    assert!(
        drift.is_empty(),
        "JSON Schema files drifted from the types (regenerate with \
         `cargo run -p ledger-schemas --bin generate-json-schemas`):\n{}",
        drift.join("\n")
    );
}

#[test]
fn every_event_type_has_a_file() {
    let generated = ledger_schemas::json_schema::all();
    for t in ledger_schemas::EventType::ALL {
        let path = format!("events/{}.json", t.as_str());
        let (_, schema) = generated
            .iter()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("{path} not generated"));
        assert_eq!(schema["properties"]["type"]["const"], t.as_str());
        assert!(schema["properties"]["data"].is_object());
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}
