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

/// `topup`: a fake Razorpay's URL and the key secret; without them the demo
/// grants promotional credits instead of buying them.
pub async fn run(
    url: &str,
    token: &str,
    account: &str,
    topup: Option<(String, String)>,
) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::new(),
        url: url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
    };
    println!("== Opening account {account}");
    api.post(
        "/v1/accounts",
        None,
        json!({"account_id": account, "display_name": "Demo Workspace"}),
    )
    .await?;

    match topup {
        Some((fake, key_secret)) => buy(&api, account, &fake, &key_secret).await?,
        None => {
            println!("== Granting 10 promotional credits to 'general' (no Razorpay configured)");
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
        }
    }

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

/// The console's top-up flow: an amount in USD, converted to INR, paid by UPI
/// through the (fake) Razorpay, the checkout callback, then the credits.
async fn buy(api: &Api, account: &str, fake: &str, key_secret: &str) -> anyhow::Result<()> {
    println!("== Top up: the customer enters USD 25.00 in Billing");
    let t = api
        .post(
            &format!("/v1/accounts/{account}/topups"),
            None,
            json!({"amount_usd": "25.00", "phone": "+919876543210"}),
        )
        .await?;
    let paise = t["amount_inr_paise"].as_i64().unwrap_or(0);
    println!(
        "   USD {} at {} INR/USD = INR {}.{:02}, for {} credits; Razorpay order {}",
        t["amount_usd"].as_str().unwrap_or(""),
        t["fx_rate"].as_str().unwrap_or(""),
        paise / 100,
        paise % 100,
        t["credits"].as_str().unwrap_or(""),
        t["razorpay"]["order_id"].as_str().unwrap_or("")
    );
    let topup_id = t["topup_id"].as_str().unwrap_or_default().to_owned();
    let order_id = t["razorpay"]["order_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("== The customer pays by UPI on Razorpay's page");
    let resp = api
        .http
        .post(format!(
            "{}/_fake/orders/{order_id}/pay",
            fake.trim_end_matches('/')
        ))
        .json(&json!({"method": "upi"}))
        .send()
        .await
        .context("paying through the fake Razorpay")?;
    let payment: Value = resp.json().await?;
    let payment_id = payment["id"].as_str().unwrap_or_default().to_owned();
    println!("== Checkout's success handler reports the payment");
    let signature = ledger_gateway_adapter::signature::sign(
        format!("{order_id}|{payment_id}").as_bytes(),
        key_secret,
    );
    let done = api
        .post(
            &format!("/v1/topups/{topup_id}/checkout"),
            None,
            json!({"razorpay_payment_id": payment_id, "razorpay_order_id": order_id,
                   "razorpay_signature": signature}),
        )
        .await?;
    println!(
        "   Payment successful. Transaction id {}, amount INR {}.{:02}, method {}, status {}",
        done["transaction_id"].as_str().unwrap_or(""),
        paise / 100,
        paise % 100,
        done["method"].as_str().unwrap_or(""),
        done["status"].as_str().unwrap_or("")
    );
    if done["status"] != "credited" {
        bail!("the top-up was not credited: {done}");
    }
    Ok(())
}
