//! `agent-launcher`: watches a Buildkite queue and runs every matching job on a fresh VM made by a BOSH CPI.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vmcpi::launcher::buildkite::Buildkite;
use vmcpi::launcher::config::{Config, ConfigError};
use vmcpi::launcher::daemon::Daemon;
use vmcpi::launcher::source::Source;
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

/// The config, its warnings logged, and its source with the tokens read.
fn load(path: &std::path::Path) -> Result<(Config, Box<dyn Source>), ConfigError> {
    let cfg = Config::load(path)?;
    for w in cfg.warnings() {
        log::warn(&w);
    }
    let source = Buildkite::open(&cfg)?;
    Ok((cfg, Box::new(source)))
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| log::error(&format!("panic: {info}"))));
    match Cli::parse().cmd {
        Cmd::CheckConfig { config, online } => {
            let (cfg, mut src) = match load(&config).and_then(|x| x.0.check_local().map(|_| x)) {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            if online {
                if let Err(e) = src.check() {
                    return fail(&e);
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
            let (cfg, mut src) = match load(&config) {
                Ok(x) => x,
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
            let mut d = match Daemon::new(cfg, src, stop) {
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
