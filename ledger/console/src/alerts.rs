//! Low-balance alerts on the pages: the customer's billing page and the
//! operators' alert page list an account's alerts (where each balance
//! stands, fresh from the command service) and set, change or remove one
//! through the `set_alert` command, as the signed-in principal.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger::api::auth::Action;
use ledger::api::http::ApiError;
use ledger_gateway_adapter::error::GatewayError;
use ledger_schemas::{AccountId, Id, decode_request};
use maud::{Markup, html};
use serde::Deserialize;

use crate::Pages;
use crate::billing::service_title;
use crate::format::credits;
use crate::layout;
use crate::session::{Area, Session};

/// What an alert watches, as the pages name it.
fn scope_title(service: Option<&str>) -> String {
    match service {
        None => "All services (total)".into(),
        Some(s) => service_title(s),
    }
}

/// The account's alerts, and (when the session may set them) a form that
/// posts to `action`.
pub async fn section(
    pages: &Pages,
    session: &Session,
    account: &AccountId,
    action: &str,
) -> Markup {
    let may = session
        .principal
        .check(Action::Alert, Some(account))
        .is_ok();
    let alerts = pages.inner.gateway.balance(account).await.map(|b| b.alerts);
    let unknown = matches!(alerts, Err(GatewayError::UnknownAccount(_)));
    html! {
        section.card #alerts data-account=(account) {
            h2 { "Low-balance alerts" }
            p.muted { "An alert fires once when the credits fall below its threshold and once when they are back; it goes to the alert webhook and to the bus, and shows on every usage reply meanwhile." }
            @match &alerts {
                Err(_) if unknown => {
                    p.error #no-account role="alert" { "There is no account " (account) "." }
                },
                Err(_) => p.muted { "Alerts cannot be read right now." },
                Ok(list) if list.is_empty() => p.muted #no-alerts { "No alert is set." },
                Ok(list) => div.table-wrap { table #alert-list {
                    thead { tr { th { "Credits of" } th.num { "Threshold" } th.num { "Now" } th { "State" } } }
                    tbody {
                        @for a in list {
                            tr data-scope=(a.service.as_ref().map_or("total", |s| s.as_str())) {
                                td { (scope_title(a.service.as_ref().map(|s| s.as_str()))) }
                                td.num.threshold { (credits(a.threshold.get())) }
                                td.num { (credits(a.spendable.get())) }
                                td.state { @if a.low { strong { "Below" } } @else { "Above" } }
                            }
                        }
                    }
                } },
            }
            @if may && !unknown {
                form #alert-form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="key" value=(Id::new_v7());
                    label for="alert-scope" { "Credits of" }
                    select #alert-scope name="scope" {
                        option value="total" { (scope_title(None)) }
                        @for s in &pages.inner.services {
                            option value=(s) { (scope_title(Some(s))) }
                        }
                    }
                    label for="alert-threshold" { "Threshold (empty removes the alert)" }
                    input #alert-threshold name="threshold" inputmode="decimal" autocomplete="off"
                        pattern="[0-9]{1,15}([.][0-9]{1,6})?" placeholder="100";
                    div.actions { button.primary #save-alert type="submit" { "Save alert" } }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AlertForm {
    csrf: String,
    /// The form's idempotency key (one per page shown: a resubmitted form
    /// sets the alert once).
    key: String,
    scope: String,
    threshold: String,
}

/// Sets, changes or removes the alert the form names, as the session's
/// principal: a refusal page when the nonce, the role or the values are
/// wrong, or the command service does not take it.
pub async fn apply(
    pages: &Pages,
    session: &Session,
    account: &AccountId,
    headers: &HeaderMap,
    form: &AlertForm,
) -> Result<(), Response> {
    session.check_csrf(headers, Some(&form.csrf))?;
    session
        .principal
        .check(Action::Alert, Some(account))
        .map_err(|e| ApiError(e).into_response())?;
    let area = match session.area {
        Area::Console => "console",
        Area::Ops => "ops",
    };
    let mut request = serde_json::json!({
        "idempotency_key": format!("{area}-alert:{}", form.key),
        "account_id": account,
    });
    if form.scope != "total" {
        request["service"] = serde_json::json!(form.scope);
    }
    if !form.threshold.trim().is_empty() {
        request["threshold"] = serde_json::json!(form.threshold.trim());
    }
    let request: ledger_schemas::SetAlertRequest = decode_request(request.to_string().as_bytes())
        .map_err(|e| {
        layout::refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("That alert cannot be set: {}", e.error.message),
        )
    })?;
    pages
        .inner
        .gateway
        .set_alert(&request, &session.principal.actor())
        .await
        .map_err(|e| {
            layout::refused(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The alert was not set: {}", e.body().error.message),
            )
        })?;
    Ok(())
}
