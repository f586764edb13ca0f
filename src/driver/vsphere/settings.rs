//! The agent settings of a VM: `env.json`/`env.iso` in its directory, the CD-ROM, and guestinfo.
use super::*;

impl Vsphere {
    /// Writes the settings (JSON + a fresh ISO) into the VM's folder and returns the ISO path.
    pub(super) fn write_settings(
        &self,
        inv: &Inv,
        info_ds: &str,
        dir: &str,
        settings: &AgentSettings,
    ) -> DriverResult<String> {
        let json = settings.to_json();
        let iso = medium::build(MediumKind::CdromEnv, &json, &settings.vm.name)
            .map_err(|e| DriverError::failed("cannot build the settings ISO", e).with_retry(false))?;
        let name = format!("{dir}/env-{}.iso", random_hex(8));
        inv.s
            .put_file(&self.cfg.datacenter, info_ds, &format!("{dir}/env.json"), &json)
            .map_err(ctx_err("cannot upload the agent settings"))?;
        inv.s
            .put_file(&self.cfg.datacenter, info_ds, &name, &iso)
            .map_err(ctx_err("cannot upload the settings ISO"))?;
        Ok(format!("[{info_ds}] {name}"))
    }

    pub(super) fn read_settings(&self, inv: &Inv, vm: &VmInfo) -> DriverResult<AgentSettings> {
        let bytes = inv
            .s
            .get_file(&self.cfg.datacenter, &vm.datastore, &format!("{}/env.json", vm.dir))
            .map_err(ctx_err("cannot download the agent settings"))?
            .ok_or_else(|| {
                DriverError::other(format!(
                    "VM {} has no {}/env.json on [{}]: was it made by this CPI?",
                    vm.vm.value, vm.dir, vm.datastore
                ))
            })?;
        AgentSettings::from_json(&bytes)
            .map_err(|e| DriverError::failed("the VM's agent settings are not valid JSON", e))
    }

    /// Points the first CD-ROM at a new settings ISO and removes the old one.
    pub(super) fn refresh_settings(&self, inv: &Inv, vm: &VmInfo, settings: &AgentSettings) -> DriverResult<()> {
        let iso = self.write_settings(inv, &vm.datastore, &vm.dir, settings)?;
        let cd = vm
            .devices
            .iter()
            .find(|d| d.kind == "VirtualCdrom")
            .ok_or_else(|| DriverError::other(format!("VM {} has no CD-ROM for its settings", vm.vm.value)))?;
        let old = cd.file.clone();
        let dev = Device::Cdrom {
            key: cd.key,
            controller_key: cd.controller_key.unwrap_or(200),
            unit: cd.unit.unwrap_or(0),
            iso,
        };
        let spec = VmConfigSpec {
            device_change: vec![DeviceChange { operation: Operation::Edit, create_file: false, device: dev }],
            extra_config: guestinfo(settings),
            ..Default::default()
        };
        inv.s
            .run_task(&ReconfigVm { this: vm.vm.clone(), spec }, "change settings ISO")
            .map_err(ctx_err("cannot change the settings ISO"))?;
        if let Some((ds, path)) = old.as_deref().and_then(|o| o.strip_prefix('[')).and_then(|o| o.split_once("] ")) {
            if path.ends_with(".iso") && path.contains("/env-") {
                self.delete_file(inv, ds, path)?;
            }
        }
        Ok(())
    }
}

/// The settings for agents with the `VsphereGuestInfo` source (stemcells built since 2026), which read
/// `guestinfo.userdata` before the CD-ROM; older agents ignore it.
pub(super) fn guestinfo(settings: &AgentSettings) -> Vec<(String, String)> {
    vec![
        ("guestinfo.userdata".into(), base64(&settings.to_json())),
        ("guestinfo.userdata.encoding".into(), "base64".into()),
    ]
}
