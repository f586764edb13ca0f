//! The procedures on storage pools and their volumes.
use super::{Client, PoolInfo, PoolState, VolInfo};
use crate::cpi::libvirt_rpc::error::Result;
use crate::cpi::libvirt_rpc::proto::{self as p, StoragePool, StorageVol};

impl Client {
    // -- storage pools

    /// `STORAGE_POOL_LOOKUP_BY_NAME`.
    pub fn pool_lookup(&self, name: &str) -> Result<StoragePool> {
        Ok(self.call::<_, p::PoolRet>(p::STORAGE_POOL_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?.pool)
    }

    /// `STORAGE_POOL_LOOKUP_BY_NAME`, `None` when there is no such pool.
    pub fn pool_lookup_opt(&self, name: &str) -> Result<Option<StoragePool>> {
        Ok(self
            .call_opt::<_, p::PoolRet>(p::STORAGE_POOL_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?
            .map(|r| r.pool))
    }

    /// `STORAGE_POOL_DEFINE_XML` (`virsh pool-define-as NAME dir --target PATH` defines
    /// `<pool type='dir'><name>NAME</name><target><path>PATH</path></target></pool>`).
    pub fn pool_define_xml(&self, xml: &str) -> Result<StoragePool> {
        Ok(self.call::<_, p::PoolRet>(p::STORAGE_POOL_DEFINE_XML, &p::XmlFlagsArgs { xml: xml.into(), flags: 0 })?.pool)
    }

    /// `STORAGE_POOL_BUILD` (a directory pool: makes its directory; `flags::POOL_BUILD_*`).
    pub fn pool_build(&self, pool: &StoragePool, flags: u32) -> Result<()> {
        self.call(p::STORAGE_POOL_BUILD, &p::PoolFlagsArgs { pool: pool.clone(), flags })
    }

    /// `STORAGE_POOL_CREATE`: starts a defined pool (`virsh pool-start`).
    pub fn pool_start(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_CREATE, &p::PoolFlagsArgs { pool: pool.clone(), flags: 0 })
    }

    /// `STORAGE_POOL_DESTROY`: stops a pool (its volumes stay).
    pub fn pool_stop(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_DESTROY, &p::PoolArgs { pool: pool.clone() })
    }

    /// `STORAGE_POOL_UNDEFINE`.
    pub fn pool_undefine(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_UNDEFINE, &p::PoolArgs { pool: pool.clone() })
    }

    /// `STORAGE_POOL_REFRESH`: re-reads the pool's volumes (formats, sizes).
    pub fn pool_refresh(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_REFRESH, &p::PoolFlagsArgs { pool: pool.clone(), flags: 0 })
    }

    /// `STORAGE_POOL_GET_INFO`.
    pub fn pool_info(&self, pool: &StoragePool) -> Result<PoolInfo> {
        let r: p::PoolInfoRet = self.call(p::STORAGE_POOL_GET_INFO, &p::PoolArgs { pool: pool.clone() })?;
        let state = match r.state {
            0 => PoolState::Inactive,
            1 => PoolState::Building,
            2 => PoolState::Running,
            3 => PoolState::Degraded,
            4 => PoolState::Inaccessible,
            v => PoolState::Other(v),
        };
        Ok(PoolInfo { state, capacity: r.capacity, allocation: r.allocation, available: r.available })
    }

    /// `STORAGE_POOL_GET_XML_DESC`.
    pub fn pool_xml(&self, pool: &StoragePool) -> Result<String> {
        Ok(self
            .call::<_, p::StringRet>(p::STORAGE_POOL_GET_XML_DESC, &p::PoolFlagsArgs { pool: pool.clone(), flags: 0 })?
            .value)
    }

    /// `STORAGE_POOL_SET_AUTOSTART`.
    pub fn pool_set_autostart(&self, pool: &StoragePool, autostart: bool) -> Result<()> {
        self.call(
            p::STORAGE_POOL_SET_AUTOSTART,
            &p::PoolAutostartArgs { pool: pool.clone(), autostart: i32::from(autostart) },
        )
    }

    /// `STORAGE_POOL_LIST_ALL_VOLUMES`.
    pub fn pool_volumes(&self, pool: &StoragePool) -> Result<Vec<StorageVol>> {
        let args = p::ListAllVolumesArgs { pool: pool.clone(), need_results: 1, flags: 0 };
        Ok(self.call::<_, p::ListAllVolumesRet>(p::STORAGE_POOL_LIST_ALL_VOLUMES, &args)?.vols.0)
    }

    // -- storage volumes

    /// `STORAGE_VOL_LOOKUP_BY_NAME`.
    pub fn vol_lookup(&self, pool: &StoragePool, name: &str) -> Result<StorageVol> {
        let args = p::VolLookupArgs { pool: pool.clone(), name: name.into() };
        Ok(self.call::<_, p::VolRet>(p::STORAGE_VOL_LOOKUP_BY_NAME, &args)?.vol)
    }

    /// `STORAGE_VOL_LOOKUP_BY_NAME`, `None` when there is no such volume.
    pub fn vol_lookup_opt(&self, pool: &StoragePool, name: &str) -> Result<Option<StorageVol>> {
        let args = p::VolLookupArgs { pool: pool.clone(), name: name.into() };
        Ok(self.call_opt::<_, p::VolRet>(p::STORAGE_VOL_LOOKUP_BY_NAME, &args)?.map(|r| r.vol))
    }

    /// `STORAGE_VOL_CREATE_XML` (`virsh vol-create-as` sends `<volume>` with name, capacity, target
    /// format and an optional `<backingStore>`; flags `VOL_CREATE_*`).
    pub fn vol_create_xml(&self, pool: &StoragePool, xml: &str, flags: u32) -> Result<StorageVol> {
        let args = p::VolCreateArgs { pool: pool.clone(), xml: xml.into(), flags };
        Ok(self.call::<_, p::VolRet>(p::STORAGE_VOL_CREATE_XML, &args)?.vol)
    }

    /// `STORAGE_VOL_CREATE_XML_FROM`: a new volume holding a copy of `from` (`virsh vol-clone`).
    pub fn vol_create_xml_from(
        &self,
        pool: &StoragePool,
        xml: &str,
        from: &StorageVol,
        flags: u32,
    ) -> Result<StorageVol> {
        let args = p::VolCreateFromArgs { pool: pool.clone(), xml: xml.into(), clonevol: from.clone(), flags };
        Ok(self.call::<_, p::VolRet>(p::STORAGE_VOL_CREATE_XML_FROM, &args)?.vol)
    }

    /// `STORAGE_VOL_DELETE` (flags 0).
    pub fn vol_delete(&self, vol: &StorageVol) -> Result<()> {
        self.call(p::STORAGE_VOL_DELETE, &p::VolFlagsArgs { vol: vol.clone(), flags: 0 })
    }

    /// `STORAGE_VOL_GET_XML_DESC`.
    pub fn vol_xml(&self, vol: &StorageVol) -> Result<String> {
        Ok(self
            .call::<_, p::StringRet>(p::STORAGE_VOL_GET_XML_DESC, &p::VolFlagsArgs { vol: vol.clone(), flags: 0 })?
            .value)
    }

    /// `STORAGE_VOL_GET_INFO`.
    pub fn vol_info(&self, vol: &StorageVol) -> Result<VolInfo> {
        let r: p::VolInfoRet = self.call(p::STORAGE_VOL_GET_INFO, &p::VolArgs { vol: vol.clone() })?;
        Ok(VolInfo { kind: r.kind, capacity: r.capacity, allocation: r.allocation })
    }

    /// `STORAGE_VOL_GET_PATH`.
    pub fn vol_path(&self, vol: &StorageVol) -> Result<String> {
        Ok(self.call::<_, p::StringRet>(p::STORAGE_VOL_GET_PATH, &p::VolArgs { vol: vol.clone() })?.value)
    }

    /// `STORAGE_VOL_RESIZE` to `capacity` bytes (flags `VOL_RESIZE_*`; shrinking needs `SHRINK`).
    pub fn vol_resize(&self, vol: &StorageVol, capacity: u64, flags: u32) -> Result<()> {
        self.call(p::STORAGE_VOL_RESIZE, &p::VolResizeArgs { vol: vol.clone(), capacity, flags })
    }
}
