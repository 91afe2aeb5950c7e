//! Credit History: newest first, filtered by service, kind and dates,
//! in keyset pages (the API's cursors), and as a CSV download of
//! everything the filters select (at most `limits.history_csv_rows_max`
//! rows).

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use ledger_projections::query::{self, HistoryFilter};
use ledger_schemas::AccountId;
use ledger_schemas::views::HistoryPage;
use maud::html;
use serde::{Deserialize, Serialize};

use crate::Pages;
use crate::billing::account_for;
use crate::format::{credits, signed_credits};
use crate::layout::{self, Nav};
use crate::session::ConsoleSession;

/// The kinds of event that move credits, as the history names them.
pub const KINDS: &[(&str, &str)] = &[
    ("credits_granted", "Credits added"),
    ("credits_consumed", "Used"),
    ("credits_reserved", "Reserved"),
    ("reservation_captured", "Reservation used"),
    ("reservation_released", "Reservation released"),
    ("credits_transferred", "Moved between buckets"),
    ("credits_reversed", "Reversed (refund)"),
    ("credits_adjusted", "Adjusted"),
];

fn kind_label(kind: &str) -> &str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, l)| *l)
        .unwrap_or(kind)
}

pub fn routes() -> axum::Router<Pages> {
    axum::Router::new()
        .route("/console/accounts/{account}/history", get(page))
        .route("/console/accounts/{account}/history.csv", get(csv_download))
}

/// The filter form's fields, as the browser sends them (empty = absent).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
struct Params {
    service: String,
    kind: String,
    /// `YYYY-MM-DD`, from the start of that day (UTC).
    from: String,
    /// `YYYY-MM-DD`, to the end of that day (UTC).
    to: String,
    #[serde(skip_serializing)]
    cursor: String,
}

impl Params {
    fn filter(&self, pages: &Pages) -> Result<HistoryFilter, String> {
        let day = |s: &str, name: &str| -> Result<Option<NaiveDate>, String> {
            if s.is_empty() {
                return Ok(None);
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| format!("'{name}' must be a date (YYYY-MM-DD)"))
        };
        let start = |d: NaiveDate| -> DateTime<Utc> {
            d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
        };
        let service = (!self.service.is_empty()).then(|| self.service.clone());
        if let Some(s) = &service
            && !pages.inner.services.contains(s)
        {
            return Err(format!("'{s}' is not a service"));
        }
        let kind = (!self.kind.is_empty()).then(|| self.kind.clone());
        if let Some(k) = &kind
            && !KINDS.iter().any(|(x, _)| x == k)
        {
            return Err(format!("'{k}' is not a kind of movement"));
        }
        let from = day(&self.from, "from")?.map(start);
        let to = day(&self.to, "to")?.and_then(|d| d.succ_opt()).map(start);
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err("'from' must not be after 'to'".into());
        }
        Ok(HistoryFilter {
            service,
            kind,
            from,
            to,
        })
    }

    /// The account (if the session may see it) and the filters, or the
    /// page that refuses them.
    fn scope(
        &self,
        pages: &Pages,
        session: &crate::session::Session,
        raw: &str,
    ) -> Result<(AccountId, HistoryFilter), Response> {
        let account = account_for(session, raw)?;
        let filter = self
            .filter(pages)
            .map_err(|e| layout::refused(StatusCode::BAD_REQUEST, &e))?;
        Ok((account, filter))
    }

    /// The query string of these filters (no cursor).
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

async fn read_page(
    pages: &Pages,
    account: &AccountId,
    filter: HistoryFilter,
    limit: u32,
    cursor: Option<&str>,
) -> Result<HistoryPage, Response> {
    let client = pages.client("The history").await?;
    query::history(&**client, account.as_str(), filter, limit, cursor)
        .await
        .map_err(|e| match e {
            query::QueryError::Invalid { field, rule } => layout::refused(
                StatusCode::BAD_REQUEST,
                &format!("'{field}' is invalid: {rule}."),
            ),
            other => layout::unavailable("The history", &other.to_string()),
        })
}

async fn page(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path(raw): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, Response> {
    let (account, filter) = params.scope(&pages, &session, &raw)?;
    let cursor = (!params.cursor.is_empty()).then_some(params.cursor.as_str());
    let page = read_page(&pages, &account, filter, pages.inner.page_size, cursor).await?;
    let base = format!("/console/accounts/{account}/history");
    let q = params.query();
    let body = html! {
        section.card {
            h1 { "Credit History" }
            form.filters #history-filters method="get" action=(base) {
                label { "Service"
                    select name="service" {
                        option value="" { "All" }
                        @for s in &pages.inner.services {
                            option value=(s) selected[params.service == *s] { (s.to_uppercase()) }
                        }
                    }
                }
                label { "Kind"
                    select name="kind" {
                        option value="" { "All" }
                        @for (k, l) in KINDS {
                            option value=(k) selected[params.kind == *k] { (l) }
                        }
                    }
                }
                label { "From" input type="date" name="from" value=(params.from); }
                label { "To" input type="date" name="to" value=(params.to); }
                button.primary type="submit" { "Filter" }
                a.button href=(format!("{base}.csv?{q}")) download { "Download CSV" }
            }
            @if page.items.is_empty() {
                p.muted.empty { "No movements match." }
            } @else {
                div.table-wrap {
                    table #history {
                        thead { tr {
                            th { "Date" } th { "Kind" } th { "Service" } th { "Bucket" }
                            th.num { "Credits" } th.num { "Balance after" } th { "Reference" }
                        } }
                        tbody {
                            @for item in &page.items {
                                tr data-seq=(item.stream_seq) {
                                    td { time datetime=(item.occurred_at.to_string()) {
                                        (item.occurred_at.to_string().get(..16).unwrap_or_default().replace('T', " ")) } }
                                    td.kind { (kind_label(&item.kind)) }
                                    td { (item.service.as_deref().unwrap_or("—")) }
                                    td { (item.bucket) }
                                    td.num.delta.negative[item.credits_delta.is_negative()] { (signed_credits(item.credits_delta.get())) }
                                    td.num { (credits(item.balance_after.get())) }
                                    td.reference { (item.reference.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pages {
                @if cursor.is_some() {
                    a #first-page href=(format!("{base}?{q}")) { "← Newest" }
                }
                @if let Some(next) = &page.next_cursor {
                    a #next-page href=(format!("{base}?{q}&cursor={next}")) { "Older →" }
                }
            }
        }
    };
    let nav = Nav {
        session: &session,
        account: Some(account.as_str()),
        active: "history",
    };
    Ok(layout::page("Credit History", Some(nav), body).into_response())
}

async fn csv_download(
    State(pages): State<Pages>,
    ConsoleSession(session): ConsoleSession,
    Path(raw): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, Response> {
    let (account, filter) = params.scope(&pages, &session, &raw)?;
    let rows_max = pages.inner.csv_rows_max as usize;
    let mut out = csv::Writer::from_writer(Vec::new());
    let write = |out: &mut csv::Writer<Vec<u8>>, r: &[&str]| {
        out.write_record(r)
            .map_err(|e| layout::refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
    };
    write(
        &mut out,
        &[
            "occurred_at",
            "kind",
            "service",
            "bucket",
            "credits_delta",
            "balance_after",
            "reference",
            "topup_id",
            "stream_seq",
        ],
    )?;
    let mut rows = 0usize;
    let mut cursor: Option<String> = None;
    let mut truncated = false;
    loop {
        let page = read_page(&pages, &account, filter.clone(), 500, cursor.as_deref()).await?;
        for i in &page.items {
            if rows == rows_max {
                truncated = true;
                break;
            }
            write(
                &mut out,
                &[
                    &i.occurred_at.to_string(),
                    &i.kind,
                    i.service.as_deref().unwrap_or(""),
                    &i.bucket,
                    &i.credits_delta.get().to_string(),
                    &i.balance_after.get().to_string(),
                    i.reference.as_deref().unwrap_or(""),
                    i.topup_id.as_deref().unwrap_or(""),
                    &i.stream_seq.to_string(),
                ],
            )?;
            rows += 1;
        }
        match page.next_cursor {
            Some(next) if !truncated => cursor = Some(next),
            _ => break,
        }
    }
    let bytes = out
        .into_inner()
        .map_err(|e| layout::refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"credit-history-{account}.csv\""),
            ),
        ],
        bytes,
    )
        .into_response();
    if truncated {
        // Said in a header: a CSV has no place for it that every reader skips.
        response.headers_mut().insert(
            "x-ledger-truncated-at-rows",
            axum::http::HeaderValue::from(rows_max),
        );
    }
    Ok(response)
}
