//! The optional `bootstrap` block of a VM's cloud_properties (the shape bosh-vmrun-cpi takes): after power
//! on, wait for VMware Tools and a readiness process, then run a script with `StartProgramInGuest` and wait
//! for its exit code. The guest password is a registered secret and never logged. vcsim has no guest
//! operations, so this rests on golden tests of the exact messages.
use super::client::{ClientError, Session};
use super::methods::{GuestAuth, ListProcessesInGuest, StartProgramInGuest};
use super::soap::{FaultKind, MoRef, Node};
use crate::cpi::error::{DriverError, DriverResult};
use crate::info;
use std::time::Duration;

pub use crate::cpi::driver::bootstrap::Bootstrap;

/// `'…'` quoting for the interpreter's `-c` argument.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'"'"'"#))
}

/// One guest process from ListProcessesInGuest.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestProcess {
    pub pid: i64,
    pub name: String,
    pub cmd_line: String,
    pub exit_code: Option<i64>,
}

pub fn parse_processes(n: &Node) -> Vec<GuestProcess> {
    n.children_named("returnval")
        .filter_map(|p| {
            Some(GuestProcess {
                pid: p.str_at("pid")?.parse().ok()?,
                name: p.str_at("name").unwrap_or_default().to_string(),
                cmd_line: p.str_at("cmdLine").unwrap_or_default().to_string(),
                // exitCode is only meaningful once endTime is set
                exit_code: p.at("endTime").and(p.str_at("exitCode")).and_then(|c| c.parse().ok()),
            })
        })
        .collect()
}

fn auth(b: &Bootstrap) -> GuestAuth {
    GuestAuth {
        user: b.username.clone().unwrap_or_default(),
        password: b.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default(),
    }
}

/// The requests the bootstrap sends, built in one place so golden tests see exactly what goes out.
pub fn start_request(pm: &MoRef, vm: &MoRef, b: &Bootstrap) -> StartProgramInGuest {
    StartProgramInGuest {
        this: pm.clone(),
        vm: vm.clone(),
        auth: auth(b),
        program: b.interpreter.clone(),
        arguments: format!("-c {}", shell_quote(&b.script)),
    }
}

pub fn list_request(pm: &MoRef, vm: &MoRef, b: &Bootstrap, pids: Vec<i64>) -> ListProcessesInGuest {
    ListProcessesInGuest { this: pm.clone(), vm: vm.clone(), auth: auth(b), pids }
}

/// Runs the bootstrap on a powered-on VM.
pub fn run(s: &Session, vm: &MoRef, b: &Bootstrap) -> DriverResult<()> {
    let (user, password) = b.login()?;
    crate::common::logger::add_secret(password);
    let gom =
        s.sc.guest_operations_manager
            .clone()
            .ok_or_else(|| DriverError::not_supported("bootstrap: this server has no guest operations manager"))?;
    let pm = s
        .object(&gom, &["processManager"])
        .map_err(|e| DriverError::failed("bootstrap: cannot read the guest operations manager", e))?
        .and_then(|o| o.get("processManager").and_then(Node::as_moref))
        .ok_or_else(|| DriverError::not_supported("bootstrap: this server has no guest process manager"))?;
    let wait = b.start();
    let fatal = |e: &ClientError| e.is_fault(&FaultKind::MethodNotFound) || e.is_fault(&FaultKind::NotSupported);
    // 1. guest tools up, guest login accepted, ready process running
    wait.until(
        Duration::from_secs(2),
        || match s.call(&list_request(&pm, vm, b, Vec::new())) {
            Ok(n) => {
                let procs = parse_processes(&n);
                let ready = b
                    .ready_process
                    .as_deref()
                    .is_none_or(|want| procs.iter().any(|p| p.name.contains(want) || p.cmd_line.contains(want)));
                Ok(if ready { Ok(()) } else { Err(String::new()) })
            }
            Err(e) if e.is_fault(&FaultKind::InvalidGuestLogin) => {
                Err(DriverError::invalid("bootstrap", format!("the guest refused user {user}: {e}")))
            }
            Err(e) if fatal(&e) => {
                Err(DriverError::not_supported(format!("bootstrap: this server has no guest operations ({e})")))
            }
            Err(e) => {
                crate::debug!("bootstrap: guest not ready yet: {e}");
                Ok(Err(crate::common::logger::redact(&e.to_string())))
            }
        },
        |_| format!("bootstrap: the guest was not ready within {} s", b.max_wait_seconds),
    )?;
    // 2. the script
    let pid: i64 = s
        .call(&start_request(&pm, vm, b))
        .map_err(|e| DriverError::failed("bootstrap: cannot start the script", e))?
        .str_at("returnval")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| DriverError::other("bootstrap: StartProgramInGuest returned no pid"))?;
    info!("bootstrap: script running in the guest as pid {pid}");
    let code = wait.until(
        Duration::from_secs(1),
        || {
            let n = s
                .call(&list_request(&pm, vm, b, vec![pid]))
                .map_err(|e| DriverError::failed("bootstrap: cannot watch the script", e))?;
            Ok(parse_processes(&n).into_iter().find(|p| p.pid == pid).and_then(|p| p.exit_code).ok_or_else(String::new))
        },
        |_| format!("bootstrap: the script did not finish within {} s", b.max_wait_seconds),
    )?;
    if code == 0 {
        info!("bootstrap: script finished after {} s", wait.elapsed().as_secs());
        Ok(())
    } else {
        Err(DriverError::other(format!("bootstrap: the script exited with status {code}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("echo 'hi' && x"), r#"'echo '"'"'hi'"'"' && x'"#);
    }

    #[test]
    fn processes_with_and_without_exit() {
        let doc = br#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><ListProcessesInGuestResponse xmlns="urn:vim25"><returnval><name>bash</name><pid>42</pid><owner>vcap</owner><cmdLine>/bin/bash -c x</cmdLine><startTime>2026-01-01T00:00:00Z</startTime><endTime>2026-01-01T00:00:05Z</endTime><exitCode>3</exitCode></returnval><returnval><name>bosh-agent</name><pid>7</pid><owner>root</owner><cmdLine>/var/vcap/bosh/bin/bosh-agent</cmdLine><startTime>2026-01-01T00:00:00Z</startTime></returnval></ListProcessesInGuestResponse></soapenv:Body></soapenv:Envelope>"#;
        let n = super::super::soap::decode(200, doc).unwrap();
        let p = parse_processes(&n);
        assert_eq!(
            p[0],
            GuestProcess { pid: 42, name: "bash".into(), cmd_line: "/bin/bash -c x".into(), exit_code: Some(3) }
        );
        assert_eq!(p[1].exit_code, None);
    }
}
