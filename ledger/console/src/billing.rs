//! Billing: My Credits, each service's credits, the Add Credits dialog
//! (a live quote, then Razorpay Checkout), and the top-up's confirmation,
//! which follows the top-up until it is credited.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use ledger::api::auth::Action;
use ledger::api::http::ApiError;
use ledger_gateway_adapter::error::GatewayError;
use ledger_schemas::views::{BalancesView, TopupView};
use ledger_schemas::{
    AccountId, CheckoutRequest, CreateTopupRequest, Id, TopupStatus, UsdAmount, decode_request,
};
use maud::{Markup, html};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::format::{credits, inr, usd};
use crate::layout::{self, Nav};
use crate::session::{ConsoleSession, Session};
use crate::{Pages, alerts};

pub fn routes() -> axum::Router<Pages> {
    axum::Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index))
        .route("/console/open", get(open))
        .route("/console/accounts/{account}", get(billing))
        .route("/console/accounts/{account}/quote", get(quote))
        .route("/console/accounts/{account}/topups", post(create))
        .route("/console/accounts/{account}/alerts", post(set_alert))
        .route(
            "/console/accounts/{account}/topups/{topup}",
            get(confirmation),
        )
        .route(
            "/console/accounts/{account}/topups/{topup}/checkout",
            post(checkout),
        )
}

/// The account a console page is about, if the session may see it: a
/// 404 page for an id that cannot be one, a 403 page for another's.
pub fn account_for(session: &Session, raw: &str) -> Result<AccountId, Response> {
    let account = AccountId::parse(raw)
        .map_err(|_| layout::refused(StatusCode::NOT_FOUND, "There is no such account."))?;
    session
        .principal
        .check(Action::ReadAccount, Some(&account))
        .map_err(|_| {
            layout::refused(
                StatusCode::FORBIDDEN,
                "You are signed in for another account: this one is not yours to see.",
            )
        })?;
    Ok(account)
}

async fn index(ConsoleSession(session): ConsoleSession) -> Response {
    let accounts = session.principal.accounts();
    if let [only] = accounts.as_slice() {
        return Redirect::to(&format!("/console/accounts/{only}")).into_response();
    }
    let body = html! {
        section.card.narrow {
            h1 { "Your accounts" }
            @if accounts.is_empty() {
                p.muted { "This token is not bound to accounts. Open one by its id:" }
                form method="get" action="/console/open" {
                    label for="account" { "Account id" }
                    input #account name="account" required;
                    button.primary type="submit" { "Open" }
                }
            }
            ul.accounts {
                @for a in &accounts {
                    li { a href=(format!("/console/accounts/{a}")) { (a) } }
                }
            }
        }
    };
    let nav = Nav {
        session: &session,
        account: None,
        active: "",
    };
    layout::page("Billing console", Some(nav), body).into_response()
}

#[derive(Debug, Deserialize)]
struct OpenParams {
    account: String,
}

/// An admin's way to an account's pages.
async fn open(Query(p): Query<OpenParams>) -> Redirect {
    let id = AccountId::parse(p.account.trim())
        .map(|a| a.to_string())
        .unwrap_or_default();
    Redirect::to(&format!("/console/accounts/{id}"))
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

/// My Credits: every bucket's balance less what is reserved (never below
/// zero: a debt is shown on its bucket).
fn spendable_total(v: &BalancesView) -> Decimal {
    let held: Decimal = v.buckets.values().map(|c| c.get()).sum();
    let reserved: Decimal = v.services.values().map(|s| dec(&s.reserved)).sum();
    (held - reserved).max(Decimal::ZERO)
}

/// "Credits for Email Services", "Credits for SMS Services".
pub(crate) fn service_title(service: &str) -> String {
    let name = if service.len() <= 3 {
        service.to_uppercase()
    } else {
        let mut c = service.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    format!("Credits for {name} Services")
}

async fn balances_view(pages: &Pages, account: &AccountId) -> Result<BalancesView, Response> {
    let client = pages.client("Balances").await?;
    let (_, view) = ledger_projections::query::balances(&**client, account, &pages.inner.services)
        .await
        .map_err(|e| layout::unavailable("Balances", &e.to_string()))?;
    view.ok_or_else(|| {
        layout::refused(
            StatusCode::NOT_FOUND,
            "This account has no credits yet: it is not known to the ledger.",
        )
    })
}

async fn billing(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path(raw): Path<String>,
) -> Response {
    let account = match account_for(&session, &raw) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let view = match balances_view(&pages, &account).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let may_top_up = session
        .principal
        .check(Action::TopUp, Some(&account))
        .is_ok();
    let settings = pages.inner.gateway.settings();
    let (usd_min, usd_max) = (settings.usd_min.get(), settings.usd_max.get());
    let amount_pattern = ledger_schemas::pattern::decimal_range(usd_min, usd_max, 2);
    let body = html! {
        section.card.total {
            h1 { "My Credits" }
            p.big #my-credits { (credits(spendable_total(&view))) }
            p.muted { "Spendable across all services, reservations held back." }
            @if may_top_up {
                button.primary #top-up type="button" { "Top up" }
            }
        }
        section.services {
            @for (name, s) in &view.services {
                article.card.service data-service=(name) {
                    h2 { (service_title(name)) }
                    p.big.spendable { (credits(dec(&s.spendable))) }
                    dl {
                        dt { "In the " (name) " bucket" }
                        dd.bucket { (credits(view.buckets.get(name.as_str()).map(|c| c.get()).unwrap_or_default())) }
                        dt { "General credits" }
                        dd.general { (credits(view.buckets.get("general").map(|c| c.get()).unwrap_or_default())) }
                        dt { "Reserved" }
                        dd.reserved { (credits(dec(&s.reserved))) }
                    }
                }
            }
        }
        (alerts::section(&pages, &session, &account, &format!("/console/accounts/{account}/alerts")).await)
        p.muted.as-of { "As of ledger position " (view.as_of_seq) ". "
            a href=(format!("/console/accounts/{account}/history")) { "See the credit history" } }
        @if may_top_up {
            (dialog(&pages, &session, &account, usd_min, usd_max, &amount_pattern))
            script src=(pages.inner.checkout_js) {}
        }
    };
    let nav = Nav {
        session: &session,
        account: Some(account.as_str()),
        active: "billing",
    };
    layout::page("Billing", Some(nav), body).into_response()
}

fn dialog(
    pages: &Pages,
    session: &Session,
    account: &AccountId,
    usd_min: Decimal,
    usd_max: Decimal,
    amount_pattern: &str,
) -> Markup {
    html! {
        dialog #add-credits
            data-account=(account)
            data-csrf=(session.csrf)
            data-merchant=(pages.inner.merchant)
            data-amount-rule=(format!("from {} to {}, with at most two decimals", usd(usd_min), usd(usd_max)))
            aria-labelledby="add-credits-title" {
            form #topup-form method="dialog" novalidate {
                h2 #add-credits-title { "Add Credits" }
                label for="amount" { "Amount" }
                div.money {
                    span.currency aria-hidden="true" { "$" }
                    input #amount name="amount_usd" inputmode="decimal" autocomplete="off"
                        required pattern=(amount_pattern) placeholder="25.00"
                        aria-describedby="amount-hint amount-error";
                    span.code { "USD" }
                }
                p.hint #amount-hint { "From " (usd(usd_min)) " to " (usd(usd_max)) ", at most two decimals." }
                p.error #amount-error role="alert" hidden {}
                div.quote #quote aria-live="polite" hidden {
                    p { "You pay " strong #quote-inr {} " for " strong #quote-credits {} " credits." }
                    p.muted { "Rate " span #quote-rate {} " INR per USD." }
                }
                label for="phone" { "Phone number" }
                input #phone name="phone" type="tel" autocomplete="tel" required
                    pattern="\\+?[0-9]{8,15}" placeholder="+919876543210";
                p.error #phone-error role="alert" hidden {}
                label for="bucket" { "Credits for" }
                select #bucket name="bucket" {
                    option value="general" { "All services" }
                    @for s in &pages.inner.services {
                        option value=(s) { (s.to_uppercase()) " only" }
                    }
                }
                p.status #pay-status role="status" {}
                div.actions {
                    button #cancel type="button" { "Cancel" }
                    button.primary #retry type="button" hidden { "Try again" }
                    button.primary #pay type="submit" { "Add Credits" }
                }
            }
        }
    }
}

/// The billing page's alert form.
async fn set_alert(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path(raw): Path<String>,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<alerts::AlertForm>,
) -> Result<Response, Response> {
    let account = account_for(&session, &raw)?;
    alerts::apply(&pages, &session, &account, &headers, &form).await?;
    Ok(Redirect::to(&format!("/console/accounts/{account}#alerts")).into_response())
}

#[derive(Debug, Deserialize)]
struct QuoteParams {
    amount_usd: String,
}

/// The dialog's live quote: what a top-up made now would charge and buy.
#[derive(Debug, Serialize)]
struct QuoteReply {
    amount_usd: String,
    amount_inr_paise: i64,
    inr: String,
    fx_rate: String,
    credits: String,
}

async fn quote(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path(raw): Path<String>,
    Query(q): Query<QuoteParams>,
) -> Result<Response, Response> {
    account_for(&session, &raw)?;
    let amount = UsdAmount::parse(&q.amount_usd).map_err(|e| {
        ApiError::from(GatewayError::Invalid {
            field: "amount_usd",
            message: format!("amount_usd {}.", e.rule),
            rule: "decimal",
        })
        .into_response()
    })?;
    let p = pages
        .inner
        .gateway
        .preview(amount)
        .map_err(|e| ApiError::from(e).into_response())?;
    Ok(Json(QuoteReply {
        amount_usd: amount.get().to_string(),
        amount_inr_paise: p.amount_inr_paise,
        inr: inr(p.amount_inr_paise),
        fx_rate: p.fx_rate,
        credits: credits(p.credits.get()),
    })
    .into_response())
}

async fn create(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Response> {
    let account = account_for(&session, &raw)?;
    session.check_csrf(&headers, None)?;
    session
        .principal
        .check(Action::TopUp, Some(&account))
        .map_err(|e| ApiError(e).into_response())?;
    // The dialog makes its key when it opens: a double click, or a retry
    // after a lost answer, sends the same key and gets the same top-up.
    let key = ledger::api::http::idempotency_key(&headers)
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| {
            ApiError(Box::new(ledger_schemas::ErrorBody::new(
                ledger_schemas::ErrorCode::InvalidRequest,
                "The console's top-up needs its Idempotency-Key.",
            )))
            .into_response()
        })?;
    let request: CreateTopupRequest =
        decode_request(&body).map_err(|e| ApiError(e).into_response())?;
    let view = pages
        .inner
        .gateway
        .create(&account, request, &session.principal.actor(), Some(key))
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn checkout(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path((raw, topup)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Response> {
    let account = account_for(&session, &raw)?;
    session.check_csrf(&headers, None)?;
    let api = |e: Box<ledger_schemas::ErrorBody>| ApiError(e).into_response();
    let request: CheckoutRequest = decode_request(&body).map_err(api)?;
    let t = load(&pages, &account, &topup).await?;
    let view = pages
        .inner
        .gateway
        .checkout(&t, &request)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    Ok(Json(view).into_response())
}

/// The account's top-up `raw`, from its own log; 404 for another's.
async fn load(
    pages: &Pages,
    account: &AccountId,
    raw: &str,
) -> Result<ledger_gateway_adapter::topup::Topup, Response> {
    let missing = || layout::refused(StatusCode::NOT_FOUND, "There is no such top-up.");
    let id = Id::parse(raw).map_err(|_| missing())?;
    let t = pages
        .inner
        .gateway
        .get(id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .ok_or_else(missing)?;
    if &t.account != account {
        return Err(missing());
    }
    Ok(t)
}

#[derive(Debug, Deserialize)]
struct ConfirmationParams {
    #[serde(default)]
    partial: bool,
}

/// A top-up's confirmation. While it is not final the status section asks
/// the page's script to fetch it again (`?partial=true`) until it is.
async fn confirmation(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path((raw, topup)): Path<(String, String)>,
    Query(params): Query<ConfirmationParams>,
) -> Result<Response, Response> {
    let account = account_for(&session, &raw)?;
    let t = load(&pages, &account, &topup).await?;
    let view = pages.inner.gateway.view(&t);
    let status = status_section(&pages, &account, &view).await;
    if params.partial {
        return Ok(axum::response::Html(status.into_string()).into_response());
    }
    let body = html! {
        (status)
        p { a href=(format!("/console/accounts/{account}")) { "Back to billing" } }
    };
    let nav = Nav {
        session: &session,
        account: Some(account.as_str()),
        active: "billing",
    };
    Ok(layout::page("Top-up", Some(nav), body).into_response())
}

fn final_status(s: TopupStatus) -> bool {
    !matches!(
        s,
        TopupStatus::Quoted
            | TopupStatus::AwaitingPayment
            | TopupStatus::Captured
            | TopupStatus::Failed
    )
}

async fn status_section(pages: &Pages, account: &AccountId, v: &TopupView) -> Markup {
    let poll = (!final_status(v.status)).then(|| {
        format!(
            "/console/accounts/{account}/topups/{}?partial=true",
            v.topup_id
        )
    });
    // The balance from the command service: it includes the grant the
    // moment the top-up is credited, before any read model has it.
    let balance = match v.status {
        TopupStatus::Credited | TopupStatus::Refunded | TopupStatus::Disputed => {
            pages.inner.gateway.balance(account).await.ok().map(|b| {
                let bucket = b
                    .balances
                    .iter()
                    .find(|(k, _)| k.as_str() == v.bucket)
                    .map(|(_, c)| c.get())
                    .unwrap_or_default();
                let reserved: Decimal = b.reserved.values().map(|c| c.get()).sum();
                let total: Decimal = b.balances.values().map(|c| c.get()).sum();
                (bucket, (total - reserved).max(Decimal::ZERO))
            })
        }
        _ => None,
    };
    html! {
        section.card.confirmation #topup-status data-status=(v.status.as_str()) data-poll=[poll] {
            @match v.status {
                TopupStatus::Credited => {
                    h1 { "Credits added" }
                    p.lead { (credits(v.credits.get())) " credits were added to "
                        @if v.bucket == "general" { "your account" } @else { "your " (v.bucket) " credits" } "." }
                },
                TopupStatus::Failed => {
                    h1 { "Payment failed" }
                    p.lead { "The last payment did not go through. You can pay again from the billing page's dialog; you will be charged once." }
                },
                TopupStatus::Abandoned => {
                    h1 { "No payment received" }
                    p.lead { "We did not see a payment for this top-up. If you paid, it will still be credited when Razorpay confirms it." }
                },
                TopupStatus::Quarantined => {
                    h1 { "Payment under review" }
                    p.lead { "The payment did not match the order; our team will look at it. No credits were added yet." }
                },
                TopupStatus::Refunded => { h1 { "Refunded" } },
                TopupStatus::Disputed => { h1 { "Payment disputed" } },
                _ => {
                    h1 { "Confirming your payment…" }
                    p.lead.pending { "Waiting for Razorpay to confirm the payment. This page updates by itself." }
                },
            }
            dl.receipt {
                dt { "Transaction id" }
                dd #transaction-id { (v.transaction_id.as_deref().unwrap_or("—")) }
                dt { "Amount" }
                dd #amount-usd { (usd(v.amount_usd.get())) }
                dt { "Charged" }
                dd #amount-inr { (inr(v.amount_inr_paise)) }
                dt { "Method" }
                dd #method { (v.method.as_deref().map(method_name).unwrap_or("—")) }
                dt { "Credits" }
                dd #credits { (credits(v.credits.get())) }
                dt { "Status" }
                dd #status { (v.status.as_str()) }
                @if let Some((bucket, total)) = balance {
                    dt { "New balance" }
                    dd #new-balance { (credits(total)) " credits in all"
                        @if v.bucket != "general" { " (" (credits(bucket)) " for " (v.bucket) ")" } }
                }
            }
        }
    }
}

fn method_name(m: &str) -> &str {
    match m {
        "upi" => "UPI",
        "card" => "Card",
        "netbanking" => "Netbanking",
        "wallet" => "Wallet",
        other => other,
    }
}
