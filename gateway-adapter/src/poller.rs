//! Reconciliation: open top-ups are polled on the schedule of
//! [`Schedule`](crate::reconcile::Schedule), so a top-up
//! whose webhooks never arrive still completes, late authorisations
//! included. Several gateway processes may poll together: each claims due
//! rows with `FOR UPDATE SKIP LOCKED` and a lease.

use std::time::Duration;

use ledger_schemas::Id;
use tokio_util::sync::CancellationToken;

use crate::service::{Gateway, Hints};

/// Top-ups claimed per round.
const CLAIM_MAX: i64 = 32;
/// A claimed top-up is not handed to another poller for this long.
const LEASE: Duration = Duration::from_secs(300);

/// Polls until `shutdown`.
pub async fn run(gateway: Gateway, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tick = gateway.settings().tick;
    loop {
        let busy = match round(&gateway).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation round failed");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(tick) => {}
            }
        } else if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Claims the due top-ups and syncs each; how many were due.
pub async fn round(gateway: &Gateway) -> anyhow::Result<usize> {
    let due = {
        let conn = gateway.pool().get().await?;
        conn.query(
            "UPDATE ledger_cmd.topup_polls SET next_poll_at = now() + $1 * interval '1 second' \
             WHERE topup_id IN (SELECT topup_id FROM ledger_cmd.topup_polls \
                 WHERE next_poll_at <= now() ORDER BY next_poll_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING topup_id, attempts",
            &[&LEASE.as_secs_f64(), &CLAIM_MAX],
        )
        .await?
    };
    let n = due.len();
    for row in due {
        let (uuid, attempts): (uuid::Uuid, i32) = (row.get(0), row.get(1));
        let Ok(id) = Id::try_from(uuid) else {
            continue;
        };
        let result = gateway.sync(id, &Hints::default(), "reconcile").await;
        let (status, error) = match &result {
            Ok(Some(t)) => (Some(t.status().as_str()), None),
            Ok(None) => (None, Some("no such top-up in the log".to_owned())),
            Err(e) => (None, Some(e.to_string())),
        };
        if let Some(e) = &error {
            gateway.metrics().topup_syncs_failed.inc();
            tracing::warn!(topup_id = %id, error = %e, "reconciliation failed; polling again later");
        }
        let next = attempts.saturating_add(1);
        let after = gateway
            .settings()
            .schedule
            .due_after(next as u32)
            .map(|d| d.as_secs_f64());
        let conn = gateway.pool().get().await?;
        conn.execute(
            "UPDATE ledger_cmd.topup_polls SET attempts = $2, \
             next_poll_at = CASE WHEN $3::float8 IS NULL THEN NULL \
                 ELSE greatest(created_at + $3 * interval '1 second', now()) END, \
             last_status = coalesce($4, last_status), last_error = $5, updated_at = now() \
             WHERE topup_id = $1",
            &[&uuid, &next, &after, &status, &error],
        )
        .await?;
    }
    Ok(n)
}
