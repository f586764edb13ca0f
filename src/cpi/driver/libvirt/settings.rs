//! The agent settings of a VM: the config-drive or CD-ROM volume the agent reads, written in-process
//! ([`crate::cpi::medium`]) and streamed into its volume.
use super::*;
use crate::cpi::error::Context;
use crate::cpi::libvirt_rpc::flags;

/// Size of the settings-medium volume. The ISO is padded to it, so the volume never changes size.
pub(super) const MEDIUM_CAPACITY: u64 = 8 << 20;

impl Libvirt {
    pub(super) fn medium_volume(vm: &str) -> String {
        format!("{vm}-settings.iso")
    }

    /// The settings medium of `vm`: an ISO of [`MEDIUM_CAPACITY`] bytes, padded with zeros.
    pub(super) fn medium_image(&self, vm: &str, kind: MediumKind, settings: &AgentSettings) -> DriverResult<Vec<u8>> {
        // a medium that cannot be written (or read, see read_medium) fails the same way on a retry
        let mut iso = medium::build(kind, &settings.to_json(), vm).map_err(|e| {
            DriverError::failed(format!("cannot build the settings medium of {vm}"), e).with_retry(false)
        })?;
        if iso.len() as u64 > MEDIUM_CAPACITY {
            return Err(DriverError::invalid(
                "agent settings",
                format!("the settings medium is {} bytes, more than {MEDIUM_CAPACITY}", iso.len()),
            ));
        }
        iso.resize(MEDIUM_CAPACITY as usize, 0);
        Ok(iso)
    }

    /// Creates the settings medium volume of a new VM with `settings` in it.
    pub(super) fn write_new_medium(&self, vm: &str, kind: MediumKind, settings: &AgentSettings) -> DriverResult<()> {
        let iso = self.medium_image(vm, kind, settings)?;
        let vol = self.vol_create_sparse(&Self::medium_volume(vm), MEDIUM_CAPACITY)?;
        self.vol_upload(&vol, &mut iso.as_slice(), true)?;
        Ok(())
    }

    /// Writes `settings` over the VM's settings medium: the whole volume, its zero blocks as holes (a sparse
    /// upload that covers the volume to its end leaves exactly the ISO's bytes in it).
    pub(super) fn write_medium(&self, vm: &str, kind: MediumKind, settings: &AgentSettings) -> DriverResult<()> {
        let iso = self.medium_image(vm, kind, settings)?;
        let name = Self::medium_volume(vm);
        let vol = self.vol_opt(&name)?.ok_or_else(|| {
            DriverError::other(format!("the settings medium {name} of {vm} is missing: recreate the VM"))
        })?;
        self.vol_upload(&vol, &mut iso.as_slice(), true)?;
        Ok(())
    }

    /// Reads the settings back from the VM's medium.
    pub(super) fn read_medium(&self, vm: &str, kind: MediumKind) -> DriverResult<AgentSettings> {
        let name = Self::medium_volume(vm);
        let vol = self.vol_opt(&name)?.ok_or_else(|| {
            DriverError::other(format!("the settings medium {name} of {vm} is missing: recreate the VM"))
        })?;
        let image = self
            .client()?
            .vol_download_bytes(&vol, MEDIUM_CAPACITY as usize)
            .map_err(|e| error::rpc(format!("cannot download the settings medium of {vm}"), e))?;
        let bytes = medium::read_settings(kind, &image).map_err(|e| {
            let what = match image.iter().position(|b| *b != 0) {
                Some(at) => format!("{} bytes read from volume {name}, the first non-zero at byte {at}", image.len()),
                None => format!("{} bytes read from volume {name}, all zeros", image.len()),
            };
            DriverError::failed(format!("cannot read the settings medium of {vm} ({what})"), e).with_retry(false)
        })?;
        AgentSettings::from_json(&bytes).context(|| format!("the settings medium of {vm} holds invalid settings"))
    }

    /// Swaps the CD-ROM media of a running domain so the guest sees the new settings (eject, then insert:
    /// QEMU only reopens a medium that changed).
    pub(super) fn reload_medium(
        &self,
        dom: &crate::cpi::libvirt_rpc::Domain,
        info: &domain::DomainInfo,
    ) -> DriverResult<()> {
        if !info.running {
            return Ok(());
        }
        let Some(cd) = info.disks.iter().find(|d| d.device == "cdrom") else { return Ok(()) };
        let Some(dev) = &cd.dev else { return Ok(()) };
        let vm = dom.name.as_str();
        let c = self.client()?;
        let eject = domain::cdrom_xml(None, dev, &cd.address);
        if let Err(e) = c.domain_update_device(dom, &eject, flags::AFFECT_LIVE | flags::DEVICE_MODIFY_FORCE) {
            crate::debug!("ejecting the settings medium of {vm}: {e}");
        }
        let medium = Self::medium_volume(vm);
        let insert = domain::cdrom_xml(Some((self.pool_name(), &medium)), dev, &cd.address);
        c.domain_update_device(dom, &insert, flags::AFFECT_LIVE)
            .map_err(|e| error::rpc(format!("cannot insert the refreshed settings medium into {vm}"), e))?;
        Ok(())
    }
}
