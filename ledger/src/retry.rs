//! Waiting out a server that is not ready yet.
//!
//! A JetStream cluster that has just formed (or restarted) may answer its
//! first stream and bucket requests late: a process starting beside it
//! tries again for a while instead of giving up on the first timeout, and
//! still fails, loudly, on a refusal that outlasts the wait (a
//! misconfiguration).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long start-up steps are retried.
pub const STARTUP_WAIT: Duration = Duration::from_secs(60);
const PAUSE: Duration = Duration::from_millis(500);

/// Runs `op` until it succeeds or `limit` has passed since the first try;
/// each failure is logged as `what`.
pub async fn patiently<T, E, F, Fut>(what: &str, limit: Duration, mut op: F) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < limit => {
                tracing::warn!(error = %e, "{what}: not yet; trying again");
                tokio::time::sleep(PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tries_until_it_works_and_gives_up_after_the_limit() {
        let mut n = 0;
        let r: Result<u32, String> = patiently("t", Duration::from_secs(10), || {
            n += 1;
            let n = n;
            async move { if n < 3 { Err("no".into()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r, Ok(3));
        let r: Result<(), String> =
            patiently("t", Duration::ZERO, || async { Err("never".to_owned()) }).await;
        assert_eq!(r, Err("never".into()));
    }
}
