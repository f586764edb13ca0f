//! `agent-launcher`: watches a Buildkite queue and runs every matching job on a fresh VM made by a BOSH CPI.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vmcpi::launcher::buildkite::{Rest, Source, Stacks};
use vmcpi::launcher::config::{Config, SourceKind};
use vmcpi::launcher::daemon::Daemon;
use vmcpi::launcher::{log, status};

const AFTER_HELP: &str = "\
EXAMPLES
  agent-launcher check-config --config /etc/agent-launcher.toml
  agent-launcher run --config /etc/agent-launcher.toml
  agent-launcher run --config /etc/agent-launcher.toml --dry-run
  agent-launcher status --config /etc/agent-launcher.toml

SIGNALS
  SIGTERM/SIGINT: stop taking work; then leave VMs to the next start or drain them (config `on_shutdown`).

See docs/launcher.md for the config reference, the image bootstrap and a pipeline example.";

#[derive(Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the launcher until SIGTERM.
    Run {
        #[arg(long, short = 'c', env = "AGENT_LAUNCHER_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// Prints every reserve, create and delete one poll would do, does none of them, and exits.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validates the config (and that the token can be read) and exits.
    CheckConfig {
        #[arg(long, short = 'c', env = "AGENT_LAUNCHER_CONFIG", value_name = "PATH")]
        config: PathBuf,
    },
    /// Prints what the ledger holds: stemcells and one line per VM or pending job.
    Status {
        #[arg(long, short = 'c', env = "AGENT_LAUNCHER_CONFIG", value_name = "PATH")]
        config: PathBuf,
    },
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    log::error(&log::chain(e));
    ExitCode::FAILURE
}

fn load(path: &std::path::Path) -> Result<(Config, String), vmcpi::launcher::config::ConfigError> {
    let cfg = Config::load(path)?;
    let token = cfg.token()?;
    log::add_secret(&token);
    Ok((cfg, token))
}

fn source(cfg: &Config, token: &str) -> Result<Box<dyn Source>, vmcpi::launcher::config::ConfigError> {
    match cfg.buildkite.source {
        SourceKind::Stacks => Ok(Box::new(Stacks::new(cfg, token))),
        SourceKind::Rest => {
            let api_token = cfg.rest_token()?;
            log::add_secret(&api_token);
            Rest::new(cfg, &api_token)
                .map(|r| Box::new(r) as Box<dyn Source>)
                .ok_or_else(|| vmcpi::launcher::config::ConfigError::Invalid("no [buildkite.rest] section".into()))
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| log::error(&format!("panic: {info}"))));
    match Cli::parse().cmd {
        Cmd::CheckConfig { config } => match load(&config).and_then(|(cfg, token)| source(&cfg, &token).map(|_| cfg)) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} pools: {})",
                    config.display(),
                    cfg.pools.len(),
                    cfg.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Cmd::Status { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match status::status(&cfg) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Cmd::Run { config, dry_run } => {
            let (cfg, token) = match load(&config) {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            let mut src = match source(&cfg, &token) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            if dry_run {
                return match status::dry_run(&cfg, src.as_mut()) {
                    Ok(lines) => {
                        for l in lines {
                            println!("{l}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                };
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
                    return fail(&e);
                }
            }
            let mut d = match Daemon::new(cfg, src, token, stop) {
                Ok(d) => d,
                Err(e) => return fail(&e),
            };
            match d.run() {
                Ok(()) => {
                    log::info("stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}
