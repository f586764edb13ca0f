//! The optional `bootstrap` block of a VM's cloud_properties: a script run inside the guest after boot,
//! through the QEMU guest agent (`guest-exec`, over libvirt's QEMU program). The same shape the VMware
//! drivers take.
use super::error::LibvirtError;
use crate::common::encoding::{base64, unbase64};
use crate::cpi::error::{DriverError, DriverResult};
use crate::cpi::libvirt_rpc::{Client, Domain};
use crate::info;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub use crate::cpi::driver::bootstrap::Bootstrap;

/// Seconds libvirt waits for the guest agent's answer to one command.
const AGENT_TIMEOUT: i32 = 5;

fn agent(c: &Client, dom: &Domain, cmd: &Value) -> Result<Value, String> {
    let out = c
        .qemu_agent_command(dom, &cmd.to_string(), AGENT_TIMEOUT)
        .map_err(|e| crate::common::logger::redact(&e.to_string()))?;
    let Some(out) = out else { return Ok(Value::Null) };
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| format!("guest agent reply is not JSON: {e}"))?;
    Ok(v.get("return").cloned().unwrap_or(Value::Null))
}

/// Waits for the guest agent (and the ready process), runs the script, fails on a non-zero exit.
pub fn run(c: &Client, dom: &Domain, b: &Bootstrap) -> DriverResult<()> {
    let vm = dom.name.as_str();
    b.no_login()?;
    let wait = b.start();
    let deadline = wait.deadline();
    info!("bootstrap: waiting up to {} s for the QEMU guest agent in {vm}", b.max_wait_seconds);
    wait.until(
        Duration::from_secs(1),
        || Ok(agent(c, dom, &json!({"execute": "guest-ping"})).map(|_| ())),
        |last| {
            format!(
                "bootstrap: no QEMU guest agent answered in {vm} within {} s (install qemu-guest-agent in the image to use bootstrap): {}",
                b.max_wait_seconds,
                last.trim()
            )
        },
    )?;
    if let Some(p) = &b.ready_process {
        wait.until(
            Duration::from_secs(2),
            || {
                let (code, _, _) = exec(c, dom, "/usr/bin/pgrep", &["-x", p], None, deadline)?;
                Ok(if code == 0 { Ok(()) } else { Err(String::new()) })
            },
            |_| format!("bootstrap: process {p} did not start in {vm} within {} s", b.max_wait_seconds),
        )?;
    }
    info!("bootstrap: running the script with {}", b.interpreter);
    let (code, out, err) = exec(c, dom, &b.interpreter, &[], Some(b.script.as_bytes()), deadline)?;
    if code != 0 {
        return Err(LibvirtError::BootstrapExit { vm: vm.to_string(), code, tail: tail(&err, &out) }.into());
    }
    Ok(())
}

fn tail(err: &str, out: &str) -> String {
    let s = if err.trim().is_empty() { out } else { err };
    let s = s.trim();
    let start = s.len().saturating_sub(2000);
    s.get(start..).unwrap_or(s).to_string()
}

fn exec(
    c: &Client,
    dom: &Domain,
    path: &str,
    args: &[&str],
    input: Option<&[u8]>,
    deadline: Instant,
) -> DriverResult<(i64, String, String)> {
    let vm = dom.name.as_str();
    let mut req = json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args, "capture-output": true}});
    if let Some(i) = input {
        req["arguments"]["input-data"] = json!(base64(i));
    }
    let failed = |call: String, reason: String| LibvirtError::GuestAgent { vm: vm.to_string(), call, reason };
    let started = agent(c, dom, &req).map_err(|e| failed(format!("guest-exec {path}"), e))?;
    let pid = started
        .get("pid")
        .and_then(Value::as_i64)
        .ok_or_else(|| failed(format!("guest-exec {path}"), "the guest agent returned no pid".into()))?;
    loop {
        let st = agent(c, dom, &json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}))
            .map_err(|e| failed("guest-exec-status".into(), e))?;
        if st.get("exited").and_then(Value::as_bool) == Some(true) {
            let text = |k: &str| {
                st.get(k)
                    .and_then(Value::as_str)
                    .map(|s| match unbase64(s) {
                        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                        Err(e) => format!("<guest agent output is not base64: {e}>"),
                    })
                    .unwrap_or_default()
            };
            return Ok((st.get("exitcode").and_then(Value::as_i64).unwrap_or(-1), text("out-data"), text("err-data")));
        }
        if Instant::now() >= deadline {
            return Err(DriverError::transient(format!("bootstrap: {path} still running in {vm} at the deadline")));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
