//! Configuration: defaults, then a TOML file (`--config`), then `LEDGER_*`
//! environment variables, the environment winning. Secrets are wrapped so
//! they never print: `ledger serve --print-config` shows them as `[hidden]`.
//! Every limit of the service is named here (`*_max`) and nowhere else.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ledger_schemas::{AccountId, Credits, Service};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::Catalog;

/// A secret value: deserialises from a string, prints and serialises as `[hidden]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(SecretString::from(s.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[hidden]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[hidden]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(d)?))
    }
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A platform service: consumes, reserves, captures, releases.
    Service,
    /// The billing console, for the accounts listed on the token.
    Console,
    /// Read-only access to everything, for audits.
    Auditor,
    /// Operations: reads, and operator commands (grant, adjust).
    Ops,
    /// A payment gateway: grants for top-ups, reversals, reads.
    Gateway,
    /// Everything.
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenConfig {
    /// A name for logs and metrics (never the token itself).
    pub name: String,
    pub token: Secret,
    pub role: Role,
    /// For `console` tokens: the accounts the token may touch.
    #[serde(default)]
    pub accounts: Vec<AccountId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateCardConfig {
    pub version: u32,
    /// Price per unit of each service; `email` and `sms` are required.
    pub unit_prices: BTreeMap<Service, Credits>,
}

impl Default for RateCardConfig {
    fn default() -> Self {
        let price = |s: &str, p: &str| {
            (
                Service::parse(s).expect("a valid service"),
                Credits::parse(p).expect("a valid price"),
            )
        };
        Self {
            version: 1,
            unit_prices: BTreeMap::from([price("email", "0.001"), price("sms", "0.0075")]),
        }
    }
}

/// Every limit of the service, in one place.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest request body accepted over HTTP or NATS.
    pub request_body_bytes_max: usize,
    /// Items of one `consume_batch` (and usages of one usage batch message).
    pub batch_items_max: usize,
    /// Largest `consume_batch` body (`POST /v1/consumptions/batch`, NATS
    /// `ledger.cmd.consume_batch`); NATS's own `max_payload` caps it too.
    pub batch_body_bytes_max: usize,
    /// Commands being processed at once; more wait, then get `unavailable`.
    pub commands_in_flight_max: usize,
    /// Commands queued for one account before new ones are refused.
    pub account_queue_max: usize,
    /// Commands of one account decided together and appended as one batch.
    pub account_batch_commands_max: usize,
    /// Messages in one atomic batch (the server allows 1000).
    pub batch_messages_max: usize,
    /// Atomic batches awaiting their ack at once (the server allows 50 per stream).
    /// Fewer in flight make each fuller; a batch costs the server a fixed time.
    pub batches_in_flight_max: usize,
    /// Pack many accounts' appends into one atomic batch (group commit). A
    /// batch costs the server a fixed time (an fsync with `sync_interval:
    /// always`), so under load grouping wins in either sync mode (measured);
    /// off, each account's append goes out on its own at once, which gives
    /// lower latency only while few commands are in flight.
    pub group_commit: bool,
    /// Per-account appends awaiting their ack at once when not grouping.
    pub appends_in_flight_max: usize,
    /// Reloads and retries after a concurrent append, before `conflict_retry`.
    pub conflict_retries_max: u32,
    /// How long one publish waits for its ack.
    pub publish_timeout_ms: u64,
    /// Re-sends of the same messages after a publish timeout.
    pub publish_retries_max: u32,
    /// Accounts kept in memory; beyond it the least recently used are dropped.
    pub accounts_cached_max: usize,
    /// An account idle this long is dropped from memory.
    pub account_idle_s_max: u64,
    /// Idempotency keys held in memory per account once the key index has
    /// them (keys it has not indexed yet stay in memory, past this bound).
    pub idempotency_keys_cached_per_account_max: usize,
    /// Unacknowledged usage messages the intake holds at once.
    pub usage_ack_pending_max: i64,
    /// Rows of a history page.
    pub history_page_size_max: u32,
    /// Rows one CSV download of an account's history holds at most (the
    /// console's "Download CSV"); a longer history is cut, and says so.
    pub history_csv_rows_max: u32,
    /// How long a read with `as_of_seq` waits for the read model to reach it.
    pub as_of_wait_ms_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_body_bytes_max: 64 * 1024,
            batch_items_max: 1000,
            batch_body_bytes_max: 1024 * 1024 - 1024,
            commands_in_flight_max: 10_000,
            account_queue_max: 4096,
            account_batch_commands_max: 1000,
            batch_messages_max: 1000,
            batches_in_flight_max: 2,
            group_commit: true,
            appends_in_flight_max: 4096,
            conflict_retries_max: 8,
            publish_timeout_ms: 5000,
            publish_retries_max: 3,
            accounts_cached_max: 100_000,
            account_idle_s_max: 600,
            idempotency_keys_cached_per_account_max: 4096,
            usage_ack_pending_max: 10_000,
            history_page_size_max: 500,
            history_csv_rows_max: 100_000,
            as_of_wait_ms_max: 5000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub nats_url: String,
    /// The NATS user (`ledger` in deploy/nats/accounts.conf) and its
    /// password; or a credentials file (`nats_creds`) instead.
    pub nats_user: Option<String>,
    pub nats_password: Option<Secret>,
    pub nats_creds: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to verify nats-server's TLS certificate by;
    /// when set, the connection must be TLS.
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// Replicas of every stream the ledger creates (`LEDGER`, the usage
    /// stream and its dead letters): 1 on one server, 3 on a three-node
    /// cluster. An existing stream with fewer is refused.
    pub stream_replicas: usize,
    /// Placement tags of those streams: JetStream puts their replicas only
    /// on servers carrying every tag (`server_tags`).
    pub stream_placement_tags: Vec<String>,
    /// Every nats-server's monitoring address (`http://nats-1:8222`). With
    /// replicated streams the ledger reads each `/varz` at start and
    /// refuses to run unless every server fsyncs each write before
    /// acknowledging it (`sync_interval: always`).
    pub nats_monitor_urls: Vec<String>,
    /// Partitions of `ledger.cmd.<name>.<account_id>` in the NATS
    /// configuration's subject mapping (deploy/nats/accounts.conf:
    /// `partition(6, …)`); each process serves the partitions it leases.
    /// 0 serves none (the unpartitioned subjects only).
    pub command_partitions: u32,
    /// How long a partition's lease lasts unrenewed: a stopped process's
    /// partitions are taken over within it.
    pub partition_lease_s: u64,
    /// Runs replicated streams without that check (told otherwise: the
    /// operator vouches for the servers' settings).
    pub stream_sync_unchecked: bool,
    /// libpq's forms: a `postgres://` URL or `key=value` pairs, with
    /// `sslmode` and `sslrootcert` (see `ledger_projections::pg`). A
    /// password in it prints as `[hidden]`.
    #[serde(serialize_with = "url_password_hidden")]
    pub database_url: String,
    /// One address serves every HTTP endpoint of the roles the process runs.
    pub http_addr: String,
    /// HTTPS: the certificate chain and private key (PEM files); plain
    /// HTTP when unset.
    pub http_tls_cert: Option<std::path::PathBuf>,
    pub http_tls_key: Option<std::path::PathBuf>,
    /// When set, a bearer token with role `admin` (for set-up and tests).
    pub admin_token: Option<Secret>,
    pub tokens: Vec<TokenConfig>,
    /// How long an idempotency key returns its original outcome.
    pub idempotency_retention_s: u64,
    /// Whether this process's command role may run the key indexer (one
    /// process indexes at a time; the others follow its checkpoint).
    pub key_indexer: bool,
    /// How often open reservations are checked for expiry.
    pub reservation_sweep_interval_ms: u64,
    pub rate_card: RateCardConfig,
    /// Stream names and subject prefixes; tests set their own.
    pub stream_name: String,
    pub usage_stream_name: String,
    pub subject_prefix: String,
    pub limits: Limits,
    /// The key every append and checkpoint is signed with:
    /// `<key id>:<base64 of a 32-byte Ed25519 seed>` (make one with
    /// `ledger audit keys --generate <key id>`). Required by the roles that
    /// append (command, gateway); processes that only read need none.
    pub signing_key: Option<Secret>,
    /// Public keys still trusted besides the signing key's own, as
    /// `<key id>:<base64 public key>`: after a rotation, the old keys, so
    /// what they signed stays genuine.
    pub verify_keys: Vec<String>,
    /// A signed checkpoint is appended at least this often while events
    /// arrive (by the process running the key indexer).
    pub checkpoint_interval_s: u64,
    /// … and as soon as this many stream messages follow the last one.
    pub checkpoint_events_max: u64,
    /// Where balance alerts are delivered (HTTPS; plain HTTP only to a
    /// loopback address), each signed with `alert_webhook_secret`
    /// (`X-Ledger-Signature`). Unset: alerts are only recorded and
    /// published on `ledger.alerts.<account_id>`.
    pub alert_webhook_url: Option<String>,
    pub alert_webhook_secret: Option<Secret>,
    /// The longest wait between two delivery attempts of one alert.
    pub alert_webhook_backoff_max_s: u64,
    /// How long one delivery may take before it counts as failed.
    pub alert_webhook_timeout_ms: u64,
    /// How long an alert stays in `ledger_cmd.alert_outbox` once published
    /// (and delivered, with a webhook); the log keeps it for good.
    pub alert_outbox_retention_s: u64,
    /// The role of each NATS account that imports the command service (its
    /// requests carry `Nats-Request-Info`); deploy/nats/accounts.conf's by
    /// default. A request from another account is refused.
    pub nats_callers: std::collections::BTreeMap<String, Role>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_user: None,
            nats_password: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_callers: [
                ("SERVICES", Role::Service),
                ("GATEWAY", Role::Gateway),
                ("OPS", Role::Ops),
            ]
            .into_iter()
            .map(|(a, r)| (a.to_owned(), r))
            .collect(),
            database_url: "postgres://ledger@127.0.0.1:55432/ledger".into(),
            http_addr: "127.0.0.1:8080".into(),
            http_tls_cert: None,
            http_tls_key: None,
            admin_token: None,
            tokens: Vec::new(),
            idempotency_retention_s: 7 * 24 * 3600,
            key_indexer: true,
            reservation_sweep_interval_ms: 1000,
            rate_card: RateCardConfig::default(),
            stream_replicas: 1,
            stream_placement_tags: Vec::new(),
            nats_monitor_urls: Vec::new(),
            stream_sync_unchecked: false,
            command_partitions: 6,
            partition_lease_s: 10,
            signing_key: None,
            verify_keys: Vec::new(),
            checkpoint_interval_s: 60,
            checkpoint_events_max: 10_000,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            alert_webhook_backoff_max_s: 300,
            alert_webhook_timeout_ms: 10_000,
            alert_outbox_retention_s: 30 * 24 * 3600,
            stream_name: "LEDGER".into(),
            usage_stream_name: "LEDGER_USAGE".into(),
            subject_prefix: "ledger".into(),
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if given), then `LEDGER_*` variables
    /// (`LEDGER_LIMITS__PUBLISH_TIMEOUT_MS` reaches a nested field).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::from_sources(&sources(file)?)
    }

    /// The settings `sources` give, over the defaults. Other parts of the
    /// process (the gateway) read their own settings from the same sources.
    pub fn from_sources(sources: &Figment) -> anyhow::Result<Self> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(sources.clone())
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.catalog()?;
        anyhow::ensure!(
            self.command_partitions <= 1024,
            "command_partitions must be at most 1024"
        );
        anyhow::ensure!(
            (3..=3600).contains(&self.partition_lease_s),
            "partition_lease_s must be from 3 to 3600"
        );
        anyhow::ensure!(
            (1..=5).contains(&self.stream_replicas),
            "stream_replicas must be from 1 to 5 (JetStream's limit)"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&self.checkpoint_interval_s),
            "checkpoint_interval_s must be from 1 to 86400"
        );
        anyhow::ensure!(
            self.checkpoint_events_max >= 1,
            "checkpoint_events_max must be at least 1"
        );
        self.keys()?;
        self.alert_webhook()?;
        anyhow::ensure!(
            (1..=86_400).contains(&self.alert_webhook_backoff_max_s),
            "alert_webhook_backoff_max_s must be from 1 to 86400"
        );
        anyhow::ensure!(
            (100..=300_000).contains(&self.alert_webhook_timeout_ms),
            "alert_webhook_timeout_ms must be from 100 to 300000"
        );
        anyhow::ensure!(
            self.alert_outbox_retention_s >= 24 * 3600,
            "alert_outbox_retention_s must be at least one day"
        );
        let l = &self.limits;
        anyhow::ensure!(
            (1..=1000).contains(&l.batch_messages_max),
            "limits.batch_messages_max must be from 1 to 1000 (the server's batch limit)"
        );
        anyhow::ensure!(
            (1..=50).contains(&l.batches_in_flight_max),
            "limits.batches_in_flight_max must be from 1 to 50 (the server's limit per stream)"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&l.batch_items_max),
            "limits.batch_items_max must be from 1 to 10000"
        );
        anyhow::ensure!(
            self.idempotency_retention_s >= 24 * 3600,
            "idempotency_retention_s must be at least one day"
        );
        for t in &self.tokens {
            anyhow::ensure!(
                t.role != Role::Console || !t.accounts.is_empty(),
                "console token '{}' must list the accounts it may touch",
                t.name
            );
        }
        Ok(())
    }

    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        Ok(Catalog::new(
            self.rate_card.version,
            self.rate_card.unit_prices.clone(),
        )?)
    }

    /// The signing key and the trusted public keys.
    pub fn keys(&self) -> anyhow::Result<ledger_schemas::signing::Keys> {
        use ledger_schemas::signing::{Keys, PublicKey, SigningKey};
        let signing = self
            .signing_key
            .as_ref()
            .map(|k| SigningKey::parse(k.expose()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("signing_key: {e}"))?;
        let verify = self
            .verify_keys
            .iter()
            .map(|k| PublicKey::parse(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("verify_keys: {e}"))?;
        Ok(Keys::new(signing, verify))
    }

    /// The alert webhook, when one is configured.
    pub fn alert_webhook(&self) -> anyhow::Result<Option<crate::alerts::Webhook>> {
        match (&self.alert_webhook_url, &self.alert_webhook_secret) {
            (None, _) => Ok(None),
            (Some(_), None) => {
                anyhow::bail!("alert_webhook_url needs alert_webhook_secret to sign deliveries")
            }
            (Some(url), Some(secret)) => {
                crate::alerts::Webhook::new(url, secret.expose()).map(Some)
            }
        }
    }

    /// The subject of signed checkpoints on stream `LEDGER`.
    pub fn checkpoint_subject(&self) -> String {
        format!("{}.checkpoints", self.subject_prefix)
    }

    /// How the ledger's streams are replicated and placed.
    pub fn replication(&self) -> crate::store::Replication {
        crate::store::Replication {
            replicas: self.stream_replicas,
            placement_tags: self.stream_placement_tags.clone(),
        }
    }

    /// The effective settings as TOML, secrets hidden.
    pub fn to_printable(&self) -> String {
        toml_like(&serde_json::to_value(self).unwrap_or_default())
    }
}

/// The TOML file (if given), then `LEDGER_*` variables
/// (`LEDGER_LIMITS__PUBLISH_TIMEOUT_MS` reaches a nested field).
pub fn sources(file: Option<&Path>) -> anyhow::Result<Figment> {
    let mut f = Figment::new();
    if let Some(path) = file {
        anyhow::ensure!(
            path.exists(),
            "configuration file {} not found",
            path.display()
        );
        f = f.merge(Toml::file(path));
    }
    Ok(f.merge(Env::prefixed("LEDGER_").split("__")))
}

/// A decimal kept as its text. The environment provider reads
/// `LEDGER_FX_USD_INR=83.12` as a number; a number is taken back to text
/// (Rust prints the shortest form that reads back as the same value).
#[derive(Deserialize)]
#[serde(untagged)]
enum DecimalText {
    S(String),
    I(i64),
    F(f64),
}

impl From<DecimalText> for String {
    fn from(t: DecimalText) -> String {
        match t {
            DecimalText::S(s) => s,
            DecimalText::I(i) => i.to_string(),
            DecimalText::F(f) => f.to_string(),
        }
    }
}

pub fn decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    DecimalText::deserialize(d).map(String::from)
}

pub fn decimal_text_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<DecimalText>::deserialize(d)?.map(String::from))
}

/// Renders settings as `key = value` lines (JSON values), nested tables as dotted keys.
pub fn toml_like(v: &serde_json::Value) -> String {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            other => out.push(format!("{prefix} = {other}")),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out.join("\n") + "\n"
}

/// A connection string with its password (`user:password@` in a URL,
/// `password=` in `key=value` pairs) replaced by `[hidden]`.
fn url_password_hidden<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&password_hidden(url))
}

fn password_hidden(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{scheme}://{}:[hidden]{}", &rest[..colon], &rest[at..]);
        }
        return url.to_owned();
    }
    let mut out = String::new();
    let mut rest = url;
    while let Some(i) = rest.find("password") {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let after_key = from["password".len()..].trim_start();
        let at_start = before.is_empty() || before.ends_with(char::is_whitespace);
        if !(at_start && after_key.starts_with('=')) {
            out.push_str("password");
            rest = &from["password".len()..];
            continue;
        }
        out.push_str("password=[hidden]");
        let value = after_key[1..].trim_start();
        rest = match value.strip_prefix('\'') {
            Some(quoted) => {
                let mut end = quoted.len();
                let mut escaped = false;
                for (j, c) in quoted.char_indices() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '\'' => {
                            end = j + 1;
                            break;
                        }
                        _ => {}
                    }
                }
                &quoted[end..]
            }
            None => &value[value.find(char::is_whitespace).unwrap_or(value.len())..],
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_never_print() {
        for (url, shown) in [
            (
                "postgres://ledger:pa%40ss@db:5432/ledger?sslmode=verify-full",
                "postgres://ledger:[hidden]@db:5432/ledger?sslmode=verify-full",
            ),
            ("postgres://ledger@db/ledger", "postgres://ledger@db/ledger"),
            (
                "host=db password='a b\\'c' user=x",
                "host=db password=[hidden] user=x",
            ),
            (
                "host=db password = s3 user=x",
                "host=db password=[hidden] user=x",
            ),
            ("host=db user=password", "host=db user=password"),
        ] {
            assert_eq!(password_hidden(url), shown);
        }
        let c = Config {
            database_url: "postgres://u:s3cret@h/db".into(),
            ..Config::default()
        };
        assert!(!c.to_printable().contains("s3cret"));
    }

    #[test]
    fn secrets_never_print() {
        let c = Config {
            admin_token: Some(Secret::new("s3cret-admin")),
            ..Config::default()
        };
        let printed = c.to_printable();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("admin_token = \"[hidden]\""), "{printed}");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn environment_wins_over_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ledger.toml",
                "nats_url = \"nats://file:4222\"\nhttp_addr = \"127.0.0.1:9\"\n[limits]\npublish_timeout_ms = 7\n",
            )?;
            jail.set_env("LEDGER_NATS_URL", "nats://env:4222");
            jail.set_env("LEDGER_LIMITS__BATCHES_IN_FLIGHT_MAX", "3");
            let c = Config::load(Some(Path::new("ledger.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.nats_url, "nats://env:4222");
            assert_eq!(c.http_addr, "127.0.0.1:9");
            assert_eq!(c.limits.publish_timeout_ms, 7);
            assert_eq!(c.limits.batches_in_flight_max, 3);
            Ok(())
        });
    }

    #[test]
    fn the_example_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ledger.example.toml");
        let c = Config::load(Some(&path)).expect("the example is valid");
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.tokens[1].accounts[0].as_str(), "acme");
        assert!(
            !c.to_printable().contains("replace-with"),
            "tokens print hidden"
        );
    }

    #[test]
    fn refuses_limits_past_the_server() {
        let mut c = Config::default();
        c.limits.batch_messages_max = 1001;
        assert!(c.validate().is_err());
    }
}
