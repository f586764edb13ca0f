//! Test harness: runs the built `vmcpi` the way BOSH does and checks for test peers.
#![allow(dead_code)]
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn cpi_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmcpi"))
}

/// Whether we run in CI (then a missing peer is a failure, never a skip).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Returns false (skip) when a peer is missing on a laptop; panics when CI is set.
pub fn require_peer(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{what} is required when CI is set, and it is not available");
    }
    eprintln!("SKIP: {what} is not available (set CI=1 to make this a failure)");
    false
}

/// Output of one CPI process.
#[derive(Debug)]
pub struct Run {
    pub response: Value,
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

/// A CPI with one config file, called like the director calls it.
pub struct Cpi {
    pub config: PathBuf,
    pub envs: Vec<(String, String)>,
    /// Keeps the config's directory alive.
    pub _dir: Option<tempfile::TempDir>,
}

impl Cpi {
    /// Writes `config` to a temporary file.
    pub fn with_config(config: &Value) -> Cpi {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpi.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        Cpi { config: path, envs: Vec::new(), _dir: Some(dir) }
    }

    pub fn at(config: &Path) -> Cpi {
        Cpi { config: config.to_path_buf(), envs: Vec::new(), _dir: None }
    }

    /// Sends raw bytes on stdin.
    pub fn raw(&self, input: &[u8]) -> Run {
        run_raw(&self.config, input, &self.envs)
    }

    /// A v2 call with an empty context.
    pub fn call(&self, method: &str, args: Value) -> Run {
        self.call_with(method, args, 2, json!({"director_uuid": "test-director"}))
    }

    pub fn call_with(&self, method: &str, args: Value, api_version: u32, context: Value) -> Run {
        let req = json!({"method": method, "arguments": args, "context": context, "api_version": api_version});
        self.raw(req.to_string().as_bytes())
    }

    /// Calls and returns `result`, panicking with the error when there is one.
    pub fn ok(&self, method: &str, args: Value) -> Value {
        let r = self.call(method, args);
        assert!(r.response["error"].is_null(), "{method} failed: {}\nstderr:\n{}", r.response["error"], r.stderr);
        r.response["result"].clone()
    }

    /// Calls and returns the error object, panicking when the call succeeded.
    pub fn err(&self, method: &str, args: Value) -> Value {
        let r = self.call(method, args);
        assert!(!r.response["error"].is_null(), "{method} should have failed, got {}", r.response["result"]);
        r.response["error"].clone()
    }
}

/// Converts the raw disk image `raw` into a stream-optimised VMDK `vmdk` with qemu-img (as vSphere stemcells
/// carry their disk); `options` are more `-o` options after the subformat, e.g. `,adapter_type=lsilogic`.
pub fn stream_optimized_vmdk(raw: &Path, vmdk: &Path, options: &str) {
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o"])
        .arg(format!("subformat=streamOptimized{options}"))
        .arg(raw)
        .arg(vmdk)
        .output()
        .expect("run qemu-img");
    assert!(out.status.success(), "qemu-img convert: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes a fresh ed25519 key pair at `key` (and `key`.pub) with ssh-keygen; returns its public key as
/// `ssh-ed25519 AAAA…` (no comment): a client key no server knows, or a host key that is not the server's.
pub fn fresh_ssh_key(key: &Path) -> String {
    let st = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(key).status();
    assert!(st.expect("run ssh-keygen").success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// This checkout's tag: names of pools and other objects on shared daemons that other checkouts do not use.
pub fn tag() -> String {
    let h = env!("CARGO_MANIFEST_DIR").bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("{h:08x}")
}

/// The programs the libvirt driver ran before it spoke libvirt's protocol itself: the CPI must never run them.
const LIBVIRT_TOOLS: &[&str] = &["virsh", "qemu-img", "qemu-nbd", "xorriso", "ssh", "nc"];

/// Where the CPI runs with no libvirt tools: an empty directory as its PATH, and (as root) a private mount
/// namespace in which each of [`LIBVIRT_TOOLS`] found on the host is a tripwire that records its argv and
/// exits 127, so that even a program named by its absolute path cannot run unseen.
struct NoTools {
    path: PathBuf,
    log: PathBuf,
    wire: std::ffi::CString,
    targets: Vec<std::ffi::CString>,
}

fn no_tools() -> &'static NoTools {
    static NT: std::sync::OnceLock<NoTools> = std::sync::OnceLock::new();
    NT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmcpi-no-tools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("empty-path");
        std::fs::create_dir_all(&path).unwrap();
        let log = dir.join("ran.log");
        std::fs::write(&log, "").unwrap();
        let wire = dir.join("tripwire");
        let script = format!(
            "#!/bin/sh\n[ -n \"$VMCPI_TRIPWIRE_PROBE\" ] && {{ echo tripped; exit 127; }}\necho \"$0 $*\" >> '{}'\nexit 127\n",
            log.display()
        );
        std::fs::write(&wire, script).unwrap();
        std::fs::set_permissions(&wire, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // SAFETY: geteuid has no preconditions
        let root = unsafe { libc::geteuid() } == 0;
        let mut targets = Vec::new();
        if root {
            for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
                for t in LIBVIRT_TOOLS {
                    let p = Path::new(d).join(t);
                    if p.is_file() {
                        let real = p.canonicalize().unwrap();
                        let c = std::ffi::CString::new(real.into_os_string().into_encoded_bytes()).unwrap();
                        if !targets.contains(&c) {
                            targets.push(c);
                        }
                    }
                }
            }
        }
        let wire = std::ffi::CString::new(wire.into_os_string().into_encoded_bytes()).unwrap();
        NoTools { path, log, wire, targets }
    })
}

/// Makes `cmd` (the CPI, or what runs it) run where no libvirt tool can be run: see [`NoTools`]. `PATH` is
/// set to an empty directory unless `keep_path`.
pub fn without_libvirt_tools(cmd: &mut Command, keep_path: bool) -> &mut Command {
    let nt = no_tools();
    if !keep_path {
        cmd.env("PATH", &nt.path);
    }
    if nt.targets.is_empty() {
        return cmd;
    }
    let (wire, targets) = (nt.wire.clone(), nt.targets.clone());
    let f = move || -> std::io::Result<()> {
        // SAFETY: plain system calls between fork and exec, on C strings made before the fork
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let root = c"/";
            let none = std::ptr::null();
            if libc::mount(none, root.as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for t in &targets {
                if libc::mount(wire.as_ptr(), t.as_ptr(), none, libc::MS_BIND, std::ptr::null()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes system calls (no allocation, no locks)
    unsafe { std::os::unix::process::CommandExt::pre_exec(cmd, f) }
}

/// Panics when a CPI run through [`without_libvirt_tools`] ran one of the tools.
pub fn assert_no_libvirt_tools_ran() {
    let ran = std::fs::read_to_string(&no_tools().log).unwrap_or_default();
    assert!(ran.is_empty(), "the CPI ran a program it must not run:\n{ran}");
}

/// The tripwire log and the tools it covers (for the test that proves the tripwires work).
pub fn tripwires() -> (PathBuf, usize) {
    (no_tools().log.clone(), no_tools().targets.len())
}

/// The environment the director gives the CPI: no HOME, a minimal PATH. For a libvirt config, no PATH at all
/// (an empty directory) and no way to run libvirt's tools by their path either ([`without_libvirt_tools`]):
/// the libvirt driver runs no program. (The vmrun driver runs a shell and tools by design.)
pub fn cpi_env<'a>(cmd: &'a mut Command, config: &Path) -> &'a mut Command {
    cmd.env_clear();
    let libvirt = std::fs::read(config)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["driver"]["kind"] == "libvirt");
    if libvirt {
        without_libvirt_tools(cmd, false)
    } else {
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    }
}

/// Runs the CPI like the director does ([`cpi_env`]).
pub fn run_raw(config: &Path, input: &[u8], envs: &[(String, String)]) -> Run {
    let mut cmd = Command::new(cpi_bin());
    cmd.arg("--config").arg(config);
    cpi_env(&mut cmd, config);
    if let Ok(t) = std::env::var("TMPDIR") {
        cmd.env("TMPDIR", t);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_libvirt_tools_ran();
    let response: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{stderr}"));
    assert!(response.is_object(), "response must be an object: {stdout}");
    assert!(response.get("result").is_some(), "response lacks result: {stdout}");
    assert!(response["log"].is_string(), "log must be a string: {stdout}");
    assert!(
        response["error"].is_null()
            || (response["error"]["type"].is_string()
                && response["error"]["message"].is_string()
                && response["error"]["ok_to_retry"].is_boolean()),
        "bad error object: {stdout}"
    );
    Run { response, stdout, stderr, status: out.status.code().unwrap_or(-1) }
}

/// Runs the CPI on `input` like [`run_raw`] and returns its response with the peak resident memory of the
/// process in bytes: `VmHWM` of /proc/PID/status, read while the process is still alive, at the end of its
/// work. Its stdout is a one-page pipe that this function fills before the start, so the CPI blocks in the
/// write of its response (every byte of its work done) until the high-water mark has been read.
/// (`ru_maxrss` from wait4 would not do: exec carries the spawning process's own peak into it.)
/// The input is written from a thread: a CPI that stops reading early answers while the rest is refused.
pub fn run_measured(config: &Path, input: Vec<u8>) -> (Value, u64) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, which are then owned here
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors from pipe2, owned by nothing else
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut reader = std::fs::File::from(read_end);
    let mut filler = std::fs::File::from(write_end);
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor owned here
    let page = unsafe { libc::fcntl(filler.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(page > 0, "F_SETPIPE_SZ: {}", std::io::Error::last_os_error());
    filler.write_all(&vec![b' '; page as usize]).unwrap();
    let mut cmd = Command::new(cpi_bin());
    cmd.arg("--config").arg(config);
    let mut child = cpi_env(&mut cmd, config)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(filler))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the Command keeps its copy of the pipe's write end: without it gone, reading to the end never ends
    drop(cmd);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let blocked_in_write = || {
        let wchan = std::fs::read_to_string(proc_dir.join("wchan")).unwrap_or_default();
        let syscall = std::fs::read_to_string(proc_dir.join("syscall")).unwrap_or_default();
        wchan.contains("pipe_write") || syscall.starts_with(&format!("{} 0x1 ", libc::SYS_write))
    };
    while !blocked_in_write() {
        assert!(std::time::Instant::now() < deadline, "the CPI never wrote its response");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut reader, &mut stdout).unwrap();
    child.wait().unwrap();
    writer.join().unwrap();
    let stdout = stdout.trim_start();
    let response: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"));
    (response, hwm_kib * 1024)
}

/// The binary the BOSH release ships: `vmcpi` built as release/build.sh builds it (release, static, not
/// position-independent, in target/x86_64-unknown-linux-gnu/release/). Built once per checkout: cargo
/// finds it up to date after the first build (bosh_e2e and the integration tests share it).
pub fn static_cpi_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let started = std::time::Instant::now();
            let out = Command::new(cargo)
                .args(["build", "--release", "--locked", "--target", "x86_64-unknown-linux-gnu", "--bin", "vmcpi"])
                .env("RUSTFLAGS", "-C target-feature=+crt-static -C relocation-model=static")
                .env("OPENSSL_STATIC", "1")
                .current_dir(root)
                .output()
                .expect("run cargo");
            assert!(out.status.success(), "the static build failed:\n{}", String::from_utf8_lossy(&out.stderr));
            eprintln!("static release binary: ready after {} s", started.elapsed().as_secs());
            root.join("target/x86_64-unknown-linux-gnu/release/vmcpi")
        })
        .clone()
}
