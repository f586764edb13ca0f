//! The storage pool and its volumes, and the domain XML, over the call's libvirt connection.
use super::*;
use crate::cpi::libvirt_rpc::{code, flags, Client, PoolState, StoragePool, StorageVol};

/// How long `refresh_pool` waits for other uploads in the pool to end.
const REFRESH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

impl Libvirt {
    pub(super) fn pool_name(&self) -> &str {
        &self.cfg.pool
    }

    /// The call's client (connecting on first use).
    pub(super) fn client(&self) -> DriverResult<&Client> {
        self.conn.get()
    }

    /// The storage pool, `None` when it does not exist (looked up once per call).
    pub(super) fn pool_opt(&self) -> DriverResult<Option<StoragePool>> {
        let mut cached = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cached.as_ref() {
            return Ok(Some(p.clone()));
        }
        let name = self.pool_name();
        let found = self
            .client()?
            .pool_lookup_opt(name)
            .map_err(|e| error::rpc(format!("cannot look up storage pool {name}"), e))?;
        cached.clone_from(&found);
        Ok(found)
    }

    /// The storage pool, which must exist.
    pub(super) fn pool(&self) -> DriverResult<StoragePool> {
        self.pool_opt()?.ok_or_else(|| LibvirtError::NoPool { pool: self.pool_name().to_string() }.into())
    }

    /// Makes sure the storage pool exists and is active (creating it when `pool_path` is configured).
    pub(super) fn ensure_pool(&self) -> DriverResult<()> {
        let c = self.client()?;
        let name = self.pool_name();
        let pool = match self.pool_opt()? {
            Some(p) => p,
            None => {
                let Some(path) = &self.cfg.pool_path else {
                    return Err(LibvirtError::NoPool { pool: name.to_string() }.into());
                };
                info!("creating directory storage pool {name} at {}", path.display());
                let xml = domain::pool_xml(name, &path.to_string_lossy());
                let pool = match c.pool_define_xml(&xml) {
                    Ok(p) => p,
                    // another CPI process may have defined it a moment ago
                    Err(e) => match c.pool_lookup_opt(name) {
                        Ok(Some(p)) => p,
                        _ => return Err(error::rpc(format!("cannot define storage pool {name}"), e)),
                    },
                };
                if let Err(e) = c.pool_build(&pool, flags::POOL_BUILD_NO_OVERWRITE) {
                    crate::debug!("pool build of {name}: {e}");
                }
                self.start_pool(c, &pool)?;
                if let Err(e) = c.pool_set_autostart(&pool, true) {
                    crate::debug!("pool autostart of {name}: {e}");
                }
                *self.pool.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool);
                return Ok(());
            }
        };
        let state = c.pool_info(&pool).map_err(|e| error::rpc(format!("cannot query storage pool {name}"), e))?.state;
        if state != PoolState::Running {
            info!("starting storage pool {name}");
            self.start_pool(c, &pool)?;
        }
        Ok(())
    }

    fn start_pool(&self, c: &Client, pool: &StoragePool) -> DriverResult<()> {
        match c.pool_start(pool) {
            Ok(()) => Ok(()),
            // started meanwhile by another process
            Err(e) if e.code() == Some(code::OPERATION_INVALID) => Ok(()),
            Err(e) => Err(error::rpc(format!("cannot start storage pool {}", pool.name), e)),
        }
    }

    /// Re-reads the pool so libvirt probes an uploaded image's real format and virtual size. libvirt refuses
    /// while another process's upload or download runs in the pool, so this retries (bounded: 10 minutes).
    pub(super) fn refresh_pool(&self) -> DriverResult<()> {
        let (c, pool) = (self.client()?, self.pool()?);
        let deadline = std::time::Instant::now() + REFRESH_PATIENCE;
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match c.pool_refresh(&pool) {
                Ok(()) => return Ok(()),
                // "pool has asynchronous jobs running" (another upload) is an internal error to libvirt
                Err(e)
                    if matches!(
                        e.code(),
                        Some(code::INTERNAL_ERROR | code::OPERATION_FAILED | code::RESOURCE_BUSY)
                    ) && std::time::Instant::now() < deadline =>
                {
                    crate::debug!("pool refresh refused ({e}), retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => return Err(error::rpc(format!("cannot refresh storage pool {}", pool.name), e)),
            }
        }
    }

    /// A new volume of `bytes` in `format`, optionally a qcow2 overlay on volume `backing` (name, format).
    pub(super) fn vol_create(
        &self,
        name: &str,
        bytes: u64,
        format: &str,
        backing: Option<(&str, &str)>,
    ) -> DriverResult<StorageVol> {
        self.vol_create_xml(name, bytes, format, backing, false)
    }

    /// A new raw volume with nothing allocated, to upload into (sparse).
    pub(super) fn vol_create_sparse(&self, name: &str, bytes: u64) -> DriverResult<StorageVol> {
        self.vol_create_xml(name, bytes, "raw", None, true)
    }

    fn vol_create_xml(
        &self,
        name: &str,
        bytes: u64,
        format: &str,
        backing: Option<(&str, &str)>,
        sparse: bool,
    ) -> DriverResult<StorageVol> {
        let (c, pool) = (self.client()?, self.pool()?);
        let backing = match backing {
            Some((vol, fmt)) => {
                let v = c
                    .vol_lookup_opt(&pool, vol)
                    .map_err(|e| error::rpc(format!("cannot look up volume {vol}"), e))?
                    .ok_or_else(|| DriverError::stemcell_not_found(vol))?;
                let path = c.vol_path(&v).map_err(|e| error::rpc(format!("cannot find volume {vol}"), e))?;
                Some((path, fmt))
            }
            None => None,
        };
        let xml = domain::volume_xml(name, bytes, format, backing.as_ref().map(|(p, f)| (p.as_str(), *f)), sparse);
        c.vol_create_xml(&pool, &xml, 0)
            .map_err(|e| error::rpc(format!("cannot create volume {name} in pool {}", pool.name), e))
    }

    /// The volume `name`, `None` when it (or the pool) does not exist.
    pub(super) fn vol_opt(&self, name: &str) -> DriverResult<Option<StorageVol>> {
        let Some(pool) = self.pool_opt()? else { return Ok(None) };
        self.client()?.vol_lookup_opt(&pool, name).map_err(|e| error::rpc(format!("cannot look up volume {name}"), e))
    }

    /// Uploads everything `src` yields into the new volume `vol` from its start; with `sparse`, zero blocks
    /// are sent as holes (the upload covers the volume to its end, so the file ends where the volume does).
    pub(super) fn vol_upload(&self, vol: &StorageVol, src: &mut dyn std::io::Read, sparse: bool) -> DriverResult<u64> {
        self.client()?
            .vol_upload_from(vol, src, sparse)
            .map_err(|e| error::rpc(format!("cannot upload into volume {}", vol.name), e))
    }

    /// Deletes volume `name`; false when it (or the pool) did not exist.
    pub(super) fn vol_delete(&self, name: &str) -> DriverResult<bool> {
        let Some(vol) = self.vol_opt(name)? else { return Ok(false) };
        match self.client()?.vol_delete(&vol) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(error::rpc(format!("cannot delete volume {name}"), e)),
        }
    }

    /// (capacity in bytes, format) of a volume, `None` when it does not exist.
    pub(super) fn vol_info(&self, name: &str) -> DriverResult<Option<(u64, String)>> {
        let Some(vol) = self.vol_opt(name)? else { return Ok(None) };
        let xml = match self.client()?.vol_xml(&vol) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(error::rpc(format!("cannot read volume {name}"), e)),
        };
        domain::parse_volume(&xml)
            .map(Some)
            .map_err(|reason| LibvirtError::Xml { what: format!("volume {name}"), reason }.into())
    }

    /// The domain `vm`, `None` when it does not exist.
    pub(super) fn domain_opt(&self, vm: &str) -> DriverResult<Option<crate::cpi::libvirt_rpc::Domain>> {
        self.client()?.domain_lookup_opt(vm).map_err(|e| error::rpc(format!("cannot look up domain {vm}"), e))
    }

    /// The domain `vm` (VmNotFound when it is not there).
    pub(super) fn domain(&self, vm: &VmCid) -> DriverResult<crate::cpi::libvirt_rpc::Domain> {
        cid::vm(vm)?;
        self.domain_opt(vm.as_str())?.ok_or_else(|| DriverError::vm_not_found(vm.to_string()))
    }

    /// The domain and what the driver reads from its live XML.
    pub(super) fn dumpxml(&self, vm: &VmCid) -> DriverResult<(crate::cpi::libvirt_rpc::Domain, domain::DomainInfo)> {
        let dom = self.domain(vm)?;
        let xml = match self.client()?.domain_xml(&dom, 0) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Err(DriverError::vm_not_found(vm.to_string())),
            Err(e) => return Err(error::rpc(format!("cannot read domain {vm}"), e)),
        };
        let info = domain::parse_domain(&xml)
            .map_err(|reason| DriverError::from(LibvirtError::Xml { what: format!("domain {vm}"), reason }))?;
        Ok((dom, info))
    }

    /// Stops (when it runs) and undefines `vm`; false when there was no such domain.
    pub(super) fn destroy_and_undefine(&self, vm: &str) -> DriverResult<bool> {
        let c = self.client()?;
        let Some(dom) = self.domain_opt(vm)? else { return Ok(false) };
        match c.domain_destroy(&dom, 0) {
            Ok(()) => {}
            // not running, or gone meanwhile
            Err(e) if e.code() == Some(code::OPERATION_INVALID) || e.is_not_found() => {}
            Err(e) => return Err(error::rpc(format!("cannot stop {vm}"), e)),
        }
        match c.domain_undefine(&dom, flags::UNDEFINE_NVRAM) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(error::rpc(format!("cannot undefine {vm}"), e)),
        }
    }

    /// `AFFECT_CONFIG`, plus `AFFECT_LIVE` when the domain runs: the change applies now and survives restarts.
    pub(super) fn scope(running: bool) -> u32 {
        if running {
            flags::AFFECT_CONFIG | flags::AFFECT_LIVE
        } else {
            flags::AFFECT_CONFIG
        }
    }
}
