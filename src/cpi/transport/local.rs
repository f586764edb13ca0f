//! The hypervisor is on the CPI's own host: programs run as child processes (under the kill-on-EOF wrapper
//! the SSH transport uses too, so they end with the CPI, unless [`Local::outliving`]), files are local
//! files, locks are `flock(2)` locks (std's file locks; released by the kernel when the process ends).
use super::{temp_sibling, LockGuard, Output, Transport, TransportError, TransportResult};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The local host.
#[derive(Debug, Default, Clone)]
pub struct Local {
    outliving: bool,
}

impl Local {
    /// Programs end with the CPI process: a killed CPI's tool is stopped instead of finishing alone after the
    /// next create has removed what this one left (vmrun, whose clones the next create sweeps).
    pub fn new() -> Local {
        Local { outliving: false }
    }

    /// Programs run as plain children that finish their work when the CPI process is killed. For a client of
    /// a daemon that completes a request whatever happens to its client (virsh and libvirtd): the tool holds
    /// the in-flight marker it inherited ([`crate::cpi::inflight`]) until the daemon's answer, so the reaper never
    /// looks before the effect is visible.
    pub fn outliving() -> Local {
        Local { outliving: true }
    }
}

const TARGET: &str = "the local host";

fn io<'a>(op: &'static str, path: &'a str) -> impl FnOnce(std::io::Error) -> TransportError + 'a {
    move |e| {
        if e.kind() == ErrorKind::NotFound && op == "read" {
            TransportError::NotFound { target: TARGET.into(), path: path.into() }
        } else {
            TransportError::Io { target: TARGET.into(), op, path: path.into(), reason: e.to_string() }
        }
    }
}

struct FlockGuard {
    _file: std::fs::File,
}
impl LockGuard for FlockGuard {}

impl Transport for Local {
    fn target(&self) -> String {
        TARGET.into()
    }

    fn run_timeout(&self, argv: &[String], limit: Option<Duration>) -> TransportResult<Output> {
        let Some((program, args)) = argv.split_first() else {
            return Err(TransportError::Unsupported("empty command line".into()));
        };
        crate::debug!("run: {}", crate::cpi::exec::Cmd::new(program).args(args).display());
        let started = Instant::now();
        if Path::new(program).is_absolute() && !Path::new(program).exists() {
            return Err(TransportError::Spawn {
                program: program.clone(),
                source: std::io::Error::from(ErrorKind::NotFound),
            });
        }
        // the same wrapper as over SSH (argv as positional parameters, no quoting): its stdin is a pipe
        // from this process, so if the CPI is killed the tool is stopped too instead of finishing alone
        // after the next create has removed what this one left; an outliving tool runs on its own
        let (mut cmd, grace) = if self.outliving {
            let mut cmd = Command::new(program);
            cmd.args(args).stdin(Stdio::null());
            (cmd, Duration::ZERO)
        } else {
            let secs = limit.map(|l| l.as_secs().max(1)).unwrap_or(0);
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", super::WRAPPER, "vmcpi"]).arg(secs.to_string()).arg(program).args(args);
            cmd.stdin(Stdio::piped());
            (cmd, Duration::from_secs(5))
        };
        cmd.env("LC_ALL", "C").stdout(Stdio::piped()).stderr(Stdio::piped());
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        }
        let spawn_err = |source| TransportError::Spawn { program: program.clone(), source };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let keep_alive = child.stdin.take();
        // pipes are drained by threads so a chatty child never blocks on a full pipe while we wait
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out_t = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let err_t = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let mut timed_out = false;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(spawn_err)? {
                break st;
            }
            // the wrapper enforces the limit (then this is the backstop should the wrapper itself hang)
            if limit.is_some_and(|l| started.elapsed() >= l + grace) {
                let _ = child.kill();
                break child.wait().map_err(spawn_err)?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        drop(keep_alive);
        if limit.is_some_and(|l| started.elapsed() >= l) && !status.success() {
            timed_out = true;
        }
        let output = Output {
            status: status.code().unwrap_or(-1),
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
            timed_out,
        };
        crate::debug!("run: exit {} after {} ms", output.status, started.elapsed().as_millis());
        Ok(output)
    }

    fn read(&self, path: &str) -> TransportResult<Vec<u8>> {
        std::fs::read(path).map_err(io("read", path))
    }

    fn write(&self, path: &str, data: &[u8]) -> TransportResult<()> {
        let tmp = temp_sibling(path);
        let done = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, path));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map_err(io("write", path))
    }

    fn upload(&self, local: &Path, remote: &str) -> TransportResult<()> {
        let mut src = std::fs::File::open(local).map_err(io("read", &local.display().to_string()))?;
        self.upload_stream(&mut src, &local.display().to_string(), remote)
    }

    fn upload_stream(&self, src: &mut dyn std::io::Read, _what: &str, remote: &str) -> TransportResult<()> {
        let tmp = temp_sibling(remote);
        let done = (|| -> std::io::Result<()> {
            let mut dst = std::fs::File::create(&tmp)?;
            // keeps holes: stemcell disks are mostly empty
            crate::cpi::stemcell::sparse_copy(src, &mut dst, remote)?;
            dst.sync_all()?;
            std::fs::rename(&tmp, remote)
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map_err(io("upload to", remote))
    }

    fn exists(&self, path: &str) -> TransportResult<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("stat", path)(e)),
        }
    }

    fn mkdir_all(&self, path: &str) -> TransportResult<()> {
        std::fs::create_dir_all(path).map_err(io("create directory", path))
    }

    fn remove_file(&self, path: &str) -> TransportResult<bool> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", path)(e)),
        }
    }

    fn remove_dir_all(&self, path: &str) -> TransportResult<bool> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", path)(e)),
        }
    }

    fn list_dir(&self, path: &str) -> TransportResult<Vec<String>> {
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", path)(e)),
        };
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(io("list", path))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn lock(&self, path: &str, timeout: Duration) -> TransportResult<Box<dyn LockGuard + '_>> {
        // a link is not followed and a FIFO not waited on: a lock file is a regular file of its own
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(io("open lock", path))?;
        if !file.metadata().map_err(io("open lock", path))?.is_file() {
            return Err(io("open lock", path)(std::io::Error::new(ErrorKind::InvalidInput, "not a regular file")));
        }
        let started = Instant::now();
        loop {
            // std's file lock is flock(2) on Unix: released by the kernel when the process ends
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(FlockGuard { _file: file })),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
            }
            if started.elapsed() >= timeout {
                return Err(TransportError::LockTimeout {
                    target: TARGET.into(),
                    path: path.into(),
                    waited_s: started.elapsed().as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn held(&self, paths: &[String]) -> TransportResult<Vec<bool>> {
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            // a link or anything but a regular file is nobody's lock (and a FIFO is not waited on)
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(p)
            {
                Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
                Ok(_) => {
                    out.push(false);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
                    out.push(false);
                    continue;
                }
                Err(e) => return Err(io("open lock", p)(e)),
            };
            match file.try_lock() {
                Ok(()) => out.push(false),
                Err(std::fs::TryLockError::WouldBlock) => out.push(true),
                Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", p)(e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_commands() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/f.txt").display().to_string();
        let t = Local::new();
        assert!(matches!(t.read(&p), Err(TransportError::NotFound { .. })));
        t.mkdir_all(super::super::parent(&p)).unwrap();
        t.write(&p, b"one").unwrap();
        t.write(&p, b"two").unwrap();
        assert_eq!(t.read(&p).unwrap(), b"two");
        assert_eq!(t.list_dir(super::super::parent(&p)).unwrap(), vec!["f.txt".to_string()]);
        assert!(t.remove_file(&p).unwrap());
        assert!(!t.remove_file(&p).unwrap());
        for t in [Local::new(), Local::outliving()] {
            let out = t.run(&["/bin/sh".into(), "-c".into(), "echo out; echo err >&2; exit 4".into()]).unwrap();
            assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (4, "out\n", "err\n"));
            assert!(matches!(t.run(&["/nonexistent".into()]), Err(TransportError::Spawn { .. })));
            let out = t.run_timeout(&["/bin/sleep".into(), "5".into()], Some(Duration::from_millis(200))).unwrap();
            assert!(out.timed_out && !out.success());
        }
    }

    #[test]
    fn an_outliving_program_is_a_plain_child() {
        // no wrapper (whose watcher would stop it when the CPI dies) stands between it and this process
        let parent = |t: Local| t.run(&["/bin/sh".into(), "-c".into(), "echo $PPID".into()]).unwrap().stdout;
        assert_eq!(parent(Local::outliving()).trim(), std::process::id().to_string());
        assert_ne!(parent(Local::new()).trim(), std::process::id().to_string());
    }

    #[test]
    fn locks_exclude_and_time_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l.lock").display().to_string();
        let t = Local::new();
        let g = t.lock(&p, Duration::from_secs(1)).unwrap();
        // a second open file description conflicts even within one process
        let e = t.lock(&p, Duration::from_millis(100)).err().unwrap();
        assert!(matches!(e, TransportError::LockTimeout { .. }), "{e}");
        assert_eq!(t.held(&[p.clone(), format!("{p}.none")]).unwrap(), vec![true, false]);
        drop(g);
        assert_eq!(t.held(std::slice::from_ref(&p)).unwrap(), vec![false]);
        t.lock(&p, Duration::from_millis(100)).unwrap();
    }

    /// A lock file in the store that is a link (or a FIFO) is not followed (or waited on): locking it fails
    /// and creates nothing at the link's target; probing it says "not held" at once.
    #[test]
    fn lock_files_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        let link = d.path().join("vm-1.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let t = Local::new();
        assert!(t.lock(link.to_str().unwrap(), Duration::from_millis(100)).is_err());
        assert!(!target.exists(), "a file was made at the link's target");
        let fifo = d.path().join("vm-2.lock");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = vec![fifo.display().to_string(), link.display().to_string()];
        std::thread::spawn(move || {
            let _ = tx.send(Local::new().held(&paths).map_err(|e| e.to_string()));
        });
        let held = rx.recv_timeout(Duration::from_secs(5)).expect("held() blocked on a FIFO");
        assert_eq!(held, Ok(vec![false, false]));
        let e = t.lock(fifo.to_str().unwrap(), Duration::from_millis(100)).err().unwrap();
        assert!(!matches!(e, TransportError::LockTimeout { .. }), "{e}");
    }
}
