//! The agent settings of a VM: `env.iso` on its CD-ROM and `env.json` beside it.
use super::*;

impl Vmrun {
    /// `env.iso` (the agent reads `ENV` from the CD-ROM) and `env.json` (the same settings, for later
    /// edits) for `s`, to be written with [`Transport::write_many`].
    pub(super) fn settings_files(&self, vm: &str, s: &AgentSettings) -> DriverResult<Vec<(String, Vec<u8>)>> {
        let json = s.to_json();
        let iso = medium::build(MediumKind::CdromEnv, &json, vm)
            .map_err(|e| DriverError::failed(format!("cannot build the settings ISO of {vm}"), e).with_retry(false))?;
        let dir = self.vm_dir(vm);
        Ok(vec![(join(&dir, "env.iso"), iso), (join(&dir, "env.json"), json)])
    }

    pub(super) fn read_settings(&self, vm: &str) -> DriverResult<AgentSettings> {
        let p = join(&self.vm_dir(vm), "env.json");
        let b = self.tr(|| format!("cannot read the settings of {vm}"), self.t.read(&p))?;
        AgentSettings::from_json(&b).context(|| format!("{p} holds invalid settings"))
    }
}

impl Vmrun {
    /// Puts the settings ISO on the stemcell's own CD-ROM device (the agent reads the first optical drive),
    /// adding a SATA CD-ROM only when the stemcell has none.
    pub(super) fn attach_settings_iso(v: &mut Vmx) {
        let dev = match v.cdrom_device() {
            Some(d) => d,
            None => {
                v.set("sata0.present", "TRUE");
                "sata0:0".to_string()
            }
        };
        v.set(&format!("{dev}.present"), "TRUE");
        v.set(&format!("{dev}.deviceType"), "cdrom-image");
        v.set(&format!("{dev}.fileName"), "env.iso");
        v.set(&format!("{dev}.startConnected"), "TRUE");
        v.remove(&format!("{dev}.autodetect"));
    }
}
