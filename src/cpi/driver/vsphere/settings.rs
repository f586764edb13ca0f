//! The agent settings of a VM: the settings ISO in its directory on the first CD-ROM, and guestinfo.
use super::*;

impl Vsphere {
    /// Uploads a fresh settings ISO into the VM's folder and returns its path. The ISO is `env-a.iso` and
    /// `env-b.iso` in turn (`current`: the one in the drive now), so a change never overwrites the medium
    /// the VM has inserted and leaves no old one to delete.
    pub(super) fn write_settings(
        &self,
        inv: &Inv,
        info_ds: &str,
        dir: &str,
        settings: &AgentSettings,
        current: Option<&str>,
    ) -> DriverResult<String> {
        let json = settings.to_json();
        let started = std::time::Instant::now();
        // no run-out padding: the drive is exactly the image (354 KiB padded, about 50 unpadded, uploaded on
        // every settings change)
        let iso = medium::build_unpadded(MediumKind::CdromEnv, &json, &settings.vm.name)
            .map_err(|e| DriverError::failed("cannot build the settings ISO", e).with_retry(false))?;
        crate::debug!(
            "settings ISO: {} KiB built in {:.2} ms",
            iso.len() >> 10,
            started.elapsed().as_secs_f64() * 1000.0
        );
        let next = if current.is_some_and(|c| c.ends_with("/env-a.iso")) { "env-b.iso" } else { "env-a.iso" };
        let name = format!("{dir}/{next}");
        inv.s
            .put_file(&self.cfg.datacenter, info_ds, &name, &iso)
            .map_err(ctx_err("cannot upload the settings ISO"))?;
        Ok(format!("[{info_ds}] {name}"))
    }

    /// The settings the VM has now: `guestinfo.userdata` (read with the VM), else the `env.json` that
    /// VMs made by earlier versions of this CPI have beside them.
    pub(super) fn read_settings(&self, inv: &Inv, vm: &VmInfo) -> DriverResult<AgentSettings> {
        let bytes = match vm.userdata.as_deref().and_then(|u| crate::common::encoding::unbase64(u.trim()).ok()) {
            Some(b) => b,
            None => inv
                .s
                .get_file(&self.cfg.datacenter, &vm.datastore, &format!("{}/env.json", vm.dir))
                .map_err(ctx_err("cannot download the agent settings"))?
                .ok_or_else(|| {
                    DriverError::other(format!(
                        "VM {} has no agent settings (guestinfo.userdata or {}/env.json on [{}]): was it made by this CPI?",
                        vm.vm.value, vm.dir, vm.datastore
                    ))
                })?,
        };
        AgentSettings::from_json(&bytes)
            .map_err(|e| DriverError::failed("the VM's agent settings are not valid JSON", e))
    }

    /// Uploads the settings ISO for `settings` and returns what the caller's reconfigure must carry: the
    /// first CD-ROM pointed at it, and the guestinfo. Also the old ISO when it has a name of an earlier
    /// version of this CPI (`env-<hex>.iso`), to delete after the reconfigure.
    pub(super) fn settings_change(
        &self,
        inv: &Inv,
        vm: &VmInfo,
        settings: &AgentSettings,
    ) -> DriverResult<SettingsChange> {
        let cd = vm
            .devices
            .iter()
            .find(|d| d.kind == "VirtualCdrom")
            .ok_or_else(|| DriverError::other(format!("VM {} has no CD-ROM for its settings", vm.vm.value)))?;
        let old = cd.file.clone();
        let iso = self.write_settings(inv, &vm.datastore, &vm.dir, settings, old.as_deref())?;
        let dev = Device::Cdrom {
            key: cd.key,
            controller_key: cd.controller_key.unwrap_or(200),
            unit: cd.unit.unwrap_or(0),
            iso,
        };
        let change = DeviceChange { operation: Operation::Edit, create_file: false, device: dev };
        let legacy = old
            .as_deref()
            .and_then(|o| o.strip_prefix('['))
            .and_then(|o| o.split_once("] "))
            .filter(|(_, path)| {
                path.ends_with(".iso")
                    && path.contains("/env-")
                    && !path.ends_with("/env-a.iso")
                    && !path.ends_with("/env-b.iso")
            })
            .map(|(ds, path)| (ds.to_string(), path.to_string()));
        Ok(SettingsChange { cdrom: change, extra_config: guestinfo(settings), legacy })
    }
}

/// What a reconfigure carries for new settings ([`Vsphere::settings_change`]).
pub(super) struct SettingsChange {
    pub(super) cdrom: DeviceChange,
    pub(super) extra_config: Vec<(String, String)>,
    /// (datastore, path) of an ISO named by an earlier version of this CPI, to delete afterwards.
    pub(super) legacy: Option<(String, String)>,
}

/// The settings for agents with the `VsphereGuestInfo` source (stemcells built since 2026), which read
/// `guestinfo.userdata` before the CD-ROM; older agents ignore it.
pub(super) fn guestinfo(settings: &AgentSettings) -> Vec<(String, String)> {
    vec![
        ("guestinfo.userdata".into(), base64(&settings.to_json())),
        ("guestinfo.userdata.encoding".into(), "base64".into()),
    ]
}
