//! `agent-launcher`: watches a Buildkite queue and runs every matching job on a fresh VM made by a BOSH CPI.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vmcpi::launcher::buildkite::{MultiSource, Rest, Source, Stacks};
use vmcpi::launcher::config::{Config, SourceKind};
use vmcpi::launcher::daemon::Daemon;
use vmcpi::launcher::{log, status};

const AFTER_HELP: &str = "\
EXAMPLES
  agent-launcher check-config --config /etc/agent-launcher.toml
  agent-launcher check-config --online --config /etc/agent-launcher.toml
  agent-launcher run --config /etc/agent-launcher.toml
  agent-launcher run --config /etc/agent-launcher.toml --dry-run
  agent-launcher status --config /etc/agent-launcher.toml

SIGNALS
  SIGTERM/SIGINT: stop taking work; then leave VMs to the next start or drain them (config `on_shutdown`).

See docs/launcher.md for the config reference, the image bootstrap and a pipeline example.";

#[derive(Parser)]
#[command(name = "agent-launcher", version, about = "Runs each Buildkite job on a fresh VM made through a BOSH CPI, and deletes the VM after the job", after_help = AFTER_HELP)]
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
    /// Validates the config, the token sources, the CPI executables, the stemcell files and the listen
    /// address, and exits.
    CheckConfig {
        #[arg(long, short = 'c', env = "AGENT_LAUNCHER_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// Also checks the tokens against the Buildkite API (read-only requests; nothing is registered).
        #[arg(long)]
        online: bool,
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
    for w in cfg.warnings() {
        log::warn(&w);
    }
    let token = cfg.token()?;
    log::add_secret(&token);
    Ok((cfg, token))
}

fn source(cfg: &Config, token: &str) -> Result<Box<dyn Source>, vmcpi::launcher::config::ConfigError> {
    match cfg.buildkite.source {
        SourceKind::Stacks if cfg.queue_stacks().len() > 1 => Ok(Box::new(MultiSource::new(
            cfg.queue_stacks()
                .iter()
                .map(|(q, key)| (q.clone(), Box::new(Stacks::for_queue(cfg, token, q, key)) as Box<dyn Source>))
                .collect(),
        ))),
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
        Cmd::CheckConfig { config, online } => {
            let cfg = match load(&config)
                .and_then(|(cfg, token)| source(&cfg, &token).and_then(|_| cfg.check_local()).map(|_| (cfg, token)))
            {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            let (cfg, token) = cfg;
            if online {
                for (q, key) in cfg.queue_stacks() {
                    if let Err(e) = Stacks::for_queue(&cfg, &token, &q, &key).check_token() {
                        return fail(&e);
                    }
                }
                if cfg.buildkite.source == SourceKind::Rest {
                    let checked =
                        cfg.rest_token().map_err(|e| Box::new(e) as Box<dyn std::error::Error>).and_then(|t| {
                            match Rest::new(&cfg, &t) {
                                Some(mut r) => r.check_token().map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
                                None => Ok(()),
                            }
                        });
                    if let Err(e) = checked {
                        return fail(e.as_ref());
                    }
                }
            }
            println!(
                "{}: ok ({} pools: {}){}",
                config.display(),
                cfg.pools.len(),
                cfg.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
                if online { "; the Buildkite API accepts the token" } else { "" }
            );
            ExitCode::SUCCESS
        }
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
