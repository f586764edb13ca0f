//! The procedures on a domain: lookup, lifecycle, metadata, devices, block jobs, QEMU's monitor and agent.
use super::{flags, BlockCopyParams, BlockJobInfo, Client, DomainState, MetadataKind};
use crate::cpi::libvirt_rpc::error::{Error, Result};
use crate::cpi::libvirt_rpc::proto::{self as p, Domain};
use crate::cpi::libvirt_rpc::xdr::List;

impl Client {
    /// `DOMAIN_LOOKUP_BY_NAME`.
    pub fn domain_lookup(&self, name: &str) -> Result<Domain> {
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?.dom)
    }

    /// `DOMAIN_LOOKUP_BY_NAME`, `None` when there is no such domain.
    pub fn domain_lookup_opt(&self, name: &str) -> Result<Option<Domain>> {
        Ok(self
            .call_opt::<_, p::DomainRet>(p::DOMAIN_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?
            .map(|r| r.dom))
    }

    /// `DOMAIN_LOOKUP_BY_UUID`.
    pub fn domain_lookup_uuid(&self, uuid: [u8; 16]) -> Result<Domain> {
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_LOOKUP_BY_UUID, &p::UuidArgs { uuid })?.dom)
    }

    /// `DOMAIN_DEFINE_XML_FLAGS` (`flags::DEFINE_VALIDATE` checks the XML against libvirt's schema).
    pub fn domain_define_xml(&self, xml: &str, flags: u32) -> Result<Domain> {
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_DEFINE_XML_FLAGS, &p::XmlFlagsArgs { xml: xml.into(), flags })?.dom)
    }

    /// `DOMAIN_CREATE_WITH_FLAGS`: starts a defined domain; the handle back carries its id.
    pub fn domain_start(&self, dom: &Domain) -> Result<Domain> {
        let args = p::DomainFlagsArgs { dom: dom.clone(), flags: 0 };
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_CREATE_WITH_FLAGS, &args)?.dom)
    }

    /// `DOMAIN_DESTROY_FLAGS` (0: kill QEMU after a grace period, as `virsh destroy`).
    pub fn domain_destroy(&self, dom: &Domain, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_DESTROY_FLAGS, &p::DomainFlagsArgs { dom: dom.clone(), flags })
    }

    /// `DOMAIN_UNDEFINE_FLAGS` with `flags::UNDEFINE_*` (`virsh undefine --nvram` is `UNDEFINE_NVRAM`).
    pub fn domain_undefine(&self, dom: &Domain, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_UNDEFINE_FLAGS, &p::DomainFlagsArgs { dom: dom.clone(), flags })
    }

    /// `DOMAIN_GET_XML_DESC` with `flags::XML_*` (`virsh dumpxml` is 0).
    pub fn domain_xml(&self, dom: &Domain, flags: u32) -> Result<String> {
        Ok(self.call::<_, p::StringRet>(p::DOMAIN_GET_XML_DESC, &p::DomainFlagsArgs { dom: dom.clone(), flags })?.value)
    }

    /// `DOMAIN_GET_STATE`: the state and its reason (`virDomain*Reason`).
    pub fn domain_state(&self, dom: &Domain) -> Result<(DomainState, i32)> {
        let r: p::DomainStateRet =
            self.call(p::DOMAIN_GET_STATE, &p::DomainFlagsArgs { dom: dom.clone(), flags: 0 })?;
        Ok((DomainState::from_i32(r.state), r.reason))
    }

    /// `DOMAIN_SET_METADATA`: `value` None removes it. An [`MetadataKind::Element`] needs `key` (the XML
    /// prefix) and `uri` (its namespace); flags `AFFECT_*` (`virsh metadata … --config --live`).
    pub fn domain_set_metadata(
        &self,
        dom: &Domain,
        kind: MetadataKind,
        value: Option<&str>,
        key: Option<&str>,
        uri: Option<&str>,
        flags: u32,
    ) -> Result<()> {
        let args = p::SetMetadataArgs {
            dom: dom.clone(),
            kind: kind as i32,
            metadata: value.map(str::to_string),
            key: key.map(str::to_string),
            uri: uri.map(str::to_string),
            flags,
        };
        self.call(p::DOMAIN_SET_METADATA, &args)
    }

    /// `DOMAIN_GET_METADATA`; `None` when there is none (`VIR_ERR_NO_DOMAIN_METADATA`).
    pub fn domain_metadata(
        &self,
        dom: &Domain,
        kind: MetadataKind,
        uri: Option<&str>,
        flags: u32,
    ) -> Result<Option<String>> {
        let args = p::GetMetadataArgs { dom: dom.clone(), kind: kind as i32, uri: uri.map(str::to_string), flags };
        match self.call::<_, p::StringRet>(p::DOMAIN_GET_METADATA, &args) {
            Ok(r) => Ok(Some(r.value)),
            Err(e) if e.code() == Some(crate::cpi::libvirt_rpc::error::code::NO_DOMAIN_METADATA) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DOMAIN_ATTACH_DEVICE_FLAGS` (flags `AFFECT_*`).
    pub fn domain_attach_device(&self, dom: &Domain, xml: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_ATTACH_DEVICE_FLAGS, &p::DeviceArgs { dom: dom.clone(), xml: xml.into(), flags })
    }

    /// `DOMAIN_DETACH_DEVICE_FLAGS` (flags `AFFECT_*`). A live detach returns when the guest was asked;
    /// the device may go later.
    pub fn domain_detach_device(&self, dom: &Domain, xml: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_DETACH_DEVICE_FLAGS, &p::DeviceArgs { dom: dom.clone(), xml: xml.into(), flags })
    }

    /// `DOMAIN_UPDATE_DEVICE_FLAGS` (`virsh change-media` sends a CD-ROM's XML with or without its source;
    /// flags `AFFECT_*` | `DEVICE_MODIFY_FORCE`).
    pub fn domain_update_device(&self, dom: &Domain, xml: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_UPDATE_DEVICE_FLAGS, &p::DeviceArgs { dom: dom.clone(), xml: xml.into(), flags })
    }

    /// `DOMAIN_REBOOT` (asks the guest; flags `virDomainRebootFlagValues`, 0: the hypervisor's choice).
    pub fn domain_reboot(&self, dom: &Domain, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_REBOOT, &p::DomainFlagsArgs { dom: dom.clone(), flags })
    }

    /// `DOMAIN_RESET`: a hard reset, the QEMU process stays (and with it its port forwards).
    pub fn domain_reset(&self, dom: &Domain) -> Result<()> {
        self.call(p::DOMAIN_RESET, &p::DomainFlagsArgs { dom: dom.clone(), flags: 0 })
    }

    /// `DOMAIN_HAS_MANAGED_SAVE_IMAGE`.
    pub fn domain_has_managed_save(&self, dom: &Domain) -> Result<bool> {
        let r: p::IntRet =
            self.call(p::DOMAIN_HAS_MANAGED_SAVE_IMAGE, &p::DomainFlagsArgs { dom: dom.clone(), flags: 0 })?;
        Ok(r.value != 0)
    }

    /// `DOMAIN_BLOCK_COPY`: starts copying disk `disk` (target name or source path) of a running domain
    /// into what `destxml` (a `<disk>`) describes; flags `BLOCK_COPY_*` (`virsh blockcopy
    /// --reuse-external --transient-job` is `REUSE_EXT | TRANSIENT_JOB`). Poll [`Client::block_job_info`]
    /// until `cur == end`, then [`Client::block_job_abort`] (0: keep the copy apart, `--finish`; `PIVOT`:
    /// switch to it).
    pub fn domain_block_copy(
        &self,
        dom: &Domain,
        disk: &str,
        destxml: &str,
        params: BlockCopyParams,
        flags: u32,
    ) -> Result<()> {
        let mut list = Vec::new();
        if let Some(v) = params.bandwidth {
            list.push(p::TypedParam { field: "bandwidth".into(), value: p::TypedValue::ULLong(v) });
        }
        if let Some(v) = params.granularity {
            list.push(p::TypedParam { field: "granularity".into(), value: p::TypedValue::UInt(v) });
        }
        if let Some(v) = params.buf_size {
            list.push(p::TypedParam { field: "buf-size".into(), value: p::TypedValue::ULLong(v) });
        }
        let args = p::BlockCopyArgs {
            dom: dom.clone(),
            path: disk.into(),
            destxml: destxml.into(),
            params: List(list),
            flags,
        };
        self.call(p::DOMAIN_BLOCK_COPY, &args)
    }

    /// `DOMAIN_GET_BLOCK_JOB_INFO` (bytes): `None` when no job runs on `disk`.
    pub fn block_job_info(&self, dom: &Domain, disk: &str) -> Result<Option<BlockJobInfo>> {
        // VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES: bandwidth in bytes/s, not MiB/s
        let args = p::BlockJobArgs { dom: dom.clone(), path: disk.into(), flags: 1 };
        let r: p::BlockJobInfoRet = self.call(p::DOMAIN_GET_BLOCK_JOB_INFO, &args)?;
        Ok((r.found != 0).then_some(BlockJobInfo { kind: r.kind, bandwidth: r.bandwidth, cur: r.cur, end: r.end }))
    }

    /// Polls [`Client::block_job_info`] until the job on `disk` is ready (`cur == end`: a copy now
    /// mirrors), for at most `timeout`: what `virsh blockcopy --wait` does before `--finish` (then
    /// [`Client::block_job_abort`] with 0) or `--pivot`.
    pub fn block_job_wait_ready(&self, dom: &Domain, disk: &str, timeout: std::time::Duration) -> Result<BlockJobInfo> {
        let deadline = std::time::Instant::now() + timeout;
        let mut delay = std::time::Duration::from_millis(10);
        loop {
            match self.block_job_info(dom, disk)? {
                Some(j) if j.end > 0 && j.cur == j.end => return Ok(j),
                Some(j) if std::time::Instant::now() >= deadline => {
                    return Err(Error::Job(format!(
                        "the job on {disk} of {} is not ready after {} s ({} of {} bytes)",
                        dom.name,
                        timeout.as_secs(),
                        j.cur,
                        j.end
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(Error::Job(format!(
                        "the job on {disk} of {} ended before it was ready (it failed: see the daemon's log)",
                        dom.name
                    )))
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(std::time::Duration::from_millis(500));
        }
    }

    /// `DOMAIN_BLOCK_JOB_ABORT` (flags `BLOCK_JOB_ABORT_*`).
    pub fn block_job_abort(&self, dom: &Domain, disk: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_BLOCK_JOB_ABORT, &p::BlockJobArgs { dom: dom.clone(), path: disk.into(), flags })
    }

    /// `QEMU_PROC_DOMAIN_MONITOR_COMMAND`: a monitor command, HMP (`hostfwd_add …`) or QMP (JSON). QEMU
    /// answers an HMP command that failed with text, not an error.
    pub fn qemu_monitor_command(&self, dom: &Domain, cmd: &str, hmp: bool) -> Result<String> {
        let args =
            p::MonitorCommandArgs { dom: dom.clone(), cmd: cmd.into(), flags: u32::from(hmp) * flags::MONITOR_HMP };
        Ok(self.call::<_, p::StringRet>(p::QEMU_DOMAIN_MONITOR_COMMAND, &args)?.value)
    }

    /// `QEMU_PROC_DOMAIN_AGENT_COMMAND`: a guest agent command (JSON); `timeout` in seconds or
    /// `flags::AGENT_TIMEOUT_*`. `None` when the agent returned nothing.
    pub fn qemu_agent_command(&self, dom: &Domain, cmd: &str, timeout: i32) -> Result<Option<String>> {
        let args = p::AgentCommandArgs { dom: dom.clone(), cmd: cmd.into(), timeout, flags: 0 };
        Ok(self.call::<_, p::AgentCommandRet>(p::QEMU_DOMAIN_AGENT_COMMAND, &args)?.result)
    }
}
