//! The billing console and the operations dashboard in a real headless
//! Chromium (deploy/browser/console.mjs, playwright-core driving the
//! system's Chromium), against `ledger serve --role all`, PostgreSQL,
//! nats-server with the shipped permissions, and the fake Razorpay's
//! Checkout. The script walks the pages as a customer or an operator
//! does; these tests set the scene, then check the ledger agrees.
//! Screenshots of every page land in `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const CONSOLE_TOKEN: &str = "console-acme-token";
const OTHER_TOKEN: &str = "console-other-token";
const OPS_TOKEN: &str = "ops-dashboard-token";

/// A configuration file with the tokens the pages are signed in with.
fn tokens_file(dir: &Path, account: &str) -> PathBuf {
    let path = dir.join("ledger.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"{account}-console\"\ntoken = \"{CONSOLE_TOKEN}\"\n\
             role = \"console\"\naccounts = [\"{account}\"]\n\n\
             [[tokens]]\nname = \"other-console\"\ntoken = \"{OTHER_TOKEN}\"\n\
             role = \"console\"\naccounts = [\"other\"]\n\n\
             [[tokens]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nrole = \"ops\"\n"
        ),
    )
    .unwrap();
    path
}

/// Runs one scenario of the browser script; its output when it passes.
async fn browse(scenario: &str, env: &[(&str, String)]) -> String {
    let root = ledger_testkit::workspace_root();
    let out = tokio::process::Command::new("node")
        .arg(root.join("deploy/browser/console.mjs"))
        .arg(scenario)
        .env("SCREENSHOTS", root.join("target/screenshots"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the browser scenario ends within 4 minutes")
        .expect("node runs (deploy/install.sh installs playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "browser scenario {scenario} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn admin_post(url: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn admin_get(url: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Rows of an account's history the API returns for `query`, all pages.
async fn history_rows(url: &str, account: &str, query: &str) -> usize {
    let mut n = 0;
    let mut cursor = String::new();
    loop {
        let page = admin_get(
            url,
            &format!("/v1/accounts/{account}/history?limit=500&{query}{cursor}"),
        )
        .await;
        n += page["items"].as_array().expect("a history page").len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_tops_up_by_every_method_and_each_payment_is_credited_once() {
    let servers = Servers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_file(dir.path(), "acme");
    let config = config.to_str().unwrap();
    let (_ledger, url, fake) =
        serve_with_fake_razorpay_and(&servers, &[("LEDGER_CONFIG", config)]).await;
    admin_post(&url, "/v1/accounts", json!({"account_id": "acme"})).await;
    let out = browse(
        "payments",
        &[
            ("LEDGER_URL", url.clone()),
            ("ACCOUNT", "acme".into()),
            ("CONSOLE_TOKEN", CONSOLE_TOKEN.into()),
            ("FAKE_URL", fake.clone()),
        ],
    )
    .await;
    assert!(out.contains("{\"total\":200}"), "{out}");
    // Eight dialogs (five methods, a failed payment retried, one credited
    // by the webhook alone, a double click): eight orders at Razorpay,
    // eight top-ups, each credited once.
    let (key_id, key_secret, _) = FAKE_RAZORPAY;
    let orders: Value = reqwest::Client::new()
        .get(format!("{fake}/v1/orders"))
        .basic_auth(key_id, Some(key_secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orders["count"], 8, "{orders}");
    let db = servers.db().await;
    let statuses = wait_for(Duration::from_secs(10), || {
        let db = &db;
        async move {
            let rows = db
                .query(
                    "SELECT status, count(*) FROM ledger.topups WHERE account_id = 'acme' \
                     GROUP BY status",
                    &[],
                )
                .await
                .ok()?;
            let v: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            (v == [("credited".to_owned(), 8)]).then_some(v)
        }
    })
    .await;
    assert_eq!(statuses, [("credited".to_owned(), 8)]);
    let granted: i64 = db
        .query_one(
            "SELECT count(*) FROM ledger.credit_history \
             WHERE account_id = 'acme' AND kind = 'credits_granted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(granted, 8, "one grant per top-up");
    let b = admin_get(&url, "/v1/accounts/acme/balances").await;
    assert_eq!(
        (
            &b["buckets"]["general"],
            &b["buckets"]["sms"],
            &b["buckets"]["email"]
        ),
        (&json!("150"), &json!("25"), &json!("25")),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_pages_and_csv_show_what_the_api_holds_and_no_other_account() {
    let servers = Servers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_file(dir.path(), "hist");
    let (_ledger, url) = serve_ledger(
        &servers,
        "all",
        &[("LEDGER_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let client = servers.client().await;
    funded(&client, "hist", "500").await;
    funded(&client, "other", "5").await;
    let r = cmd(
        &client,
        "grant",
        json!({"idempotency_key": "g-sms", "account_id": "hist", "bucket": "sms",
            "credits": "100", "source": "promotion"}),
    )
    .await;
    assert!(code(&r).is_none(), "{r}");
    for i in 0..30 {
        for service in ["email", "sms"] {
            let r = cmd(
                &client,
                "consume",
                json!({"idempotency_key": format!("{service}-{i}"), "account_id": "hist",
                    "service": service, "quantity": 1, "credits": "0.5"}),
            )
            .await;
            assert!(code(&r).is_none(), "{r}");
        }
    }
    // The API is the oracle: what the pages show must be what it holds.
    let all = wait_for(Duration::from_secs(10), || async {
        let n = history_rows(&url, "hist", "").await;
        (n >= 62).then_some(n)
    })
    .await;
    let today = chrono::Utc::now().date_naive();
    let expected = json!({
        "all": all,
        "sms": history_rows(&url, "hist", "service=sms").await,
        "email_consumed": history_rows(&url, "hist", "service=email&kind=credits_consumed").await,
        "granted": history_rows(&url, "hist", "kind=credits_granted").await,
        "page_size": 50,
        "today": today.to_string(),
        "tomorrow": today.succ_opt().unwrap().to_string(),
        "yesterday": today.pred_opt().unwrap().to_string(),
    });
    assert_eq!(expected["email_consumed"], 30, "{expected}");
    browse(
        "history",
        &[
            ("LEDGER_URL", url.clone()),
            ("ACCOUNT", "hist".into()),
            ("OTHER_ACCOUNT", "other".into()),
            ("CONSOLE_TOKEN", CONSOLE_TOKEN.into()),
            ("EXPECTED", expected.to_string()),
        ],
    )
    .await;
    // The alerts the page set are in the log: set, fired once, removed.
    let kinds: Vec<String> = log_of(&client, "hist")
        .await
        .iter()
        .filter_map(|e| {
            let v = serde_json::to_value(e).unwrap();
            match v["type"].as_str() {
                Some("alert_set") => Some(format!(
                    "set {} {}",
                    v["data"]["service"].as_str().unwrap_or("total"),
                    v["data"]["threshold"].as_str().unwrap_or("none")
                )),
                Some("balance_alert") => Some(format!("fired {}", v["data"]["state"])),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "set total 1000",
            "fired \"low\"",
            "set sms 10",
            "set total none"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_shows_a_stuck_top_up_and_reconcile_now_completes_it() {
    let servers = Servers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_file(dir.path(), "acme");
    let config = config.to_str().unwrap();
    // The poller would look only in an hour; anything unpaid is stuck at once.
    let (_ledger, url, fake) = serve_with_fake_razorpay_and(
        &servers,
        &[
            ("LEDGER_CONFIG", config),
            ("LEDGER_RECONCILE_FIRST_S", "3600"),
            ("LEDGER_OPS_STUCK_AFTER_S", "0"),
        ],
    )
    .await;
    let client = servers.client().await;
    funded(&client, "acme", "10").await;
    for (i, service) in ["email", "sms", "email"].iter().enumerate() {
        cmd(
            &client,
            "consume",
            json!({"idempotency_key": format!("u{i}"), "account_id": "acme",
                "service": service, "quantity": 1, "credits": "1"}),
        )
        .await;
    }
    // A refusal, for the refusal rate.
    cmd(
        &client,
        "consume",
        json!({"idempotency_key": "too-much", "account_id": "acme",
            "service": "sms", "quantity": 1, "credits": "1000"}),
    )
    .await;
    let topup = admin_post(
        &url,
        "/v1/accounts/acme/topups",
        json!({"amount_usd": "25.00", "phone": "+919876543210"}),
    )
    .await;
    let id = topup["topup_id"].as_str().unwrap().to_owned();
    let order = topup["razorpay"]["order_id"].as_str().unwrap();
    // Paid, but Razorpay's webhooks never arrive.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{fake}/_fake/webhooks/mode"))
        .json(&json!({"drop": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .post(format!("{fake}/_fake/orders/{order}/pay"))
        .json(&json!({"method": "upi"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let db = servers.db().await;
    wait_for(Duration::from_secs(10), || {
        let (db, id) = (&db, &id);
        async move {
            let row = db
                .query_opt(
                    "SELECT status FROM ledger.topups WHERE topup_id = $1::text::uuid",
                    &[id],
                )
                .await
                .ok()??;
            (row.get::<_, String>(0) == "awaiting_payment").then_some(())
        }
    })
    .await;
    browse(
        "ops",
        &[
            ("LEDGER_URL", url.clone()),
            ("OPS_TOKEN", OPS_TOKEN.into()),
            ("CONSOLE_TOKEN", CONSOLE_TOKEN.into()),
            ("STUCK_TOPUP", id.clone()),
            ("ALERT_ACCOUNT", "acme".into()),
        ],
    )
    .await;
    let t = admin_get(&url, &format!("/v1/topups/{id}")).await;
    assert_eq!(t["status"], "credited", "{t}");
    // The alert the page set is in the log, set by the operator.
    let set: Vec<Value> = log_of(&client, "acme")
        .await
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|v| v["type"] == "alert_set")
        .collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0]["data"]["service"], "sms");
    assert_eq!(set[0]["data"]["threshold"], "5");
    assert_eq!(set[0]["actor"], "operator:ops", "{}", set[0]);
}
