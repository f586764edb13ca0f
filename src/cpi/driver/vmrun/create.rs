//! create_vm: clone, size, NICs, settings, power on and the optional bootstrap script.
use super::*;

impl Vmrun {
    pub(super) fn add_nics(&self, v: &mut Vmx, networks: &mut Networks) -> DriverResult<()> {
        v.remove_prefix("ethernet");
        let mut n = 0;
        for (name, net) in networks.iter_mut() {
            if !net.needs_nic() {
                continue;
            }
            let props: NetProps = crate::cpi::driver::props::parse(
                &format!("cloud_properties of network {name}"),
                &net.cloud_properties,
            )?;
            let net_name = props.name.unwrap_or_else(|| self.cfg.default_network.clone());
            let (conn, vnet) = nic_connection(&net_name)
                .map_err(|e| DriverError::invalid(format!("cloud_properties of network {name}"), e))?;
            let mac = match &net.mac {
                Some(m) => m.clone(),
                None => vmware_mac(),
            };
            net.mac = Some(mac.clone());
            let e = format!("ethernet{n}");
            v.set(&format!("{e}.present"), "TRUE");
            v.set(&format!("{e}.virtualDev"), "vmxnet3");
            v.set(&format!("{e}.connectionType"), conn);
            if let Some(vn) = vnet {
                v.set(&format!("{e}.vnet"), vn);
            }
            v.set(&format!("{e}.addressType"), "static");
            v.set(&format!("{e}.address"), mac);
            v.set(&format!("{e}.startConnected"), "TRUE");
            n += 1;
        }
        Ok(())
    }

    pub(super) fn create_vm_inner(
        &self,
        req: &CreateVm,
        vm: &str,
        props: &VmProps,
        networks: &mut Networks,
    ) -> DriverResult<()> {
        let h = self.host();
        let sc = req.stemcell.as_str();
        let src = self.stemcell_vmx(sc);
        let dir = self.vm_dir(vm);
        let vmx_path = self.vm_vmx(vm);
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        {
            // VMware locks the source while cloning: one clone of a stemcell at a time
            let _sc_lock = self.lock(sc)?;
            let started = Instant::now();
            match (&self.cfg.ovftool, self.player()) {
                (Some(ovftool), true) => {
                    // Player cannot clone (vmrun: "not supported"): a full copy with ovftool, as bosh-vmrun-cpi did.
                    // The source is the stemcell's .vmx as the import wrote it (a stemcell's own raw keys only
                    // with allow_extra_config): --allowExtraConfig keeps that copy whole
                    h.tool(
                        vec![
                            ovftool.clone(),
                            "--sourceType=VMX".into(),
                            "--targetType=VMX".into(),
                            "--allowExtraConfig".into(),
                            format!("--name={vm}"),
                            src.clone(),
                            vmx_path.clone(),
                        ],
                        "ovftool could not copy the stemcell VM",
                    )?;
                    info!("full copy of {sc} as {vm} in {} ms", started.elapsed().as_millis());
                }
                _ => {
                    h.vmrun(&[
                        "clone",
                        &src,
                        &vmx_path,
                        "linked",
                        &format!("-snapshot={BASE_SNAPSHOT}"),
                        &format!("-cloneName={vm}"),
                    ])?;
                    info!("linked clone of {sc} as {vm} in {} ms", started.elapsed().as_millis());
                }
            }
        }
        let mut v = self.read_vmx(&vmx_path)?;
        v.set("displayName", vm);
        v.set("numvcpus", props.cpu.to_string());
        v.set("memsize", props.ram.to_string());
        // no interactive questions ("moved or copied?") may block a headless start
        v.set("msg.autoAnswer", "TRUE");
        v.set("uuid.action", "create");
        v.set("tools.syncTime", "TRUE");
        v.set("vmcpi.stemcell", sc);
        v.set("vmcpi.agent_id", req.agent_id.as_str());
        self.add_nics(&mut v, networks)?;
        let mut settings =
            AgentSettings::new(req.agent_id.as_str(), vm, &self.agent, networks.clone(), req.env.clone());
        settings.disks.system = json!("0");
        if props.disk > 0 {
            let eph = join(&dir, "ephemeral.vmdk");
            h.create_vmdk(&eph, props.disk)?;
            v.set("scsi0:1.present", "TRUE");
            v.set("scsi0:1.fileName", "ephemeral.vmdk");
            settings.disks.ephemeral = json!("1");
        }
        Self::attach_settings_iso(&mut v);
        let mut files = self.settings_files(vm, &settings)?;
        files.push((vmx_path.clone(), v.render().into_bytes()));
        self.tr(|| format!("cannot write the configuration of {vm}"), self.t.write_many(&files))?;
        h.start(&vmx_path)?;
        if let Some(b) = &props.bootstrap {
            self.bootstrap(vm, &vmx_path, b)?;
        }
        Ok(())
    }

    pub(super) fn bootstrap(&self, vm: &str, vmx: &str, b: &Bootstrap) -> DriverResult<()> {
        let h = self.host();
        let guest = Some(b.login()?);
        let wait = b.start();
        info!(
            "bootstrap: waiting up to {} s for VMware Tools{} in {vm}",
            b.max_wait_seconds,
            b.ready_process.as_deref().map(|p| format!(" and process {p}")).unwrap_or_default()
        );
        wait.until(
            Duration::from_secs(2),
            || {
                let out = h.vmrun_raw(guest, &["listProcessesInGuest", vmx], Some(Duration::from_secs(60)))?;
                if out.message().contains("Authentication failure") {
                    // wrong guest credentials do not get better by waiting
                    return Err(h.tool_error(
                        &[
                            self.cfg.vmrun.clone(),
                            "-T".into(),
                            self.cfg.host_type.clone(),
                            "listProcessesInGuest".into(),
                        ],
                        &out,
                    ));
                }
                let ready = out.success()
                    && b.ready_process.as_deref().is_none_or(|p| {
                        out.stdout
                            .lines()
                            .any(|l| l.contains(&format!("cmd={p}")) || l.split_whitespace().any(|w| w.ends_with(p)))
                    });
                Ok(if ready { Ok(()) } else { Err(out.said()) })
            },
            |last| format!("bootstrap: {vm} was not ready within {} s: {last}", b.max_wait_seconds),
        )?;
        let host_script = join(&self.vm_dir(vm), "bootstrap.sh");
        let guest_script =
            b.script_path.clone().unwrap_or_else(|| format!("/tmp/vmcpi-bootstrap-{}.sh", random_hex(8)));
        self.tr(|| "cannot write the bootstrap script".into(), self.t.write(&host_script, b.script.as_bytes()))?;
        let run = |args: &[&str]| -> DriverResult<()> {
            let out = h.vmrun_raw(guest, args, None)?;
            if out.success() {
                Ok(())
            } else {
                Err(h.tool_error(
                    &[self.cfg.vmrun.clone(), "-T".into(), self.cfg.host_type.clone(), args[0].into()],
                    &out,
                ))
            }
        };
        let result = run(&["copyFileFromHostToGuest", vmx, &host_script, &guest_script])
            .and_then(|_| run(&["runProgramInGuest", vmx, &b.interpreter, &guest_script]));
        let _ = self.t.remove_file(&host_script);
        result.map_err(|source| VmrunError::Bootstrap { vm: vm.to_string(), source }.into())
    }

    /// Runs `edit` on the VM's .vmx with the VM powered off (VMware rewrites the file of a running VM),
    /// restoring the power state afterwards. The caller holds the VM's lock.
    /// `edit` may return other files (the settings) to write together with the .vmx.
    pub(super) fn edit_stopped<T>(
        &self,
        vmx: &str,
        edit: impl FnOnce(&mut Vmx) -> DriverResult<(T, Vec<(String, Vec<u8>)>)>,
    ) -> DriverResult<T> {
        let h = self.host();
        let was_running = h.stop(vmx, true)?;
        let mut v = self.read_vmx(vmx)?;
        let out = edit(&mut v);
        let written = match &out {
            Ok((_, extra)) => {
                let mut files = extra.clone();
                files.push((vmx.to_string(), v.render().into_bytes()));
                self.tr(|| format!("cannot write {vmx}"), self.t.write_many(&files))
            }
            Err(_) => Ok(()),
        };
        let out = out.map(|(t, _)| t);
        let restarted = if was_running { h.start(vmx) } else { Ok(()) };
        let out = out?;
        written?;
        restarted?;
        Ok(out)
    }
}
