//! The `ledger` binary: `serve`, and the tools around it (audit, projections,
//! demo). The wiring of roles is in this package's library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ledger::config::Config;
use ledger_cli::{Role, Settings};

/// mimalloc: the ledger allocates many small buffers on every thread, and
/// glibc's allocator spent about a third of the process's CPU contending.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Auditor tools: check the log, replay it as of a time, export it.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Read models: `ledger projections rebuild [--projection NAME]`.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
    /// The command side's key index: `ledger index rebuild`.
    Index {
        #[command(subcommand)]
        command: IndexCmd,
    },
    /// Walk through the ledger against a running service (used by deploy/run.sh).
    Demo {
        /// The service's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin token of the service.
        #[arg(long, env = "LEDGER_ADMIN_TOKEN")]
        token: String,
        /// A fake Razorpay to pay the demo's top-up through (its test
        /// controls stand in for the customer at the payment page).
        #[arg(long)]
        fake_razorpay: Option<String>,
        /// The Razorpay key secret, to sign the checkout callback as
        /// Razorpay Checkout would.
        #[arg(long, env = "LEDGER_RAZORPAY_KEY_SECRET", hide_env_values = true)]
        razorpay_key_secret: Option<String>,
        /// The demo's account (`demo-<time>` when not given).
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum IndexCmd {
    /// Wipe the idempotency-key index (and open reservations) so the
    /// indexer folds the whole log again. Stop the command side first; it
    /// is exact meanwhile, reading more of the log.
    Rebuild,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check every chain, each aggregate's sequence, that postings balance and
    /// match the events, that usage never made a bucket negative, and that a
    /// replay equals the read models. Exit status 1 on any finding.
    Verify {
        /// Check an export instead of the stream (no server needed).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Skip the comparison with the read models in PostgreSQL.
        #[arg(long)]
        no_read_models: bool,
        /// A public key to check signatures and checkpoints by: a file
        /// (`ledger audit keys` output, or `<key id>:<base64>` lines) or the
        /// key itself. Repeatable. Checking the stream, the configured keys
        /// are used as well.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// A signed checkpoint (JSON, as `ledger audit checkpoint` prints
        /// it) the log must reach and agree with: a cut tail, a missing
        /// aggregate or a rewritten history is then found.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// The public keys of the configuration (JSON), or a new signing key.
    Keys {
        /// Print a new signing key with this id instead (`signing_key`).
        #[arg(long)]
        generate: Option<String>,
    },
    /// The newest signed checkpoint on the stream (JSON).
    Checkpoint,
    /// An inclusion proof of an account's history in a signed checkpoint:
    /// its events, the balances they add up to, the Merkle path (JSON).
    Prove {
        #[arg(long)]
        account: String,
        /// The newest checkpoint at or before this stream seq.
        #[arg(long)]
        as_of_seq: Option<u64>,
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Checks an inclusion proof with the public keys alone.
    VerifyProof {
        #[arg(long)]
        file: PathBuf,
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<String>,
    },
    /// Balances per bucket as of a time, from the log alone (JSON).
    Replay {
        #[arg(long)]
        as_of: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// The log with its headers and chain values, for offline checks.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ledger::audit::Format,
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
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
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    // The service logs its work; the tools only what goes wrong.
    let default_level = match cli.command {
        Cmd::Serve { .. } | Cmd::Projections { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Serve { role, print_config } => {
            let settings = Settings::load(cli.config.as_deref())?;
            if print_config {
                print!("{}", settings.to_printable());
                return Ok(std::process::ExitCode::SUCCESS);
            }
            serve(settings, role)
                .await
                .map(|()| std::process::ExitCode::SUCCESS)
        }
        Cmd::Demo {
            url,
            token,
            fake_razorpay,
            razorpay_key_secret,
            account,
        } => {
            let topup = fake_razorpay.zip(razorpay_key_secret);
            let account = account
                .unwrap_or_else(|| format!("demo-{}", chrono::Utc::now().format("%Y%m%d%H%M%S")));
            ledger_cli::demo::run(&url, &token, &account, topup)
                .await
                .map(|()| std::process::ExitCode::SUCCESS)
        }
        Cmd::Audit { command } => {
            let config = Config::load(cli.config.as_deref())?;
            audit(config, command).await
        }
        Cmd::Index {
            command: IndexCmd::Rebuild,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let pool =
                ledger::serve::connect_db(&config.database_url, &ledger_cli::migrations()).await?;
            ledger::engine::indexer::reset(&pool).await?;
            println!("key index wiped: the indexer folds the log again from stream seq 1");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Projections {
            command: ProjectionsCmd::Rebuild { projection },
        } => {
            let config = Config::load(cli.config.as_deref())?;
            ledger::serve::rebuild(&config, projection.as_deref(), &ledger_cli::migrations())
                .await
                .map(|()| std::process::ExitCode::SUCCESS)
        }
    }
}

async fn serve(settings: Settings, role: Role) -> anyhow::Result<()> {
    let mut running = ledger_cli::start(&settings, role)
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

/// The stream, opened for reading only (an auditor's credentials suffice).
async fn read_stream(config: &Config) -> anyhow::Result<async_nats::jetstream::stream::Stream> {
    let client = ledger::serve::connect_nats(config).await?;
    let js = async_nats::jetstream::new(client);
    js.get_stream(&config.stream_name)
        .await
        .with_context(|| format!("opening stream {}", config.stream_name))
}

/// Public keys from `--public-key` values: files, or the keys themselves.
fn public_keys_of(args: &[String]) -> anyhow::Result<Vec<ledger_schemas::signing::PublicKey>> {
    let mut out = Vec::new();
    for a in args {
        let path = std::path::Path::new(a);
        let text = if path.exists() {
            std::fs::read_to_string(path)?
        } else {
            a.clone()
        };
        let keys = ledger_schemas::signing::PublicKeys::parse_document(&text)
            .map_err(|e| anyhow::anyhow!("--public-key {a}: {e}"))?;
        out.extend(keys.all().into_iter().cloned());
    }
    Ok(out)
}

async fn audit(config: Config, command: AuditCmd) -> anyhow::Result<std::process::ExitCode> {
    let prefix = format!("{}.events", config.subject_prefix);
    match command {
        AuditCmd::Verify {
            file,
            no_read_models,
            public_keys,
            checkpoint,
        } => {
            let started = std::time::Instant::now();
            let mut keys = public_keys_of(&public_keys)?;
            if file.is_none() {
                keys.extend(config.keys()?.public.all().into_iter().cloned());
            }
            let keys = ledger_schemas::signing::PublicKeys::new(keys);
            let mut verifier = ledger::audit::Verifier::new(&prefix);
            if !keys.is_empty() {
                verifier = verifier.with_keys(keys.clone());
            }
            if let Some(path) = &checkpoint {
                let c: ledger_schemas::checkpoint::Checkpoint =
                    serde_json::from_slice(&std::fs::read(path)?)
                        .with_context(|| format!("{} is not a checkpoint", path.display()))?;
                anyhow::ensure!(!keys.is_empty(), "--checkpoint needs --public-key");
                c.verify(&keys)
                    .map_err(|e| anyhow::anyhow!("the checkpoint {}: {e}", path.display()))?;
                verifier.expect_checkpoint(c);
            }
            let mut checked_at = None;
            match &file {
                Some(path) => {
                    ledger::audit::read_export(path, |r| verifier.check_owned(r))?;
                    // An empty export proves nothing; say so rather than pass.
                    anyhow::ensure!(verifier.events > 0, "{} holds no events", path.display());
                }
                None => {
                    if !no_read_models {
                        let (at, rows) = ledger::audit::read_models(&config.database_url)
                            .await
                            .context("reading the read models (--no-read-models skips them)")?;
                        verifier.compare_with(at, rows);
                        checked_at = Some(at);
                    }
                    let stream = read_stream(&config).await?;
                    ledger::audit::read_stream(&stream, 1, None, |r| verifier.check_owned(r))
                        .await?;
                }
            }
            verifier.finish();
            let seconds = started.elapsed().as_secs_f64();
            let summary = ledger::audit::Summary {
                events: verifier.events,
                aggregates: verifier.aggregates(),
                seconds,
                events_per_s: verifier.events as f64 / seconds.max(1e-9),
                findings: verifier.findings_total,
                read_models_checked_at: checked_at,
            };
            for f in &verifier.findings {
                println!(
                    "finding: stream seq {} on {}: {}: {}",
                    f.seq, f.subject, f.rule, f.detail
                );
            }
            println!(
                "verified {} events in {} aggregates in {:.2}s ({:.0} events/s): {} finding(s), \
                 {} message(s) not written by the ledger{}",
                summary.events,
                summary.aggregates,
                summary.seconds,
                summary.events_per_s,
                summary.findings,
                verifier.foreign,
                match summary.read_models_checked_at {
                    Some(at) => format!("; read models compared at stream seq {at}"),
                    None => String::new(),
                }
            );
            match (&verifier.covered, verifier.signatures_checked()) {
                (Some(c), _) => println!(
                    "covered by the signed checkpoint at stream seq {} (key {}, root {}): \
                     complete and genuine up to it",
                    c.seq,
                    c.key_id.as_deref().unwrap_or("not checked"),
                    c.root
                ),
                (None, true) => println!("no signed checkpoint covers what was verified"),
                (None, false) => println!(
                    "signatures and checkpoints not checked: give --public-key to check them"
                ),
            }
            Ok(if summary.findings == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            })
        }
        AuditCmd::Keys { generate } => {
            match generate {
                Some(id) => println!(
                    "{}",
                    ledger_schemas::signing::SigningKey::generate(&id)
                        .map_err(|e| anyhow::anyhow!(e))?
                ),
                None => {
                    let keys = config.keys()?;
                    let list: Vec<_> = keys.public.all().iter().map(|k| k.to_json()).collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({"keys": list}))?
                    );
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        AuditCmd::Checkpoint => {
            let stream = read_stream(&config).await?;
            let all = ledger::audit::checkpoints(&stream, &config.checkpoint_subject()).await?;
            let (_, newest) = all
                .into_iter()
                .next_back()
                .ok_or_else(|| anyhow::anyhow!("no checkpoint on the stream yet"))?;
            println!("{}", serde_json::to_string_pretty(&newest)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        AuditCmd::Prove {
            account,
            as_of_seq,
            public_keys,
            output,
        } => {
            let account = ledger_schemas::AccountId::parse(&account)?;
            let mut keys = public_keys_of(&public_keys)?;
            keys.extend(config.keys()?.public.all().into_iter().cloned());
            let keys = ledger_schemas::signing::PublicKeys::new(keys);
            anyhow::ensure!(!keys.is_empty(), "no public key: give --public-key");
            let stream = read_stream(&config).await?;
            let proof = ledger::audit::prove(&stream, &prefix, &keys, &account, as_of_seq).await?;
            let text = serde_json::to_string_pretty(&proof)?;
            match output {
                Some(path) => std::fs::write(&path, text + "\n")?,
                None => println!("{text}"),
            }
            eprintln!(
                "proof of {} events of account {account} in the checkpoint at stream seq {}",
                proof.events.len(),
                proof.checkpoint.seq
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        AuditCmd::VerifyProof { file, public_keys } => {
            let keys = ledger_schemas::signing::PublicKeys::new(public_keys_of(&public_keys)?);
            let proof: ledger_schemas::checkpoint::Proof =
                serde_json::from_slice(&std::fs::read(&file)?)
                    .with_context(|| format!("{} is not a proof", file.display()))?;
            match proof.verify(&keys) {
                Ok(proven) => {
                    println!("{}", serde_json::to_string_pretty(&proven)?);
                    println!(
                        "proof verified: account {} as of stream seq {}, signed by key {}",
                        proven.account_id, proven.checkpoint_seq, proven.key_id
                    );
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(why) => {
                    println!("proof refused: {why}");
                    Ok(std::process::ExitCode::from(1))
                }
            }
        }
        AuditCmd::Replay { as_of, account } => {
            let as_of = ledger_schemas::Timestamp::parse(&as_of)?;
            let account = account.map(ledger_schemas::AccountId::parse).transpose()?;
            let stream = read_stream(&config).await?;
            let keys = config.keys()?.public;
            let keys = (!keys.is_empty()).then_some(keys);
            let v = ledger::audit::replay_as_of(&stream, &prefix, keys, as_of, account.as_ref())
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        AuditCmd::Export {
            format,
            from_seq,
            output,
        } => {
            let stream = read_stream(&config).await?;
            let n = match output {
                Some(path) => {
                    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    ledger::audit::export(&stream, from_seq, format, &mut f).await?
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    ledger::audit::export(&stream, from_seq, format, &mut out).await?
                }
            };
            eprintln!("exported {n} events");
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
