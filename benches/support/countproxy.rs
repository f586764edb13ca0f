//! The request counter in front of a simulator (`tools/vcsim/countproxy`, an HTTPS reverse proxy), shared
//! by the vSphere benchmarks, and where the Go tools they need are (`target/NAME`, built on first use).
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running counting proxy.
pub struct CountProxy {
    child: std::process::Child,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    control: String,
    /// The proxy's certificate (PEM file): clients trust it as a vCenter's.
    pub cert: PathBuf,
}

impl CountProxy {
    /// Starts `bin` in front of `backend` (`http://127.0.0.1:PORT`), its files in `dir`.
    pub fn start(bin: &Path, backend: &str, dir: &Path) -> CountProxy {
        let (url_file, cert, control_file) = (dir.join("proxy-url"), dir.join("proxy.pem"), dir.join("control-url"));
        let child = Command::new(bin)
            .arg("-backend")
            .arg(backend)
            .arg("-url-file")
            .arg(&url_file)
            .arg("-cert-file")
            .arg(&cert)
            .arg("-control-file")
            .arg(&control_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start countproxy");
        let started = Instant::now();
        while !url_file.exists() {
            assert!(started.elapsed() < Duration::from_secs(30), "countproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
        CountProxy { child, url: read(&url_file), control: read(&control_file), cert }
    }

    /// `127.0.0.1:PORT`
    pub fn host_port(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// Requests since the last take, and their SOAP operations (datastore and NFC transfers show as their
    /// HTTP method, other endpoints such as `/pbm/sdk` as `POST`).
    pub fn take(&self) -> (u32, String) {
        let body = ureq::get(&format!("{}/take", self.control)).call().unwrap().body_mut().read_to_string().unwrap();
        let (n, ops) = body.trim().split_once(' ').unwrap_or((body.trim(), ""));
        (n.parse().unwrap(), ops.to_string())
    }
}

impl Drop for CountProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/NAME`, built from `tools/vcsim/NAME` (a Go program: countproxy, govmomi-steps) when missing.
pub fn go_tool(name: &str) -> Option<PathBuf> {
    let p = root().join("target").join(name);
    if !p.is_file() {
        let _ = Command::new("bash")
            .arg(root().join("tools/vcsim/build.sh"))
            .arg(&p)
            .arg(root().join("tools/vcsim").join(name))
            .status();
    }
    p.is_file().then_some(p)
}

/// Runs `script ARGS` (a build or set-up script of tools/vcsim) and returns `out` when it exists after.
pub fn built_by(script: &str, out: PathBuf, args: &[&Path]) -> Option<PathBuf> {
    let ok = Command::new("bash").arg(root().join(script)).args(args).status().map(|s| s.success()).unwrap_or(false);
    (ok && out.is_file()).then_some(out)
}
