//! The deployment files in deploy/ parse and name only what exists: every
//! `LEDGER_*` variable and every key of the Kubernetes ConfigMap's
//! ledger.toml is a setting the service knows (and loads), every role is a
//! role, every probe an endpoint, the NATS passwords the ones
//! accounts.conf uses, and the partition count the same on both sides.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> std::path::PathBuf {
    ledger_testkit::workspace_root()
}

/// Every document of a YAML file.
fn documents(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The settings the service knows: top-level keys, and each table's keys.
fn known() -> Value {
    serde_json::to_value(ledger_cli::Settings::default()).unwrap()
}

/// Whether `LEDGER_<NAME>` reaches a setting (`__` nests, as figment reads it).
fn known_variable(known: &Value, name: &str) -> bool {
    let Some(rest) = name.strip_prefix("LEDGER_") else {
        return false;
    };
    if rest == "CONFIG" {
        return true; // the configuration file itself (clap)
    }
    let mut at = known;
    for part in rest.to_lowercase().split("__") {
        match at.get(part) {
            Some(v) => at = v,
            None => return false,
        }
    }
    true
}

/// Keys of `table` that `known` lacks, with their path.
fn unknown_keys(table: &toml::Table, known: &Value, path: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let here = format!("{path}{k}");
        match known.get(k) {
            None => out.push(here),
            // Maps of names (unit prices) hold any key.
            Some(Value::Object(m)) if k != "unit_prices" => {
                if let toml::Value::Table(t) = v {
                    unknown_keys(t, &Value::Object(m.clone()), &format!("{here}."), out);
                }
            }
            Some(_) => {}
        }
    }
}

fn str_of(y: &Yaml) -> &str {
    y.as_str().unwrap_or_default()
}

/// Every `(name, value)` of a Kubernetes object's env lists and Secrets.
fn variables(doc: &Yaml, out: &mut Vec<(String, String)>) {
    if str_of(&doc["kind"]) == "Secret" {
        if let Some(h) = doc["stringData"].as_hash() {
            for (k, v) in h {
                out.push((str_of(k).to_owned(), str_of(v).to_owned()));
            }
        }
    }
    for c in containers(doc) {
        for e in c["env"].as_vec().into_iter().flatten() {
            out.push((
                str_of(&e["name"]).to_owned(),
                str_of(&e["value"]).to_owned(),
            ));
        }
    }
}

fn containers(doc: &Yaml) -> Vec<&Yaml> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

/// `partition(N, …)` in the shipped NATS accounts.
fn mapped_partitions() -> u32 {
    let accounts = std::fs::read_to_string(root().join("deploy/nats/accounts.conf")).unwrap();
    let at = accounts.find("partition(").expect("a partition mapping") + "partition(".len();
    accounts[at..]
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn kubernetes_manifests_name_only_settings_roles_and_endpoints_that_exist() {
    let known = known();
    let nats_passwords: BTreeSet<String> =
        std::fs::read_to_string(root().join("deploy/nats/dev-passwords.env"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
            .collect();
    let mut seen_kinds = BTreeSet::new();
    let mut roles = BTreeSet::new();
    let mut problems = Vec::new();
    for file in ["deploy/k8s/nats.yaml", "deploy/k8s/ledger.yaml"] {
        for doc in documents(&root().join(file)) {
            let kind = str_of(&doc["kind"]).to_owned();
            let name = str_of(&doc["metadata"]["name"]).to_owned();
            assert!(
                !kind.is_empty() && !name.is_empty(),
                "{file}: a document without kind or name"
            );
            seen_kinds.insert(kind.clone());
            let mut vars = Vec::new();
            variables(&doc, &mut vars);
            for (var, _) in vars {
                let ok = if var.starts_with("LEDGER_NATS_PW_") {
                    nats_passwords.contains(&var)
                } else if var.starts_with("LEDGER_") {
                    known_variable(&known, &var)
                } else {
                    true
                };
                if !ok {
                    problems.push(format!("{file} {kind}/{name}: {var} is no setting"));
                }
            }
            if let Some(toml_text) = doc["data"]["ledger.toml"].as_str() {
                let table: toml::Table = toml_text.parse().expect("ledger.toml is TOML");
                unknown_keys(&table, &known, "", &mut problems);
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("ledger.toml");
                std::fs::write(&path, toml_text).unwrap();
                let settings = ledger_cli::Settings::load(Some(&path))
                    .unwrap_or_else(|e| panic!("{file}: ledger.toml does not load: {e:#}"));
                assert_eq!(settings.ledger.command_partitions, mapped_partitions());
                assert_eq!(settings.ledger.stream_replicas, 3);
                assert_eq!(settings.ledger.nats_monitor_urls.len(), 3);
            }
            if let Some(conf) = doc["data"]["nats.conf"].as_str() {
                assert!(
                    conf.contains("sync_interval: always"),
                    "{file}: fsync each write"
                );
                assert!(conf.contains("include \"accounts/accounts.conf\""));
            }
            for c in containers(&doc) {
                let args: Vec<&str> = c["args"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .map(str_of)
                    .collect();
                if let Some(i) = args.iter().position(|a| *a == "--role") {
                    let role = args[i + 1];
                    assert!(
                        ["command", "projections", "gateway", "all"].contains(&role),
                        "{file}: role {role}"
                    );
                    roles.insert(role.to_owned());
                    for (probe, path) in
                        [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
                    {
                        assert_eq!(
                            str_of(&c[probe]["httpGet"]["path"]),
                            path,
                            "{file} {name}: {probe}"
                        );
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for kind in [
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
        "Service",
    ] {
        assert!(seen_kinds.contains(kind), "no {kind}");
    }
    assert_eq!(
        roles,
        BTreeSet::from(["command".into(), "projections".into(), "gateway".into()])
    );
}

#[test]
fn systemd_units_run_roles_the_binary_has() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/ledger@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/ledger serve --role %i"));
    assert!(unit.contains("LEDGER_CONFIG="));
    let nats = std::fs::read_to_string(root().join("deploy/systemd/nats-server.service")).unwrap();
    assert!(nats.contains("/etc/nats/cluster.conf"));
    let cluster = std::fs::read_to_string(root().join("deploy/nats/cluster.conf")).unwrap();
    assert!(
        cluster.contains("sync_interval: always") && cluster.contains("include \"accounts.conf\"")
    );
}

#[test]
fn the_checker_finds_an_unknown_setting() {
    let known = known();
    assert!(known_variable(&known, "LEDGER_STREAM_REPLICAS"));
    assert!(known_variable(&known, "LEDGER_LIMITS__BATCH_ITEMS_MAX"));
    assert!(known_variable(&known, "LEDGER_CONSOLE_SESSION_KEY"));
    assert!(!known_variable(&known, "LEDGER_STREAM_REPLICA"));
    assert!(!known_variable(&known, "LEDGER_LIMITS__NOPE"));
    let mut out = Vec::new();
    let t: toml::Table =
        "stream_replicas = 3\nnope = 1\n[limits]\nbatch_items_max = 5\nnot_a_limit = 2\n"
            .parse()
            .unwrap();
    unknown_keys(&t, &known, "", &mut out);
    assert_eq!(out, ["limits.not_a_limit", "nope"]);
}
