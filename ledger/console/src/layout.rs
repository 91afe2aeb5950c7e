//! The frame every page shares, and the refusal pages.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::session::{Area, Session};

/// The navigation of a signed-in page.
pub struct Nav<'a> {
    pub session: &'a Session,
    /// The account the console pages are about.
    pub account: Option<&'a str>,
    /// Which link is the current page.
    pub active: &'static str,
}

pub fn page(title: &str, nav: Option<Nav<'_>>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { (title) }
                    @if let Some(nav) = &nav {
                        nav {
                            @match (nav.session.area, nav.account) {
                                (Area::Console, Some(a)) => {
                                    a.link.active[nav.active == "billing"]
                                        href=(format!("/console/accounts/{a}")) { "Billing" }
                                    a.link.active[nav.active == "history"]
                                        href=(format!("/console/accounts/{a}/history")) { "Credit History" }
                                },
                                (Area::Ops, _) => {
                                    a.link.active[nav.active == "ops"] href="/ops/" { "Dashboard" }
                                    a.link.active[nav.active == "alerts"] href="/ops/alerts" { "Balance alerts" }
                                },
                                _ => {},
                            }
                        }
                        form.sign-out method="post" action=(format!("{}/sign-out", nav.session.area.root())) {
                            input type="hidden" name="csrf" value=(nav.session.csrf);
                            span.who { (nav.session.principal.name) }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// A page that says why a request was refused, with the status.
pub fn refused(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNAUTHORIZED => "Signed out",
        _ => "Something went wrong",
    };
    let body = html! {
        section.card.narrow.refused {
            h1 { (title) }
            p { (message) }
            p { a href="/console/" { "Back to the console" } }
        }
    };
    (status, page(title, None, body)).into_response()
}

/// A page saying `what` cannot be read right now, and why.
pub fn unavailable(what: &str, why: &str) -> Response {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{what} cannot be read right now ({why}). Try again in a moment."),
    )
}
