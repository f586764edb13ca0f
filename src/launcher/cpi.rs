//! The CPI client: one process per call, exactly as the BOSH director runs a CPI.
//!
//! The request goes to the CPI's stdin and the response comes from its stdout, with the environment cleared to
//! `PATH=/usr/sbin:/usr/bin:/sbin:/bin`. Unlike the director, stdin, stdout and stderr are files in the
//! ledger's spool directory, not pipes, and the CPI runs in its own process group: if the launcher is killed
//! during a create_vm, the CPI still finishes and its response (the new VM's CID) is still on disk for the
//! next start to read. The stderr file carries an `flock` that the CPI process inherits, so the next start
//! can tell "still running" (lock held) from "finished" (lock free) without trusting PIDs.
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The PATH a BOSH director gives a CPI.
pub const CPI_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a CPI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CpiError {
    #[error("cannot run the CPI {program}")]
    Spawn { program: String, source: std::io::Error },
    #[error("spool file {path}")]
    Spool { path: PathBuf, source: std::io::Error },
    #[error("the CPI {method} call did not finish within {secs} s (killed)")]
    Timeout { method: String, secs: u64 },
    /// The process ended without one JSON response on stdout (it crashed, or printed garbage).
    #[error("the CPI {method} call gave no valid response ({status}): {output}")]
    NoResponse { method: String, status: String, output: String },
    /// The CPI answered with an error object.
    #[error("{kind}: {message}")]
    Cloud { kind: String, message: String, ok_to_retry: bool },
}

impl CpiError {
    /// `Bosh::Clouds::VMNotFound` (delete_vm of a VM that is already gone).
    pub fn is_vm_not_found(&self) -> bool {
        matches!(self, CpiError::Cloud { kind, .. } if kind == "Bosh::Clouds::VMNotFound")
    }
}

/// The VM CID in a create_vm result: API v2 answers `[cid, networks]`, v1 answers the CID.
pub fn vm_cid(result: &Value) -> Option<String> {
    let cid = if result.is_array() { &result[0] } else { result };
    cid.as_str().filter(|s| !s.is_empty()).map(String::from)
}

/// One CPI: its argv, and where its calls are spooled.
#[derive(Debug, Clone)]
pub struct Cpi {
    argv: Vec<String>,
    spool: PathBuf,
    timeout: Duration,
}

/// Files of one spooled call, named `<tag>.req|out|err` in the spool directory.
#[derive(Debug, Clone)]
pub struct SpoolFiles {
    pub req: PathBuf,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl SpoolFiles {
    pub fn new(spool: &Path, tag: &str) -> SpoolFiles {
        SpoolFiles {
            req: spool.join(format!("{tag}.req")),
            out: spool.join(format!("{tag}.out")),
            err: spool.join(format!("{tag}.err")),
        }
    }

    pub fn exists(&self) -> bool {
        self.req.exists()
    }

    /// Whether a CPI process started for this call is still running (it holds the lock on the err file).
    pub fn running(&self) -> bool {
        match File::open(&self.err) {
            Ok(f) => f.try_lock().is_err(),
            Err(_) => false,
        }
    }

    /// Removes the files (after the outcome is in the ledger).
    pub fn remove(&self) {
        for p in [&self.req, &self.out, &self.err] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The outcome of a finished call, read from its stdout file.
    pub fn outcome(&self, method: &str, status: &str) -> Result<Value, CpiError> {
        let out = std::fs::read(&self.out).map_err(|source| CpiError::Spool { path: self.out.clone(), source })?;
        parse_response(method, &out, status, &self.err)
    }
}

fn spool(path: &Path) -> impl Fn(std::io::Error) -> CpiError + '_ {
    move |source| CpiError::Spool { path: path.to_path_buf(), source }
}

fn parse_response(method: &str, out: &[u8], status: &str, err_file: &Path) -> Result<Value, CpiError> {
    let resp: Option<Value> = serde_json::from_slice(out).ok();
    let Some(resp) = resp.filter(|r| r.is_object() && r.get("result").is_some()) else {
        let stderr = std::fs::read(err_file).unwrap_or_default();
        let mut output = String::from_utf8_lossy(if out.is_empty() { &stderr } else { out }).trim().to_string();
        if output.len() > 500 {
            let cut = (0..=500).rev().find(|i| output.is_char_boundary(*i)).unwrap_or(0);
            output.truncate(cut);
            output.push('…');
        }
        return Err(CpiError::NoResponse { method: method.into(), status: status.into(), output });
    };
    match resp.get("error") {
        Some(e) if !e.is_null() => Err(CpiError::Cloud {
            kind: e["type"].as_str().unwrap_or("unknown").to_string(),
            message: e["message"].as_str().unwrap_or("").to_string(),
            ok_to_retry: e["ok_to_retry"].as_bool().unwrap_or(false),
        }),
        _ => Ok(resp["result"].clone()),
    }
}

impl Cpi {
    pub fn new(argv: Vec<String>, spool: PathBuf, timeout: Duration) -> Cpi {
        Cpi { argv, spool, timeout }
    }

    pub fn spool_files(&self, tag: &str) -> SpoolFiles {
        SpoolFiles::new(&self.spool, tag)
    }

    /// Runs one method. `tag` names the spool files; it must be unique among calls that may be open at once.
    pub fn call(&self, tag: &str, method: &str, args: Value, context: &Value) -> Result<Value, CpiError> {
        let files = self.spool_files(tag);
        let req = json!({"method": method, "arguments": args, "context": context, "api_version": 2});
        std::fs::write(&files.req, req.to_string()).map_err(spool(&files.req))?;
        let stdin = File::open(&files.req).map_err(spool(&files.req))?;
        let stdout = File::create(&files.out).map_err(spool(&files.out))?;
        let stderr =
            OpenOptions::new().create(true).write(true).truncate(true).open(&files.err).map_err(spool(&files.err))?;
        stderr.lock().map_err(spool(&files.err))?;
        let program = self.argv.first().cloned().unwrap_or_default();
        let mut cmd = Command::new(&program);
        cmd.args(self.argv.get(1..).unwrap_or_default()).env_clear().env("PATH", CPI_PATH);
        {
            use std::os::unix::process::CommandExt;
            // its own process group: a signal to the launcher's group must not kill a half-done create
            cmd.process_group(0);
        }
        let err_for_child = stderr.try_clone().map_err(spool(&files.err))?;
        let mut child = cmd
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(err_for_child))
            .spawn()
            .map_err(|source| CpiError::Spawn { program: program.clone(), source })?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CpiError::Timeout { method: method.into(), secs: self.timeout.as_secs() });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => return Err(CpiError::Spawn { program, source }),
            }
        };
        drop(stderr);
        files.outcome(method, &status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> Cpi {
        let p = dir.join("cpi.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        Cpi::new(vec![p.display().to_string()], spool, Duration::from_secs(5))
    }

    #[test]
    fn result_error_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        // the CPI sees the request on stdin and only the director's PATH
        let c = script(
            d.path(),
            r#"read req; echo "$req" > "$(dirname "$0")/seen"; echo "{\"result\":\"$PATH\",\"error\":null,\"log\":\"\"}""#,
        );
        assert_eq!(c.call("t1", "info", json!([]), &json!({})).unwrap(), json!(CPI_PATH));
        let seen: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("seen")).unwrap()).unwrap();
        assert_eq!(seen["method"], "info");
        assert_eq!(seen["api_version"], 2);

        let c = script(
            d.path(),
            r#"echo '{"result":null,"error":{"type":"Bosh::Clouds::VMNotFound","message":"vm x","ok_to_retry":false},"log":""}'"#,
        );
        let e = c.call("t2", "delete_vm", json!(["x"]), &json!({})).unwrap_err();
        assert!(e.is_vm_not_found(), "{e}");

        let c = script(d.path(), "echo half >&2; kill -9 $$");
        let e = c.call("t3", "create_vm", json!([]), &json!({})).unwrap_err();
        assert!(matches!(&e, CpiError::NoResponse { output, .. } if output == "half"), "{e}");
    }

    #[test]
    fn lock_tells_running_from_finished() {
        let d = tempfile::tempdir().unwrap();
        let c = script(d.path(), r#"sleep 0.3; echo '{"result":"vm-1","error":null,"log":""}'"#);
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.call("t", "create_vm", json!([]), &json!({})));
        std::thread::sleep(Duration::from_millis(150));
        let f = c.spool_files("t");
        assert!(f.running());
        assert_eq!(h.join().unwrap().unwrap(), json!("vm-1"));
        assert!(!f.running());
        assert_eq!(f.outcome("create_vm", "").unwrap(), json!("vm-1"));
    }
}
