//! `ledger demo`: a short walk through the ledger against a running service,
//! over its HTTP API, printing what a customer and an operator would see.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {v}");
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {v}");
        }
        Ok(v)
    }
}

pub async fn run(url: &str, token: &str) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::new(),
        url: url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
    };
    let account = format!("demo-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    println!("== Opening account {account}");
    api.post(
        "/v1/accounts",
        None,
        json!({"account_id": account, "display_name": "Demo Workspace"}),
    )
    .await?;

    println!("== Granting 10 promotional credits to 'general' (top-ups arrive with the gateway)");
    let grant = api
        .post(
            "/v1/commands/grant",
            None,
            json!({"idempotency_key": format!("{account}-welcome"), "account_id": account,
                   "bucket": "general", "credits": "10", "source": "promotion",
                   "reason": "Welcome credits"}),
        )
        .await?;
    println!(
        "   event {} at stream seq {}",
        grant["event"]["event_id"], grant["stream_seq"]
    );

    println!("== An email service sends 120 emails, an SMS service 40 SMS");
    for (service, quantity, key) in [("email", 120, "mail-batch-1"), ("sms", 40, "sms-batch-1")] {
        let r = api
            .post(
                &format!("/v1/accounts/{account}/consumptions"),
                Some(key),
                json!({"service": service, "quantity": quantity}),
            )
            .await?;
        let d = &r["event"]["data"];
        println!(
            "   {service}: {quantity} x {} = {} credits, drawn {}",
            d["unit_price"], d["credits"], d["drawn"]
        );
    }
    println!("== The same SMS request again (same Idempotency-Key): no second charge");
    let again = api
        .post(
            &format!("/v1/accounts/{account}/consumptions"),
            Some("sms-batch-1"),
            json!({"service": "sms", "quantity": 40}),
        )
        .await?;
    println!(
        "   answered with the original event {}",
        again["event"]["event_id"]
    );

    let last_seq = again["stream_seq"].as_u64().unwrap_or(0);

    println!("== Balances (read model, once it reflects stream seq {last_seq})");
    let mut b = Value::Null;
    for _ in 0..100 {
        let path = format!("/v1/accounts/{account}/balances");
        b = api.get(&path).await.unwrap_or(Value::Null);
        if b["as_of_seq"].as_u64().unwrap_or(0) >= last_seq {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!("{}", serde_json::to_string_pretty(&b)?);

    println!("== Credit history, newest first");
    let h = api
        .get(&format!("/v1/accounts/{account}/history?limit=10"))
        .await?;
    for item in h["items"].as_array().into_iter().flatten() {
        let text = |k: &str| item[k].as_str().unwrap_or("").to_owned();
        println!(
            "   seq {:>4}  {:<18} {:<8} {:>8}  balance {}",
            item["stream_seq"],
            text("kind"),
            text("bucket"),
            text("credits_delta"),
            text("balance_after")
        );
    }
    Ok(())
}
