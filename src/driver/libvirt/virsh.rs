//! `virsh`, run as an argv against one connection URI through the [`Transport`] (the one seam every driver
//! runs programs through; [`crate::transport::fake`] in unit tests). Not-found answers are told apart from
//! failures.
use crate::exec::ExecError;
use crate::transport::{Transport, TransportError};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone)]
pub struct Virsh {
    t: Arc<dyn Transport>,
    bin: String,
    uri: String,
}

impl std::fmt::Debug for Virsh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Virsh").field("bin", &self.bin).field("uri", &self.uri).finish()
    }
}

impl Virsh {
    pub fn new(t: Arc<dyn Transport>, bin: &Path, uri: &str) -> Self {
        Virsh { t, bin: bin.display().to_string(), uri: uri.to_string() }
    }

    /// `virsh --quiet --connect URI ARGS…`.
    pub fn argv<I, S>(&self, args: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = vec![self.bin.clone(), "--quiet".into(), "--connect".into(), self.uri.clone()];
        argv.extend(args.into_iter().map(|a| a.as_ref().to_string_lossy().into_owned()));
        argv
    }

    /// Runs `virsh ARGS…`; a non-zero exit keeps the command line, status and output.
    pub fn run<I, S>(&self, args: I) -> Result<String, ExecError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv = self.argv(args);
        let out = self.t.run(&argv).map_err(|e| match e {
            TransportError::Spawn { program, source } => ExecError::Spawn { program, source },
            other => ExecError::Spawn { program: self.bin.clone(), source: std::io::Error::other(other.to_string()) },
        })?;
        if out.success() {
            return Ok(out.stdout);
        }
        let status = if out.status < 0 { "a signal".to_string() } else { format!("status {}", out.status) };
        Err(ExecError::Failed {
            cmdline: crate::exec::Cmd::new(&argv[0]).args(&argv[1..]).display(),
            status,
            stderr: out.stderr.trim().to_string(),
            stdout: out.stdout.trim().to_string(),
        })
    }

    /// Like [`Virsh::run`], but `Ok(None)` when virsh says the domain/volume/pool does not exist.
    pub fn run_opt<I, S>(&self, args: I) -> Result<Option<String>, ExecError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        match self.run(args) {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether virsh reported a missing domain, volume or pool (libvirt 9 wording, LC_ALL=C).
pub fn is_not_found(e: &ExecError) -> bool {
    let out = e.output();
    [
        "failed to get domain",
        "Domain not found",
        "failed to get vol",
        "Storage volume not found",
        "failed to get pool",
        "Storage pool not found",
    ]
    .iter()
    .any(|p| out.contains(p))
}
