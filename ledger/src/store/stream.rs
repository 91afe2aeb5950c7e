//! Stream `LEDGER`: created with settings that cannot lose an event, and
//! verified at every start.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, stream};

/// Every event subject starts with this.
pub const EVENTS_PREFIX: &str = "ledger.events";

/// How a stream is replicated and where its replicas go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub replicas: usize,
    pub placement_tags: Vec<String>,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            replicas: 1,
            placement_tags: Vec::new(),
        }
    }
}

impl Replication {
    /// Applies the replicas and placement to a stream's configuration.
    pub fn apply(&self, mut c: stream::Config) -> stream::Config {
        c.num_replicas = self.replicas;
        c.placement = self.placement();
        c
    }

    /// The placement the tags ask for (none without tags).
    fn placement(&self) -> Option<stream::Placement> {
        (!self.placement_tags.is_empty()).then(|| stream::Placement {
            cluster: None,
            tags: self.placement_tags.clone(),
        })
    }

    /// The same for a key-value bucket.
    pub fn apply_kv(
        &self,
        mut c: async_nats::jetstream::kv::Config,
    ) -> async_nats::jetstream::kv::Config {
        c.num_replicas = self.replicas;
        c.placement = self.placement();
        c
    }

    /// What an existing stream lacks of these settings.
    pub fn shortfalls(&self, c: &stream::Config) -> Vec<String> {
        let mut p = Vec::new();
        if c.num_replicas < self.replicas {
            p.push(format!(
                "replicas must be at least {} (it has {}; an operator raises them with \
                 `nats stream edit {} --replicas {}`)",
                self.replicas, c.num_replicas, c.name, self.replicas
            ));
        }
        let tags = c
            .placement
            .as_ref()
            .map(|p| p.tags.clone())
            .unwrap_or_default();
        if !self.placement_tags.is_empty() && tags != self.placement_tags {
            p.push(format!(
                "placement tags must be {:?} (it has {tags:?})",
                self.placement_tags
            ));
        }
        p
    }
}

/// Refuses replicated streams on servers that acknowledge writes before
/// fsyncing them, unless `unchecked`: each monitoring endpoint's `/varz`
/// must say `sync_always`.
pub async fn check_sync_always(
    replication: &Replication,
    monitor_urls: &[String],
    unchecked: bool,
) -> anyhow::Result<()> {
    if replication.replicas <= 1 || unchecked {
        return Ok(());
    }
    if monitor_urls.is_empty() {
        bail!(
            "stream_replicas is {} but nats_monitor_urls is empty: the ledger cannot see \
             whether every server fsyncs each write (sync_interval: always). Name each \
             server's monitoring address, or set stream_sync_unchecked = true to vouch for them",
            replication.replicas
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for url in monitor_urls {
        let varz: serde_json::Value = http
            .get(format!("{}/varz", url.trim_end_matches('/')))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("reading {url}/varz"))?
            .json()
            .await
            .with_context(|| format!("reading {url}/varz"))?;
        if varz["jetstream"]["config"]["sync_always"] != serde_json::Value::Bool(true) {
            bail!(
                "nats-server {} ({url}) does not fsync each write before acknowledging it \
                 (sync_interval is not always): replicated streams there can lose \
                 acknowledged events. Set `sync_interval: always` in its jetstream block, \
                 or stream_sync_unchecked = true to run anyway",
                varz["server_name"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub name: String,
    /// Subject prefix (`ledger.events`); tests use their own so they can share a server.
    pub prefix: String,
    /// Where signed checkpoints are appended (`ledger.checkpoints`).
    pub checkpoint_subject: String,
    pub replication: Replication,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a re-sent publish.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "LEDGER".into(),
            prefix: EVENTS_PREFIX.into(),
            checkpoint_subject: "ledger.checkpoints".into(),
            replication: Replication::default(),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl StreamSettings {
    pub fn subjects(&self) -> Vec<String> {
        vec![
            format!("{}.acct.*", self.prefix),
            format!("{}.topup.*", self.prefix),
            self.checkpoint_subject.clone(),
        ]
    }

    /// The subject of an account's events.
    pub fn account_subject(&self, account: &ledger_schemas::AccountId) -> String {
        format!("{}.acct.{account}", self.prefix)
    }

    fn config(&self) -> stream::Config {
        self.replication.apply(stream::Config {
            name: self.name.clone(),
            subjects: self.subjects(),
            storage: stream::StorageType::File,
            // Full is an error, never a silent drop of old events.
            discard: stream::DiscardPolicy::New,
            retention: stream::RetentionPolicy::Limits,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_age: Duration::ZERO,
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            allow_direct: true,
            allow_atomic_publish: true,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        })
    }
}

/// Creates the stream, or verifies an existing one and refuses to run on
/// settings that would allow an event to be lost or rewritten.
pub async fn ensure(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<stream::Stream> {
    let mut stream = match js.get_stream(&settings.name).await {
        Ok(s) => s,
        Err(_) => js
            .create_stream(settings.config())
            .await
            .with_context(|| format!("creating stream {}", settings.name))?,
    };
    let info = stream
        .info()
        .await
        .context("reading the stream's settings")?;
    let problems = unsafe_settings(&info.config, settings);
    if !problems.is_empty() {
        bail!(
            "stream {} has settings that could lose or rewrite events; the ledger will not \
             run on it: {}",
            settings.name,
            problems.join("; ")
        );
    }
    Ok(stream.clone())
}

/// Everything about a stream's configuration that breaks the ledger's rules.
pub fn unsafe_settings(c: &stream::Config, want: &StreamSettings) -> Vec<String> {
    let mut p = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            p.push(what.to_owned());
        }
    };
    check(
        c.storage == stream::StorageType::File,
        "storage must be file",
    );
    check(
        c.retention == stream::RetentionPolicy::Limits,
        "retention must be limits",
    );
    check(
        c.discard == stream::DiscardPolicy::New,
        "discard must be new",
    );
    check(c.max_messages <= 0, "max_msgs must be unlimited");
    check(c.max_bytes <= 0, "max_bytes must be unlimited");
    check(
        c.max_messages_per_subject <= 0,
        "max_msgs_per_subject must be unlimited",
    );
    check(c.max_age.is_zero(), "max_age must be unlimited");
    check(c.deny_delete, "deny_delete must be set");
    check(c.deny_purge, "deny_purge must be set");
    check(!c.allow_rollup, "allow_rollup must be off");
    check(c.allow_atomic_publish, "allow_atomic must be set");
    check(c.allow_direct, "allow_direct must be set");
    check(!c.allow_message_ttl, "per-message TTL must be off");
    check(
        c.subject_delete_marker_ttl.is_none(),
        "subject delete markers must be off",
    );
    for s in want.subjects() {
        check(
            c.subjects.contains(&s),
            &format!("subjects must include {s}"),
        );
    }
    p.extend(want.replication.shortfalls(c));
    p
}
