//! The `ledger` binary: `serve`, and the tools around it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ledger::config::Config;
use ledger::serve::Role;

#[derive(Debug, Parser)]
#[command(name = "ledger", version, about = "Event-sourced credit ledger")]
struct Cli {
    /// A TOML configuration file; `LEDGER_*` environment variables win over it.
    #[arg(long, global = true, env = "LEDGER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the service.
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
        /// Print the effective settings (secrets hidden) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Read models: `ledger projections rebuild [--projection NAME]`.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
    /// Walk through the ledger against a running service (used by deploy/run.sh).
    Demo {
        /// The service's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin token of the service.
        #[arg(long, env = "LEDGER_ADMIN_TOKEN")]
        token: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCmd {
    /// Replay the whole log into shadow tables and swap them in, while the
    /// live tables keep serving reads.
    Rebuild {
        /// One projection (`accounts`, `topups`); all when absent.
        #[arg(long)]
        projection: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { role, print_config } => {
            let config = Config::load(cli.config.as_deref())?;
            if print_config {
                print!("{}", config.to_printable());
                return Ok(());
            }
            serve(config, role).await
        }
        Cmd::Demo { url, token } => ledger::demo::run(&url, &token).await,
        Cmd::Projections {
            command: ProjectionsCmd::Rebuild { projection },
        } => {
            let config = Config::load(cli.config.as_deref())?;
            ledger::serve::rebuild(&config, projection.as_deref()).await
        }
    }
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let mut running = ledger::serve::start(&config, role)
        .await
        .context("starting the ledger")?;
    let token = running.shutdown_token();
    tokio::select! {
        r = running.wait() => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            token.cancel();
            running.stop().await
        }
    }
}
