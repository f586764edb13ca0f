//! The agent settings of a VM: the config-drive or CD-ROM volume the agent reads.
use super::*;

/// Size of the settings-medium volume. The ISO is padded to it, so the volume never changes size.
pub(super) const MEDIUM_CAPACITY: u64 = 8 << 20;

impl Libvirt {
    pub(super) fn medium_volume(vm: &str) -> String {
        format!("{vm}-settings.iso")
    }

    /// Writes `settings` as the VM's settings medium (creating the volume when `create`).
    pub(super) fn write_medium(
        &self,
        vm: &str,
        kind: MediumKind,
        settings: &AgentSettings,
        create: bool,
    ) -> DriverResult<()> {
        let tmp = self.medium_file(vm, kind, settings)?;
        let name = Self::medium_volume(vm);
        if create {
            self.vol_create(&name, MEDIUM_CAPACITY, "raw", None)?;
        }
        self.vol_upload(&name, tmp.path())
    }

    /// The settings medium of `vm` as a temporary file of [`MEDIUM_CAPACITY`] bytes, ready for `vol-upload`.
    pub(super) fn medium_file(
        &self,
        vm: &str,
        kind: MediumKind,
        settings: &AgentSettings,
    ) -> DriverResult<tempfile::NamedTempFile> {
        let mut iso = medium::build(kind, &settings.to_json(), vm, &self.cfg.xorriso)
            .context(|| format!("cannot build the settings medium of {vm}"))?;
        if iso.len() as u64 > MEDIUM_CAPACITY {
            return Err(DriverError::invalid(
                "agent settings",
                format!("the settings medium is {} bytes, more than {MEDIUM_CAPACITY}", iso.len()),
            ));
        }
        iso.resize(MEDIUM_CAPACITY as usize, 0);
        let mut tmp = tempfile::Builder::new()
            .prefix("vmcpi-settings-")
            .suffix(".iso")
            .tempfile()
            .context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut tmp, &iso).context(|| "cannot write a temporary file".into())?;
        Ok(tmp)
    }

    /// Reads the settings back from the VM's medium.
    pub(super) fn read_medium(&self, vm: &str, kind: MediumKind) -> DriverResult<AgentSettings> {
        let name = Self::medium_volume(vm);
        let tmp = tempfile::Builder::new()
            .prefix("vmcpi-settings-")
            .suffix(".iso")
            .tempfile()
            .context(|| "cannot create a temporary file".into())?;
        self.virsh
            .cmd()
            .args(["vol-download", "--pool", self.pool(), name.as_str()])
            .arg(tmp.path())
            .run()
            .context(|| format!("cannot download the settings medium of {vm}"))?;
        let bytes = medium::read_settings(kind, tmp.path(), &self.cfg.xorriso)
            .context(|| format!("cannot read the settings medium of {vm}"))?;
        AgentSettings::from_json(&bytes).context(|| format!("the settings medium of {vm} holds invalid settings"))
    }

    /// Swaps the CD-ROM media of a running domain so the guest sees the new settings.
    pub(super) fn reload_medium(&self, vm: &str, info: &domain::DomainInfo) -> DriverResult<()> {
        if !info.running {
            return Ok(());
        }
        let Some(cd) = info.disks.iter().find(|d| d.device == "cdrom") else { return Ok(()) };
        let Some(dev) = &cd.dev else { return Ok(()) };
        let path = self
            .virsh
            .run(["vol-path", "--pool", self.pool(), Self::medium_volume(vm).as_str()])
            .context(|| format!("cannot find the settings medium of {vm}"))?;
        let path = path.trim();
        let _ = self.virsh.run(["change-media", vm, dev.as_str(), "--eject", "--live", "--force"]);
        self.virsh
            .run(["change-media", vm, dev.as_str(), path, "--insert", "--live"])
            .context(|| format!("cannot insert the refreshed settings medium into {vm}"))?;
        Ok(())
    }
}
