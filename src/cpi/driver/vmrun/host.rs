//! The VMware host programs, run through the transport: `vmrun`, `ovftool`, `vmware-vdiskmanager` (or
//! `qemu-img` for disks when vdiskmanager is absent), with the command lines documented in
//! `docs/vmrun.md` (the same ones bosh-vmrun-cpi uses, see cpi-protocol.md §6.3), and power-state polling.
use super::VmrunConfig;
use crate::cpi::error::{DriverError, DriverResult};
use crate::cpi::transport::{Output, Transport, TransportError};
use std::time::Duration;

/// A VMware tool that ran and failed.
#[derive(Debug, thiserror::Error)]
#[error("`{cmdline}` failed (exit {status}): {message}")]
/// `cmdline` is [`crate::cpi::exec::Cmd::display`]'s (secret arguments shown as `<redacted>`), `message` the
/// tool's words scrubbed of secrets ([`crate::cpi::transport::Output::said`]).
pub struct ToolError {
    pub cmdline: String,
    pub status: i32,
    pub message: String,
}

/// The snapshot every VM is linked-cloned from.
pub const BASE_SNAPSHOT: &str = "vmcpi-base";

pub struct Host<'a> {
    pub t: &'a dyn Transport,
    pub cfg: &'a VmrunConfig,
}

fn terr(what: impl Into<String>) -> impl FnOnce(TransportError) -> DriverError {
    let what = what.into();
    move |e| DriverError::failed(what, e)
}

impl Host<'_> {
    fn display(argv: &[String]) -> String {
        crate::cpi::exec::Cmd::new(&argv[0]).args(&argv[1..]).display()
    }

    /// `vmrun -T <type> ARGS…` (guest credentials, when given, go before the command as vmrun requires).
    fn vmrun_argv(&self, guest: Option<(&str, &str)>, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.cfg.vmrun.clone(), "-T".into(), self.cfg.host_type.clone()];
        if let Some((u, p)) = guest {
            argv.extend(["-gu".into(), u.into(), "-gp".into(), p.into()]);
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        argv
    }

    pub fn vmrun_raw(
        &self,
        guest: Option<(&str, &str)>,
        args: &[&str],
        limit: Option<Duration>,
    ) -> DriverResult<Output> {
        let argv = self.vmrun_argv(guest, args);
        self.t.run_timeout(&argv, limit).map_err(terr(format!("cannot run vmrun {}", args.first().unwrap_or(&""))))
    }

    /// Runs vmrun and fails with its own message when it exits non-zero.
    pub fn vmrun(&self, args: &[&str]) -> DriverResult<String> {
        let out = self.vmrun_raw(None, args, None)?;
        if out.success() {
            return Ok(out.stdout);
        }
        // VIX_E_DISK_FULL: "An error occurred while writing a file; the disk is full. …"
        if out.message().contains("the disk is full") {
            return Err(DriverError::no_disk_space(format!(
                "vmrun {} on {}: {}",
                args.first().unwrap_or(&""),
                self.t.target(),
                out.said()
            )));
        }
        Err(self.tool_error(&self.vmrun_argv(None, args), &out))
    }

    pub fn tool_error(&self, argv: &[String], out: &Output) -> DriverError {
        let what = format!("vmrun {} on {}", argv.get(3).map(String::as_str).unwrap_or(""), self.t.target());
        let message = if out.timed_out { format!("timed out; {}", out.said()) } else { out.said() };
        DriverError::failed(what, ToolError { cmdline: Self::display(argv), status: out.status, message })
    }

    /// Runs any host program; fails with its output on a non-zero exit (NoDiskSpace when the host's disk
    /// is full, which the director knows how to report).
    pub fn tool(&self, argv: Vec<String>, what: &str) -> DriverResult<String> {
        let out = self.t.run(&argv).map_err(terr(what.to_string()))?;
        if out.success() {
            return Ok(out.stdout);
        }
        let raw = out.message();
        let message = out.said();
        if raw.contains("No space left on device")
            || raw.contains("disk is full")
            || raw.contains("Not enough disk space")
        {
            return Err(DriverError::no_disk_space(format!("{what} on {}: {message}", self.t.target())));
        }
        Err(DriverError::failed(
            what.to_string(),
            ToolError { cmdline: Self::display(&argv), status: out.status, message },
        ))
    }

    /// The .vmx paths of running VMs (`vmrun list`: "Total running VMs: N" and one path per line).
    pub fn running_vms(&self) -> DriverResult<Vec<String>> {
        let out = self.vmrun(&["list"])?;
        let mut lines = out.lines();
        let head = lines.next().unwrap_or("");
        let Some(n) = head.strip_prefix("Total running VMs:").and_then(|n| n.trim().parse::<usize>().ok()) else {
            return Err(super::VmrunError::ListOutput { head: head.to_string() }.into());
        };
        let vms: Vec<String> = lines.map(|l| l.trim_end_matches('\r').to_string()).filter(|l| !l.is_empty()).collect();
        if vms.len() != n {
            crate::warn!("vmrun list announced {n} VMs and listed {}", vms.len());
        }
        Ok(vms)
    }

    /// Whether the VM runs: its exact .vmx path is listed (never a substring match).
    pub fn is_running(&self, vmx: &str) -> DriverResult<bool> {
        Ok(self.running_vms()?.iter().any(|p| p == vmx))
    }

    /// Powers on (`start <vmx> nogui`), bounded by the start time-out. vmrun returns once the VM is powered
    /// on (bosh-vmrun-cpi started in the background and polled `list`; waiting for vmrun is enough).
    pub fn start(&self, vmx: &str) -> DriverResult<()> {
        let limit = Duration::from_secs(self.cfg.start_timeout_seconds);
        let out = self.vmrun_raw(None, &["start", vmx, "nogui"], Some(limit))?;
        if !out.success() {
            return Err(self.tool_error(&self.vmrun_argv(None, &["start", vmx, "nogui"]), &out));
        }
        Ok(())
    }

    /// Powers off: a soft stop (guest shutdown) bounded by the soft-shutdown time-out, then a hard stop.
    /// Returns whether the VM was running.
    pub fn stop(&self, vmx: &str, soft: bool) -> DriverResult<bool> {
        if !self.is_running(vmx)? {
            return Ok(false);
        }
        if soft {
            let limit = Duration::from_secs(self.cfg.soft_shutdown_timeout_seconds);
            let out = self.vmrun_raw(None, &["stop", vmx, "soft"], Some(limit))?;
            if out.success() && !self.is_running(vmx)? {
                return Ok(true);
            }
            crate::info!(
                "soft stop of {vmx} did not finish ({}), stopping hard",
                if out.timed_out { "timed out".to_string() } else { out.said() }
            );
        }
        let out = self.vmrun_raw(None, &["stop", vmx, "hard"], None)?;
        // "needs to be powered on": it stopped on its own meanwhile
        if !out.success() && self.is_running(vmx)? {
            return Err(self.tool_error(&self.vmrun_argv(None, &["stop", vmx, "hard"]), &out));
        }
        Ok(true)
    }

    /// `vmrun writeVariable VMX runtimeConfig KEY VALUE` for every pair, in one remote command (over SSH each
    /// command costs a session): a constant loop script gets vmrun, the host type, the .vmx and the pairs
    /// as positional parameters, so no data is ever part of the script.
    pub fn write_variables(&self, vmx: &str, pairs: &[(String, String)]) -> DriverResult<()> {
        const SCRIPT: &str = r#"v=$1; t=$2; x=$3; shift 3
while [ $# -ge 2 ]; do "$v" -T "$t" writeVariable "$x" runtimeConfig "$1" "$2" || exit $?; shift 2; done"#;
        if pairs.is_empty() {
            return Ok(());
        }
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            SCRIPT.into(),
            "vmcpi".into(),
            self.cfg.vmrun.clone(),
            self.cfg.host_type.clone(),
            vmx.into(),
        ];
        for (k, v) in pairs {
            argv.push(k.clone());
            argv.push(v.clone());
        }
        let out = self.t.run(&argv).map_err(terr("cannot run vmrun writeVariable"))?;
        if out.success() {
            return Ok(());
        }
        let shown = self.vmrun_argv(None, &["writeVariable", vmx, "runtimeConfig", "…"]);
        Err(self.tool_error(&shown, &out))
    }

    /// Names of the VM's snapshots (`listSnapshots`: "Total snapshots: N" then one name per line).
    pub fn snapshots(&self, vmx: &str) -> DriverResult<Vec<String>> {
        let out = self.vmrun(&["listSnapshots", vmx])?;
        Ok(out.lines().skip(1).map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
    }

    /// A new sparse VMDK of `size_mib` on the host (vdiskmanager when configured, else qemu-img).
    pub fn create_vmdk(&self, path: &str, size_mib: u64) -> DriverResult<()> {
        let argv: Vec<String> = match &self.cfg.vdiskmanager {
            // -t 0: a single growable file; -a lsilogic matches the stemcell's controller
            Some(vd) => vec![
                vd.clone(),
                "-c".into(),
                "-s".into(),
                format!("{size_mib}MB"),
                "-a".into(),
                "lsilogic".into(),
                "-t".into(),
                "0".into(),
                path.into(),
            ],
            None => vec![
                self.cfg.qemu_img.clone(),
                "create".into(),
                "-q".into(),
                "-f".into(),
                "vmdk".into(),
                "-o".into(),
                "adapter_type=lsilogic,subformat=monolithicSparse".into(),
                path.into(),
                format!("{size_mib}M"),
            ],
        };
        self.tool(argv, &format!("cannot create disk {path}")).map(|_| ())
    }

    /// Grows a VMDK to `size_mib`.
    pub fn grow_vmdk(&self, path: &str, size_mib: u64) -> DriverResult<()> {
        if let Some(vd) = &self.cfg.vdiskmanager {
            return self
                .tool(
                    vec![vd.clone(), "-x".into(), format!("{size_mib}MB"), path.into()],
                    &format!("cannot grow disk {path}"),
                )
                .map(|_| ());
        }
        // qemu-img cannot resize VMDKs in place: copy into a new, larger one, then swap
        let tmp = format!("{path}.vmcpi-grow.vmdk");
        let _ = self.t.remove_file(&tmp);
        self.create_vmdk(&tmp, size_mib)?;
        let copied = self.tool(
            vec![
                self.cfg.qemu_img.clone(),
                "convert".into(),
                "-q".into(),
                "-n".into(),
                "-f".into(),
                "vmdk".into(),
                "-O".into(),
                "vmdk".into(),
                path.into(),
                tmp.clone(),
            ],
            &format!("cannot copy disk {path}"),
        );
        if let Err(e) = copied {
            let _ = self.t.remove_file(&tmp);
            return Err(e);
        }
        self.tool(vec!["mv".into(), "-f".into(), "--".into(), tmp, path.into()], &format!("cannot replace disk {path}"))
            .map(|_| ())
    }
}
