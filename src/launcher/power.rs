//! Host power management, as kvm-build-environment's powerwake/powernap did it: a pool's host is powered on
//! (its `power_on` command) only when jobs wait that no awake pool can take, is used once its CPI answers
//! `info`, and is powered off (`power_off`) after `idle_power_off_seconds` without VMs, creates or demand.
//!
//! Commands run as argv (never through a shell) with a cleared environment (only the CPI's `PATH`), their
//! output discarded (it may hold anything), and are killed after a timeout.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where a pool's host is, as far as the launcher knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// No `power_on`: the launcher does not manage this host.
    Unmanaged,
    On,
    Off,
    /// `power_on` ran (or runs); waiting for the CPI to answer `info` within the boot grace period.
    Waking,
    /// `power_off` runs.
    Stopping,
}

impl Power {
    pub fn as_str(self) -> &'static str {
        match self {
            Power::Unmanaged => "unmanaged",
            Power::On => "on",
            Power::Off => "off",
            Power::Waking => "waking",
            Power::Stopping => "stopping",
        }
    }

    /// Whether the pool may get VMs.
    pub fn usable(self) -> bool {
        matches!(self, Power::Unmanaged | Power::On)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("cannot run {program}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} exited with {status}")]
    Failed { program: String, status: String },
    #[error("{program} did not finish within {secs} s (killed)")]
    Timeout { program: String, secs: u64 },
    #[error("no command configured")]
    Empty,
}

/// Runs a power command (argv) and waits for it, at most `timeout`.
pub fn run(argv: &[String], timeout: Duration) -> Result<(), PowerError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(PowerError::Empty);
    };
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", crate::launcher::cpi::CPI_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| PowerError::Spawn { program: program.clone(), source })?;
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(PowerError::Failed { program: program.clone(), status: st.to_string() }),
            Ok(None) if t.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PowerError::Timeout { program: program.clone(), secs: timeout.as_secs() });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(source) => return Err(PowerError::Spawn { program: program.clone(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_as_argv_with_a_cleared_environment_and_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a b; touch x");
        // the argument is one argv word: no shell splits or interprets it
        run(&["/usr/bin/touch".into(), f.display().to_string()], Duration::from_secs(5)).unwrap();
        assert!(f.exists() && !dir.path().join("x").exists());
        // the environment is cleared: only PATH
        std::env::set_var("VMCPI_POWER_TEST_SECRET", "s3cret");
        let out = dir.path().join("env");
        run(
            &[
                "/usr/bin/perl".into(),
                "-e".into(),
                "open my $f, '>', $ARGV[0]; print $f join(',', sort keys %ENV);".into(),
                out.display().to_string(),
            ],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "PATH");
        let e = run(&["/bin/false".into()], Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("exited with"), "{e}");
        let e = run(&["/no/such/tool".into()], Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, PowerError::Spawn { .. }), "{e}");
        let t = Instant::now();
        let e = run(&["/bin/sleep".into(), "30".into()], Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, PowerError::Timeout { .. }) && t.elapsed() < Duration::from_secs(5));
        assert!(matches!(run(&[], Duration::from_secs(1)), Err(PowerError::Empty)));
    }
}
