//! The vmrun driver: VMware Workstation, Fusion and Player through `vmrun`, `ovftool` and
//! `vmware-vdiskmanager`, on the CPI's own host or on a POSIX host over SSH ([`crate::transport`]).
//!
//! The store (`vm_store_path`, on the hypervisor host) is the only state:
//! - `stemcells/sc-<16 hex>/sc-….vmx` — the imported stemcell, with snapshot `vmcpi-base`;
//! - `vms/vm-<20 hex>/vm-….vmx` — a linked clone of it, plus `env.iso` (the agent settings on the stemcell's
//!   own CD-ROM device), `env.json` (the same settings, for later edits) and `ephemeral.vmdk`;
//! - `disks/disk-<15 hex>.vmdk` and `disk-….json` (size and metadata);
//! - `locks/*.lock` — flock files; `pending/vm-…` — a create in progress (see below).
//!
//! Disks sit on SCSI controller 0: root at unit 0, ephemeral at 1, persistent disks at 2 and up (7 is the
//! controller's own id); the vSphere stemcell's agent resolves the unit number given as the disk hint.
//!
//! Concurrency: each VM has a lock held for every change to it; clones of a stemcell are serialised by the
//! stemcell's lock (VMware locks the source while cloning). A process holds at most one VM lock and takes
//! a stemcell lock only inside its VM lock, always in that order, so locks cannot deadlock; every wait is
//! bounded by `lock_timeout_seconds`.
//!
//! Failed creates: create_vm and create_stemcell record `pending/<cid>` and hold the CID's lock until they
//! finish. On failure they remove what they made; if even that fails (the host became unreachable, the
//! process was killed), the next create on the store finds the pending entry, sees that nobody holds its
//! lock, and removes it.
mod host;
pub mod vmx;

use crate::agent_settings::{AgentSettings, Networks};
use crate::config::AgentOptions;
use crate::driver::{CallContext, CreateVm, CreatedVm, Driver, Metadata, VmResources};
use crate::error::{Context, DriverError, DriverResult};
use crate::inflight::{Inflight, Marker};
use crate::ids::{random_hex, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::medium::{self, MediumKind};
use crate::stemcell::{self, Family};
use crate::transport::{self, join, LockGuard, Local, Ssh, SshConfig, Transport, TransportError};
use crate::{info, warn};
use host::{Host, BASE_SNAPSHOT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmx::Vmx;

/// The most memory a VM gets (128 GiB, VMware Workstation's limit), in MiB.
const MAX_RAM_MIB: u64 = 128 << 10;

/// A scratch marker that is committed (its work directory and marker removed) when the import ends in
/// any way but SIGKILL.
struct Scratch(Option<Marker>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            m.commit();
        }
    }
}

/// vSphere stemcells (OVF + stream-optimised VMDK) are what VMware's desktop products run.
pub const STEMCELL_FORMATS: &[&str] = &["vsphere-ovf", "vsphere-ova"];

/// The `driver` section for `kind: vmrun`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmrunConfig {
    /// Absolute directory on the hypervisor host holding stemcells, VMs and disks.
    pub vm_store_path: String,
    /// `vmrun` on the hypervisor host.
    #[serde(default = "default_vmrun")]
    pub vmrun: String,
    /// `ovftool` on the hypervisor host; without it stemcells are imported by vmcpi itself (qemu-img).
    #[serde(default)]
    pub ovftool: Option<String>,
    /// `vmware-vdiskmanager` on the hypervisor host; without it disks are made with `qemu_img`.
    #[serde(default)]
    pub vdiskmanager: Option<String>,
    /// `qemu-img` on the hypervisor host (disks, when there is no vdiskmanager).
    #[serde(default = "default_qemu_img")]
    pub qemu_img: String,
    /// `qemu-img` on the CPI's host (stemcell conversion, when there is no ovftool).
    #[serde(default = "default_local_qemu_img")]
    pub local_qemu_img: PathBuf,
    /// `xorriso` on the CPI's host (settings ISO).
    #[serde(default = "default_xorriso")]
    pub xorriso: PathBuf,
    /// `ws` (Workstation), `fusion` or `player`: passed to vmrun as `-T`.
    #[serde(default = "default_host_type")]
    pub host_type: String,
    /// Network for BOSH networks whose cloud_properties name none: `nat`, `bridged`, `hostonly` or a
    /// `vmnetN` name.
    #[serde(default = "default_network")]
    pub default_network: String,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_seconds: u64,
    #[serde(default = "default_soft_shutdown_timeout")]
    pub soft_shutdown_timeout_seconds: u64,
    /// Longest wait for another CPI call's lock on a VM or stemcell.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_seconds: u64,
    /// Reach the hypervisor host over SSH instead of running the tools locally.
    #[serde(default)]
    pub ssh: Option<SshConfig>,
    /// Where stemcell images are unpacked on the CPI's host (default: $TMPDIR or /tmp).
    #[serde(default)]
    pub tmp_dir: Option<PathBuf>,
}

fn default_vmrun() -> String {
    "/usr/bin/vmrun".into()
}
fn default_qemu_img() -> String {
    "/usr/bin/qemu-img".into()
}
fn default_local_qemu_img() -> PathBuf {
    "/usr/bin/qemu-img".into()
}
fn default_xorriso() -> PathBuf {
    "/usr/bin/xorriso".into()
}
fn default_host_type() -> String {
    "ws".into()
}
fn default_network() -> String {
    "nat".into()
}
fn default_start_timeout() -> u64 {
    300
}
fn default_soft_shutdown_timeout() -> u64 {
    30
}
fn default_lock_timeout() -> u64 {
    600
}

impl VmrunConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.ssh {
            s.validate()?;
        }
        let windows = |p: &str| p.len() >= 2 && p.as_bytes()[1] == b':' || p.contains('\\');
        if windows(&self.vm_store_path) {
            return Err(transport::ssh::WINDOWS_REFUSED.into());
        }
        if !self.vm_store_path.starts_with('/') || self.vm_store_path.trim_end_matches('/').is_empty() {
            return Err(format!("driver.vm_store_path must be an absolute directory other than /, got {:?}", self.vm_store_path));
        }
        let host_tools = [("vmrun", Some(&self.vmrun)), ("ovftool", self.ovftool.as_ref()), ("vdiskmanager", self.vdiskmanager.as_ref()), ("qemu_img", Some(&self.qemu_img))];
        for (name, p) in host_tools {
            if let Some(p) = p {
                if !p.starts_with('/') {
                    return Err(format!("driver.{name} must be an absolute path on the hypervisor host (the director runs the CPI with a minimal PATH), got {p:?}"));
                }
            }
        }
        for (name, p) in [("local_qemu_img", &self.local_qemu_img), ("xorriso", &self.xorriso)] {
            if !p.is_absolute() {
                return Err(format!("driver.{name} must be an absolute path, got {}", p.display()));
            }
        }
        if !matches!(self.host_type.as_str(), "ws" | "fusion" | "player") {
            return Err(format!("driver.host_type must be \"ws\", \"fusion\" or \"player\", got {:?}", self.host_type));
        }
        if self.host_type == "player" && self.ovftool.is_none() {
            return Err("driver.host_type \"player\" needs driver.ovftool: Player has no snapshots or clones, so VMs are full copies made by ovftool".into());
        }
        if self.start_timeout_seconds == 0 || self.soft_shutdown_timeout_seconds == 0 || self.lock_timeout_seconds == 0 {
            return Err("driver timeouts must be positive".into());
        }
        nic_connection(&self.default_network).map_err(|e| format!("driver.default_network: {e}"))?;
        Ok(())
    }
}

/// VM `cloud_properties`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmProps {
    #[serde(default = "one")]
    cpu: u32,
    /// MiB.
    #[serde(default = "default_ram")]
    ram: u64,
    /// Ephemeral disk, MiB (0: none).
    #[serde(default)]
    disk: u64,
    #[serde(default)]
    bootstrap: Option<Bootstrap>,
}

fn one() -> u32 {
    1
}
fn default_ram() -> u64 {
    1024
}

/// A script run in the guest after the first boot (VMware Tools guest operations).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    script: String,
    #[serde(default = "default_interpreter")]
    interpreter: String,
    username: String,
    password: String,
    /// Wait until this process runs in the guest (e.g. `bosh-agent`).
    #[serde(default)]
    ready_process: Option<String>,
    #[serde(default)]
    min_wait_seconds: u64,
    #[serde(default = "default_bootstrap_wait")]
    max_wait_seconds: u64,
    /// Where the script is copied in the guest (bosh-vmrun-cpi's `script_path`); default a fresh /tmp name.
    #[serde(default)]
    script_path: Option<String>,
}

fn default_interpreter() -> String {
    "/bin/bash".into()
}
fn default_bootstrap_wait() -> u64 {
    600
}

/// Network `cloud_properties`: `name` is `nat`, `bridged`, `hostonly` or a `vmnetN`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetProps {
    #[serde(default)]
    name: Option<String>,
}

/// Disk `cloud_properties` (none are understood yet; unknown keys are refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskProps {}

/// `disk-….json` beside each persistent disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DiskRecord {
    size_mib: u64,
    #[serde(default)]
    metadata: Metadata,
}

/// (`connectionType`, `vnet`) for a network name.
fn nic_connection(name: &str) -> Result<(&'static str, Option<String>), String> {
    match name {
        "nat" => Ok(("nat", None)),
        "bridged" => Ok(("bridged", None)),
        "hostonly" => Ok(("hostonly", None)),
        n if n.strip_prefix("vmnet").is_some_and(|d| !d.is_empty() && d.len() <= 3 && d.bytes().all(|b| b.is_ascii_digit())) => Ok(("custom", Some(n.to_string()))),
        n if n.starts_with('/') && !n.contains(['"', '\n']) => Ok(("custom", Some(n.to_string()))),
        other => Err(format!("network name must be nat, bridged, hostonly, vmnetN or a vmnet device path, got {other:?}")),
    }
}

/// A MAC in VMware's range for static addresses, 00:50:56:00:00:00–00:50:56:3F:FF:FF.
fn vmware_mac() -> String {
    let h = random_hex(6);
    let first = u8::from_str_radix(&h[0..2], 16).unwrap_or(0) & 0x3f;
    format!("00:50:56:{first:02x}:{}:{}", &h[2..4], &h[4..6])
}

fn is_ours(cid: &str, prefix: &str, hex_len: usize) -> bool {
    cid.strip_prefix(prefix).is_some_and(|h| h.len() == hex_len && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// SCSI unit numbers for persistent disks (7 is the controller).
const PERSISTENT_UNITS: [u32; 13] = [2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];

/// The vmrun backend.
pub struct Vmrun {
    cfg: VmrunConfig,
    agent: AgentOptions,
    t: Box<dyn Transport>,
}

/// What create_vm made so far, undone in reverse when it fails.
struct Rollback<'a> {
    d: &'a Vmrun,
    vm: String,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            warn!("create of {} failed: removing what was made", self.vm);
            if let Err(e) = self.d.destroy_vm_files(&self.vm) {
                warn!("could not clean up {} ({e}); the next create_vm on this store removes it", self.vm);
            }
        }
    }
}

impl Vmrun {
    pub fn new(cfg: VmrunConfig, agent: AgentOptions) -> Self {
        let t: Box<dyn Transport> = match &cfg.ssh {
            Some(s) => Box::new(Ssh::new(s.clone())),
            None => Box::new(Local),
        };
        Vmrun { cfg, agent, t }
    }

    fn player(&self) -> bool {
        self.cfg.host_type == "player"
    }

    fn host(&self) -> Host<'_> {
        Host { t: self.t.as_ref(), cfg: &self.cfg }
    }

    fn store(&self, rest: &str) -> String {
        join(&self.cfg.vm_store_path, rest)
    }
    fn stemcell_vmx(&self, sc: &str) -> String {
        self.store(&format!("stemcells/{sc}/{sc}.vmx"))
    }
    fn vm_dir(&self, vm: &str) -> String {
        self.store(&format!("vms/{vm}"))
    }
    fn vm_vmx(&self, vm: &str) -> String {
        self.store(&format!("vms/{vm}/{vm}.vmx"))
    }
    fn disk_path(&self, disk: &str) -> String {
        self.store(&format!("disks/{disk}.vmdk"))
    }
    fn disk_record(&self, disk: &str) -> String {
        self.store(&format!("disks/{disk}.json"))
    }

    fn tr<T>(&self, what: impl FnOnce() -> String, r: Result<T, TransportError>) -> DriverResult<T> {
        r.map_err(|e| DriverError::failed(what(), e))
    }

    /// The lock `locks/<name>.lock`.
    fn lock(&self, name: &str) -> DriverResult<Box<dyn LockGuard + '_>> {
        let dir = self.store("locks");
        let path = join(&dir, &format!("{name}.lock"));
        let timeout = Duration::from_secs(self.cfg.lock_timeout_seconds);
        match self.t.lock(&path, timeout) {
            Ok(g) => Ok(g),
            // the first lock on a new store: make the directory (another process may be doing the same)
            Err(TransportError::Io { .. }) => {
                self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
                self.tr(|| format!("cannot lock {name}"), self.t.lock(&path, timeout))
            }
            Err(e) => Err(DriverError::failed(format!("cannot lock {name}"), e)),
        }
    }

    /// Removes the lock file of something just deleted, while its lock is held. A call that waited on the
    /// old file then finds the thing gone, as it would anyway; the store does not collect a file per VM.
    fn forget_lock(&self, name: &str) {
        let path = join(&self.store("locks"), &format!("{name}.lock"));
        if let Err(e) = self.t.remove_file(&path) {
            warn!("could not remove lock file {path}: {e}");
        }
    }

    fn read_vmx(&self, path: &str) -> DriverResult<Vmx> {
        let bytes = self.tr(|| format!("cannot read {path}"), self.t.read(path))?;
        Ok(Vmx::parse(&String::from_utf8_lossy(&bytes)))
    }

    fn write_vmx(&self, path: &str, v: &Vmx) -> DriverResult<()> {
        self.tr(|| format!("cannot write {path}"), self.t.write(path, v.render().as_bytes()))
    }

    fn check_vm(&self, cid: &VmCid) -> DriverResult<String> {
        if !is_ours(cid.as_str(), "vm-", 20) {
            return Err(DriverError::VmNotFound(format!("{cid} (not a VM CID of this CPI)")));
        }
        let vmx = self.vm_vmx(cid.as_str());
        if !self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))? {
            return Err(DriverError::VmNotFound(cid.to_string()));
        }
        Ok(vmx)
    }

    fn check_disk(&self, cid: &DiskCid) -> DriverResult<String> {
        if !is_ours(cid.as_str(), "disk-", 15) {
            return Err(DriverError::DiskNotFound(format!("{cid} (not a disk CID of this CPI)")));
        }
        let p = self.disk_path(cid.as_str());
        if !self.tr(|| format!("cannot look for {p}"), self.t.exists(&p))? {
            return Err(DriverError::DiskNotFound(cid.to_string()));
        }
        Ok(p)
    }

    fn read_disk_record(&self, disk: &str) -> DriverResult<DiskRecord> {
        let p = self.disk_record(disk);
        match self.t.read(&p) {
            Ok(b) => serde_json::from_slice(&b).context(|| format!("{p} is not valid")),
            Err(TransportError::NotFound { .. }) => Ok(DiskRecord::default()),
            Err(e) => Err(DriverError::failed(format!("cannot read {p}"), e)),
        }
    }

    fn write_disk_record(&self, disk: &str, r: &DiskRecord) -> DriverResult<()> {
        let p = self.disk_record(disk);
        let body = serde_json::to_vec_pretty(r).context(|| "cannot encode the disk record".into())?;
        self.tr(|| format!("cannot write {p}"), self.t.write(&p, &body))
    }

    /// `env.iso` (the agent reads `ENV` from the CD-ROM) and `env.json` (the same settings, for later
    /// edits) for `s`, to be written with [`Transport::write_many`].
    fn settings_files(&self, vm: &str, s: &AgentSettings) -> DriverResult<Vec<(String, Vec<u8>)>> {
        let json = s.to_json();
        let iso = medium::build(MediumKind::CdromEnv, &json, vm, &self.cfg.xorriso).context(|| format!("cannot build the settings ISO of {vm}"))?;
        let dir = self.vm_dir(vm);
        Ok(vec![(join(&dir, "env.iso"), iso), (join(&dir, "env.json"), json)])
    }

    fn read_settings(&self, vm: &str) -> DriverResult<AgentSettings> {
        let p = join(&self.vm_dir(vm), "env.json");
        let b = self.tr(|| format!("cannot read the settings of {vm}"), self.t.read(&p))?;
        AgentSettings::from_json(&b).context(|| format!("{p} holds invalid settings"))
    }

    /// Stops (if running), deletes the VM with vmrun, removes its directory and pending entry. Persistent
    /// disks are detached from the .vmx first: `vmrun deleteVM` deletes every disk the VM references.
    fn destroy_vm_files(&self, vm: &str) -> DriverResult<()> {
        let h = self.host();
        let vmx = self.vm_vmx(vm);
        if self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))? {
            h.stop(&vmx, false)?;
            let mut v = self.read_vmx(&vmx)?;
            let disks_dir = self.store("disks/");
            let mut detached = 0;
            for (unit, file) in v.scsi_disks(0) {
                if file.starts_with(&disks_dir) {
                    v.remove_prefix(&format!("scsi0:{unit}."));
                    detached += 1;
                }
            }
            if detached > 0 {
                info!("detaching {detached} persistent disk(s) from {vm} before deleting it");
                self.write_vmx(&vmx, &v)?;
            }
            h.vmrun(&["deleteVM", &vmx])?;
        }
        self.tr(|| format!("cannot remove {vm}"), self.t.remove_dir_all(&self.vm_dir(vm)))?;
        self.clear_pending(vm)
    }

    /// Scratch space of stemcell imports on the CPI's host: `<tmp_dir>/vmcpi-vmrun-scratch`, with in-flight
    /// markers ([`crate::inflight`]) so that what a killed import unpacked is found and removed.
    fn scratch(&self) -> Inflight {
        Inflight::new(&self.cfg.tmp_dir.clone().unwrap_or_else(std::env::temp_dir).join("vmcpi-vmrun-scratch"))
    }

    /// Records a create in progress (`pending/<cid>`); the caller holds the CID's lock until it is done.
    fn mark_pending(&self, cid: &str) -> DriverResult<()> {
        let dir = self.store("pending");
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        self.tr(|| "cannot record the pending create".into(), self.t.write(&join(&dir, cid), format!("created by pid {}\n", std::process::id()).as_bytes()))
    }

    fn clear_pending(&self, cid: &str) -> DriverResult<()> {
        self.tr(|| format!("cannot clear the pending entry of {cid}"), self.t.remove_file(&self.store(&format!("pending/{cid}")))).map(|_| ())
    }

    /// Removes creates (VMs and stemcells) that failed without cleaning up: their pending entry is there
    /// and nobody holds their lock (the process that made them is gone).
    fn sweep_abandoned(&self) -> DriverResult<()> {
        // unpacked stemcells of imports that were killed (their scratch marker is no longer locked)
        for (id, marker) in self.scratch().orphans() {
            warn!("{id}: a stemcell import was killed; removing its scratch files");
            marker.commit();
        }
        let pending: Vec<String> = self
            .tr(|| "cannot list pending creates".into(), self.t.list_dir(&self.store("pending")))?
            .into_iter()
            .filter(|n| is_ours(n, "vm-", 20) || is_ours(n, "sc-", 16))
            .collect();
        let lock_path = |cid: &str| join(&self.store("locks"), &format!("{cid}.lock"));
        // one probe for all entries: most belong to creates still running in other processes
        let held = self.tr(|| "cannot check pending creates".into(), self.t.held(&pending.iter().map(|c| lock_path(c)).collect::<Vec<_>>()))?;
        for (cid, _) in pending.iter().zip(held).filter(|(_, h)| !h) {
            let path = lock_path(cid);
            match self.t.lock(&path, Duration::ZERO) {
                Ok(_g) => {
                    warn!("{cid}: a create that failed without cleaning up left it behind; removing it");
                    let removed = if cid.starts_with("vm-") {
                        self.destroy_vm_files(cid)
                    } else {
                        self.tr(|| format!("cannot remove {cid}"), self.t.remove_dir_all(&self.store(&format!("stemcells/{cid}")))).and_then(|_| self.clear_pending(cid))
                    };
                    if let Err(e) = removed {
                        warn!("could not remove abandoned {cid}: {e}");
                    }
                }
                Err(TransportError::LockTimeout { .. }) => {}
                Err(e) => return Err(DriverError::failed(format!("cannot check pending create {cid}"), e)),
            }
        }
        Ok(())
    }

    fn add_nics(&self, v: &mut Vmx, networks: &mut Networks) -> DriverResult<()> {
        v.remove_prefix("ethernet");
        let mut n = 0;
        for (name, net) in networks.iter_mut() {
            if !net.needs_nic() {
                continue;
            }
            let props: NetProps = serde_json::from_value(Value::Object(net.cloud_properties.clone()))
                .map_err(|e| DriverError::invalid(format!("cloud_properties of network {name}"), e.to_string()))?;
            let net_name = props.name.unwrap_or_else(|| self.cfg.default_network.clone());
            let (conn, vnet) = nic_connection(&net_name).map_err(|e| DriverError::invalid(format!("cloud_properties of network {name}"), e))?;
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

    /// Puts the settings ISO on the stemcell's own CD-ROM device (the agent reads the first optical drive),
    /// adding a SATA CD-ROM only when the stemcell has none.
    fn attach_settings_iso(v: &mut Vmx) {
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

    fn create_vm_inner(&self, req: &CreateVm, vm: &str, props: &VmProps, networks: &mut Networks) -> DriverResult<()> {
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
                    // Player cannot clone (vmrun: "not supported"): a full copy with ovftool, as bosh-vmrun-cpi did
                    h.tool(
                        vec![ovftool.clone(), "--sourceType=VMX".into(), "--targetType=VMX".into(), "--allowExtraConfig".into(), format!("--name={vm}"), src.clone(), vmx_path.clone()],
                        "ovftool could not copy the stemcell VM",
                    )?;
                    info!("full copy of {sc} as {vm} in {} ms", started.elapsed().as_millis());
                }
                _ => {
                    h.vmrun(&["clone", &src, &vmx_path, "linked", &format!("-snapshot={BASE_SNAPSHOT}"), &format!("-cloneName={vm}")])?;
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
        let mut settings = AgentSettings::new(req.agent_id.as_str(), vm, &self.agent, networks.clone(), req.env.clone());
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

    fn bootstrap(&self, vm: &str, vmx: &str, b: &Bootstrap) -> DriverResult<()> {
        let h = self.host();
        let guest = Some((b.username.as_str(), b.password.as_str()));
        let deadline = Instant::now() + Duration::from_secs(b.max_wait_seconds.max(b.min_wait_seconds));
        std::thread::sleep(Duration::from_secs(b.min_wait_seconds));
        info!("bootstrap: waiting up to {} s for VMware Tools{} in {vm}", b.max_wait_seconds, b.ready_process.as_deref().map(|p| format!(" and process {p}")).unwrap_or_default());
        loop {
            let out = h.vmrun_raw(guest, &["listProcessesInGuest", vmx], Some(Duration::from_secs(60)))?;
            if out.message().contains("Authentication failure") {
                // wrong guest credentials do not get better by waiting
                return Err(h.tool_error(&[self.cfg.vmrun.clone(), "-T".into(), self.cfg.host_type.clone(), "listProcessesInGuest".into()], &out));
            }
            let ready = out.success() && b.ready_process.as_deref().is_none_or(|p| out.stdout.lines().any(|l| l.contains(&format!("cmd={p}")) || l.split_whitespace().any(|w| w.ends_with(p))));
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Other(format!("bootstrap: {vm} was not ready within {} s: {}", b.max_wait_seconds, out.message())));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let host_script = join(&self.vm_dir(vm), "bootstrap.sh");
        let guest_script = b.script_path.clone().unwrap_or_else(|| format!("/tmp/vmcpi-bootstrap-{}.sh", random_hex(8)));
        self.tr(|| "cannot write the bootstrap script".into(), self.t.write(&host_script, b.script.as_bytes()))?;
        let run = |args: &[&str]| -> DriverResult<()> {
            let out = h.vmrun_raw(guest, args, None)?;
            if out.success() {
                Ok(())
            } else {
                Err(h.tool_error(&[self.cfg.vmrun.clone(), "-T".into(), self.cfg.host_type.clone(), args[0].into()], &out))
            }
        };
        let result = run(&["copyFileFromHostToGuest", vmx, &host_script, &guest_script]).and_then(|_| run(&["runProgramInGuest", vmx, &b.interpreter, &guest_script]));
        let _ = self.t.remove_file(&host_script);
        result.map_err(|e| DriverError::Other(format!("bootstrap script failed in {vm}: {e}")))
    }

    /// Runs `edit` on the VM's .vmx with the VM powered off (VMware rewrites the file of a running VM),
    /// restoring the power state afterwards. The caller holds the VM's lock.
    /// `edit` may return other files (the settings) to write together with the .vmx.
    fn edit_stopped<T>(&self, vmx: &str, edit: impl FnOnce(&mut Vmx) -> DriverResult<(T, Vec<(String, Vec<u8>)>)>) -> DriverResult<T> {
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

impl Driver for Vmrun {
    fn create_stemcell(&self, image: &Path, cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        if let Some(name) = cloud_properties.get("name").and_then(Value::as_str) {
            info!("importing stemcell {name} {}", cloud_properties.get("version").and_then(Value::as_str).unwrap_or(""));
        }
        // the unpacked image lives in an in-flight work directory: a killed import's scratch is reaped later
        let scratch = Scratch(Some(self.scratch().begin(&format!("import-{}", random_hex(8))).context(|| "cannot write the scratch marker".into())?));
        let work = scratch.0.as_ref().map(|m| m.work_dir()).transpose().context(|| "cannot create a scratch directory".into())?;
        let unpacked = stemcell::unpack(image, work).context(|| "cannot read the stemcell image".into())?;
        if unpacked.family != Family::Vsphere {
            return Err(DriverError::invalid("stemcell", "the vmrun driver imports vSphere stemcells (an OVF with a VMDK); this is an OpenStack image"));
        }
        self.sweep_abandoned()?;
        let sc = format!("sc-{}", random_hex(16));
        let dir = self.store(&format!("stemcells/{sc}"));
        let vmx_path = self.stemcell_vmx(&sc);
        let h = self.host();
        let _sc_lock = self.lock(&sc)?;
        self.mark_pending(&sc)?;
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        let result = (|| -> DriverResult<()> {
            let src_dir = unpacked.disk.parent().map(Path::to_path_buf).unwrap_or_default();
            match &self.cfg.ovftool {
                Some(ovftool) => {
                    // ovftool runs on the hypervisor host: the OVF and its disk go there first
                    let import = join(&dir, "import");
                    self.tr(|| format!("cannot create {import}"), self.t.mkdir_all(&import))?;
                    let mut ovf = None;
                    for entry in std::fs::read_dir(&src_dir).context(|| "cannot list the unpacked stemcell".into())? {
                        let p = entry.context(|| "cannot list the unpacked stemcell".into())?.path();
                        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
                        if name.ends_with(".ovf") {
                            ovf = Some(join(&import, &name));
                        }
                        if name.ends_with(".ovf") || name.ends_with(".vmdk") || name.ends_with(".mf") {
                            info!("uploading {name}");
                            self.tr(|| format!("cannot upload {name}"), self.t.upload(&p, &join(&import, &name)))?;
                        }
                    }
                    let ovf = ovf.ok_or_else(|| DriverError::invalid("stemcell", "no .ovf in the image"))?;
                    h.tool(
                        vec![ovftool.clone(), "--sourceType=OVF".into(), "--targetType=VMX".into(), "--allowExtraConfig".into(), "--acceptAllEulas".into(), format!("--name={sc}"), ovf, vmx_path.clone()],
                        "ovftool could not import the stemcell",
                    )?;
                    self.tr(|| format!("cannot remove {import}"), self.t.remove_dir_all(&import))?;
                }
                None => {
                    // our own import: stream-optimised VMDK → monolithic sparse VMDK, and a VMX like ovftool's
                    let tmp = tempfile::Builder::new().prefix("vmcpi-vmdk-").tempdir_in(&src_dir).context(|| "cannot create a temporary directory".into())?;
                    let disk = tmp.path().join("disk.vmdk");
                    info!("converting the stemcell disk (no ovftool configured)");
                    crate::exec::Cmd::new(&self.cfg.local_qemu_img)
                        .args(["convert", "-q", "-f", "vmdk", "-O", "vmdk", "-o", "adapter_type=lsilogic,subformat=monolithicSparse"])
                        .arg(&unpacked.disk)
                        .arg(&disk)
                        .run()
                        .context(|| "cannot convert the stemcell's VMDK".into())?;
                    let disk_name = format!("{sc}-disk1.vmdk");
                    self.tr(|| "cannot upload the stemcell disk".into(), self.t.upload(&disk, &join(&dir, &disk_name)))?;
                    self.write_vmx(&vmx_path, &own_stemcell_vmx(&sc, &disk_name, unpacked.efi))?;
                }
            }
            let mut v = self.read_vmx(&vmx_path)?;
            // stemcells carry no NICs worth keeping; VMs get theirs at create
            v.remove_prefix("ethernet");
            v.set("displayName", &sc);
            self.write_vmx(&vmx_path, &v)?;
            if self.player() {
                // Player has no snapshots: its VMs are full copies (create_vm)
                return Ok(());
            }
            h.vmrun(&["snapshot", &vmx_path, BASE_SNAPSHOT])?;
            if !h.snapshots(&vmx_path)?.iter().any(|s| s == BASE_SNAPSHOT) {
                return Err(DriverError::Other(format!("vmrun snapshot reported success but {vmx_path} has no snapshot {BASE_SNAPSHOT}")));
            }
            Ok(())
        })();
        if let Err(e) = result {
            warn!("stemcell import failed: removing {dir}");
            match self.t.remove_dir_all(&dir) {
                Ok(_) => {
                    let _ = self.clear_pending(&sc);
                }
                Err(c) => warn!("could not remove {dir} ({c}); the next create on this store removes it"),
            }
            return Err(e);
        }
        self.clear_pending(&sc)?;
        StemcellCid::new(sc).map_err(DriverError::Other)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        let sc = cid.as_str();
        if !is_ours(sc, "sc-", 16) {
            return Err(DriverError::StemcellNotFound(format!("{cid} (not a stemcell CID of this CPI)")));
        }
        let dir = self.store(&format!("stemcells/{sc}"));
        let vmx = self.stemcell_vmx(sc);
        let _lock = self.lock(sc)?;
        if !self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))? {
            info!("stemcell {sc} was already gone");
            self.tr(|| format!("cannot remove {dir}"), self.t.remove_dir_all(&dir))?;
            self.forget_lock(sc);
            return Ok(());
        }
        // a create in progress may be cloning it right now (its .vmx does not name the stemcell yet)
        let pending = if self.player() { Vec::new() } else { self.tr(|| "cannot list pending creates".into(), self.t.list_dir(&self.store("pending")))? };
        let creating: Vec<String> = pending.into_iter().filter(|n| is_ours(n, "vm-", 20)).collect();
        let paths: Vec<String> = creating.iter().map(|vm| join(&self.store("locks"), &format!("{vm}.lock"))).collect();
        let held = self.tr(|| "cannot check pending creates".into(), self.t.held(&paths))?;
        if let Some((vm, _)) = creating.iter().zip(held).find(|(_, h)| *h) {
            return Err(DriverError::Other(format!("create_vm of {vm} is in progress and may be cloning {sc}; retry delete_stemcell when it has finished")));
        }
        // linked clones need their parent: refuse while any VM uses it
        let mut users = Vec::new();
        for vm in self.tr(|| "cannot list VMs".into(), self.t.list_dir(&self.store("vms")))? {
            if let Ok(v) = self.read_vmx(&self.vm_vmx(&vm)) {
                if v.get("vmcpi.stemcell") == Some(sc) {
                    users.push(vm);
                }
            }
        }
        if !users.is_empty() && !self.player() {
            return Err(DriverError::Other(format!("stemcell {sc} is the parent of linked clones {}; delete those VMs first", users.join(", "))));
        }
        self.host().vmrun(&["deleteVM", &vmx])?;
        self.tr(|| format!("cannot remove {dir}"), self.t.remove_dir_all(&dir))?;
        self.forget_lock(sc);
        Ok(())
    }

    fn create_vm(&self, _ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm> {
        let mut cloud_properties = req.cloud_properties.clone();
        for note in crate::compat::vm_cloud_properties(&mut cloud_properties, true).map_err(|e| DriverError::invalid("VM cloud_properties", e))? {
            info!("{note}");
        }
        let props: VmProps = serde_json::from_value(Value::Object(cloud_properties)).map_err(|e| DriverError::invalid("VM cloud_properties", e.to_string()))?;
        if let Some(p) = props.bootstrap.as_ref().and_then(|b| b.script_path.as_deref()) {
            if !p.starts_with('/') || p.ends_with('/') || p.contains(['\0', '\n', '\r']) {
                return Err(DriverError::invalid("VM cloud_properties", format!("bootstrap.script_path must be an absolute file path in the guest, got {p:?}")));
            }
        }
        if props.cpu == 0 || props.cpu > 128 {
            return Err(DriverError::invalid("VM cloud_properties", format!("cpu must be 1 to 128, got {}", props.cpu)));
        }
        if props.ram < 4 || !props.ram.is_multiple_of(4) || props.ram > MAX_RAM_MIB {
            return Err(DriverError::invalid("VM cloud_properties", format!("ram must be a multiple of 4 MiB up to 128 GiB, got {}", props.ram)));
        }
        if props.disk > 8 << 20 {
            return Err(DriverError::invalid("VM cloud_properties", "disk is limited to 8 TiB"));
        }
        let sc = req.stemcell.as_str();
        if !is_ours(sc, "sc-", 16) || !self.tr(|| "cannot look for the stemcell".into(), self.t.exists(&self.stemcell_vmx(sc)))? {
            return Err(DriverError::StemcellNotFound(sc.to_string()));
        }
        // network errors first: nothing is made for a request that cannot work
        let mut networks = req.networks.clone();
        self.add_nics(&mut Vmx::default(), &mut networks.clone())?;
        self.sweep_abandoned()?;
        let vm = format!("vm-{}", random_hex(20));
        info!("creating {vm} from {sc}");
        let _vm_lock = self.lock(&vm)?;
        self.mark_pending(&vm)?;
        let mut rb = Rollback { d: self, vm: vm.clone(), armed: true };
        self.create_vm_inner(req, &vm, &props, &mut networks)?;
        self.clear_pending(&vm)?;
        rb.armed = false;
        Ok(CreatedVm { cid: VmCid::new(vm).map_err(DriverError::Other)?, networks })
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
        if !is_ours(cid.as_str(), "vm-", 20) {
            return Err(DriverError::VmNotFound(format!("{cid} (not a VM CID of this CPI)")));
        }
        let _lock = self.lock(cid.as_str())?;
        if !self.tr(|| "cannot look for the VM".into(), self.t.exists(&self.vm_dir(cid.as_str())))? {
            info!("{cid} was already gone");
            self.forget_lock(cid.as_str());
            return Ok(());
        }
        self.destroy_vm_files(cid.as_str())?;
        self.forget_lock(cid.as_str());
        Ok(())
    }

    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool> {
        if !is_ours(cid.as_str(), "vm-", 20) {
            return Ok(false);
        }
        let vmx = self.vm_vmx(cid.as_str());
        self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        let vmx = self.check_vm(cid)?;
        let _lock = self.lock(cid.as_str())?;
        let h = self.host();
        if !h.is_running(&vmx)? {
            return h.start(&vmx);
        }
        let soft = h.vmrun_raw(None, &["reset", &vmx, "soft"], Some(Duration::from_secs(self.cfg.soft_shutdown_timeout_seconds)))?;
        if !soft.success() {
            info!("soft reset of {cid} failed ({}), resetting hard", soft.message());
            h.vmrun(&["reset", &vmx, "hard"])?;
        }
        Ok(())
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let vmx = self.check_vm(cid)?;
        let _lock = self.lock(cid.as_str())?;
        let mut pairs: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| {
                let key: String = k.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
                (format!("guestinfo.bosh.{key}"), v.chars().filter(|c| !c.is_control()).take(1024).collect())
            })
            .collect();
        let name = metadata.get("name").cloned().or_else(|| Some(format!("{}/{}", metadata.get("instance_group").or(metadata.get("job"))?, metadata.get("index")?)));
        if let Some(n) = name {
            pairs.push(("displayName".into(), format!("{n} ({cid})").chars().filter(|c| !c.is_control()).take(200).collect()));
        }
        let h = self.host();
        if h.is_running(&vmx)? {
            // a running VM's .vmx is VMware's: change it through vmrun, which persists runtimeConfig
            h.write_variables(&vmx, &pairs)?;
        } else {
            let mut v = self.read_vmx(&vmx)?;
            for (k, val) in &pairs {
                v.set(k, val.clone());
            }
            self.write_vmx(&vmx, &v)?;
        }
        Ok(())
    }

    fn calculate_vm_cloud_properties(&self, res: &VmResources) -> DriverResult<Value> {
        if res.cpu == 0 || res.ram == 0 {
            return Err(DriverError::invalid("vm_resources", "cpu and ram must be positive"));
        }
        let ram = res.ram.checked_next_multiple_of(4).filter(|r| *r <= MAX_RAM_MIB).ok_or_else(|| DriverError::invalid("vm_resources", format!("ram must be at most {MAX_RAM_MIB} MiB, got {}", res.ram)))?;
        Ok(json!({"cpu": res.cpu, "ram": ram, "disk": res.ephemeral_disk_size}))
    }

    fn create_disk(&self, size_mib: u64, cloud_properties: &Map<String, Value>, _vm: Option<&VmCid>) -> DriverResult<DiskCid> {
        let _props: DiskProps = serde_json::from_value(Value::Object(cloud_properties.clone())).map_err(|e| DriverError::invalid("disk cloud_properties", e.to_string()))?;
        if size_mib == 0 || size_mib > 8 << 20 {
            return Err(DriverError::invalid("disk size", format!("must be 1 MiB to 8 TiB, got {size_mib} MiB")));
        }
        let disk = format!("disk-{}", random_hex(15));
        let dir = self.store("disks");
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        let path = self.disk_path(&disk);
        self.host().create_vmdk(&path, size_mib)?;
        if let Err(e) = self.write_disk_record(&disk, &DiskRecord { size_mib, metadata: Metadata::new() }) {
            let _ = self.t.remove_file(&path);
            return Err(e);
        }
        DiskCid::new(disk).map_err(DriverError::Other)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        let path = match self.check_disk(cid) {
            Ok(p) => p,
            Err(DriverError::DiskNotFound(_)) => {
                info!("{cid} was already gone");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if self.tr(|| "cannot check the disk lock".into(), self.t.exists(&format!("{path}.lck")))? {
            return Err(DriverError::Other(format!("{cid} is in use by a running VM (VMware holds {path}.lck); detach it first")));
        }
        self.tr(|| format!("cannot remove {path}"), self.t.remove_file(&path))?;
        self.tr(|| "cannot remove the disk record".into(), self.t.remove_file(&self.disk_record(cid.as_str())))?;
        Ok(())
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        let path = self.check_disk(cid)?;
        let mut rec = self.read_disk_record(cid.as_str())?;
        if new_size_mib < rec.size_mib {
            return Err(DriverError::NotSupported(format!("shrinking {cid} from {} to {new_size_mib} MiB", rec.size_mib)));
        }
        if new_size_mib == rec.size_mib {
            return Ok(());
        }
        if self.tr(|| "cannot check the disk lock".into(), self.t.exists(&format!("{path}.lck")))? {
            return Err(DriverError::Other(format!("{cid} is in use by a running VM (VMware holds {path}.lck); detach it before resizing")));
        }
        self.host().grow_vmdk(&path, new_size_mib)?;
        rec.size_mib = new_size_mib;
        self.write_disk_record(cid.as_str(), &rec)
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        match self.check_disk(cid) {
            Ok(_) => Ok(true),
            Err(DriverError::DiskNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        let vmx = self.check_vm(vm)?;
        let path = self.check_disk(disk)?;
        let _lock = self.lock(vm.as_str())?;
        let current = self.read_vmx(&vmx)?;
        if let Some((unit, _)) = current.scsi_disks(0).into_iter().find(|(_, f)| *f == path) {
            info!("{disk} is already attached to {vm}");
            return Ok(json!(unit.to_string()));
        }
        let mut settings = self.read_settings(vm.as_str())?;
        let unit = self.edit_stopped(&vmx, |v| {
            let used: Vec<u32> = v.scsi_disks(0).into_iter().map(|(u, _)| u).collect();
            let unit = PERSISTENT_UNITS.into_iter().find(|u| !used.contains(u)).ok_or_else(|| DriverError::Other(format!("{vm} has no free SCSI unit")))?;
            v.set(&format!("scsi0:{unit}.present"), "TRUE");
            v.set(&format!("scsi0:{unit}.fileName"), path.clone());
            v.set(&format!("scsi0:{unit}.mode"), "independent-persistent");
            settings.attach_persistent(disk.as_str(), json!(unit.to_string()));
            // the settings change with the .vmx, while the VM is off
            Ok((unit, self.settings_files(vm.as_str(), &settings)?))
        })?;
        Ok(json!(unit.to_string()))
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        let vmx = self.check_vm(vm)?;
        let _lock = self.lock(vm.as_str())?;
        let path = self.disk_path(disk.as_str());
        if !self.read_vmx(&vmx)?.scsi_disks(0).iter().any(|(_, f)| *f == path) {
            return Err(DriverError::DiskNotAttached { vm: vm.to_string(), disk: disk.to_string() });
        }
        let mut settings = self.read_settings(vm.as_str())?;
        self.edit_stopped(&vmx, |v| {
            if let Some((unit, _)) = v.scsi_disks(0).into_iter().find(|(_, f)| *f == path) {
                v.remove_prefix(&format!("scsi0:{unit}."));
            }
            settings.detach_persistent(disk.as_str());
            Ok(((), self.settings_files(vm.as_str(), &settings)?))
        })
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        let vmx = self.check_vm(vm)?;
        let disks_dir = self.store("disks/");
        Ok(self
            .read_vmx(&vmx)?
            .scsi_disks(0)
            .into_iter()
            .filter_map(|(_, f)| f.strip_prefix(&disks_dir)?.strip_suffix(".vmdk").map(str::to_string))
            .filter(|c| is_ours(c, "disk-", 15))
            .filter_map(|c| DiskCid::new(c).ok())
            .collect())
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        self.check_disk(cid)?;
        let mut rec = self.read_disk_record(cid.as_str())?;
        rec.metadata = metadata.clone();
        self.write_disk_record(cid.as_str(), &rec)
    }

    fn snapshot_disk(&self, cid: &DiskCid, _metadata: &Metadata) -> DriverResult<SnapshotCid> {
        Err(DriverError::NotImplemented(format!(
            "snapshot_disk of {cid}: vmrun snapshots whole VMs, not single disks, and copying an attached disk under a running VM is not consistent"
        )))
    }

    fn delete_snapshot(&self, cid: &SnapshotCid) -> DriverResult<()> {
        Err(DriverError::NotImplemented(format!("delete_snapshot of {cid}: this driver makes no disk snapshots")))
    }
}

/// A VMX for a stemcell imported without ovftool, with what current vSphere stemcells declare (hardware
/// v13, EFI when the OVF asks for it, LSI Logic SCSI root disk, SATA CD-ROM).
fn own_stemcell_vmx(sc: &str, disk: &str, efi: bool) -> Vmx {
    let mut v = Vmx::default();
    for (k, val) in [
        (".encoding", "UTF-8"),
        ("config.version", "8"),
        ("virtualHW.version", "13"),
        ("displayName", sc),
        ("guestOS", "ubuntu-64"),
        ("numvcpus", "1"),
        ("memSize", "512"),
        ("pciBridge0.present", "TRUE"),
        ("vmci0.present", "TRUE"),
        ("scsi0.present", "TRUE"),
        ("scsi0.virtualDev", "lsilogic"),
        ("scsi0:0.present", "TRUE"),
        ("scsi0:0.fileName", disk),
        ("sata0.present", "TRUE"),
        ("sata0:0.present", "TRUE"),
        ("sata0:0.deviceType", "cdrom-raw"),
        ("sata0:0.startConnected", "FALSE"),
        ("tools.syncTime", "TRUE"),
        ("disk.enableUUID", "TRUE"),
    ] {
        v.set(k, val);
    }
    if efi {
        v.set("firmware", "efi");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> Result<VmrunConfig, String> {
        let c: VmrunConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map(|_| c)
    }

    #[test]
    fn config_validation() {
        let c = cfg(json!({"vm_store_path": "/vms"})).unwrap();
        assert_eq!((c.vmrun.as_str(), c.host_type.as_str(), c.soft_shutdown_timeout_seconds), ("/usr/bin/vmrun", "ws", 30));
        assert!(cfg(json!({"vm_store_path": "vms"})).unwrap_err().contains("absolute"));
        assert!(cfg(json!({"vm_store_path": "C:\\vms"})).unwrap_err().contains("Windows"));
        assert!(cfg(json!({"vm_store_path": "/vms", "vmrun": "vmrun"})).unwrap_err().contains("absolute"));
        assert!(cfg(json!({"vm_store_path": "/vms", "host_type": "esx"})).unwrap_err().contains("host_type"));
        assert!(cfg(json!({"vm_store_path": "/vms", "host_type": "player"})).unwrap_err().contains("ovftool"));
        assert!(cfg(json!({"vm_store_path": "/vms", "default_network": "vmnetX"})).is_err());
        assert!(cfg(json!({"vm_store_path": "/vms", "vmrun_bin": "/x"})).unwrap_err().contains("vmrun_bin"));
    }

    #[test]
    fn example_config_is_valid() {
        let v: Value = serde_json::from_str(include_str!("../../../examples/vmrun-cpi.json")).unwrap();
        let cfg = crate::config::Config::from_value(v, None, "examples/vmrun-cpi.json").unwrap();
        assert!(matches!(cfg.driver, crate::driver::DriverConfig::Vmrun(_)));
    }

    #[test]
    fn macs_are_in_vmware_static_range() {
        for _ in 0..50 {
            let m = vmware_mac();
            assert!(m.starts_with("00:50:56:") && m.len() == 17);
            assert!(u8::from_str_radix(&m[9..11], 16).unwrap() <= 0x3f, "{m}");
        }
    }

    #[test]
    fn networks() {
        assert_eq!(nic_connection("nat").unwrap(), ("nat", None));
        assert_eq!(nic_connection("vmnet8").unwrap(), ("custom", Some("vmnet8".into())));
        assert!(nic_connection("vmnet").is_err());
        assert!(nic_connection("eth0").is_err());
    }

    #[test]
    fn settings_iso_reuses_the_stemcell_cdrom() {
        let mut v = own_stemcell_vmx("sc-1", "d.vmdk", true);
        Vmrun::attach_settings_iso(&mut v);
        assert_eq!(v.get("sata0:0.fileName"), Some("env.iso"));
        assert_eq!(v.get("sata0:0.deviceType"), Some("cdrom-image"));
        assert_eq!(v.get("firmware"), Some("efi"));
        assert!(v.get("ide1:0.deviceType").is_none());
        let mut bare = Vmx::parse("scsi0:0.fileName = \"x.vmdk\"\n");
        Vmrun::attach_settings_iso(&mut bare);
        assert_eq!(bare.cdrom_device().as_deref(), Some("sata0:0"));
    }
}
