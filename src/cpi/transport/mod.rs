//! The transport seam: how a driver reaches the hypervisor host. It runs programs (always an argv, never a
//! shell string built from data), reads and writes files, and takes file locks, either on the CPI's own
//! host ([`local::Local`]) or on a POSIX host reached over SSH ([`ssh::Ssh`], one connection per CPI call).
//!
//! Paths are hypervisor-host paths given as `&str` (they may not exist on the CPI's host). A program that
//! exits non-zero is not a transport error: its [`Output`] comes back and the caller judges it. Transport
//! errors are about reaching the host: spawning, connecting, the host key, authentication, a dropped
//! connection, file I/O, lock time-outs.
pub mod fake;
pub mod local;
pub mod ssh;

use std::path::Path;
use std::time::Duration;

pub use local::Local;
pub use ssh::{Ssh, SshConfig};

/// What a finished program left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status; -1 when it died from a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// The program was killed because it outlived its time limit.
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }
    /// [`Output::message`] scrubbed of secrets: outside text, for a message or a log line.
    pub fn said(&self) -> String {
        crate::common::logger::redact(self.message())
    }

    /// The tool's own words: stderr, or stdout when stderr is empty (vmrun prints its errors on stdout). As
    /// they are: for matching, never for a message (use [`Output::said`]).
    pub fn message(&self) -> &str {
        if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        }
    }
}

/// Why the hypervisor host could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("the SSH host key of {target} ({fingerprint}) is not in {known_hosts}; if this is the right host, add its key (e.g. `ssh-keyscan -p {port} {host} >> {known_hosts}`) and retry")]
    HostKeyUnknown { target: String, host: String, port: u16, fingerprint: String, known_hosts: String },
    #[error("the SSH host key of {target} ({fingerprint}) does NOT match the key recorded in {known_hosts}: refusing to connect (someone may be intercepting the connection, or the host was reinstalled; check the fingerprint with the host's owner before changing {known_hosts})")]
    HostKeyMismatch { target: String, fingerprint: String, known_hosts: String },
    #[error("SSH authentication as {user} on {target} failed: {reason}")]
    Auth { target: String, user: String, reason: String },
    #[error("the SSH connection to {target} was lost while {doing} ({reason}); commands this call ran on the host end with it, and what the call made is removed when the host is reachable again")]
    Disconnected { target: String, doing: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path} does not exist on {target}")]
    NotFound { target: String, path: String },
    #[error("cannot {op} {path} on {target}: {reason}")]
    Io { target: String, op: &'static str, path: String, reason: String },
    #[error("timed out after {waited_s} s waiting for lock {path} on {target} (another CPI call holds it; it is released when that call ends)")]
    LockTimeout { target: String, path: String, waited_s: u64 },
}

impl TransportError {
    /// Whether the connection itself is gone (as opposed to one operation failing).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, TransportError::Disconnected { .. })
    }
}

pub type TransportResult<T> = Result<T, TransportError>;

/// A held lock; dropping it releases the lock.
pub trait LockGuard {}

/// Everything a driver does on the hypervisor host.
pub trait Transport {
    /// "local host" or "ssh user@host:port", for messages.
    fn target(&self) -> String;
    /// Runs `argv[0]` with the other elements as its arguments; the environment gets `LC_ALL=C`. With a
    /// time limit the program is killed when it runs longer, and the output says so.
    fn run_timeout(&self, argv: &[String], limit: Option<Duration>) -> TransportResult<Output>;
    /// [`Transport::run_timeout`] without a time limit.
    fn run(&self, argv: &[String]) -> TransportResult<Output> {
        self.run_timeout(argv, None)
    }
    /// The whole file; [`TransportError::NotFound`] when it does not exist.
    fn read(&self, path: &str) -> TransportResult<Vec<u8>>;
    /// Replaces the file atomically (written beside it, then renamed over it): readers see the old or the
    /// new content, never a mix.
    fn write(&self, path: &str, data: &[u8]) -> TransportResult<()>;
    /// [`Transport::write`] for several files, each replaced atomically; over SSH in one round trip for
    /// all the replacements.
    fn write_many(&self, files: &[(String, Vec<u8>)]) -> TransportResult<()> {
        files.iter().try_for_each(|(p, d)| self.write(p, d))
    }
    /// Copies a local file to `remote` (atomically, like [`Transport::write`]), streaming.
    fn upload(&self, local: &Path, remote: &str) -> TransportResult<()>;
    /// Copies what `src` yields (to its end) to `remote`, like [`Transport::upload`]: runs of zeros become
    /// holes. `what` names the source in errors.
    fn upload_stream(&self, src: &mut dyn std::io::Read, what: &str, remote: &str) -> TransportResult<()>;
    fn exists(&self, path: &str) -> TransportResult<bool>;
    /// Like `mkdir -p`.
    fn mkdir_all(&self, path: &str) -> TransportResult<()>;
    /// Removes a file; Ok(false) when it was not there.
    fn remove_file(&self, path: &str) -> TransportResult<bool>;
    /// Removes a directory tree; Ok(false) when it was not there.
    fn remove_dir_all(&self, path: &str) -> TransportResult<bool>;
    /// Names in a directory (no `.`/`..`); empty when the directory does not exist.
    fn list_dir(&self, path: &str) -> TransportResult<Vec<String>>;
    /// An exclusive lock on `path` (created if needed), waiting at most `timeout`. The lock is an OS file
    /// lock (`flock`), so it is released when its holder ends, however it ends: no stale locks, and waiting
    /// is bounded, so no deadlock outlives the time-out.
    fn lock(&self, path: &str, timeout: Duration) -> TransportResult<Box<dyn LockGuard + '_>>;
    /// For each lock file, whether some process holds it right now (a missing file is not held). One
    /// round trip for all of them: used to find abandoned work without a command per entry.
    fn held(&self, paths: &[String]) -> TransportResult<Vec<bool>>;
}

/// Runs the argv given as "$@" with stdin from /dev/null; a watcher reading our channel kills it when the
/// channel reaches EOF (the connection dropped). Constant text: no data is ever spliced into it.
/// The first argument is a time limit in seconds (0: none).
pub(crate) const WRAPPER: &str = r#"t=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
c=$!
{ cat <&3 >/dev/null 2>&1; kill -TERM "$c" 2>/dev/null; } >/dev/null 2>&1 &
exec 3<&-
s=
if [ "$t" -gt 0 ]; then { sleep "$t"; kill -TERM "$c" 2>/dev/null; } >/dev/null 2>&1 & s=$!; fi
wait "$c"; r=$?
[ -n "$s" ] && kill "$s" 2>/dev/null
exit $r"#;

/// The one place an argv becomes a POSIX shell word list: every word in single quotes, with embedded
/// single quotes written as `'\''`. Used for commands sent over SSH (the remote login shell parses them).
pub fn posix_quote(argv: &[String]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push('\'');
        s.push_str(&a.replace('\'', "'\\''"));
        s.push('\'');
    }
    s
}

/// Parent directory of a POSIX path ("" for a bare name).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// Joins POSIX path parts with single slashes.
pub fn join(base: &str, rest: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), rest.trim_start_matches('/'))
}

/// A name for a temporary sibling of `path`, unique per process and call.
pub(crate) fn temp_sibling(path: &str) -> String {
    format!("{path}.vmcpi-tmp-{}-{}", std::process::id(), crate::common::ids::random_hex(8))
}

/// Standard base64 without padding (OpenSSH's fingerprint form).
pub(crate) fn base64_nopad(data: &[u8]) -> String {
    crate::common::encoding::base64(data).trim_end_matches('=').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_real_shell() {
        let argv: Vec<String> =
            ["/bin/printf", "%s|", "a b", "it's", "$(touch /tmp/vmcpi-pwned)", "`x`", "\\n", "", "\"q\""]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(posix_quote(&argv)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|it's|$(touch /tmp/vmcpi-pwned)|`x`|\\n||\"q\"|");
    }

    #[test]
    fn paths() {
        assert_eq!(parent("/a/b/c.vmx"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(join("/a/", "/b"), "/a/b");
    }

    #[test]
    fn fingerprint_base64() {
        assert_eq!(base64_nopad(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_nopad(b"fo"), "Zm8");
        assert_eq!(base64_nopad(b"f"), "Zg");
    }
}
