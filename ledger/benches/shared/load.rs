//! Closed-loop load from concurrent clients, shared by both benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Panics on a reply holding the contract's error body.
pub fn assert_no_error(reply: &[u8]) {
    const ERROR: &[u8] = b"{\"error\":{\"code\"";
    if reply.windows(ERROR.len()).any(|w| w == ERROR) {
        panic!("{}", String::from_utf8_lossy(reply));
    }
}

/// Joins client tasks' latencies: (requests/s since `started`, sorted).
pub async fn gather_latencies(
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
    started: Instant,
) -> (f64, Vec<Duration>) {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// `clients` concurrent clients, each sending `per_client` requests with
/// `in_flight` awaiting replies (one connection's worth); `request(c, i)`
/// is client c's i-th (subject, body). Returns (requests/s, sorted
/// latencies). Every reply must start with `reply_starts` and hold no error.
pub async fn closed_loop(
    client: &async_nats::Client,
    reply_starts: &'static [u8],
    clients: usize,
    per_client: usize,
    in_flight: usize,
    request: impl Fn(usize, usize) -> (String, String) + Send + Sync + 'static,
) -> (f64, Vec<Duration>) {
    let request = Arc::new(request);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut pending = FuturesUnordered::new();
            for i in 0..per_client {
                let (subject, body) = request(c, i);
                let client = client.clone();
                pending.push(async move {
                    let t = Instant::now();
                    let r = client.request(subject, body.into()).await.expect("a reply");
                    assert!(r.payload.starts_with(reply_starts));
                    assert_no_error(&r.payload);
                    t.elapsed()
                });
                if pending.len() >= in_flight {
                    lat.push(pending.next().await.unwrap());
                }
            }
            while let Some(l) = pending.next().await {
                lat.push(l);
            }
            lat
        }));
    }
    gather_latencies(tasks, started).await
}
