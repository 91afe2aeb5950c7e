//! Sign-in, sessions and cross-site request checks.
//!
//! A token is exchanged once, at sign-in, for a cookie that is encrypted
//! and authenticated (AES-GCM, `axum-extra`'s private cookies) and holds
//! the token's digest, the expiry and a CSRF nonce; `HttpOnly`,
//! `SameSite=Strict`, `Secure` when the ledger serves HTTPS, scoped to
//! `/console` or `/ops`. Each request looks the digest up in the configured
//! tokens, so a token removed from the configuration ends its sessions.
//! Every state-changing request must carry the session's nonce (a form
//! field or the `X-CSRF-Token` header) and come from this origin.

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::PrivateCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use ledger::api::auth::{Principal, digest};
use ledger::config::Role;
use serde::Deserialize;

use crate::Pages;
use crate::layout;

/// Which pages a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Console,
    Ops,
}

impl Area {
    fn cookie(self) -> &'static str {
        match self {
            Area::Console => "ledger_console",
            Area::Ops => "ledger_ops",
        }
    }

    pub fn root(self) -> &'static str {
        match self {
            Area::Console => "/console",
            Area::Ops => "/ops",
        }
    }

    fn sign_in(self) -> String {
        format!("{}/sign-in", self.root())
    }

    fn admits(self, role: Role) -> bool {
        match self {
            Area::Console => matches!(role, Role::Console | Role::Admin),
            Area::Ops => matches!(role, Role::Ops | Role::Admin),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Area::Console => "Billing console",
            Area::Ops => "Operations",
        }
    }
}

/// A signed-in visitor.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub area: Area,
}

impl Session {
    /// Refuses a state-changing request without this session's nonce.
    pub fn check_csrf(&self, headers: &HeaderMap, field: Option<&str>) -> Result<(), Response> {
        let given = field.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        if given != Some(self.csrf.as_str()) || !same_origin(headers) {
            return Err(layout::refused(
                StatusCode::FORBIDDEN,
                "This request did not come from this page. Reload the page and try again.",
            ));
        }
        Ok(())
    }
}

/// `Origin` (or `Sec-Fetch-Site`) says the request came from this site, or
/// the browser sent neither.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return true;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The session of `area` in the request's cookies, if any and valid.
async fn session_of(parts: &mut Parts, pages: &Pages, area: Area) -> Option<Session> {
    let jar = PrivateCookieJar::<Key>::from_request_parts(parts, pages)
        .await
        .ok()?;
    let value = jar.get(area.cookie())?.value().to_owned();
    let mut fields = value.splitn(3, '.');
    let (d, exp, csrf) = (fields.next()?, fields.next()?, fields.next()?);
    if exp.parse::<u64>().ok()? <= now_s() {
        return None;
    }
    let d: [u8; 32] = hex::decode(d).ok()?.try_into().ok()?;
    let principal = pages.inner.tokens.by_digest(&d)?;
    area.admits(principal.role).then(|| Session {
        principal,
        csrf: csrf.to_owned(),
        area,
    })
}

/// A console session; without one, pages redirect to sign-in.
#[derive(Debug)]
pub struct ConsoleSession(pub Session);

/// An operations session.
#[derive(Debug)]
pub struct OpsSession(pub Session);

impl FromRequestParts<Pages> for ConsoleSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, pages: &Pages) -> Result<Self, Response> {
        match session_of(parts, pages, Area::Console).await {
            Some(s) => Ok(ConsoleSession(s)),
            None => Err(signed_out(parts, Area::Console)),
        }
    }
}

impl FromRequestParts<Pages> for OpsSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, pages: &Pages) -> Result<Self, Response> {
        match session_of(parts, pages, Area::Ops).await {
            Some(s) => Ok(OpsSession(s)),
            None => Err(signed_out(parts, Area::Ops)),
        }
    }
}

/// A page asks the visitor to sign in; a script's request gets 401.
fn signed_out(parts: &Parts, area: Area) -> Response {
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if parts.method == axum::http::Method::GET && wants_html {
        Redirect::to(&area.sign_in()).into_response()
    } else {
        layout::refused(
            StatusCode::UNAUTHORIZED,
            "Sign in again: the session ended.",
        )
    }
}

pub fn routes() -> axum::Router<Pages> {
    axum::Router::new()
        .route(
            "/console/sign-in",
            get(|| sign_in_page(Area::Console, None)).post(
                |s: State<Pages>, j: PrivateCookieJar, h: HeaderMap, f: Form<SignIn>| {
                    sign_in(s, j, h, f, Area::Console)
                },
            ),
        )
        .route(
            "/ops/sign-in",
            get(|| sign_in_page(Area::Ops, None)).post(
                |s: State<Pages>, j: PrivateCookieJar, h: HeaderMap, f: Form<SignIn>| {
                    sign_in(s, j, h, f, Area::Ops)
                },
            ),
        )
        .route(
            "/console/sign-out",
            axum::routing::post(|j: PrivateCookieJar, h: HeaderMap, f: Form<SignOut>| {
                sign_out(j, h, f, Area::Console)
            }),
        )
        .route(
            "/ops/sign-out",
            axum::routing::post(|j: PrivateCookieJar, h: HeaderMap, f: Form<SignOut>| {
                sign_out(j, h, f, Area::Ops)
            }),
        )
}

async fn sign_in_page(area: Area, error: Option<&str>) -> Response {
    let body = maud::html! {
        section.card.narrow {
            h1 { "Sign in" }
            p.muted { "Sign in with the access token your platform gave you." }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form #sign-in method="post" action=(area.sign_in()) {
                label for="token" { "Access token" }
                input #token type="password" name="token" autocomplete="off" required
                    maxlength="512";
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (status, layout::page(area.title(), None, body)).into_response()
}

#[derive(Debug, Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(pages): State<Pages>,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
    area: Area,
) -> Response {
    if !same_origin(&headers) {
        return layout::refused(StatusCode::FORBIDDEN, "Sign in from this site's page.");
    }
    let d = digest(form.token.trim());
    let Some(principal) = pages.inner.tokens.by_digest(&d) else {
        return sign_in_page(area, Some("That token is not valid.")).await;
    };
    if !area.admits(principal.role) {
        return sign_in_page(area, Some("That token may not use these pages.")).await;
    }
    let ttl = pages.inner.session_ttl;
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let value = format!("{}.{}.{csrf}", hex::encode(d), now_s() + ttl.as_secs());
    let cookie = Cookie::build((area.cookie(), value))
        .path(area.root())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(pages.inner.secure_cookies)
        .max_age(cookie_duration(ttl))
        .build();
    (jar.add(cookie), Redirect::to(&format!("{}/", area.root()))).into_response()
}

fn cookie_duration(d: std::time::Duration) -> time::Duration {
    time::Duration::seconds(d.as_secs() as i64)
}

#[derive(Debug, Deserialize)]
struct SignOut {
    csrf: String,
}

async fn sign_out(
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
    area: Area,
) -> Response {
    // Only this site's page signs a visitor out (the nonce is in the
    // cookie, which only the page's own form echoes).
    let current = jar
        .get(area.cookie())
        .map(|c| c.value().rsplit('.').next().unwrap_or_default().to_owned());
    if current.as_deref() != Some(form.csrf.as_str()) || !same_origin(&headers) {
        return Redirect::to(&area.sign_in()).into_response();
    }
    let gone = Cookie::build((area.cookie(), "")).path(area.root()).build();
    (jar.remove(gone), Redirect::to(&area.sign_in())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert!(same_origin(&headers(&[])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
    }
}
