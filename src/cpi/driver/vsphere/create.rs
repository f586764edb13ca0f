//! create_vm: clone or create, devices, settings, power on and the optional bootstrap.
use super::*;

impl Vsphere {
    pub(super) fn create_vm_inner<'a>(
        &'a self,
        inv: &'a Inv,
        req: &CreateVm,
        props: &VmProps,
        cid: &VmCid,
        marker: &Marker,
        undo: &mut Undo<'a>,
    ) -> DriverResult<CreatedVm> {
        let name = cid.as_str();
        if !valid_id(req.stemcell.as_str(), StemcellCid::PREFIX) {
            return Err(DriverError::stemcell_not_found(req.stemcell.to_string()));
        }
        let sc = inv
            .find_vm(&self.cfg.template_folder, req.stemcell.as_str())?
            .ok_or_else(|| DriverError::stemcell_not_found(req.stemcell.to_string()))?;
        // the stemcell, the resource pool and the datastores in one read, which also checks the VM folder and
        // the port groups that the session file remembers
        let port_groups = req.networks.values().filter(|n| n.needs_nic()).map(|n| {
            inv.network_path(
                n.cloud_properties.get("name").and_then(Value::as_str).unwrap_or(&self.cfg.default_network),
            )
        });
        inv.expect(port_groups.chain([inv.folder_path_of(&self.cfg.vm_folder)]));
        let sc = inv.prefetch(&[(sc, VM_PROPS)], true)?;
        let sc = sc.first().ok_or_else(|| DriverError::stemcell_not_found(req.stemcell.to_string()))?;
        let sc = VmInfo::from_content(sc)?;
        // networks first: a missing port group fails before anything is made
        let (networks, nics) = self.plan_nics(inv, req)?;
        let pool = inv.resource_pool()?;
        let folder = inv.vm_folder()?;
        let ds = if props.datastores.is_empty() {
            None
        } else {
            Some(inv.pick_datastore(&props.datastores, props.disk << 20)?)
        };
        crate::cpi::timing::mark("lookups");
        self.durable(marker)?;
        crate::cpi::timing::mark("marker on disk");
        let vm = self.make_vm(inv, req, &sc, name, Placement { folder, pool, datastore: ds })?;
        crate::cpi::killpoint::kill_point("vsphere.create_vm.made");
        self.undo_vm(inv, undo, name, &vm);
        let info = inv.vm_info(&vm)?.ok_or_else(|| VsphereError::Vanished { vm: vm.value.clone() })?;
        crate::cpi::timing::mark("clone");
        let mut settings =
            AgentSettings::new(req.agent_id.as_str(), name, &self.agent, networks.clone(), req.env.clone());
        settings.vm.id = vm.value.clone();
        let mut changes = disk_and_nic_changes(&info, name, props.disk, nics, &mut settings)?;
        let current = info.devices.iter().find(|d| d.kind == "VirtualCdrom").and_then(|d| d.file.as_deref());
        let iso = self.write_settings(inv, &info.datastore, &info.dir, &settings, current)?;
        crate::cpi::timing::mark("settings ISO");
        crate::cpi::killpoint::kill_point("vsphere.create_vm.settings_written");
        let cdrom = cdrom_change(&info, name, iso)?;
        changes.push(cdrom);
        let spec = VmConfigSpec {
            num_cpus: Some(props.cpu),
            memory_mb: Some(props.ram),
            device_change: changes,
            extra_config: guestinfo(&settings),
            ..Default::default()
        };
        inv.s
            .run_task(&ReconfigVm { this: vm.clone(), spec }, "configure VM")
            .map_err(ctx_err(format!("cannot configure {name}")))?;
        crate::cpi::timing::mark("configure");
        crate::cpi::killpoint::kill_point("vsphere.create_vm.configured");
        inv.s
            .run_task(&PowerOnVm { this: vm.clone() }, "power on")
            .map_err(ctx_err(format!("cannot power on {name}")))?;
        crate::cpi::timing::mark("power on");
        crate::cpi::killpoint::kill_point("vsphere.create_vm.powered_on");
        if let Some(b) = &props.bootstrap {
            bootstrap::run(&inv.s, &vm, b)?;
        }
        Ok(CreatedVm { cid: cid.clone(), networks })
    }
    /// The NICs of the BOSH networks that need one (a port group each, a new MAC), and the networks with
    /// their MACs as the agent's settings name them.
    fn plan_nics(&self, inv: &Inv, req: &CreateVm) -> DriverResult<(Networks, Vec<Device>)> {
        let mut networks: Networks = req.networks.clone();
        let mut nics = Vec::new();
        for (i, (net_name, net)) in networks.iter_mut().enumerate() {
            if !net.needs_nic() {
                continue;
            }
            let pg = net
                .cloud_properties
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&self.cfg.default_network)
                .to_string();
            let backing = inv.network(&pg).map_err(|e| match e.kind() {
                ErrorKind::NetworkNotFound => e.append(&format!("wanted by BOSH network {net_name}")),
                _ => e,
            })?;
            let mac = vmware_mac();
            net.mac = Some(mac.clone());
            nics.push(Device::Nic { key: -200 - i as i32, backing, mac });
        }
        Ok((networks, nics))
    }

    /// The VM itself, from the stemcell: a linked clone of its snapshot on vCenter, a new VM on a delta disk
    /// of the stemcell's disk on a standalone ESXi (which has no CloneVM).
    fn make_vm(&self, inv: &Inv, req: &CreateVm, sc: &VmInfo, name: &str, place: Placement) -> DriverResult<MoRef> {
        if inv.vcenter() {
            let snapshot = sc
                .snapshot
                .clone()
                .ok_or_else(|| VsphereError::StemcellWithoutSnapshot { stemcell: req.stemcell.to_string() })?;
            let clone = CloneVm {
                this: sc.vm.clone(),
                folder: place.folder,
                name: name.to_string(),
                pool: place.pool,
                datastore: place.datastore.as_ref().map(|d| d.1.clone()),
                snapshot: Some(snapshot),
            };
            let r = inv
                .s
                .run_task(&clone, "clone stemcell")
                .map_err(ctx_err(format!("cannot clone stemcell {}", req.stemcell)))?;
            Ok(r.as_ref().and_then(Node::as_moref).ok_or(VsphereError::NoVmReturned { call: "CloneVM_Task" })?)
        } else {
            let ds_name = place.datastore.as_ref().map(|d| d.0.clone()).unwrap_or_else(|| sc.datastore.clone());
            let parent = sc.devices.iter().filter(|d| d.is_disk()).min_by_key(|d| d.unit).and_then(|d| d.file.clone());
            let parent =
                parent.ok_or_else(|| VsphereError::StemcellWithoutDisk { stemcell: req.stemcell.to_string() })?;
            let config = VmConfigSpec {
                name: Some(name.to_string()),
                guest_id: Some(self.cfg.guest_id.clone()),
                vm_path_name: Some(format!("[{ds_name}] {name}/{name}.vmx")),
                firmware: sc.firmware.clone(),
                device_change: vec![
                    DeviceChange::add(Device::ScsiController { key: -100, bus: 0 }),
                    DeviceChange::create(Device::Disk {
                        key: -101,
                        controller_key: -100,
                        unit: 0,
                        capacity_kb: 0,
                        file_name: format!("[{ds_name}] {name}/{name}.vmdk"),
                        parent: Some(parent),
                    }),
                ],
                ..Default::default()
            };
            let r = inv
                .s
                .run_task(&methods::CreateVm { this: place.folder, config, pool: place.pool }, "create VM")
                .map_err(ctx_err("cannot create the VM"))?;
            Ok(r.as_ref().and_then(Node::as_moref).ok_or(VsphereError::NoVmReturned { call: "CreateVM_Task" })?)
        }
    }
}

/// Where a new VM goes.
struct Placement {
    folder: MoRef,
    pool: MoRef,
    /// The datastore the cloud properties chose (name, object); none: the stemcell's.
    datastore: Option<(String, MoRef)>,
}

/// The CD-ROM that holds the settings ISO: the stemcell's drive, or a new one on a free IDE slot.
fn cdrom_change(info: &VmInfo, name: &str, iso: String) -> DriverResult<DeviceChange> {
    let change = match info.devices.iter().find(|d| d.kind == "VirtualCdrom") {
        Some(cd) => DeviceChange {
            operation: Operation::Edit,
            create_file: false,
            device: Device::Cdrom {
                key: cd.key,
                controller_key: cd.controller_key.unwrap_or(200),
                unit: cd.unit.unwrap_or(0),
                iso,
            },
        },
        None => {
            let ide = info
                .devices
                .iter()
                .filter(|d| d.kind == "VirtualIDEController")
                .find(|c| info.devices.iter().filter(|d| d.controller_key == Some(c.key)).count() < 2);
            let ide = ide.ok_or_else(|| VsphereError::NoFreeIdeSlot { vm: name.to_string() })?;
            let unit = (0..2)
                .find(|u| !info.devices.iter().any(|d| d.controller_key == Some(ide.key) && d.unit == Some(*u)))
                .unwrap_or(0);
            DeviceChange::add(Device::Cdrom { key: -400, controller_key: ide.key, unit, iso })
        }
    };
    Ok(change)
}

/// The device changes of a new VM besides its CD-ROM: the stemcell's NICs replaced by the networks' own, and an
/// ephemeral disk of `ephemeral_mib` (none when 0); `settings` learn which SCSI units the agent finds the system
/// and ephemeral disks on.
fn disk_and_nic_changes(
    info: &VmInfo,
    name: &str,
    ephemeral_mib: u64,
    nics: Vec<Device>,
    settings: &mut AgentSettings,
) -> DriverResult<Vec<DeviceChange>> {
    let controller = info.root_controller().ok_or_else(|| VsphereError::NoScsiController { vm: name.to_string() })?;
    let mut changes: Vec<DeviceChange> = info
        .devices
        .iter()
        .filter(|d| d.is_nic())
        .map(|d| DeviceChange {
            operation: Operation::Remove,
            create_file: false,
            device: Device::Existing(d.node.clone()),
        })
        .collect();
    changes.extend(nics.into_iter().map(DeviceChange::add));
    let root_unit = info
        .devices
        .iter()
        .filter(|d| d.is_disk() && d.controller_key == Some(controller))
        .filter_map(|d| d.unit)
        .min()
        .unwrap_or(0);
    settings.disks.system = json!(root_unit.to_string());
    if ephemeral_mib > 0 {
        let unit = info
            .free_unit(controller, &[])
            .ok_or_else(|| VsphereError::NoFreeScsiUnit { vm: name.to_string(), what: "the ephemeral disk" })?;
        let file = format!("[{}] {}/{name}-ephemeral.vmdk", info.datastore, info.dir);
        changes.push(DeviceChange::create(Device::Disk {
            key: -300,
            controller_key: controller,
            unit,
            capacity_kb: ephemeral_mib * 1024,
            file_name: file,
            parent: None,
        }));
        settings.disks.ephemeral = json!(unit.to_string());
    }
    Ok(changes)
}
