//! The operations dashboard (`/ops/`, `ops` and `admin` tokens): where
//! each projector is and its lag (stopped projectors and quarantined
//! messages named), top-ups by status with the stuck ones and "reconcile
//! now", usage per day per service, and command outcomes with the refusal
//! rate. Charts are SVG drawn here: no chart library, no script.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use ledger_gateway_adapter::service::Hints;
use ledger_schemas::{AccountId, Id};
use maud::{Markup, html};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;

use crate::format::{credits, usd};
use crate::layout::{self, Nav};
use crate::session::OpsSession;
use crate::{Pages, alerts};

pub fn routes() -> axum::Router<Pages> {
    axum::Router::new()
        .route("/ops", get(|| async { Redirect::to("/ops/") }))
        .route("/ops/", get(dashboard))
        .route("/ops/topups/{topup}/reconcile", post(reconcile))
        .route("/ops/alerts", get(alerts_page))
        .route("/ops/alerts/{account}", post(set_alert))
}

/// Days of usage the chart shows.
const USAGE_DAYS: i32 = 14;
/// Stuck top-ups listed at most.
const STUCK_ROWS_MAX: i64 = 50;

/// Statuses a top-up leaves by itself; one that stays in them too long is
/// stuck.
const OPEN_STATUSES: &[&str] = &["quoted", "awaiting_payment", "captured", "failed"];
/// Statuses that need a person.
const ATTENTION_STATUSES: &[&str] = &["quarantined", "disputed"];

struct Stuck {
    topup_id: String,
    account_id: String,
    status: String,
    amount_usd: Option<Decimal>,
    age_min: i64,
}

struct Usage {
    day: NaiveDate,
    service: String,
    credits: Decimal,
}

struct Data {
    by_status: Vec<(String, i64)>,
    stuck: Vec<Stuck>,
    usage: Vec<Usage>,
}

async fn read(pages: &Pages) -> Result<Data, String> {
    let c = pages.inner.pool.get().await.map_err(|e| e.to_string())?;
    let by_status = c
        .query(
            "SELECT status, count(*) FROM ledger.topups GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let open: Vec<&str> = OPEN_STATUSES.to_vec();
    let attention: Vec<&str> = ATTENTION_STATUSES.to_vec();
    let stuck_s = pages.inner.stuck_after.as_secs_f64();
    let stuck = c
        .query(
            "SELECT topup_id::text, account_id, status, amount_usd, \
                    (extract(epoch FROM now() - created_at) / 60)::bigint \
             FROM ledger.topups \
             WHERE (status = ANY($1) AND created_at < now() - make_interval(secs => $2)) \
                OR status = ANY($3) \
             ORDER BY created_at LIMIT $4",
            &[&open, &stuck_s, &attention, &STUCK_ROWS_MAX],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| Stuck {
            topup_id: r.get(0),
            account_id: r.get(1),
            status: r.get(2),
            amount_usd: r.get(3),
            age_min: r.get(4),
        })
        .collect();
    let usage = c
        .query(
            "SELECT day, service, sum(credits) FROM ledger.usage_daily \
             WHERE day > current_date - $1::int GROUP BY day, service ORDER BY day, service",
            &[&USAGE_DAYS],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| Usage {
            day: r.get(0),
            service: r.get(1),
            credits: r.get(2),
        })
        .collect();
    Ok(Data {
        by_status,
        stuck,
        usage,
    })
}

/// `ledger_commands_total{command="…",outcome="…"} N` lines of this
/// process's metrics: (command, outcome) → count.
fn command_outcomes(exposition: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("ledger_commands_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        if let (Some(c), Some(o), Ok(v)) = (label("command"), label("outcome"), value.parse()) {
            out.insert((c, o), v);
        }
    }
    out
}

/// Horizontal bars, one per row, scaled to the largest.
fn bars(id: &str, rows: &[(String, f64, String)]) -> Markup {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let row_h = 26.0;
    let h = row_h * rows.len().max(1) as f64 + 4.0;
    html! {
        svg.chart #(id) viewBox=(format!("0 0 600 {h}")) role="img" aria-label=(id) {
            @for (i, (label, v, shown)) in rows.iter().enumerate() {
                @let y = 2.0 + i as f64 * row_h;
                text x="0" y=(y + 17.0) class="label" { (label) }
                rect x="190" y=(y + 3.0) height="18" width=(format!("{:.1}", 330.0 * v / max))
                    class=(format!("bar {}", label.replace(' ', "-"))) {}
                text x=(format!("{:.1}", 196.0 + 330.0 * v / max)) y=(y + 17.0) class="value" { (shown) }
            }
        }
    }
}

/// Usage per day: one group of columns per day, one column per service.
fn usage_chart(usage: &[Usage], services: &[String]) -> Markup {
    let mut days: BTreeMap<NaiveDate, BTreeMap<&str, Decimal>> = BTreeMap::new();
    for u in usage {
        *days
            .entry(u.day)
            .or_default()
            .entry(u.service.as_str())
            .or_default() += u.credits;
    }
    let max = days
        .values()
        .flat_map(|m| m.values())
        .filter_map(|d| d.to_f64())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let group_w = 600.0 / days.len().max(1) as f64;
    let col_w = (group_w - 8.0) / services.len().max(1) as f64;
    html! {
        svg.chart #usage-chart viewBox="0 0 600 240" role="img" aria-label="usage per day per service" {
            line x1="0" y1="200" x2="600" y2="200" class="axis" {}
            @for (i, (day, per)) in days.iter().enumerate() {
                @let x0 = i as f64 * group_w + 4.0;
                @for (j, s) in services.iter().enumerate() {
                    @let v = per.get(s.as_str()).and_then(|d| d.to_f64()).unwrap_or(0.0);
                    @let h = 190.0 * v / max;
                    rect class=(format!("bar service-{j}")) x=(format!("{:.1}", x0 + j as f64 * col_w))
                        y=(format!("{:.1}", 200.0 - h)) width=(format!("{:.1}", col_w.max(1.0)))
                        height=(format!("{h:.1}")) {
                        title { (s) " on " (day) ": " (credits(per.get(s.as_str()).copied().unwrap_or_default())) " credits" }
                    }
                }
                text x=(format!("{:.1}", x0)) y="218" class="label small" { (day.format("%d %b")) }
            }
        }
        p.legend {
            @for (j, s) in services.iter().enumerate() {
                span class=(format!("key service-{j}")) { (s) }
            }
        }
    }
}

async fn dashboard(State(pages): State<Pages>, OpsSession(session): OpsSession) -> Response {
    let data = match read(&pages).await {
        Ok(d) => d,
        Err(e) => return layout::unavailable("The read models", &e),
    };
    let projectors = ledger::api::reads::projection_status(&pages.inner.pool, &pages.inner.stream)
        .await
        .unwrap_or_default();
    let quarantined = projectors.first().map(|p| p.quarantined).unwrap_or(0);
    let outcomes = command_outcomes(&pages.inner.metrics.encode());
    let mut per_command: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for ((c, o), v) in &outcomes {
        let e = per_command.entry(c.as_str()).or_default();
        e.0 += v;
        if o == "refused" {
            e.1 += v;
        }
    }
    let total: f64 = per_command.values().map(|v| v.0).sum();
    let refused: f64 = per_command.values().map(|v| v.1).sum();
    let body = html! {
        section.card #projectors {
            h2 { "Projectors" }
            div.table-wrap { table {
                thead { tr { th { "Projector" } th.num { "Checkpoint" } th.num { "Stream head" } th.num { "Lag" } th { "State" } } }
                tbody {
                    @for p in &projectors {
                        tr.stopped[p.stopped.is_some()] data-projector=(p.projection) {
                            td { (p.projection) }
                            td.num { (p.checkpoint) }
                            td.num { (p.stream_head) }
                            td.num.lag { (p.lag) }
                            td { @match &p.stopped {
                                Some(s) => { strong.error { "stopped at " (s.stream_seq) } ": " (s.reason) },
                                None => { "running" },
                            } }
                        }
                    }
                }
            } }
            (bars("lag-chart", &projectors.iter().map(|p| (p.projection.clone(), p.lag as f64, format!("{} behind", p.lag))).collect::<Vec<_>>()))
            p #quarantined { strong { (quarantined) } " quarantined messages (on the stream, not written by the ledger; skipped by every reader)." }
        }
        section.card #topups {
            h2 { "Top-ups by status" }
            (bars("topup-chart", &data.by_status.iter().map(|(s, n)| (s.clone(), *n as f64, n.to_string())).collect::<Vec<_>>()))
            h3 { "Stuck or needing attention" }
            @if data.stuck.is_empty() {
                p.muted #no-stuck { "None." }
            } @else {
                div.table-wrap { table #stuck {
                    thead { tr { th { "Top-up" } th { "Account" } th { "Status" } th.num { "USD" } th.num { "Age" } th {} } }
                    tbody {
                        @for s in &data.stuck {
                            tr data-topup=(s.topup_id) {
                                td.mono { (s.topup_id) }
                                td { (s.account_id) }
                                td.status { (s.status) }
                                td.num { (s.amount_usd.map(usd).unwrap_or_default()) }
                                td.num { (s.age_min) " min" }
                                td {
                                    form method="post" action=(format!("/ops/topups/{}/reconcile", s.topup_id)) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button.primary type="submit" { "Reconcile now" }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section.card #usage {
            h2 { "Usage per day (credits, last " (USAGE_DAYS) " days)" }
            (usage_chart(&data.usage, &pages.inner.services))
        }
        section.card #commands {
            h2 { "Command outcomes (this process)" }
            p #refusal-rate { "Refusal rate: " strong { @if total > 0.0 { (format!("{:.1}%", 100.0 * refused / total)) } @else { "—" } }
                " of " (total) " commands." }
            (bars("outcome-chart", &outcomes.iter().map(|((c, o), v)| (format!("{c} {o}"), *v, v.to_string())).collect::<Vec<_>>()))
        }
    };
    let nav = Nav {
        session: &session,
        account: None,
        active: "ops",
    };
    layout::page("Operations", Some(nav), body).into_response()
}

#[derive(Debug, Deserialize)]
struct Lookup {
    account: Option<String>,
}

/// Balance alerts of any account: look one up by id, see its alerts and
/// set, change or remove one.
async fn alerts_page(
    State(pages): State<Pages>,
    OpsSession(session): OpsSession,
    Query(lookup): Query<Lookup>,
) -> Response {
    let wanted = lookup
        .account
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let account = wanted.map(AccountId::parse);
    let body = html! {
        section.card #alert-lookup {
            h2 { "Balance alerts" }
            form method="get" action="/ops/alerts" {
                label for="account" { "Account" }
                input #account name="account" autocomplete="off" required value=(wanted.unwrap_or_default());
                div.actions { button.primary #look-up type="submit" { "Show alerts" } }
            }
            @if let Some(Err(e)) = &account {
                p.error role="alert" { "That is not an account id: " (e) }
            }
        }
        @if let Some(Ok(account)) = &account {
            (alerts::section(&pages, &session, account, &format!("/ops/alerts/{account}")).await)
        }
    };
    let nav = Nav {
        session: &session,
        account: None,
        active: "alerts",
    };
    layout::page("Operations", Some(nav), body).into_response()
}

/// The alert page's form.
async fn set_alert(
    State(pages): State<Pages>,
    OpsSession(session): OpsSession,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Form(form): Form<alerts::AlertForm>,
) -> Result<Response, Response> {
    let account = AccountId::parse(&raw)
        .map_err(|_| layout::refused(StatusCode::NOT_FOUND, "There is no such account."))?;
    alerts::apply(&pages, &session, &account, &headers, &form).await?;
    let query = serde_urlencoded::to_string([("account", account.as_str())])
        .map_err(|e| layout::unavailable("The page", &e.to_string()))?;
    Ok(Redirect::to(&format!("/ops/alerts?{query}#alerts")).into_response())
}

#[derive(Debug, Deserialize)]
struct Csrf {
    csrf: String,
}

/// "Reconcile now": the top-up is brought up to date with Razorpay at
/// once, as the poller would.
async fn reconcile(
    State(pages): State<Pages>,
    OpsSession(session): OpsSession,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Result<Response, Response> {
    session.check_csrf(&headers, Some(&form.csrf))?;
    let id = Id::parse(&raw)
        .map_err(|_| layout::refused(StatusCode::NOT_FOUND, "There is no such top-up."))?;
    let cause = format!("ops:{}", session.principal.name);
    match pages
        .inner
        .gateway
        .sync(id, &Hints::default(), &cause)
        .await
    {
        Ok(Some(_)) => Ok(Redirect::to("/ops/#topups").into_response()),
        Ok(None) => Err(layout::refused(
            StatusCode::NOT_FOUND,
            "There is no such top-up.",
        )),
        Err(e) => Err(layout::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Reconciling failed: {}", e.body().error.message),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_the_exposition() {
        let text = "# TYPE ledger_commands counter\n\
            ledger_commands_total{command=\"consume\",outcome=\"accepted\"} 12\n\
            ledger_commands_total{command=\"consume\",outcome=\"refused\"} 3\n\
            ledger_append_seconds_sum 0.5\n";
        let o = command_outcomes(text);
        assert_eq!(o.len(), 2);
        assert_eq!(o[&("consume".into(), "refused".into())], 3.0);
    }
}
