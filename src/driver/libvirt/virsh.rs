//! `virsh`, run as an argv against one connection URI. Not-found answers are told apart from failures.
//!
//! Every virsh process opens its own connection to libvirtd (about 40 ms on an idle host), so a call that
//! needs several commands in a row can run them as one [`Virsh::batch`]: one process, one connection.
use crate::exec::{Cmd, ExecError};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
        let cmd = self.cmd().arg(OsString::from_vec(script));
        let (stdout, stderr) = cmd.run_capturing()?;
        if stderr.lines().any(|l| l.starts_with("error:")) {
            return Err(ExecError::Failed {
                cmdline: cmd.display(),
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
