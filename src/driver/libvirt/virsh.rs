//! `virsh`, run as an argv against one connection URI through the transport seam ([`crate::transport`]), as
//! plain children that outlive a killed CPI process ([`Local::outliving`]): libvirtd completes a request
//! whatever happens to its client, and the virsh that made it keeps the in-flight marker locked until then.
//! Not-found answers are told apart from failures.
use crate::exec::{Cmd, ExecError};
use crate::transport::{Local, Output, Transport, TransportError};
use std::ffi::OsStr;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Virsh {
    transport: Local,
    bin: String,
    uri: String,
}

/// One virsh command line being built: [`Virsh::cmd`], then `arg`/`args`, then `run`.
#[derive(Debug)]
pub struct VirshCall<'a> {
    virsh: &'a Virsh,
    argv: Vec<String>,
}

impl Virsh {
    pub fn new(bin: &Path, uri: &str) -> Self {
        // config paths come from JSON, so they are UTF-8
        Virsh { transport: Local::outliving(), bin: bin.to_string_lossy().into_owned(), uri: uri.to_string() }
    }

    pub fn cmd(&self) -> VirshCall<'_> {
        let argv = [self.bin.as_str(), "--quiet", "--connect", self.uri.as_str()].map(str::to_string).to_vec();
        VirshCall { virsh: self, argv }
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

impl VirshCall<'_> {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.argv.push(a.as_ref().to_string_lossy().into_owned());
        self
    }

    pub fn args<I, S>(self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        it.into_iter().fold(self, |call, a| call.arg(a))
    }

    /// Runs the command to completion; Ok(stdout) when it exits 0, else the command line and what virsh said.
    pub fn run(self) -> Result<String, ExecError> {
        let cmdline = || Cmd::new(&self.argv[0]).args(&self.argv[1..]).display();
        match self.virsh.transport.run(&self.argv) {
            Ok(out) if out.success() => Ok(out.stdout),
            Ok(Output { status, stdout, stderr, .. }) => Err(ExecError::Failed {
                cmdline: cmdline(),
                status: if status < 0 { "a signal".into() } else { format!("status {status}") },
                stderr: stderr.trim().to_string(),
                stdout: stdout.trim().to_string(),
            }),
            Err(TransportError::Spawn { program, source }) => Err(ExecError::Spawn { program, source }),
            Err(e) => {
                Err(ExecError::Spawn { program: self.virsh.bin.clone(), source: std::io::Error::other(e.to_string()) })
            }
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
