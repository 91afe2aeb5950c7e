//! The `ledger` binary's wiring: which parts of the credit ledger run in a
//! process, and their settings.
//!
//! - [`Settings`]: the command side's [`Config`] and the gateway's
//!   [`GatewayConfig`], read from the same sources;
//! - [`Role`] and [`start`]: one function per role ([`command`],
//!   [`projections`], [`gateway`]) adds its routes and tasks to a
//!   [`Process`]; every process also serves the read API, health, metrics
//!   and the OpenAPI document of all endpoints ([`openapi`]);
//! - [`demo`]: the walk through `deploy/run.sh` shows.
//!
//! The parts themselves live in `ledger` (command side, read API, audit),
//! `ledger-projections` and `ledger-gateway-adapter` (top-ups).

pub mod demo;

use std::path::Path;

use ledger::config::Config;
use ledger::serve::{Process, Running};
use ledger_console::ConsoleConfig;
use ledger_gateway_adapter::config::GatewayConfig;
use serde::Serialize;

/// Every setting of a process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    #[serde(flatten)]
    pub ledger: Config,
    #[serde(flatten)]
    pub gateway: GatewayConfig,
    #[serde(flatten)]
    pub console: ConsoleConfig,
}

impl Settings {
    /// Defaults, then the TOML file (if given), then `LEDGER_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let sources = ledger::config::sources(file)?;
        Ok(Settings {
            ledger: Config::from_sources(&sources)?,
            gateway: GatewayConfig::from_sources(&sources)?,
            console: ConsoleConfig::from_sources(&sources)?,
        })
    }

    /// The effective settings as TOML, secrets hidden.
    pub fn to_printable(&self) -> String {
        ledger::config::toml_like(&serde_json::to_value(self).unwrap_or_default())
    }
}

/// The parts of the system one process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Commands (NATS and HTTP), usage intake, reservation expiry.
    Command,
    /// Projectors into PostgreSQL and the query API.
    Projections,
    /// Top-ups: Razorpay orders, checkout, webhooks, reconciliation.
    Gateway,
    /// Every role in one process.
    All,
}

/// Every migration a process applies: the command side's and the
/// gateway's share one history, so every process applies the same set.
pub fn migrations() -> Vec<refinery::Migration> {
    ledger_gateway_adapter::role::migrations()
}

/// The OpenAPI document of every endpoint a process with `settings` may
/// serve, stating what it accepts (its services, buckets and limits).
pub fn openapi(settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let accepts = ledger::api::openapi::Accepts::of(&settings.ledger)?;
    let mut d = ledger::api::openapi::Doc::default();
    ledger::api::openapi::ledger_paths(&mut d, &accepts);
    ledger_gateway_adapter::role::openapi_paths(&mut d, &settings.gateway);
    Ok(d.finish())
}

/// The command role.
pub async fn command(p: &mut Process, settings: &Settings) -> anyhow::Result<()> {
    ledger::serve::command(p, &settings.ledger).await
}

/// The projections role.
pub fn projections(p: &mut Process, settings: &Settings) {
    ledger::serve::projections(p, &settings.ledger);
}

/// The gateway role (its gateway, for the pages).
pub fn gateway(
    p: &mut Process,
    settings: &Settings,
) -> anyhow::Result<ledger_gateway_adapter::service::Gateway> {
    ledger_gateway_adapter::role::gateway(p, &settings.ledger, &settings.gateway)
}

/// Starts the roles asked for; every process also serves the read API
/// (top-ups included), the pages (`/console/`, `/ops/`), health,
/// readiness, metrics and the OpenAPI document.
pub async fn start(settings: &Settings, role: Role) -> anyhow::Result<Running> {
    let config = &settings.ledger;
    let mut p = Process::connect(config, &migrations()).await?;
    if matches!(role, Role::Command | Role::All) {
        command(&mut p, settings).await?;
    }
    if matches!(role, Role::Projections | Role::All) {
        projections(&mut p, settings);
    }
    let gateway = if matches!(role, Role::Gateway | Role::All) {
        gateway(&mut p, settings)?
    } else {
        ledger_gateway_adapter::role::reads(&mut p, config, &settings.gateway)?
    };
    // The billing console and the operations dashboard, in every process
    // (top-ups from the console need Razorpay settings, as the API does).
    let pages = ledger_console::Pages::new(config, &settings.console, &p, gateway)?;
    p.route(pages.router());
    let running = p.serve(config, openapi(settings)?).await?;
    tracing::info!(http_addr = %running.http_addr, ?role, "ledger running");
    Ok(running)
}

/// Starts the command role only.
pub async fn start_command(settings: &Settings) -> anyhow::Result<Running> {
    start(settings, Role::Command).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_endpoint_and_every_ref_resolves() {
        let doc = openapi(&Settings::default()).unwrap();
        for (method, path) in [
            ("post", "/v1/accounts"),
            ("get", "/v1/accounts/{id}/balances"),
            ("get", "/v1/accounts/{id}/history"),
            ("post", "/v1/accounts/{id}/consumptions"),
            ("post", "/v1/consumptions/batch"),
            ("post", "/v1/accounts/{id}/topups"),
            ("post", "/v1/topups/{topup_id}/checkout"),
            ("get", "/v1/topups/{topup_id}"),
            ("post", "/v1/webhooks/razorpay"),
            ("get", "/v1/ops/projections"),
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/metrics"),
            ("get", "/openapi.json"),
            ("post", "/v1/commands/consume"),
            ("post", "/v1/commands/get_balance"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
        let (unresolved, total) = ledger::api::openapi::unresolved_refs(&doc);
        assert!(total > 0);
        assert!(unresolved.is_empty(), "{unresolved:?} do not resolve");
    }

    #[test]
    fn migrations_keep_their_history() {
        // refinery compares names and checksums with the history: a renamed,
        // renumbered or edited migration would stop every deployed process.
        let mut all = ledger::db::migrations();
        all.extend(migrations());
        all.sort();
        let names: Vec<String> = all.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            names,
            [
                "V1__command_side",
                "V2__gateway",
                "V3__topup_keys",
                "V4__key_index",
                "V5__alerts"
            ]
        );
    }

    #[test]
    fn the_example_configuration_loads_both_parts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ledger.example.toml");
        let s = Settings::load(Some(&path)).expect("the example is valid");
        assert_eq!(s.ledger.limits.batch_items_max, 1000);
        assert!(s.ledger.key_indexer);
        assert_eq!(s.gateway.fx_usd_inr.as_deref(), Some("83.12"));
        assert_eq!(s.gateway.reconcile_first_s, 30);
        assert!(s.gateway.razorpay_base_url.is_none());
        assert_eq!(s.console.ops_stuck_after_s, 900);
        assert!(s.console.console_session_key.is_none());
    }

    #[test]
    fn settings_print_both_parts_with_secrets_hidden() {
        let mut s = Settings::default();
        s.ledger.admin_token = Some(ledger::config::Secret::new("s3cret-admin"));
        s.gateway.razorpay_key_secret = Some(ledger::config::Secret::new("rzp-s3cret"));
        s.console.console_session_key = Some(ledger::config::Secret::new("s3cret-session-key"));
        let printed = s.to_printable();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("nats_url = "), "{printed}");
        assert!(printed.contains("reconcile_first_s = 30"), "{printed}");
    }
}
