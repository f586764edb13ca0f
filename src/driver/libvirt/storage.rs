//! The storage pool and its volumes, and the domain XML, through virsh.
use super::*;

impl Libvirt {
    pub(super) fn pool(&self) -> &str {
        &self.cfg.pool
    }

    /// Makes sure the storage pool exists and is active (creating it when `pool_path` is configured).
    pub(super) fn ensure_pool(&self) -> DriverResult<()> {
        let pool = self.pool();
        match self.virsh.run_opt(["pool-info", pool]).context(|| format!("cannot query storage pool {pool}"))? {
            Some(out) => {
                if !out.lines().any(|l| l.starts_with("State:") && l.contains("running")) {
                    info!("starting storage pool {pool}");
                    if let Err(e) = self.virsh.run(["pool-start", pool]) {
                        if !e.output().contains("already active") {
                            return Err(DriverError::failed(format!("cannot start storage pool {pool}"), e));
                        }
                    }
                }
                Ok(())
            }
            None => {
                let Some(path) = &self.cfg.pool_path else {
                    return Err(LibvirtError::NoPool { pool: pool.to_string() }.into());
                };
                info!("creating directory storage pool {pool} at {}", path.display());
                let defined = self.virsh.run(
                    ["pool-define-as", pool, "dir", "--target"]
                        .iter()
                        .map(std::ffi::OsStr::new)
                        .chain([path.as_os_str()]),
                );
                if let Err(e) = defined {
                    // another CPI process may have defined it a moment ago
                    if !e.output().contains("already exists") {
                        return Err(DriverError::failed(format!("cannot define storage pool {pool}"), e));
                    }
                }
                let _ = self.virsh.run(["pool-build", pool]);
                if let Err(e) = self.virsh.run(["pool-start", pool]) {
                    if !e.output().contains("already active") {
                        return Err(DriverError::failed(format!("cannot start storage pool {pool}"), e));
                    }
                }
                let _ = self.virsh.run(["pool-autostart", pool]);
                Ok(())
            }
        }
    }

    /// Re-reads the pool so libvirt probes an uploaded image's real format and virtual size. libvirt refuses
    /// while another process's upload or download runs in the pool, so this retries (bounded: 10 minutes).
    pub(super) fn refresh_pool(&self) -> DriverResult<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match self.virsh.run(["pool-refresh", self.pool()]) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() < deadline => {
                    crate::debug!("pool-refresh refused ({}), retrying", e.said());
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => return Err(DriverError::failed(format!("cannot refresh storage pool {}", self.pool()), e)),
            }
        }
    }

    /// `vol-create-as` with a capacity in bytes.
    pub(super) fn vol_create(
        &self,
        name: &str,
        bytes: u64,
        format: &str,
        backing: Option<(&str, &str)>,
    ) -> DriverResult<()> {
        self.virsh
            .run(self.vol_create_args(name, bytes, format, backing))
            .map_err(|e| self.storage_error(&format!("cannot create volume {name}"), e))?;
        Ok(())
    }

    /// The argv of `vol-create-as` (for [`Libvirt::vol_create`] and batches).
    pub(super) fn vol_create_args(
        &self,
        name: &str,
        bytes: u64,
        format: &str,
        backing: Option<(&str, &str)>,
    ) -> Vec<std::ffi::OsString> {
        let cap = format!("{bytes}b");
        let mut args = vec![
            "vol-create-as",
            "--pool",
            self.pool(),
            "--name",
            name,
            "--capacity",
            cap.as_str(),
            "--format",
            format,
        ];
        if let Some((vol, fmt)) = backing {
            args.extend(["--backing-vol", vol, "--backing-vol-format", fmt]);
        }
        virsh::command(args)
    }

    /// A failed storage command: a full pool is its own BOSH error; `what` says what could not be done.
    pub(super) fn storage_error(&self, what: &str, e: crate::exec::ExecError) -> DriverError {
        if e.output().contains("No space left") || e.output().contains("Not enough space") {
            DriverError::no_disk_space(format!("pool {}: {}", self.pool(), e.said()))
        } else {
            DriverError::failed(format!("{what} in pool {}", self.pool()), e)
        }
    }

    pub(super) fn vol_upload(&self, name: &str, file: &Path) -> DriverResult<()> {
        self.virsh
            .cmd()
            .args(["vol-upload", "--sparse", "--pool", self.pool(), name])
            .arg(file)
            .run()
            .context(|| format!("cannot upload {} into volume {name}", file.display()))?;
        Ok(())
    }

    /// Uploads `len` bytes read from `r` into volume `name` through virsh's stdin (no file on this machine).
    /// Not sparse: for images without long runs of zeros (qcow2 stores none).
    pub(super) fn vol_upload_stream(&self, name: &str, len: u64, r: &mut dyn std::io::Read) -> DriverResult<()> {
        self.virsh
            .cmd()
            .args(["vol-upload", "--pool", self.pool(), name, "/dev/stdin"])
            .run_with_input(r)
            .context(|| format!("cannot upload {} MiB into volume {name}", len >> 20))?;
        Ok(())
    }

    pub(super) fn vol_delete(&self, name: &str) -> DriverResult<bool> {
        Ok(self
            .virsh
            .run_opt(["vol-delete", "--pool", self.pool(), name])
            .context(|| format!("cannot delete volume {name}"))?
            .is_some())
    }

    /// (capacity in bytes, format) of a volume, `None` when it does not exist.
    pub(super) fn vol_info(&self, name: &str) -> DriverResult<Option<(u64, String)>> {
        match self
            .virsh
            .run_opt(["vol-dumpxml", "--pool", self.pool(), name])
            .context(|| format!("cannot read volume {name}"))?
        {
            None => Ok(None),
            Some(xml) => domain::parse_volume(&xml)
                .map(Some)
                .map_err(|reason| LibvirtError::Xml { what: format!("volume {name}"), reason }.into()),
        }
    }

    pub(super) fn dumpxml(&self, vm: &VmCid) -> DriverResult<domain::DomainInfo> {
        if !valid_vm(vm) {
            return Err(DriverError::vm_not_found(format!("{vm} (not a VM CID of this CPI)")));
        }
        let xml = self
            .virsh
            .run_opt(["dumpxml", vm.as_str()])
            .context(|| format!("cannot read domain {vm}"))?
            .ok_or_else(|| DriverError::vm_not_found(vm.to_string()))?;
        domain::parse_domain(&xml).map_err(|reason| LibvirtError::Xml { what: format!("domain {vm}"), reason }.into())
    }

    /// `--config`, plus `--live` when the domain runs: the change applies now and survives restarts.
    pub(super) fn scope(running: bool) -> &'static [&'static str] {
        if running {
            &["--config", "--live"]
        } else {
            &["--config"]
        }
    }
}
