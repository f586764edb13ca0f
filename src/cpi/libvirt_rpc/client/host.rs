//! The procedures on the connection: versions, host name, capabilities, listings.
use super::Client;
use crate::cpi::libvirt_rpc::error::Result;
use crate::cpi::libvirt_rpc::proto::{self as p, Domain, StoragePool};

impl Client {
    /// `CONNECT_GET_VERSION`: the hypervisor's version (QEMU 7.2.0 is 7002000).
    pub fn hypervisor_version(&self) -> Result<u64> {
        Ok(self.call::<_, p::VersionRet>(p::CONNECT_GET_VERSION, &())?.version)
    }

    /// `CONNECT_GET_LIB_VERSION`: the daemon's libvirt version (9.0.0 is 9000000).
    pub fn lib_version(&self) -> Result<u64> {
        Ok(self.call::<_, p::VersionRet>(p::CONNECT_GET_LIB_VERSION, &())?.version)
    }

    /// `CONNECT_GET_HOSTNAME`.
    pub fn hostname(&self) -> Result<String> {
        Ok(self.call::<_, p::HostnameRet>(p::CONNECT_GET_HOSTNAME, &())?.hostname)
    }

    /// `CONNECT_GET_DOMAIN_CAPABILITIES` for a virtualisation type (`kvm`, `qemu`), the rest defaulted.
    pub fn domain_capabilities(&self, virttype: Option<&str>) -> Result<String> {
        let args = p::DomainCapabilitiesArgs {
            emulatorbin: None,
            arch: None,
            machine: None,
            virttype: virttype.map(str::to_string),
            flags: 0,
        };
        Ok(self.call::<_, p::StringRet>(p::CONNECT_GET_DOMAIN_CAPABILITIES, &args)?.value)
    }

    /// `CONNECT_LIST_ALL_DOMAINS` with `flags::LIST_DOMAINS_*` (0: all).
    pub fn list_domains(&self, flags: u32) -> Result<Vec<Domain>> {
        let r: p::ListAllDomainsRet =
            self.call(p::CONNECT_LIST_ALL_DOMAINS, &p::ListAllArgs { need_results: 1, flags })?;
        Ok(r.domains.0)
    }

    /// `CONNECT_LIST_ALL_STORAGE_POOLS` (flags 0: all).
    pub fn list_pools(&self, flags: u32) -> Result<Vec<StoragePool>> {
        let r: p::ListAllPoolsRet =
            self.call(p::CONNECT_LIST_ALL_STORAGE_POOLS, &p::ListAllArgs { need_results: 1, flags })?;
        Ok(r.pools.0)
    }
}
