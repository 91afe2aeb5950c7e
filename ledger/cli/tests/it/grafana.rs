//! deploy/grafana/ledger.json names only what exists: every SQL panel's
//! query is planned (`EXPLAIN`) by PostgreSQL against the migrated read
//! models, and every metric a PromQL panel names is in a live ledger's
//! `/metrics`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::*;

/// Grafana's SQL macros, as PostgreSQL would see them after expansion.
fn expand_macros(sql: &str) -> String {
    let mut out = sql.to_owned();
    while let Some(start) = out.find("$__timeFilter(") {
        let open = start + "$__timeFilter(".len();
        let mut depth = 1;
        let mut end = open;
        for (i, c) in out[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = open + i;
                break;
            }
        }
        let column = out[open..end].to_owned();
        out.replace_range(
            start..=end,
            &format!("({column}) BETWEEN now() - interval '7 days' AND now()"),
        );
    }
    assert!(
        !out.contains("$__"),
        "a macro the test does not expand: {out}"
    );
    out
}

/// The `ledger_*` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bledger_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_names_tables_columns_and_metrics_that_exist() {
    let path = ledger_testkit::workspace_root().join("deploy/grafana/ledger.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    let servers = Servers::start().await;
    let running = ledger_cli::start(&servers.config(), ledger_cli::Role::All)
        .await
        .unwrap();
    let client = servers.client().await;
    // Some of everything, so every metric family has samples.
    funded(&client, "graf", "2").await;
    for (key, credits) in [("ok", "1"), ("too-much", "100")] {
        cmd(
            &client,
            "consume",
            json!({"idempotency_key": key, "account_id": "graf", "service": "sms",
                "quantity": 1, "credits": credits}),
        )
        .await;
    }
    let exposition = wait_for(std::time::Duration::from_secs(10), || async {
        let text = metrics_text(running.http_addr).await;
        text.contains("ledger_projection_lag_events{")
            .then_some(text)
    })
    .await;
    let exposed: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let db = servers.db().await;
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let (mut sql_checked, mut prom_checked) = (0, 0);
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            if let Some(sql) = t["rawSql"].as_str() {
                let sql = expand_macros(sql);
                if let Err(e) = db.batch_execute(&format!("EXPLAIN {sql}")).await {
                    panic!("panel {title:?}: {sql}\n{e:?}");
                }
                sql_checked += 1;
            } else if let Some(expr) = t["expr"].as_str() {
                let names = metric_names(expr);
                assert!(!names.is_empty(), "panel {title:?} names no ledger metric");
                for name in names {
                    assert!(
                        exposed.contains(name.as_str()),
                        "panel {title:?}: {name} is not in /metrics"
                    );
                }
                prom_checked += 1;
            } else {
                panic!("panel {title:?}: a target with neither rawSql nor expr: {t}");
            }
        }
    }
    assert!(
        sql_checked >= 5 && prom_checked >= 4,
        "{sql_checked} SQL, {prom_checked} PromQL"
    );
    running.stop().await.unwrap();
}

#[test]
fn macros_expand_and_metric_names_are_found() {
    assert_eq!(
        expand_macros("WHERE $__timeFilter(day::timestamptz) GROUP BY 1"),
        "WHERE (day::timestamptz) BETWEEN now() - interval '7 days' AND now() GROUP BY 1"
    );
    assert_eq!(
        metric_names("sum(rate(ledger_commands_total{outcome=\"refused\"}[5m])) / ledger_x"),
        BTreeSet::from(["ledger_commands_total".to_owned(), "ledger_x".to_owned()])
    );
}
