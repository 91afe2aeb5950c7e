//! The console's sessions as deployed: two `ledger` processes behind one
//! address share `console_session_key`, so a session made on one is
//! honoured by the other; a process with another key honours none; a
//! cross-site request is refused however it is dressed.

use serde_json::json;

use crate::support::*;

const TOKEN: &str = "console-sessions-token";

/// The session cookie (`name=value`) a sign-in with `token` sets.
async fn sign_in(http: &reqwest::Client, url: &str, token: &str) -> Option<String> {
    let r = http
        .post(format!("{url}/console/sign-in"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "sign-in redirects");
    let cookie = r
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ledger_console="))?
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    Some(cookie.split(';').next().unwrap().to_owned())
}

/// The status of the billing page for `account` with `cookie`.
async fn billing(http: &reqwest::Client, url: &str, cookie: &str, account: &str) -> u16 {
    http.get(format!("{url}/console/accounts/{account}"))
        .header(reqwest::header::COOKIE, cookie)
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_process_is_honoured_by_another_with_the_same_key_only() {
    let servers = Servers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledger.toml");
    std::fs::write(
        &config,
        format!(
            "[[tokens]]\nname = \"s-console\"\ntoken = \"{TOKEN}\"\nrole = \"console\"\n\
             accounts = [\"sess\"]\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let key = "a-session-key-of-at-least-thirty-two-bytes";
    let env = [
        ("LEDGER_CONFIG", config),
        ("LEDGER_CONSOLE_SESSION_KEY", key),
    ];
    let ((_a, a), (_b, b)) = tokio::join!(
        serve_ledger(&servers, "all", &env),
        serve_ledger(&servers, "projections", &env)
    );
    let other_key = [
        ("LEDGER_CONFIG", config),
        (
            "LEDGER_CONSOLE_SESSION_KEY",
            "another-key-of-at-least-thirty-two-bytes!",
        ),
    ];
    let (_c, c) = serve_ledger(&servers, "projections", &other_key).await;
    let operator = servers.client().await;
    funded(&operator, "sess", "3").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = sign_in(&http, &a, TOKEN).await.expect("a session cookie");
    wait_for(std::time::Duration::from_secs(10), || async {
        (billing(&http, &a, &cookie, "sess").await == 200).then_some(())
    })
    .await;
    assert_eq!(billing(&http, &b, &cookie, "sess").await, 200, "process B");
    // Another key: the cookie cannot be read; the visitor signs in again.
    assert_eq!(billing(&http, &c, &cookie, "sess").await, 303, "process C");
    // Another account's page: 403 on every process.
    assert_eq!(billing(&http, &b, &cookie, "other").await, 403);
    // A wrong token makes no session.
    let r = http
        .post(format!("{a}/console/sign-in"))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get(reqwest::header::SET_COOKIE).is_none());
    // A top-up from another site, even with the session's cookie: refused
    // (no nonce, or a foreign Origin).
    for origin in [None, Some("https://evil.example")] {
        let mut request = http
            .post(format!("{b}/console/accounts/sess/topups"))
            .header(reqwest::header::COOKIE, &cookie)
            .header("Idempotency-Key", "x-site")
            .json(&json!({"amount_usd": "5.00", "phone": "+919876543210"}));
        if let Some(o) = origin {
            request = request.header(reqwest::header::ORIGIN, o);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 403);
    }
    // The pages carry a policy that forbids inline script and framing.
    let r = http
        .get(format!("{a}/console/sign-in"))
        .send()
        .await
        .unwrap();
    let csp = r.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
}
