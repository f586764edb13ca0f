//! A POSIX hypervisor host (Linux, macOS) reached over SSH with libssh2 (the `ssh2` crate).
//!
//! - One connection per CPI call: opened at the first operation, reused by every later one. After a lost
//!   connection one new connection is allowed (so a failed create can still clean up); then it gives up.
//! - The host key is always checked, against a known_hosts file or a key given inline; the error names the
//!   SHA256 fingerprint the host presented, as `ssh` does.
//! - Key (ed25519 recommended: libssh2 1.10 signs RSA keys with SHA-1, which OpenSSH ≥ 8.8 refuses) or
//!   password authentication.
//! - Commands: the argv is quoted in exactly one place ([`super::posix_quote`]) and run by `/bin/sh` under a
//!   small constant wrapper that kills the command when the connection drops (its stdin is our channel),
//!   so a lost CPI leaves no tool running on the host. Files go over SFTP, written to a temporary sibling
//!   and renamed into place (SFTP's rename for new files; `mv -f` to replace one, as SFTP v3 cannot). Locks are `flock(2)` locks held by a `perl` process whose stdin is our
//!   channel: they end with the connection, never go stale.
//! - Windows hosts are refused with a clear message (see docs/vmrun.md for the plan).
//!
//! The config is in [`config`], the connection (host key, authentication, reconnection) in [`session`].
use super::{posix_quote, temp_sibling, LockGuard, Output, Transport, TransportError, TransportResult, WRAPPER};
use ssh2::{Channel, ErrorCode, Sftp};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod config;
mod session;

pub use config::{SshConfig, CONTEXT_KEYS, WINDOWS_REFUSED};
use session::{is_disconnect, Conn};

/// Takes an exclusive flock on $ARGV[0] within $ARGV[1] milliseconds (counted in 50 ms steps: core perl
/// only, no Time::HiRes), says "locked", holds it until stdin ends.
/// The file is opened without following a link or waiting on a FIFO, and must be a regular file.
const LOCK_SCRIPT: &str = r#"use Fcntl qw(:flock :DEFAULT);
my ($p, $ms) = @ARGV; $| = 1;
sysopen(my $f, $p, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0644) or do { print "error: $!\n"; exit 2 };
-f $f or do { print "error: not a regular file\n"; exit 2 };
my $tries = int($ms / 50);
until (flock($f, LOCK_EX | LOCK_NB)) {
  if ($tries-- <= 0) { print "timeout\n"; exit 3 }
  select(undef, undef, undef, 0.05);
}
print "locked\n";
while (sysread(STDIN, my $b, 4096)) {}
exit 0"#;

/// For each path in @ARGV prints "held" when another process holds its flock, else "free".
/// A link, a FIFO or anything but a regular file is "free" (nobody's lock), and is neither followed nor waited on.
const PROBE_SCRIPT: &str = r#"use Fcntl qw(:flock :DEFAULT); $| = 1;
for my $p (@ARGV) {
  if (sysopen(my $f, $p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK) && -f $f) { if (flock($f, LOCK_EX | LOCK_NB)) { print "free\n" } else { print "held\n" } close($f) }
  else { print "free\n" }
}"#;

/// A hypervisor host over SSH.
pub struct Ssh {
    cfg: SshConfig,
    conn: Mutex<Option<Conn>>,
    opened: Mutex<u32>,
}

struct SshLock {
    ch: Channel,
}
impl LockGuard for SshLock {}
impl Drop for SshLock {
    fn drop(&mut self) {
        // EOF on its stdin ends the perl holder and with it the lock
        let _ = self.ch.send_eof();
        let _ = self.ch.wait_close();
    }
}

fn sftp_code(e: &ssh2::Error) -> Option<i32> {
    match e.code() {
        ErrorCode::SFTP(c) => Some(c),
        _ => None,
    }
}

const SFTP_NO_SUCH_FILE: i32 = 2;

impl Ssh {
    fn exec(&self, command: &str, doing: &str) -> TransportResult<Channel> {
        let sess = self.session()?;
        let mut ch = sess.channel_session().map_err(|e| self.err(doing, e))?;
        ch.exec(command).map_err(|e| self.err(doing, e))?;
        Ok(ch)
    }

    /// Starts `argv` on the host (quoted in the one place, [`super::posix_quote`]; no wrapper) and hands
    /// back its channel: stdin and stdout as a byte stream, stderr kept apart. The libvirt RPC client's
    /// SSH transport runs `virt-ssh-helper` this way; the command ends when the channel closes.
    pub fn exec_stream(&self, argv: &[String]) -> TransportResult<Channel> {
        let doing = format!("starting {}", argv.first().map(String::as_str).unwrap_or("a command"));
        self.exec(&format!("exec {}", posix_quote(argv)), &doing)
    }

    /// `mv -f` on the host: SFTP v3 rename refuses to replace an existing file.
    fn rename_over(&self, from: &str, to: &str) -> TransportResult<()> {
        let out = self.run(&["mv".into(), "-f".into(), "--".into(), from.into(), to.into()])?;
        if out.success() {
            Ok(())
        } else {
            Err(TransportError::Io { target: self.target_str(), op: "rename", path: to.into(), reason: out.said() })
        }
    }

    /// Renames `from` to `to`: over SFTP when `to` is new (no command round trip), else with `mv -f`.
    fn rename_into_place(&self, from: &str, to: &str) -> TransportResult<()> {
        let renamed = self.with_sftp(|sftp| match sftp.rename(Path::new(from), Path::new(to), None) {
            Ok(()) => Ok(true),
            Err(e) if is_disconnect(&e) => Err(self.lost(&format!("renaming {from}"), e)),
            Err(_) => Ok(false),
        })?;
        if renamed {
            Ok(())
        } else {
            self.rename_over(from, to)
        }
    }

    /// `mkdir -p` over SFTP: each missing level is made, one that exists is fine (another process may
    /// make it at the same time).
    fn sftp_mkdir_p(&self, sftp: &Sftp, path: &str, depth: u32) -> TransportResult<()> {
        let p = Path::new(path);
        match sftp.mkdir(p, 0o755) {
            Ok(()) => return Ok(()),
            Err(e) if is_disconnect(&e) => return Err(self.lost(&format!("creating {path}"), e)),
            Err(_) => {}
        }
        if let Ok(st) = sftp.stat(p) {
            if st.is_dir() {
                return Ok(());
            }
            return Err(TransportError::Io {
                target: self.target_str(),
                op: "create directory",
                path: path.into(),
                reason: "a file is in the way".into(),
            });
        }
        let parent = super::parent(path);
        if depth > 64 || parent.is_empty() || parent == path {
            return Err(TransportError::Io {
                target: self.target_str(),
                op: "create directory",
                path: path.into(),
                reason: "cannot create it".into(),
            });
        }
        self.sftp_mkdir_p(sftp, parent, depth + 1)?;
        match sftp.mkdir(p, 0o755) {
            Ok(()) => Ok(()),
            Err(_) if sftp.stat(p).is_ok_and(|st| st.is_dir()) => Ok(()),
            Err(e) => Err(self.io_err("create directory", path, e)),
        }
    }

    fn io_err(&self, op: &'static str, path: &str, e: ssh2::Error) -> TransportError {
        if is_disconnect(&e) {
            return self.lost(&format!("{op} {path}"), e);
        }
        if sftp_code(&e) == Some(SFTP_NO_SUCH_FILE) {
            return TransportError::NotFound { target: self.target_str(), path: path.into() };
        }
        TransportError::Io {
            target: self.target_str(),
            op,
            path: path.into(),
            reason: crate::common::logger::redact(&e.to_string()),
        }
    }

    fn io_std(&self, op: &'static str, path: &str, e: std::io::Error) -> TransportError {
        // libssh2 errors surface through Read/Write as io::Error; a dead socket shows as one of these
        let text = e.to_string();
        if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::TimedOut
        ) || text.contains("socket")
            || text.contains("Socket")
            || text.contains("disconnect")
        {
            return self.lost(&format!("{op} {path}"), text);
        }
        TransportError::Io {
            target: self.target_str(),
            op,
            path: path.into(),
            reason: crate::common::logger::redact(&text),
        }
    }

    fn with_sftp<T>(&self, f: impl FnOnce(&Sftp) -> TransportResult<T>) -> TransportResult<T> {
        let sftp = self.sftp()?;
        let r = f(&sftp);
        if !matches!(r, Err(TransportError::Disconnected { .. })) {
            self.give_back(sftp);
        }
        r
    }
}

impl Transport for Ssh {
    fn target(&self) -> String {
        self.target_str()
    }

    fn run_timeout(&self, argv: &[String], limit: Option<Duration>) -> TransportResult<Output> {
        if argv.is_empty() {
            return Err(TransportError::Unsupported("empty command line".into()));
        }
        let secs = limit.map(|l| l.as_secs().max(1)).unwrap_or(0);
        let mut full =
            vec!["/bin/sh".to_string(), "-c".to_string(), WRAPPER.to_string(), "vmcpi".to_string(), secs.to_string()];
        full.extend(argv.iter().cloned());
        let command = format!("exec {}", posix_quote(&full));
        crate::debug!(
            "run on {}: {}",
            self.target_str(),
            crate::cpi::exec::Cmd::new(&argv[0]).args(&argv[1..]).display()
        );
        let started = Instant::now();
        let doing = format!("running {}", argv[0]);
        let mut ch = self.exec(&command, &doing)?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        // stdout first, then stderr: the tools write little to stderr (libssh2 queues it meanwhile; more than
        // a channel window of stderr before stdout closes would stall)
        ch.read_to_end(&mut stdout).map_err(|e| self.lost(&doing, e))?;
        ch.stderr().read_to_end(&mut stderr).map_err(|e| self.lost(&doing, e))?;
        ch.wait_close().map_err(|e| self.err(&doing, e))?;
        let mut status = ch.exit_status().map_err(|e| self.err(&doing, e))?;
        // killed by a signal: sshd sends exit-signal and no exit-status, which libssh2 reports as 0
        if let Ok(sig) = ch.exit_signal() {
            if let Some(name) = sig.exit_signal {
                crate::debug!("run: ended by signal {name}");
                status = -1;
            }
        }
        let timed_out = limit.is_some_and(|l| started.elapsed() >= l) && status != 0;
        let out = Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            timed_out,
        };
        crate::debug!("run: exit {} after {} ms", out.status, started.elapsed().as_millis());
        if !out.success()
            && (out.message().contains("is not recognized as an internal or external command")
                || out.message().contains("is not recognized as the name of a cmdlet"))
        {
            return Err(TransportError::Unsupported(WINDOWS_REFUSED.into()));
        }
        Ok(out)
    }

    fn read(&self, path: &str) -> TransportResult<Vec<u8>> {
        self.with_sftp(|sftp| {
            let mut f = sftp.open(Path::new(path)).map_err(|e| self.io_err("read", path, e))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(|e| self.io_std("read", path, e))?;
            Ok(buf)
        })
    }

    fn write(&self, path: &str, data: &[u8]) -> TransportResult<()> {
        let tmp = temp_sibling(path);
        self.with_sftp(|sftp| {
            let mut f = sftp.create(Path::new(&tmp)).map_err(|e| self.io_err("write", &tmp, e))?;
            f.write_all(data).map_err(|e| self.io_std("write", &tmp, e))?;
            f.close().map_err(|e| self.io_err("write", &tmp, e))?;
            Ok(())
        })?;
        let r = self.rename_into_place(&tmp, path);
        if r.is_err() {
            let _ = self.remove_file(&tmp);
        }
        r
    }

    fn write_many(&self, files: &[(String, Vec<u8>)]) -> TransportResult<()> {
        // every file to a temporary sibling over SFTP; new files renamed there too; the replacements in one
        // command: a constant loop over `mv -f`, the paths as positional parameters
        const MV_LOOP: &str = r#"while [ $# -ge 2 ]; do mv -f -- "$1" "$2" || exit $?; shift 2; done"#;
        let tmps: Vec<String> = files.iter().map(|(p, _)| temp_sibling(p)).collect();
        let mut replace = vec!["/bin/sh".to_string(), "-c".into(), MV_LOOP.into(), "vmcpi".into()];
        let cleanup = |tmps: &[String]| {
            for t in tmps {
                let _ = self.remove_file(t);
            }
        };
        let written = self.with_sftp(|sftp| {
            for ((_, data), tmp) in files.iter().zip(&tmps) {
                let mut f = sftp.create(Path::new(tmp)).map_err(|e| self.io_err("write", tmp, e))?;
                f.write_all(data).map_err(|e| self.io_std("write", tmp, e))?;
                f.close().map_err(|e| self.io_err("write", tmp, e))?;
            }
            Ok(())
        });
        if let Err(e) = written {
            cleanup(&tmps);
            return Err(e);
        }
        for ((path, _), tmp) in files.iter().zip(&tmps) {
            let renamed = self.with_sftp(|sftp| match sftp.rename(Path::new(tmp), Path::new(path), None) {
                Ok(()) => Ok(true),
                Err(e) if is_disconnect(&e) => Err(self.lost(&format!("renaming {tmp}"), e)),
                Err(_) => Ok(false),
            })?;
            if !renamed {
                replace.push(tmp.clone());
                replace.push(path.clone());
            }
        }
        if replace.len() > 4 {
            let out = self.run(&replace)?;
            if !out.success() {
                cleanup(&tmps);
                return Err(TransportError::Io {
                    target: self.target_str(),
                    op: "replace",
                    path: files.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", "),
                    reason: out.said(),
                });
            }
        }
        Ok(())
    }

    fn upload(&self, local: &Path, remote: &str) -> TransportResult<()> {
        let shown = local.display().to_string();
        let mut src = std::fs::File::open(local).map_err(|e| TransportError::Io {
            target: "the local host".into(),
            op: "read",
            path: shown.clone(),
            reason: crate::common::logger::redact(&e.to_string()),
        })?;
        self.upload_stream(&mut src, &shown, remote)
    }

    fn upload_stream(&self, src: &mut dyn Read, shown: &str, remote: &str) -> TransportResult<()> {
        let tmp = temp_sibling(remote);
        let started = Instant::now();
        let total = self.with_sftp(|sftp| {
            let mut f = sftp.create(Path::new(&tmp)).map_err(|e| self.io_err("upload to", &tmp, e))?;
            let mut buf = vec![0u8; 1 << 18];
            let mut pos: u64 = 0;
            loop {
                let n = src.read(&mut buf).map_err(|e| TransportError::Io {
                    target: "the local host".into(),
                    op: "read",
                    path: shown.to_string(),
                    reason: crate::common::logger::redact(&e.to_string()),
                })?;
                if n == 0 {
                    break;
                }
                if buf[..n].iter().all(|b| *b == 0) {
                    // leave a hole: sftp-server writes at offsets, so skipped zeros cost nothing
                    pos += n as u64;
                    continue;
                }
                f.seek(SeekFrom::Start(pos)).map_err(|e| self.io_std("upload to", &tmp, e))?;
                f.write_all(&buf[..n]).map_err(|e| self.io_std("upload to", &tmp, e))?;
                pos += n as u64;
            }
            let mut st = f.stat().map_err(|e| self.io_err("upload to", &tmp, e))?;
            if st.size != Some(pos) {
                st.size = Some(pos);
                f.setstat(st).map_err(|e| self.io_err("upload to", &tmp, e))?;
            }
            f.close().map_err(|e| self.io_err("upload to", &tmp, e))?;
            Ok(pos)
        })?;
        crate::debug!("uploaded {} MiB to {remote} in {} ms", total >> 20, started.elapsed().as_millis());
        let r = self.rename_into_place(&tmp, remote);
        if r.is_err() {
            let _ = self.remove_file(&tmp);
        }
        r
    }

    fn exists(&self, path: &str) -> TransportResult<bool> {
        self.with_sftp(|sftp| match sftp.lstat(Path::new(path)) {
            Ok(_) => Ok(true),
            Err(e) if sftp_code(&e) == Some(SFTP_NO_SUCH_FILE) => Ok(false),
            Err(e) => Err(self.io_err("stat", path, e)),
        })
    }

    fn mkdir_all(&self, path: &str) -> TransportResult<()> {
        self.with_sftp(|sftp| self.sftp_mkdir_p(sftp, path, 0))
    }

    fn remove_file(&self, path: &str) -> TransportResult<bool> {
        self.with_sftp(|sftp| match sftp.unlink(Path::new(path)) {
            Ok(()) => Ok(true),
            Err(e) if sftp_code(&e) == Some(SFTP_NO_SUCH_FILE) => Ok(false),
            Err(e) => Err(self.io_err("remove", path, e)),
        })
    }

    fn remove_dir_all(&self, path: &str) -> TransportResult<bool> {
        if !self.exists(path)? {
            return Ok(false);
        }
        let out = self.run(&["rm".into(), "-rf".into(), "--".into(), path.into()])?;
        if out.success() {
            Ok(true)
        } else {
            Err(TransportError::Io { target: self.target_str(), op: "remove", path: path.into(), reason: out.said() })
        }
    }

    fn list_dir(&self, path: &str) -> TransportResult<Vec<String>> {
        self.with_sftp(|sftp| match sftp.readdir(Path::new(path)) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .iter()
                    .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .filter(|n| n != "." && n != "..")
                    .collect();
                names.sort();
                Ok(names)
            }
            Err(e) if sftp_code(&e) == Some(SFTP_NO_SUCH_FILE) => Ok(Vec::new()),
            Err(e) => Err(self.io_err("list", path, e)),
        })
    }

    fn held(&self, paths: &[String]) -> TransportResult<Vec<bool>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv = vec!["/usr/bin/perl".to_string(), "-e".to_string(), PROBE_SCRIPT.to_string()];
        argv.extend(paths.iter().cloned());
        let out = self.run(&argv)?;
        let answers: Vec<bool> = out.stdout.lines().map(|l| l.trim() == "held").collect();
        if !out.success() || answers.len() != paths.len() {
            return Err(TransportError::Io {
                target: self.target_str(),
                op: "probe locks (needs /usr/bin/perl on the host)",
                path: paths.join(" "),
                reason: out.said(),
            });
        }
        Ok(answers)
    }

    fn lock(&self, path: &str, timeout: Duration) -> TransportResult<Box<dyn LockGuard + '_>> {
        let argv = vec![
            "/usr/bin/perl".to_string(),
            "-e".to_string(),
            LOCK_SCRIPT.to_string(),
            path.to_string(),
            timeout.as_millis().to_string(),
        ];
        let doing = format!("waiting for lock {path}");
        let started = Instant::now();
        let mut ch = self.exec(&format!("exec {}", posix_quote(&argv)), &doing)?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match ch.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e) => return Err(self.lost(&doing, e)),
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        match line.as_str() {
            "locked" => Ok(Box::new(SshLock { ch })),
            "timeout" => Err(TransportError::LockTimeout {
                target: self.target_str(),
                path: path.into(),
                waited_s: started.elapsed().as_secs(),
            }),
            _ => {
                let mut err = String::new();
                let _ = ch.stderr().read_to_string(&mut err);
                let _ = ch.wait_close();
                let reason = crate::common::logger::redact(format!("{line} {}", err.trim()).trim());
                if reason.is_empty() {
                    return Err(self.lost(&doing, "the lock holder ended without answering"));
                }
                Err(TransportError::Io {
                    target: self.target_str(),
                    op: "lock (needs /usr/bin/perl on the host)",
                    path: path.into(),
                    reason,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `ssh` block from JSON.
    pub(super) fn cfg(v: serde_json::Value) -> SshConfig {
        serde_json::from_value(v).unwrap()
    }

    fn wrapped(argv: &[&str]) -> std::process::Command {
        wrapped_limit(argv, 0)
    }

    fn wrapped_limit(argv: &[&str], secs: u64) -> std::process::Command {
        let mut full =
            vec!["/bin/sh".to_string(), "-c".to_string(), WRAPPER.to_string(), "vmcpi".to_string(), secs.to_string()];
        full.extend(argv.iter().map(|s| s.to_string()));
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c").arg(format!("exec {}", posix_quote(&full)));
        c
    }

    #[test]
    fn wrapper_runs_argv_and_reports_status() {
        use std::process::Stdio;
        let mut child = wrapped(&["/bin/sh", "-c", "echo \"$1\"; echo e >&2; exit 7", "x", "a 'b' $c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // stdin stays open (like our channel) until the command is done
        let stdin = child.stdin.take();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        assert_eq!(status.code(), Some(7));
        assert_eq!(out, "a 'b' $c\n");
        assert_eq!(err, "e\n");
    }

    #[test]
    fn wrapper_kills_the_command_when_its_stdin_ends() {
        // stdin at EOF is what a dropped connection looks like on the host
        let started = Instant::now();
        let st = wrapped(&["/bin/sleep", "30"]).stdin(std::process::Stdio::null()).status().unwrap();
        assert_eq!(st.code(), Some(143));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn wrapper_enforces_the_time_limit() {
        let started = Instant::now();
        let mut child = wrapped_limit(&["/bin/sleep", "30"], 1).stdin(std::process::Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take();
        let st = child.wait().unwrap();
        drop(stdin);
        assert_eq!(st.code(), Some(143));
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut child = wrapped_limit(&["/bin/true"], 5).stdin(std::process::Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        drop(stdin);
    }

    /// The host-side lock scripts (run here with the same perl as on a host): a lock file that is a link
    /// is not followed (nothing is made at its target), and a FIFO is neither waited on nor taken for a lock.
    #[test]
    fn host_lock_scripts_follow_no_link() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        let link = d.path().join("vm-1.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = d.path().join("vm-2.lock");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let perl = |script: &str, args: &[&std::path::Path], extra: &[&str]| {
            let out = std::process::Command::new("/usr/bin/perl")
                .args(["-e", script])
                .args(args)
                .args(extra)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        for p in [&link, &fifo] {
            let said = perl(LOCK_SCRIPT, &[p], &["100"]);
            assert!(said.starts_with("error"), "{}: {said}", p.display());
        }
        assert!(!target.exists(), "a file was made at the link's target");
        assert_eq!(perl(PROBE_SCRIPT, &[&link, &fifo], &[]), "free\nfree\n");
        let plain = d.path().join("vm-3.lock");
        assert_eq!(perl(LOCK_SCRIPT, &[&plain], &["100"]), "locked\n");
    }
}
