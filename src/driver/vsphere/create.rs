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
        if !valid_id(req.stemcell.as_str(), "sc-") {
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
        let pool = inv.resource_pool()?;
        let folder = inv.vm_folder()?;
        let ds = if props.datastores.is_empty() {
            None
        } else {
            Some(inv.pick_datastore(&props.datastores, props.disk << 20)?)
        };
        crate::timing::mark("lookups");
        self.durable(marker)?;
        crate::timing::mark("marker on disk");
        let vm = if inv.vcenter() {
            let snapshot = sc
                .snapshot
                .clone()
                .ok_or_else(|| VsphereError::StemcellWithoutSnapshot { stemcell: req.stemcell.to_string() })?;
            let clone = CloneVm {
                this: sc.vm.clone(),
                folder,
                name: name.to_string(),
                pool,
                datastore: ds.as_ref().map(|d| d.1.clone()),
                snapshot: Some(snapshot),
            };
            let r = inv
                .s
                .run_task(&clone, "clone stemcell")
                .map_err(ctx_err(format!("cannot clone stemcell {}", req.stemcell)))?;
            r.as_ref().and_then(Node::as_moref).ok_or(VsphereError::NoVmReturned { call: "CloneVM_Task" })?
        } else {
            let ds_name = ds.as_ref().map(|d| d.0.clone()).unwrap_or_else(|| sc.datastore.clone());
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
                .run_task(&methods::CreateVm { this: folder, config, pool }, "create VM")
                .map_err(ctx_err("cannot create the VM"))?;
            r.as_ref().and_then(Node::as_moref).ok_or(VsphereError::NoVmReturned { call: "CreateVM_Task" })?
        };
        crate::killpoint::kill_point("vsphere.create_vm.made");
        self.undo_vm(inv, undo, name, &vm);
        let info = inv.vm_info(&vm)?.ok_or_else(|| VsphereError::Vanished { vm: vm.value.clone() })?;
        crate::timing::mark("clone");
        let controller =
            info.root_controller().ok_or_else(|| VsphereError::NoScsiController { vm: name.to_string() })?;
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
        let mut settings =
            AgentSettings::new(req.agent_id.as_str(), name, &self.agent, networks.clone(), req.env.clone());
        settings.vm.id = vm.value.clone();
        let root_unit = info
            .devices
            .iter()
            .filter(|d| d.is_disk() && d.controller_key == Some(controller))
            .filter_map(|d| d.unit)
            .min()
            .unwrap_or(0);
        settings.disks.system = json!(root_unit.to_string());
        if props.disk > 0 {
            let unit = info
                .free_unit(controller, &[])
                .ok_or_else(|| VsphereError::NoFreeScsiUnit { vm: name.to_string(), what: "the ephemeral disk" })?;
            let file = format!("[{}] {}/{name}-ephemeral.vmdk", info.datastore, info.dir);
            changes.push(DeviceChange::create(Device::Disk {
                key: -300,
                controller_key: controller,
                unit,
                capacity_kb: props.disk * 1024,
                file_name: file,
                parent: None,
            }));
            settings.disks.ephemeral = json!(unit.to_string());
        }
        let current = info.devices.iter().find(|d| d.kind == "VirtualCdrom").and_then(|d| d.file.as_deref());
        let iso = self.write_settings(inv, &info.datastore, &info.dir, &settings, current)?;
        crate::timing::mark("settings ISO");
        crate::killpoint::kill_point("vsphere.create_vm.settings_written");
        let cdrom = match info.devices.iter().find(|d| d.kind == "VirtualCdrom") {
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
        crate::timing::mark("configure");
        crate::killpoint::kill_point("vsphere.create_vm.configured");
        inv.s
            .run_task(&PowerOnVm { this: vm.clone() }, "power on")
            .map_err(ctx_err(format!("cannot power on {name}")))?;
        crate::timing::mark("power on");
        crate::killpoint::kill_point("vsphere.create_vm.powered_on");
        if let Some(b) = &props.bootstrap {
            bootstrap::run(&inv.s, &vm, b)?;
        }
        Ok(CreatedVm { cid: cid.clone(), networks })
    }
}
