//! Commands routed by account: `ledger.cmd.<name>.<account_id>`.
//!
//! nats-server maps those subjects onto `command_partitions` partition
//! subjects (`ledger.cmdp.<p>.<name>.<account_id>`, its `partition()`
//! subject mapping on the account id: deploy/nats/accounts.conf), so one
//! account's commands always land on the same partition. Each `ledger`
//! process serves the partitions it holds a lease on, in the key-value
//! bucket `LEDGER_PARTITIONS` (`p.<n>` → the holder's instance id, renewed
//! every third of `partition_lease_s`, gone when not renewed): an
//! account's commands normally reach one process, where its state stays
//! hot, and the expected-sequence check on every append guards the
//! moments two processes overlap. Processes say they are alive in the same
//! bucket (`i.<instance>`); each holds about `partitions / processes`, and
//! takes a partition whose holder stopped renewing (a crash) within a
//! lease. The unpartitioned `ledger.cmd.<name>` subjects stay, served by
//! every process.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use ledger_schemas::{ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

use super::CommandName;
use super::nats::{Callers, handle};
use crate::engine::Engine;
use crate::store::Replication;

/// The bucket of leases and liveness.
pub const BUCKET: &str = "LEDGER_PARTITIONS";

/// Partition leases of one process.
#[derive(Debug, Clone)]
pub struct PartitionSettings {
    /// Partitions in the server's mapping (0: no partitioned routing).
    pub partitions: u32,
    pub lease: Duration,
    /// `ledger`: partition subjects `ledger.cmdp.<p>.<name>.<account>`.
    pub prefix: String,
    pub replication: Replication,
}

fn partition_key(p: u32) -> String {
    format!("p.{p}")
}

/// How many partitions each of `live` processes holds at most.
fn fair_share(partitions: u32, live: usize) -> usize {
    (partitions as usize).div_ceil(live.max(1))
}

/// Serves the partitions this process holds until `shutdown`, then gives
/// them up at once (so others take them without waiting out the lease).
pub async fn run(
    client: async_nats::Client,
    engine: Engine,
    callers: Callers,
    settings: PartitionSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if settings.partitions == 0 {
        return Ok(());
    }
    let js = async_nats::jetstream::new(client.clone());
    let config = settings.replication.apply_kv(kv::Config {
        bucket: BUCKET.into(),
        description: "Which ledger process serves which command partition".into(),
        history: 1,
        max_age: settings.lease,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    });
    let kv = crate::retry::patiently(
        "opening the command partitions' bucket",
        crate::retry::STARTUP_WAIT,
        || js.create_key_value(config.clone()),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "opening key-value bucket {BUCKET} for the command partitions: {e} (user \
                 ledger needs to publish on $KV.{BUCKET}.>, as deploy/nats/accounts.conf \
                 allows; or set command_partitions = 0 to serve the unpartitioned \
                 subjects only)"
        )
    })?;
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let mut held: BTreeMap<u32, (u64, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    let tick = settings.lease / 3;
    loop {
        if let Err(e) = round(
            &kv, &client, &engine, &callers, &settings, &instance, &mut held,
        )
        .await
        {
            tracing::warn!(error = %e, "partition leases: a round failed; trying again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    for (p, (revision, task)) in held {
        task.abort();
        let _ = kv
            .delete_expect_revision(partition_key(p), Some(revision))
            .await;
    }
    let _ = kv.delete(format!("i.{instance}")).await;
    Ok(())
}

/// One round: say this process is alive, renew its leases, give up any
/// beyond its share, take free partitions up to it.
async fn round(
    kv: &kv::Store,
    client: &async_nats::Client,
    engine: &Engine,
    callers: &Callers,
    settings: &PartitionSettings,
    instance: &str,
    held: &mut BTreeMap<u32, (u64, tokio::task::JoinHandle<()>)>,
) -> anyhow::Result<()> {
    kv.put(format!("i.{instance}"), instance.to_owned().into())
        .await?;
    let mut live = 0;
    let mut keys = kv.keys().await?;
    while let Some(k) = keys.next().await {
        if k?.starts_with("i.") {
            live += 1;
        }
    }
    // Renew; a lease another process now holds is lost.
    let mut lost = Vec::new();
    for (p, (revision, _)) in held.iter_mut() {
        match kv
            .update(partition_key(*p), instance.to_owned().into(), *revision)
            .await
        {
            Ok(r) => *revision = r,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "partition lease lost");
                lost.push(*p);
            }
        }
    }
    for p in lost {
        if let Some((_, task)) = held.remove(&p) {
            task.abort();
        }
    }
    let share = fair_share(settings.partitions, live);
    while held.len() > share {
        let (p, (revision, task)) = held.pop_last().expect("more than the share");
        task.abort();
        kv.delete_expect_revision(partition_key(p), Some(revision))
            .await?;
        tracing::info!(partition = p, "partition given up for another process");
    }
    for p in 0..settings.partitions {
        if held.len() >= share {
            break;
        }
        if held.contains_key(&p) {
            continue;
        }
        // Succeeds only when nobody holds it (never held, given up, or
        // its holder stopped renewing and the lease expired).
        if let Ok(revision) = kv
            .create(partition_key(p), instance.to_owned().into())
            .await
        {
            let task = serve(client, engine, callers, &settings.prefix, p).await?;
            held.insert(p, (revision, task));
            tracing::info!(partition = p, "partition taken");
        }
    }
    Ok(())
}

/// Subscribes partition `p` (a queue group per partition: when two
/// processes overlap for a moment, each command reaches one of them).
async fn serve(
    client: &async_nats::Client,
    engine: &Engine,
    callers: &Callers,
    prefix: &str,
    p: u32,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut sub = client
        .queue_subscribe(format!("{prefix}.cmdp.{p}.*.*"), format!("ledger-p{p}"))
        .await?;
    let (client, engine, callers) = (client.clone(), engine.clone(), callers.clone());
    Ok(tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let (client, engine, callers) = (client.clone(), engine.clone(), callers.clone());
            tokio::spawn(async move {
                let Some(reply) = message.reply.clone() else {
                    return;
                };
                let body = answer(&engine, &callers, &message).await;
                if let Err(e) = client.publish(reply, body.into()).await {
                    tracing::debug!(error = %e, "reply not sent");
                }
            });
        }
    }))
}

/// A partitioned command: its name and account from the subject; the
/// body's account must be the subject's.
async fn answer(engine: &Engine, callers: &Callers, message: &async_nats::Message) -> Vec<u8> {
    let error = |m: String| {
        serde_json::to_vec(&ErrorBody::new(ErrorCode::InvalidRequest, m)).expect("errors serialise")
    };
    let tokens: Vec<&str> = message.subject.as_str().rsplitn(3, '.').collect();
    let (account, name) = match tokens.as_slice() {
        [account, name, _] => (*account, *name),
        _ => return error("The subject names no command and account.".into()),
    };
    let Some(name) = CommandName::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == name && *c != CommandName::ConsumeBatch)
    else {
        return error(format!("'{name}' is not a command of one account."));
    };
    let body_account = serde_json::from_slice::<serde_json::Value>(&message.payload)
        .ok()
        .and_then(|v| {
            v.get("account_id")
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        });
    if body_account.as_deref() != Some(account) {
        return error(format!(
            "The subject names account '{account}'; the request's account_id must be the same."
        ));
    }
    handle(engine, callers, name, message).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_partition() {
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(6, 2), 3);
        assert_eq!(fair_share(6, 4), 2);
        assert_eq!(fair_share(6, 0), 6);
        for live in 1..10 {
            assert!(fair_share(7, live) * live >= 7);
        }
    }
}
