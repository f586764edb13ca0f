//! `virsh`, run as an argv against one connection URI through the transport seam ([`crate::transport`]), as
//! plain children that outlive a killed CPI process ([`Local::outliving`]): libvirtd completes a request
//! whatever happens to its client, and the virsh that made it keeps the in-flight marker locked until then.
//! Not-found answers are told apart from failures.
//!
//! Every virsh process opens its own connection to libvirtd (about 40 ms on an idle host), so a call that
//! needs several commands in a row can run them as one [`Virsh::batch`]: one process, one connection.
use crate::exec::{Cmd, ExecError};
use crate::transport::{Local, Output, Transport, TransportError};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone)]
pub struct Virsh {
    transport: Arc<dyn Transport + Send + Sync>,
    bin: String,
    uri: String,
}

impl std::fmt::Debug for Virsh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Virsh").field("transport", &self.transport.target()).field("uri", &self.uri).finish()
    }
}

/// One virsh command line being built: [`Virsh::cmd`], then `arg`/`args`, then `run`.
#[derive(Debug)]
pub struct VirshCall<'a> {
    virsh: &'a Virsh,
    argv: Vec<String>,
}

impl Virsh {
    pub fn new(bin: &Path, uri: &str) -> Self {
        Self::with_transport(Arc::new(Local::outliving()), bin, uri)
    }

    /// virsh run through another transport: the fake ([`crate::transport::fake`]) in unit tests.
    pub fn with_transport(transport: Arc<dyn Transport + Send + Sync>, bin: &Path, uri: &str) -> Self {
        // config paths come from JSON, so they are UTF-8
        Virsh { transport, bin: bin.to_string_lossy().into_owned(), uri: uri.to_string() }
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

    /// The command line for messages and logs.
    pub fn display(&self) -> String {
        Cmd::new(&self.argv[0]).args(&self.argv[1..]).display()
    }

    /// Runs the command to completion; Ok(stdout) when it exits 0, else the command line and what virsh said.
    pub fn run(self) -> Result<String, ExecError> {
        self.run_capturing().map(|(stdout, _)| stdout)
    }

    /// Like [`VirshCall::run`], with `input` streamed to virsh's stdin (`vol-upload … /dev/stdin`). A plain
    /// child like the transport's: killed with the CPI, it still reads to the end of its input (EOF) and
    /// finishes the request, holding the inherited in-flight marker until then.
    pub fn run_with_input(self, input: &mut dyn std::io::Read) -> Result<String, ExecError> {
        Cmd::new(&self.argv[0]).args(&self.argv[1..]).run_with_input(input)
    }

    /// Like [`VirshCall::run`], but Ok((stdout, stderr)): virsh running several commands reports some
    /// failures on stderr with status 0.
    pub fn run_capturing(self) -> Result<(String, String), ExecError> {
        let cmdline = || self.display();
        match self.virsh.transport.run(&self.argv) {
            Ok(out) if out.success() => Ok((out.stdout, out.stderr.trim().to_string())),
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

impl Virsh {
    /// Runs several commands in one virsh process, in order; each is an argv (its tokens), quoted here for
    /// virsh's command-string parser, so no token is ever read as a separator or an option it was not.
    /// virsh goes on after a failed command and exits with the status of the last one, so a batch fails
    /// when any command printed an error; the commands after a failure still ran, so a batch groups only
    /// commands whose every effect the caller undoes on failure anyway (the volumes of one create_vm).
    pub fn batch(&self, commands: &[Vec<OsString>]) -> Result<String, ExecError> {
        let mut script = Vec::new();
        for (i, tokens) in commands.iter().enumerate() {
            if i > 0 {
                script.extend_from_slice(b" ; ");
            }
            for (j, t) in tokens.iter().enumerate() {
                if j > 0 {
                    script.push(b' ');
                }
                script.extend_from_slice(&quote(t));
            }
        }
        let names: Vec<_> = commands.iter().filter_map(|c| c.first()).map(|c| c.to_string_lossy()).collect();
        crate::debug!("virsh: one process for {}", names.join(" + "));
        // the tokens come from text (names, UTF-8 config paths), so the script is text too
        let cmd = self.cmd().arg(String::from_utf8_lossy(&script).as_ref());
        let cmdline = cmd.display();
        let (stdout, stderr) = cmd.run_capturing()?;
        if stderr.lines().any(|l| l.starts_with("error:")) {
            return Err(ExecError::Failed {
                cmdline,
                status: "an error in one of its commands".into(),
                stderr,
                stdout: stdout.trim().to_string(),
            });
        }
        Ok(stdout)
    }
}

/// One command of a [`Virsh::batch`].
pub fn command<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// Quotes a token for virsh's command-string parser: inside single quotes everything up to the next single
/// quote is literal (spaces, `;`, `#`, `\`, `"`, line breaks), so a single quote is written as `'\''`.
fn quote(token: &OsStr) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in token.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_token_whole() {
        assert_eq!(quote(OsStr::new("vm-1")), b"'vm-1'");
        assert_eq!(quote(OsStr::new("a'b")), b"'a'\\''b'");
        assert_eq!(quote(OsStr::new("")), b"''");
    }

    /// Round trip through the real parser: virsh's `echo` prints its arguments back (needs virsh, which the
    /// build's packages install; no connection is made for `echo`).
    #[test]
    fn virsh_reads_hostile_tokens_back_unchanged() {
        let virsh = Path::new("/usr/bin/virsh");
        if !virsh.exists() {
            assert!(std::env::var_os("CI").is_none(), "virsh is missing in CI");
            return;
        }
        let hostile =
            ["a b", "x;echo pwned", "#c", "q'uote", "d\"q", "back\\slash", "line\nbreak", "--pool", "", "$(id)"];
        for t in hostile {
            let v = Virsh::new(virsh, "test:///default");
            let out = v.batch(&[command(["echo", "--", t]), command(["echo", "next"])]).unwrap();
            // with --quiet, virsh's echo ends its output without a line break
            assert_eq!(out.replace("\nnext", "next").trim_end_matches('\n'), format!("{t}next"), "token {t:?}");
        }
    }

    #[test]
    fn a_failed_command_fails_the_batch() {
        let virsh = Path::new("/usr/bin/virsh");
        if !virsh.exists() {
            assert!(std::env::var_os("CI").is_none(), "virsh is missing in CI");
            return;
        }
        let v = Virsh::new(virsh, "test:///default");
        // the failure comes first: virsh goes on and exits 0, the batch still fails
        let err = v.batch(&[command(["domstate", "no-such-domain"]), command(["echo", "after"])]).unwrap_err();
        assert!(is_not_found(&err), "{err}");
        assert!(v.batch(&[command(["echo", "a"]), command(["domstate", "no-such-domain"])]).is_err());
    }
}
