//! create_vm: volumes, NICs and port forwards, the domain, settings, start and the optional bootstrap.
use super::*;

impl Libvirt {
    pub(super) fn family_of(info: &domain::DomainInfo, vm: &VmCid) -> DriverResult<Family> {
        match info.family.as_deref() {
            Some("openstack") => Ok(Family::OpenStack),
            Some("vsphere") => Ok(Family::Vsphere),
            _ => Err(LibvirtError::NotOurs { vm: vm.to_string() }.into()),
        }
    }

    pub(super) fn nic_for(&self, name: &str, net: &Network) -> DriverResult<(NicSource, Vec<portfwd::PortForward>)> {
        let props: NetProps =
            crate::cpi::driver::props::parse(&format!("cloud_properties of network {name}"), &net.cloud_properties)?;
        let forwards = portfwd::parse(props.port_forwards.as_ref())
            .map_err(|e| DriverError::invalid(format!("cloud_properties of network {name}"), e))?;
        if !forwards.is_empty() && props.kind.as_deref() != Some("user") {
            return Err(DriverError::invalid(
                format!("cloud_properties of network {name}"),
                "port_forwards needs type: user (QEMU user-mode networking)",
            ));
        }
        let source = match (props.name, props.bridge, props.kind.as_deref()) {
            (None, None, Some("user")) => Ok(NicSource::User),
            (None, None, Some(other)) => Err(DriverError::invalid(
                format!("cloud_properties of network {name}"),
                format!("type must be \"user\", got {other:?}"),
            )),
            (Some(n), None, None) => Ok(NicSource::Network(n)),
            (None, Some(b), None) => Ok(NicSource::Bridge(b)),
            (None, None, None) => Ok(NicSource::Network(self.cfg.default_network.clone())),
            _ => Err(DriverError::invalid(
                format!("cloud_properties of network {name}"),
                "give only one of name, bridge, type",
            )),
        }?;
        Ok((source, forwards))
    }

    /// Adds the port forwards kept in a running domain's metadata to its QEMU process (`hostfwd_add` on
    /// QEMU's monitor, through libvirt's QEMU program).
    pub(super) fn apply_forwards(
        &self,
        dom: &crate::cpi::libvirt_rpc::Domain,
        forwards: &[(String, portfwd::PortForward)],
    ) -> DriverResult<()> {
        let vm = dom.name.as_str();
        for (nic, f) in forwards {
            let cmd = format!("hostfwd_add {} {}", portfwd::netdev(nic), f.rule());
            let out = self
                .client()?
                .qemu_monitor_command(dom, &cmd, true)
                .map_err(|e| error::rpc(format!("cannot forward {f} on {vm}"), e))?;
            // the monitor answers nothing on success, a sentence on failure (no error either way)
            if !out.trim().is_empty() {
                return Err(DriverError::invalid(
                    format!("port forward {f}"),
                    format!("QEMU refused it: {}", crate::common::logger::redact(out.trim())),
                ));
            }
            info!("forwarding {f} on {vm}");
        }
        Ok(())
    }

    /// Whether the hypervisor's libvirt has the passt interface backend (then `<portForward>` is used).
    pub(super) fn passt_available(&self) -> DriverResult<bool> {
        match self.client()?.domain_capabilities(Some(&self.cfg.domain_type)) {
            Ok(xml) => Ok(portfwd::passt_in_domcapabilities(&xml)),
            Err(e) => {
                info!("cannot read the domain capabilities ({e}); forwarding through QEMU");
                Ok(false)
            }
        }
    }

    /// Whether the libvirt URI names this machine (then busy host ports can be seen before creating).
    pub(super) fn hypervisor_is_local(&self) -> bool {
        self.cfg.uri.split_once("://").is_some_and(|(_, rest)| rest.starts_with('/'))
    }

    pub(super) fn create_vm_inner<'a>(
        &'a self,
        req: &CreateVm,
        kind: StemcellKind,
        cid: &VmCid,
        undo: &mut Undo<'a>,
    ) -> DriverResult<CreatedVm> {
        let vm = cid.as_str();
        let props: VmProps = crate::cpi::driver::props::parse("VM cloud_properties", &req.cloud_properties)?;
        LIMITS.check(props.cpu, props.ram, props.disk)?;
        if let Some(b) = &props.bootstrap {
            b.no_login()?;
        }
        if props.root_disk.is_some_and(|r| r > LIMITS.max_disk_mib) {
            return Err(DriverError::invalid("VM cloud_properties", "root_disk is limited to 64 TiB"));
        }
        let stemcell = req.stemcell.as_str();
        let (sc_cap, _) =
            self.vol_info(stemcell)?.ok_or_else(|| DriverError::stemcell_not_found(stemcell.to_string()))?;
        // NICs first: a bad network fails before anything is made
        let (networks, nics) = self.plan_nics(req)?;

        let all_forwards: Vec<(String, portfwd::PortForward)> = nics
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.forwards.iter().map(move |f| (portfwd::alias(i), f.clone())))
            .collect();
        // libvirt's own forwards where it has passt; else QEMU's, added once the domain runs
        let passt = !all_forwards.is_empty() && self.passt_available()?;
        if self.hypervisor_is_local() {
            let list: Vec<_> = all_forwards.iter().map(|(_, f)| f.clone()).collect();
            portfwd::check_free(&list).map_err(|e| DriverError::invalid("network port_forwards", e))?;
        }

        let disks = self.make_disks(vm, &props, (stemcell, sc_cap), kind, undo)?;

        let mut settings =
            AgentSettings::new(req.agent_id.as_str(), vm, &self.agent, networks.clone(), req.env.clone());
        disk_settings(&mut settings, kind.family, vm, props.disk > 0);
        let medium_vol = Self::medium_volume(vm);
        self.undo_volume(undo, &medium_vol);
        self.write_new_medium(vm, kind.family.medium(), &settings)?;

        let spec = DomainSpec {
            name: vm.to_string(),
            domain_type: self.cfg.domain_type.clone(),
            machine: self.cfg.machine.clone(),
            memory_mib: props.ram,
            vcpus: props.cpu,
            efi: kind.efi,
            direct_boot: props.kernel.clone().map(|kernel| domain::DirectBoot {
                kernel,
                initrd: props.initrd.clone(),
                cmdline: props.cmdline.clone(),
            }),
            disks,
            cdrom: Some((self.pool_name().to_string(), medium_vol)),
            nics,
            serial_log: props.serial_log.clone(),
            graphics: self.cfg.graphics,
            passt,
            stemcell: stemcell.to_string(),
            family: family_name(kind.family).to_string(),
        };
        let xml = domain::domain_xml(&spec);
        self.undo_domain(undo, vm);
        let c = self.client()?;
        let dom = self.define_and_start(c, vm, &xml)?;
        if !passt {
            self.apply_forwards(&dom, &all_forwards)?;
        }
        if let Some(b) = &props.bootstrap {
            bootstrap::run(c, &dom, b)?;
        }
        Ok(CreatedVm { cid: cid.clone(), networks })
    }
    /// The NICs of the BOSH networks that need one (a source each, port forwards, a MAC: the network's own or
    /// a new one), and the networks with their MACs as the agent's settings name them.
    fn plan_nics(&self, req: &CreateVm) -> DriverResult<(Networks, Vec<Nic>)> {
        let mut networks: Networks = req.networks.clone();
        let mut nics = Vec::new();
        for (name, net) in networks.iter_mut() {
            if !net.needs_nic() {
                continue;
            }
            let (source, forwards) = self.nic_for(name, net)?;
            let mac = match &net.mac {
                Some(m) => m.clone(),
                None => crate::cpi::agent_settings::qemu_mac(),
            };
            net.mac = Some(mac.clone());
            nics.push(Nic { mac, source, forwards });
        }
        Ok((networks, nics))
    }

    /// The root volume (a qcow2 over the stemcell, at least `root_disk` large) and the ephemeral one; each is
    /// in the undo list before it is made.
    fn make_disks<'a>(
        &'a self,
        vm: &str,
        props: &VmProps,
        (stemcell, sc_cap): (&str, u64),
        kind: StemcellKind,
        undo: &mut Undo<'a>,
    ) -> DriverResult<Vec<ScsiDisk>> {
        let root = format!("{vm}-root");
        let root_cap = props.root_disk.map(|m| m << 20).unwrap_or(0).max(sc_cap);
        self.undo_volume(undo, &root);
        // the backing format comes from the CID, never from a probe
        self.vol_create(&root, root_cap, "qcow2", Some((stemcell, kind.format)))?;
        let mut disks = vec![ScsiDisk {
            pool: self.pool_name().into(),
            volume: root,
            format: "qcow2".into(),
            target: 0,
            serial: None,
        }];
        if props.disk > 0 {
            let eph = format!("{vm}-ephemeral");
            self.undo_volume(undo, &eph);
            self.vol_create(&eph, props.disk << 20, "qcow2", None)?;
            disks.push(ScsiDisk {
                pool: self.pool_name().into(),
                volume: eph,
                format: "qcow2".into(),
                target: 1,
                serial: Some(ephemeral_serial(vm)),
            });
        }
        Ok(disks)
    }

    /// Defines the domain and starts it; a network libvirt does not know is the request's error.
    fn define_and_start(
        &self,
        c: &crate::cpi::libvirt_rpc::Client,
        vm: &str,
        xml: &str,
    ) -> DriverResult<crate::cpi::libvirt_rpc::Domain> {
        let dom = c.domain_define_xml(xml, 0).map_err(|e| error::rpc(format!("cannot define domain {vm}"), e))?;
        match c.domain_start(&dom) {
            Ok(d) => Ok(d),
            // a wrong network name is a request error: retrying cannot help
            Err(e) if e.code() == Some(code::NO_NETWORK) => {
                let said = e.remote().map(|r| r.to_string()).unwrap_or_default();
                Err(DriverError::network_not_found(crate::common::logger::redact(&said)))
            }
            Err(e) => Err(error::rpc(format!("cannot start domain {vm}"), e)),
        }
    }
}

/// Where the agent finds the system and ephemeral disks: SCSI units on a vSphere stemcell, device paths on an
/// OpenStack one.
fn disk_settings(settings: &mut AgentSettings, family: Family, vm: &str, ephemeral: bool) {
    match family {
        Family::Vsphere => {
            settings.disks.system = json!("0");
            if ephemeral {
                settings.disks.ephemeral = json!("1");
            }
        }
        Family::OpenStack => {
            settings.disks.system = json!("/dev/sda");
            if ephemeral {
                // not "/dev/sdb": Linux names virtio-scsi disks in the order their probes finish, which
                // varies (a real agent once took the root disk for sdb). The agent's path resolver follows
                // this udev link, which names the disk by its serial.
                settings.disks.ephemeral =
                    json!(format!("/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{}", ephemeral_serial(vm)));
            }
        }
    }
}
