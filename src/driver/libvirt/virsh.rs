//! `virsh`, run as an argv against one connection URI. Not-found answers are told apart from failures.
use crate::exec::{Cmd, ExecError};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Virsh {
    bin: PathBuf,
    uri: String,
}

impl Virsh {
    pub fn new(bin: &Path, uri: &str) -> Self {
        Virsh { bin: bin.to_path_buf(), uri: uri.to_string() }
    }

    pub fn cmd(&self) -> Cmd {
        Cmd::new(&self.bin).args(["--quiet", "--connect", self.uri.as_str()])
    }

    /// Runs `virsh ARGS…`.
    pub fn run<I, S>(&self, args: I) -> Result<String, ExecError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd().args(args).run()
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
