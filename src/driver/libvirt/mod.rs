//! The libvirt driver: KVM/QEMU (or any libvirt hypervisor) through `virsh`, locally or over `qemu+ssh://`.
//!
//! Layout in one storage pool:
//! - stemcell `sc-<16 hex>-<os|osraw|vs|vsefi>`: the imported image (qcow2, or raw for `osraw`); the suffix
//!   records the stemcell family (OpenStack or vSphere conventions), EFI, and the volume format;
//! - VM `vm-<20 hex>`: domain of that name, volumes `<vm>-root` (qcow2 overlay on the stemcell, no copy),
//!   `<vm>-ephemeral`, `<vm>-settings.iso` (the settings medium, a fixed-size volume);
//! - disk `disk-<15 hex>` (20 characters, so it fits a disk serial and the agent's by-id lookup), with its
//!   metadata in `<disk>.meta.json`; snapshot `snap-<15 hex>`, a full copy of the disk.
//!
//! Disks sit on one virtio-scsi controller: root at SCSI target 0, ephemeral at 1, persistent disks at 2+.
//! vSphere-family agents resolve the target number as the disk hint; OpenStack-family agents find the disk
//! by its serial (the CID) under /dev/disk/by-id, with the device path as fallback.
mod bootstrap;
pub mod domain;
mod virsh;
pub mod portfwd;

use crate::agent_settings::{AgentSettings, Network, Networks};
use crate::config::AgentOptions;
use crate::driver::{CallContext, CreateVm, CreatedVm, Driver, Metadata, VmResources};
use crate::error::{Context, DriverError, DriverResult};
use crate::exec::Cmd;
use crate::ids::{random_hex, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::inflight::{Inflight, Marker};
use crate::medium::{self, MediumKind};
use crate::stemcell::{self, DiskFormat, Family};
use crate::{info, warn};
use domain::{DomainSpec, Nic, NicSource, ScsiDisk};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use virsh::Virsh;

/// Formats `info` reports: OpenStack/KVM images and vSphere OVF images both import.
pub const STEMCELL_FORMATS: &[&str] = &["openstack-qcow2", "openstack-raw", "vsphere-ovf", "vsphere-ova"];

/// Size of the settings-medium volume. The ISO is padded to it, so the volume never changes size.
const MEDIUM_CAPACITY: u64 = 8 << 20;

/// The `driver` section for `kind: libvirt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// libvirt connection URI. For `qemu+ssh://` pin the host key: `?command=/path/to/pinned-ssh` or
    /// `qemu+libssh2://…?known_hosts=…` (see the README).
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Storage pool holding stemcells, VM volumes and disks.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// When set and the pool does not exist, it is created as a directory pool at this path.
    #[serde(default)]
    pub pool_path: Option<PathBuf>,
    /// `kvm` (hardware virtualisation) or `qemu` (software emulation, e.g. nested hosts).
    #[serde(default = "default_domain_type")]
    pub domain_type: String,
    /// QEMU machine type.
    #[serde(default = "default_machine")]
    pub machine: String,
    /// libvirt network for BOSH networks whose cloud_properties name none.
    #[serde(default = "default_network")]
    pub default_network: String,
    /// A VNC display on 127.0.0.1 for each VM.
    #[serde(default = "yes")]
    pub graphics: bool,
    #[serde(default = "default_virsh")]
    pub virsh: PathBuf,
    #[serde(default = "default_qemu_img")]
    pub qemu_img: PathBuf,
    #[serde(default = "default_xorriso")]
    pub xorriso: PathBuf,
    /// In-flight markers of creates and their scratch space (unpacked stemcells): see [`crate::inflight`].
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    "/var/tmp/vmcpi".into()
}

fn default_uri() -> String {
    "qemu:///system".into()
}
fn default_pool() -> String {
    "default".into()
}
fn default_domain_type() -> String {
    "kvm".into()
}
fn default_machine() -> String {
    "q35".into()
}
fn default_network() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}
fn default_virsh() -> PathBuf {
    "/usr/bin/virsh".into()
}
fn default_qemu_img() -> PathBuf {
    "/usr/bin/qemu-img".into()
}
fn default_xorriso() -> PathBuf {
    "/usr/bin/xorriso".into()
}

impl LibvirtConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.domain_type.as_str(), "kvm" | "qemu") {
            return Err(format!("driver.domain_type must be \"kvm\" or \"qemu\", got {:?}", self.domain_type));
        }
        if self.pool.is_empty() || self.pool.contains('/') {
            return Err(format!("driver.pool must be a storage pool name, got {:?}", self.pool));
        }
        for (name, p) in [("virsh", &self.virsh), ("qemu_img", &self.qemu_img), ("xorriso", &self.xorriso)] {
            if !p.is_absolute() {
                return Err(format!("driver.{name} must be an absolute path (the director runs the CPI with a minimal PATH), got {}", p.display()));
            }
        }
        for (name, p) in [("pool_path", self.pool_path.as_ref()), ("state_dir", Some(&self.state_dir))] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(format!("driver.{name} must be an absolute path, got {}", p.display()));
                }
            }
        }
        Ok(())
    }
}

/// VM `cloud_properties` this driver understands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmProps {
    /// vCPUs.
    #[serde(default = "one")]
    cpu: u32,
    /// RAM in MiB.
    #[serde(default = "default_ram")]
    ram: u64,
    /// Ephemeral disk in MiB (0: none; the agent then partitions the root disk).
    #[serde(default)]
    disk: u64,
    /// Root disk size in MiB (default: the stemcell's size; larger grows the overlay).
    #[serde(default)]
    root_disk: Option<u64>,
    /// Direct kernel boot (kernel path on the hypervisor host), e.g. for test images.
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    initrd: Option<String>,
    #[serde(default)]
    cmdline: Option<String>,
    /// File on the hypervisor host that receives the serial console.
    #[serde(default)]
    serial_log: Option<String>,
    /// Script run in the guest after boot (QEMU guest agent).
    #[serde(default)]
    bootstrap: Option<bootstrap::Bootstrap>,
}

fn one() -> u32 {
    1
}
fn default_ram() -> u64 {
    1024
}

/// Network `cloud_properties`: at most one of `name` (libvirt network), `bridge` (host bridge), or
/// `type: user` (QEMU user-mode networking, no host set-up).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetProps {
    name: Option<String>,
    bridge: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `type: user` only: `[{host: "127.0.0.1:26868", guest: 6868}, …]` (see `portfwd`).
    #[serde(default)]
    port_forwards: Option<Value>,
}

/// Disk `cloud_properties`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskProps {
    /// `qcow2` (default, thin) or `raw`.
    #[serde(default)]
    format: Option<String>,
}

/// The serial of a VM's ephemeral disk (20 characters, like a disk CID): `eph-` and 16 hex digits of the VM's.
fn ephemeral_serial(vm: &str) -> String {
    format!("eph-{}", vm.trim_start_matches("vm-").chars().take(16).collect::<String>())
}

/// The libvirt backend.
pub struct Libvirt {
    cfg: LibvirtConfig,
    agent: AgentOptions,
    virsh: Virsh,
    inflight: Inflight,
}

/// Suffixes of stemcell CIDs: family, firmware and volume format.
const STEMCELL_TAGS: &[&str] = &["os", "osraw", "vs", "vsefi"];

/// What a stemcell CID says about the stemcell.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StemcellKind {
    family: Family,
    efi: bool,
    /// Format of the stemcell volume (the backing format of every VM's overlay).
    format: &'static str,
}

fn parse_stemcell_cid(cid: &str) -> Option<StemcellKind> {
    let rest = cid.strip_prefix("sc-")?;
    let (hex, tag) = rest.split_once('-')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    match tag {
        "os" => Some(StemcellKind { family: Family::OpenStack, efi: false, format: "qcow2" }),
        "osraw" => Some(StemcellKind { family: Family::OpenStack, efi: false, format: "raw" }),
        "vs" => Some(StemcellKind { family: Family::Vsphere, efi: false, format: "qcow2" }),
        "vsefi" => Some(StemcellKind { family: Family::Vsphere, efi: true, format: "qcow2" }),
        _ => None,
    }
}

fn is_ours(cid: &str, prefix: &str, hex_len: usize) -> bool {
    cid.strip_prefix(prefix)
        .is_some_and(|h| h.len() == hex_len && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}
fn valid_vm(cid: &VmCid) -> bool {
    is_ours(cid.as_str(), "vm-", 20)
}
fn valid_disk(cid: &DiskCid) -> bool {
    is_ours(cid.as_str(), "disk-", 15)
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::OpenStack => "openstack",
        Family::Vsphere => "vsphere",
    }
}

/// The disk hint the stemcell's agent resolves for SCSI target `target`.
fn hint_for(family: Family, target: u32) -> Value {
    match family {
        // scsi resolver: the target number on the root disk's controller
        Family::Vsphere => json!(target.to_string()),
        // virtio resolver: by-id (serial = CID) first, then this path
        Family::OpenStack => json!({ "path": format!("/dev/{}", domain::dev_name(target)) }),
    }
}

/// Undo list for create_stemcell / create_vm: what was made, removed in reverse on failure.
struct Rollback<'a> {
    virsh: &'a Virsh,
    pool: &'a str,
    volumes: Vec<String>,
    domain: Option<String>,
    armed: bool,
}

impl<'a> Rollback<'a> {
    fn new(virsh: &'a Virsh, pool: &'a str) -> Self {
        Rollback { virsh, pool, volumes: Vec::new(), domain: None, armed: true }
    }
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(d) = &self.domain {
            warn!("cleaning up after failed create: domain {d}");
            let _ = self.virsh.run_opt(["destroy", d.as_str()]);
            if let Err(e) = self.virsh.run_opt(["undefine", d.as_str(), "--nvram"]) {
                warn!("could not undefine {d}: {e}");
            }
        }
        for v in self.volumes.iter().rev() {
            warn!("cleaning up after failed create: volume {v}");
            if let Err(e) = self.virsh.run_opt(["vol-delete", "--pool", self.pool, v.as_str()]) {
                warn!("could not delete volume {v}: {e}");
            }
        }
    }
}

impl Libvirt {
    pub fn new(cfg: LibvirtConfig, agent: AgentOptions) -> Self {
        let virsh = Virsh::new(&cfg.virsh, &cfg.uri);
        // markers say where their volumes live: another config sharing the state_dir leaves them alone
        let inflight = Inflight::new(&cfg.state_dir).owned_by(&format!("libvirt {} pool {}", cfg.uri, cfg.pool));
        Libvirt { cfg, agent, virsh, inflight }
    }

    /// Starts a create: reaps what killed processes left, then marks `cid` in flight.
    fn begin(&self, cid: &str) -> DriverResult<Marker> {
        self.reap();
        self.inflight.begin(cid).context(|| format!("cannot write the in-flight marker in {}", self.cfg.state_dir.display()))
    }

    /// Deletes everything of creates whose process died (SIGKILL, power loss) before answering.
    fn reap(&self) {
        for (cid, marker) in self.inflight.orphans() {
            warn!("{cid}: its create was interrupted (the process died); removing what it left");
            let done = if cid.starts_with("vm-") {
                let _ = self.virsh.run_opt(["destroy", cid.as_str()]);
                self.virsh.run_opt(["undefine", cid.as_str(), "--nvram"]).is_ok()
                    && [format!("{cid}-root"), format!("{cid}-ephemeral"), Self::medium_volume(&cid)].iter().all(|v| self.vol_delete(v).is_ok())
            } else if cid.starts_with("disk-") {
                self.vol_delete(&cid).is_ok() && self.vol_delete(&format!("{cid}.meta.json")).is_ok()
            } else if cid.starts_with("sc-") {
                // the marker has the id; the volume name adds the family suffix
                STEMCELL_TAGS.iter().all(|t| self.vol_delete(&format!("{cid}-{t}")).is_ok())
            } else {
                self.vol_delete(&cid).is_ok()
            };
            if done {
                marker.commit();
            } else {
                warn!("{cid}: could not remove everything; will retry on the next create");
            }
        }
    }

    fn pool(&self) -> &str {
        &self.cfg.pool
    }

    /// Makes sure the storage pool exists and is active (creating it when `pool_path` is configured).
    fn ensure_pool(&self) -> DriverResult<()> {
        let pool = self.pool();
        match self.virsh.run_opt(["pool-info", pool]).context(|| format!("cannot query storage pool {pool}"))? {
            Some(out) => {
                if !out.lines().any(|l| l.starts_with("State:") && l.contains("running")) {
                    info!("starting storage pool {pool}");
                    if let Err(e) = self.virsh.run(["pool-start", pool]) {
                        if !e.output().contains("already active") {
                            return Err(DriverError::failed(format!("cannot start storage pool {pool}"), e));
                        }
                    }
                }
                Ok(())
            }
            None => {
                let Some(path) = &self.cfg.pool_path else {
                    return Err(DriverError::Other(format!(
                        "storage pool {pool} does not exist: create it (virsh pool-define-as {pool} dir --target DIR; virsh pool-start {pool}) or set driver.pool_path"
                    )));
                };
                info!("creating directory storage pool {pool} at {}", path.display());
                let defined = self.virsh.run(["pool-define-as", pool, "dir", "--target"].iter().map(std::ffi::OsStr::new).chain([path.as_os_str()]));
                if let Err(e) = defined {
                    // another CPI process may have defined it a moment ago
                    if !e.output().contains("already exists") {
                        return Err(DriverError::failed(format!("cannot define storage pool {pool}"), e));
                    }
                }
                let _ = self.virsh.run(["pool-build", pool]);
                if let Err(e) = self.virsh.run(["pool-start", pool]) {
                    if !e.output().contains("already active") {
                        return Err(DriverError::failed(format!("cannot start storage pool {pool}"), e));
                    }
                }
                let _ = self.virsh.run(["pool-autostart", pool]);
                Ok(())
            }
        }
    }

    /// Re-reads the pool so libvirt probes an uploaded image's real format and virtual size. libvirt refuses
    /// while another process's upload or download runs in the pool, so this retries (bounded: 10 minutes).
    fn refresh_pool(&self) -> DriverResult<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match self.virsh.run(["pool-refresh", self.pool()]) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() < deadline => {
                    crate::debug!("pool-refresh refused ({}), retrying", e.output().trim());
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => return Err(DriverError::failed(format!("cannot refresh storage pool {}", self.pool()), e)),
            }
        }
    }

    /// `vol-create-as` with a capacity in bytes.
    fn vol_create(&self, name: &str, bytes: u64, format: &str, backing: Option<(&str, &str)>) -> DriverResult<()> {
        let cap = format!("{bytes}b");
        let mut args = vec!["vol-create-as", "--pool", self.pool(), "--name", name, "--capacity", cap.as_str(), "--format", format];
        if let Some((vol, fmt)) = backing {
            args.extend(["--backing-vol", vol, "--backing-vol-format", fmt]);
        }
        match self.virsh.run(&args) {
            Ok(_) => Ok(()),
            Err(e) if e.output().contains("No space left") || e.output().contains("Not enough space") => {
                Err(DriverError::NoDiskSpace(format!("pool {}: {}", self.pool(), e.output())))
            }
            Err(e) => Err(DriverError::failed(format!("cannot create volume {name} in pool {}", self.pool()), e)),
        }
    }

    fn vol_upload(&self, name: &str, file: &Path) -> DriverResult<()> {
        self.virsh
            .cmd()
            .args(["vol-upload", "--sparse", "--pool", self.pool(), name])
            .arg(file)
            .run()
            .context(|| format!("cannot upload {} into volume {name}", file.display()))?;
        Ok(())
    }

    fn vol_delete(&self, name: &str) -> DriverResult<bool> {
        Ok(self
            .virsh
            .run_opt(["vol-delete", "--pool", self.pool(), name])
            .context(|| format!("cannot delete volume {name}"))?
            .is_some())
    }

    /// (capacity in bytes, format) of a volume, `None` when it does not exist.
    fn vol_info(&self, name: &str) -> DriverResult<Option<(u64, String)>> {
        match self.virsh.run_opt(["vol-dumpxml", "--pool", self.pool(), name]).context(|| format!("cannot read volume {name}"))? {
            None => Ok(None),
            Some(xml) => domain::parse_volume(&xml).map(Some).map_err(DriverError::Other),
        }
    }

    fn dumpxml(&self, vm: &VmCid) -> DriverResult<domain::DomainInfo> {
        if !valid_vm(vm) {
            return Err(DriverError::VmNotFound(format!("{vm} (not a VM CID of this CPI)")));
        }
        let xml = self
            .virsh
            .run_opt(["dumpxml", vm.as_str()])
            .context(|| format!("cannot read domain {vm}"))?
            .ok_or_else(|| DriverError::VmNotFound(vm.to_string()))?;
        domain::parse_domain(&xml).map_err(DriverError::Other)
    }

    /// `--config`, plus `--live` when the domain runs: the change applies now and survives restarts.
    fn scope(running: bool) -> &'static [&'static str] {
        if running {
            &["--config", "--live"]
        } else {
            &["--config"]
        }
    }

    fn medium_volume(vm: &str) -> String {
        format!("{vm}-settings.iso")
    }

    /// Writes `settings` as the VM's settings medium (creating the volume when `create`).
    fn write_medium(&self, vm: &str, kind: MediumKind, settings: &AgentSettings, create: bool) -> DriverResult<()> {
        let mut iso = medium::build(kind, &settings.to_json(), vm, &self.cfg.xorriso).context(|| format!("cannot build the settings medium of {vm}"))?;
        if iso.len() as u64 > MEDIUM_CAPACITY {
            return Err(DriverError::invalid("agent settings", format!("the settings medium is {} bytes, more than {MEDIUM_CAPACITY}", iso.len())));
        }
        iso.resize(MEDIUM_CAPACITY as usize, 0);
        let mut tmp = tempfile::Builder::new().prefix("vmcpi-settings-").suffix(".iso").tempfile().context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut tmp, &iso).context(|| "cannot write a temporary file".into())?;
        let name = Self::medium_volume(vm);
        if create {
            self.vol_create(&name, MEDIUM_CAPACITY, "raw", None)?;
        }
        self.vol_upload(&name, tmp.path())
    }

    /// Reads the settings back from the VM's medium.
    fn read_medium(&self, vm: &str, kind: MediumKind) -> DriverResult<AgentSettings> {
        let name = Self::medium_volume(vm);
        let tmp = tempfile::Builder::new().prefix("vmcpi-settings-").suffix(".iso").tempfile().context(|| "cannot create a temporary file".into())?;
        self.virsh
            .cmd()
            .args(["vol-download", "--pool", self.pool(), name.as_str()])
            .arg(tmp.path())
            .run()
            .context(|| format!("cannot download the settings medium of {vm}"))?;
        let bytes = medium::read_settings(kind, tmp.path(), &self.cfg.xorriso).context(|| format!("cannot read the settings medium of {vm}"))?;
        AgentSettings::from_json(&bytes).context(|| format!("the settings medium of {vm} holds invalid settings"))
    }

    /// Swaps the CD-ROM media of a running domain so the guest sees the new settings.
    fn reload_medium(&self, vm: &str, info: &domain::DomainInfo) -> DriverResult<()> {
        if !info.running {
            return Ok(());
        }
        let Some(cd) = info.disks.iter().find(|d| d.device == "cdrom") else { return Ok(()) };
        let Some(dev) = &cd.dev else { return Ok(()) };
        let path = self.virsh.run(["vol-path", "--pool", self.pool(), Self::medium_volume(vm).as_str()]).context(|| format!("cannot find the settings medium of {vm}"))?;
        let path = path.trim();
        let _ = self.virsh.run(["change-media", vm, dev.as_str(), "--eject", "--live", "--force"]);
        self.virsh
            .run(["change-media", vm, dev.as_str(), path, "--insert", "--live"])
            .context(|| format!("cannot insert the refreshed settings medium into {vm}"))?;
        Ok(())
    }

    /// Copies a disk that a running domain uses with a libvirt block copy job into a new volume.
    fn snapshot_live(&self, disk: &DiskCid, snap: &str) -> DriverResult<()> {
        let running = self.virsh.run(["list", "--name", "--state-running"]).context(|| "cannot list running domains".into())?;
        for vm in running.lines().map(str::trim).filter(|n| is_ours(n, "vm-", 20)) {
            let Ok(cid) = VmCid::new(vm) else { continue };
            let Ok(info) = self.dumpxml(&cid) else { continue };
            let Some(dev) = info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())).and_then(|d| d.dev.clone()) else { continue };
            let (cap, _) = self.vol_info(disk.as_str())?.ok_or_else(|| DriverError::DiskNotFound(disk.to_string()))?;
            let mut rb = Rollback::new(&self.virsh, self.pool());
            self.vol_create(snap, cap, "qcow2", None)?;
            rb.volumes.push(snap.to_string());
            let path = self.virsh.run(["vol-path", "--pool", self.pool(), snap]).context(|| format!("cannot find volume {snap}"))?;
            self.virsh
                .run(["blockcopy", vm, dev.as_str(), "--dest", path.trim(), "--format", "qcow2", "--reuse-external", "--wait", "--finish", "--transient-job"])
                .context(|| format!("cannot copy {disk} (attached to {vm} as {dev}) into snapshot {snap}"))?;
            rb.disarm();
            return Ok(());
        }
        Err(DriverError::Other(format!("{disk} is locked by a process that is not a running vmcpi VM; cannot snapshot it")))
    }

    fn family_of(info: &domain::DomainInfo, vm: &VmCid) -> DriverResult<Family> {
        match info.family.as_deref() {
            Some("openstack") => Ok(Family::OpenStack),
            Some("vsphere") => Ok(Family::Vsphere),
            _ => Err(DriverError::Other(format!("domain {vm} was not created by vmcpi (no vmcpi metadata)"))),
        }
    }

    fn nic_for(&self, name: &str, net: &Network) -> DriverResult<(NicSource, Vec<portfwd::PortForward>)> {
        let props: NetProps = serde_json::from_value(Value::Object(net.cloud_properties.clone()))
            .map_err(|e| DriverError::invalid(format!("cloud_properties of network {name}"), e.to_string()))?;
        let forwards = portfwd::parse(props.port_forwards.as_ref()).map_err(|e| DriverError::invalid(format!("cloud_properties of network {name}"), e))?;
        if !forwards.is_empty() && props.kind.as_deref() != Some("user") {
            return Err(DriverError::invalid(format!("cloud_properties of network {name}"), "port_forwards needs type: user (QEMU user-mode networking)"));
        }
        let source = match (props.name, props.bridge, props.kind.as_deref()) {
            (None, None, Some("user")) => Ok(NicSource::User),
            (None, None, Some(other)) => Err(DriverError::invalid(format!("cloud_properties of network {name}"), format!("type must be \"user\", got {other:?}"))),
            (Some(n), None, None) => Ok(NicSource::Network(n)),
            (None, Some(b), None) => Ok(NicSource::Bridge(b)),
            (None, None, None) => Ok(NicSource::Network(self.cfg.default_network.clone())),
            _ => Err(DriverError::invalid(format!("cloud_properties of network {name}"), "give only one of name, bridge, type")),
        }?;
        Ok((source, forwards))
    }

    /// Adds the port forwards kept in a running domain's metadata to its QEMU process (`hostfwd_add`).
    fn apply_forwards(&self, vm: &str, forwards: &[(String, portfwd::PortForward)]) -> DriverResult<()> {
        for (nic, f) in forwards {
            let cmd = format!("hostfwd_add {} {}", portfwd::netdev(nic), f.rule());
            let out = self.virsh.run(["qemu-monitor-command", vm, "--hmp", cmd.as_str()]).context(|| format!("cannot forward {f} on {vm}"))?;
            // the monitor answers nothing on success, a sentence on failure (exit status 0 either way)
            if !out.trim().is_empty() {
                return Err(DriverError::invalid(format!("port forward {f}"), format!("QEMU refused it: {}", out.trim())));
            }
            info!("forwarding {f} on {vm}");
        }
        Ok(())
    }

    /// Whether the hypervisor's libvirt has the passt interface backend (then `<portForward>` is used).
    fn passt_available(&self) -> bool {
        let args = ["domcapabilities", "--virttype", self.cfg.domain_type.as_str()];
        match self.virsh.run(args) {
            Ok(xml) => portfwd::passt_in_domcapabilities(&xml),
            Err(e) => {
                info!("cannot read the domain capabilities ({e}); forwarding through QEMU");
                false
            }
        }
    }

    /// Whether the libvirt URI names this machine (then busy host ports can be seen before creating).
    fn hypervisor_is_local(&self) -> bool {
        self.cfg.uri.split_once("://").is_some_and(|(_, rest)| rest.starts_with('/'))
    }

    fn create_vm_inner(&self, req: &CreateVm, kind: StemcellKind, vm: &str, rb: &mut Rollback) -> DriverResult<CreatedVm> {
        let props: VmProps = serde_json::from_value(Value::Object(req.cloud_properties.clone()))
            .map_err(|e| DriverError::invalid("VM cloud_properties", e.to_string()))?;
        if props.cpu == 0 || props.cpu > 512 {
            return Err(DriverError::invalid("VM cloud_properties", format!("cpu must be 1 to 512, got {}", props.cpu)));
        }
        if props.ram < 16 || props.ram > 16 << 20 {
            return Err(DriverError::invalid("VM cloud_properties", format!("ram must be 16 MiB to 16 TiB, got {}", props.ram)));
        }
        if props.disk > 64 << 20 || props.root_disk.is_some_and(|r| r > 64 << 20) {
            return Err(DriverError::invalid("VM cloud_properties", "disk sizes are limited to 64 TiB"));
        }
        let stemcell = req.stemcell.as_str();
        let (sc_cap, _) = self.vol_info(stemcell)?.ok_or_else(|| DriverError::StemcellNotFound(stemcell.to_string()))?;
        // NICs first: a bad network fails before anything is made
        let mut networks: Networks = req.networks.clone();
        let mut nics = Vec::new();
        for (name, net) in networks.iter_mut() {
            if !net.needs_nic() {
                continue;
            }
            let (source, forwards) = self.nic_for(name, net)?;
            let mac = match &net.mac {
                Some(m) => m.clone(),
                None => crate::agent_settings::random_mac([0x52, 0x54, 0x00]),
            };
            net.mac = Some(mac.clone());
            nics.push(Nic { mac, source, forwards });
        }

        let all_forwards: Vec<(String, portfwd::PortForward)> =
            nics.iter().enumerate().flat_map(|(i, n)| n.forwards.iter().map(move |f| (portfwd::alias(i), f.clone()))).collect();
        // libvirt's own forwards where it has passt; else QEMU's, added once the domain runs
        let passt = !all_forwards.is_empty() && self.passt_available();
        if self.hypervisor_is_local() {
            let list: Vec<_> = all_forwards.iter().map(|(_, f)| f.clone()).collect();
            portfwd::check_free(&list).map_err(|e| DriverError::invalid("network port_forwards", e))?;
        }

        let root = format!("{vm}-root");
        let root_cap = props.root_disk.map(|m| m << 20).unwrap_or(0).max(sc_cap);
        // the backing format comes from the CID, never from a probe
        self.vol_create(&root, root_cap, "qcow2", Some((stemcell, kind.format)))?;
        rb.volumes.push(root.clone());
        let mut disks = vec![ScsiDisk { pool: self.pool().into(), volume: root, format: "qcow2".into(), target: 0, serial: None }];
        if props.disk > 0 {
            let eph = format!("{vm}-ephemeral");
            self.vol_create(&eph, props.disk << 20, "qcow2", None)?;
            rb.volumes.push(eph.clone());
            disks.push(ScsiDisk { pool: self.pool().into(), volume: eph, format: "qcow2".into(), target: 1, serial: Some(ephemeral_serial(vm)) });
        }

        let mut settings = AgentSettings::new(req.agent_id.as_str(), vm, &self.agent, networks.clone(), req.env.clone());
        match kind.family {
            Family::Vsphere => {
                settings.disks.system = json!("0");
                if props.disk > 0 {
                    settings.disks.ephemeral = json!("1");
                }
            }
            Family::OpenStack => {
                settings.disks.system = json!("/dev/sda");
                if props.disk > 0 {
                    // not "/dev/sdb": Linux names virtio-scsi disks in the order their probes finish, which
                    // varies (a real agent once took the root disk for sdb). The agent's path resolver follows
                    // this udev link, which names the disk by its serial.
                    settings.disks.ephemeral = json!(format!("/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{}", ephemeral_serial(vm)));
                }
            }
        }
        let medium_vol = Self::medium_volume(vm);
        rb.volumes.push(medium_vol.clone());
        self.write_medium(vm, kind.family.medium(), &settings, true)?;

        let spec = DomainSpec {
            name: vm.to_string(),
            domain_type: self.cfg.domain_type.clone(),
            machine: self.cfg.machine.clone(),
            memory_mib: props.ram,
            vcpus: props.cpu,
            efi: kind.efi,
            direct_boot: props.kernel.clone().map(|kernel| domain::DirectBoot { kernel, initrd: props.initrd.clone(), cmdline: props.cmdline.clone() }),
            disks,
            cdrom: Some((self.pool().to_string(), medium_vol)),
            nics,
            serial_log: props.serial_log.clone(),
            graphics: self.cfg.graphics,
            passt,
            stemcell: stemcell.to_string(),
            family: family_name(kind.family).to_string(),
        };
        let xml = domain::domain_xml(&spec);
        let mut f = tempfile::Builder::new().prefix("vmcpi-domain-").suffix(".xml").tempfile().context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut f, xml.as_bytes()).context(|| "cannot write a temporary file".into())?;
        rb.domain = Some(vm.to_string());
        self.virsh.cmd().arg("define").arg(f.path()).run().context(|| format!("cannot define domain {vm}"))?;
        match self.virsh.run(["start", vm]) {
            Ok(_) => {}
            // a wrong network name is a request error: retrying cannot help
            Err(e) if e.output().contains("Network not found") => return Err(DriverError::NetworkNotFound(e.output().trim().to_string())),
            Err(e) => return Err(DriverError::failed(format!("cannot start domain {vm}"), e)),
        }
        if !passt {
            self.apply_forwards(vm, &all_forwards)?;
        }
        if let Some(b) = &props.bootstrap {
            bootstrap::run(&self.virsh, vm, b)?;
        }
        Ok(CreatedVm { cid: VmCid::new(vm).map_err(DriverError::Other)?, networks })
    }
}

impl Driver for Libvirt {
    fn create_stemcell(&self, image: &Path, cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        if let Some(name) = cloud_properties.get("name").and_then(Value::as_str) {
            info!("importing stemcell {name} {}", cloud_properties.get("version").and_then(Value::as_str).unwrap_or(""));
        }
        self.ensure_pool()?;
        // the family is known only after unpacking; the in-flight marker covers every suffix of this id
        let id = format!("sc-{}", random_hex(16));
        let marker = self.begin(&id)?;
        let work = marker.work_dir().context(|| format!("cannot create a work directory in {}", self.cfg.state_dir.display()))?;
        let unpacked = stemcell::unpack(image, Some(work)).context(|| "cannot read the stemcell image".into())?;
        let tag = match (unpacked.family, unpacked.efi, unpacked.format) {
            (Family::OpenStack, _, DiskFormat::Raw) => "osraw",
            (Family::OpenStack, _, _) => "os",
            (Family::Vsphere, false, _) => "vs",
            (Family::Vsphere, true, _) => "vsefi",
        };
        let cid = format!("{id}-{tag}");
        // VMDKs (stream-optimised) are converted to qcow2 locally, as a stream, before upload
        let converted;
        let (file, format) = match unpacked.format {
            DiskFormat::Vmdk => {
                let dir = unpacked.disk.parent().map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
                let tmp = tempfile::Builder::new().prefix("vmcpi-convert-").tempdir_in(&dir).context(|| "cannot create a temporary directory".into())?;
                let out = tmp.path().join("root.qcow2");
                info!("converting the VMDK to qcow2");
                Cmd::new(&self.cfg.qemu_img)
                    .args(["convert", "-f", "vmdk", "-O", "qcow2"])
                    .arg(&unpacked.disk)
                    .arg(&out)
                    .run()
                    .context(|| "cannot convert the stemcell's VMDK".into())?;
                converted = tmp;
                (converted.path().join("root.qcow2"), "qcow2")
            }
            DiskFormat::Qcow2 => (unpacked.disk.clone(), "qcow2"),
            DiskFormat::Raw => (unpacked.disk.clone(), "raw"),
        };
        let size = std::fs::metadata(&file).context(|| format!("cannot stat {}", file.display()))?.len();
        let mut rb = Rollback::new(&self.virsh, self.pool());
        // a raw volume of the file's size receives the bytes; libvirt then probes the real format
        self.vol_create(&cid, size.max(1), "raw", None)?;
        rb.volumes.push(cid.clone());
        info!("uploading {} MiB into volume {cid}", size >> 20);
        self.vol_upload(&cid, &file)?;
        self.refresh_pool()?;
        let (_, probed) = self.vol_info(&cid)?.ok_or_else(|| DriverError::Other(format!("volume {cid} vanished after upload")))?;
        if probed != format {
            return Err(DriverError::Other(format!("volume {cid} was probed as {probed}, expected {format}")));
        }
        rb.disarm();
        drop(unpacked);
        marker.commit();
        StemcellCid::new(cid).map_err(DriverError::Other)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        self.reap();
        if parse_stemcell_cid(cid.as_str()).is_none() {
            return Err(DriverError::StemcellNotFound(format!("{cid} (not a stemcell CID of this CPI)")));
        }
        if !self.vol_delete(cid.as_str())? {
            info!("stemcell {cid} was already gone");
        }
        Ok(())
    }

    fn create_vm(&self, _ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm> {
        let kind = parse_stemcell_cid(req.stemcell.as_str()).ok_or_else(|| DriverError::StemcellNotFound(format!("{} (not a stemcell CID of this CPI)", req.stemcell)))?;
        let vm = format!("vm-{}", random_hex(20));
        info!("creating {vm} from {}", req.stemcell);
        let marker = self.begin(&vm)?;
        let mut rb = Rollback::new(&self.virsh, self.pool());
        let created = self.create_vm_inner(req, kind, &vm, &mut rb)?;
        rb.disarm();
        marker.commit();
        Ok(created)
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
        self.reap();
        if !valid_vm(cid) {
            return Err(DriverError::VmNotFound(format!("{cid} (not a VM CID of this CPI)")));
        }
        let vm = cid.as_str();
        match self.virsh.run_opt(["destroy", vm]) {
            Ok(_) => {}
            Err(e) if e.output().contains("not running") => {}
            Err(e) => return Err(DriverError::failed(format!("cannot stop {vm}"), e)),
        }
        // undefining forgets the attached persistent disks: they stay in the pool, untouched
        if self.virsh.run_opt(["undefine", vm, "--nvram"]).context(|| format!("cannot undefine {vm}"))?.is_none() {
            info!("domain {vm} was already gone; removing what is left of it");
        }
        for v in [format!("{vm}-root"), format!("{vm}-ephemeral"), Self::medium_volume(vm)] {
            self.vol_delete(&v)?;
        }
        Ok(())
    }

    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool> {
        if !valid_vm(cid) {
            return Ok(false);
        }
        Ok(self.virsh.run_opt(["domstate", cid.as_str()]).context(|| format!("cannot query {cid}"))?.is_some())
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        let info = self.dumpxml(cid)?;
        if info.running {
            self.virsh.run(["reset", cid.as_str()]).context(|| format!("cannot reset {cid}"))?;
        } else {
            self.virsh.run(["start", cid.as_str()]).context(|| format!("cannot start {cid}"))?;
            // a new QEMU process: its forwards are added again (a reset keeps them)
            self.apply_forwards(cid.as_str(), &info.forwards)?;
        }
        Ok(())
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let info = self.dumpxml(cid)?;
        let scope = Self::scope(info.running);
        let xml = domain::tags_xml(metadata);
        let mut args = vec!["metadata", cid.as_str(), "--uri", domain::TAGS_NS, "--key", "vmcpitags", "--set", xml.as_str()];
        args.extend(scope);
        self.virsh.run(&args).context(|| format!("cannot set metadata of {cid}"))?;
        let title = metadata
            .get("name")
            .cloned()
            .or_else(|| Some(format!("{}/{}", metadata.get("instance_group").or(metadata.get("job"))?, metadata.get("index")?)));
        if let Some(t) = title {
            let t: String = t.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
            let mut args = vec!["desc", cid.as_str(), "--title", "--new-desc", t.as_str()];
            args.extend(scope);
            self.virsh.run(&args).context(|| format!("cannot set the title of {cid}"))?;
        }
        Ok(())
    }

    fn calculate_vm_cloud_properties(&self, res: &VmResources) -> DriverResult<Value> {
        if res.cpu == 0 || res.ram == 0 {
            return Err(DriverError::invalid("vm_resources", "cpu and ram must be positive"));
        }
        Ok(json!({"cpu": res.cpu, "ram": res.ram, "disk": res.ephemeral_disk_size}))
    }

    fn create_disk(&self, size_mib: u64, cloud_properties: &Map<String, Value>, vm: Option<&VmCid>) -> DriverResult<DiskCid> {
        let props: DiskProps = serde_json::from_value(Value::Object(cloud_properties.clone())).map_err(|e| DriverError::invalid("disk cloud_properties", e.to_string()))?;
        let format = props.format.unwrap_or_else(|| "qcow2".into());
        if !matches!(format.as_str(), "qcow2" | "raw") {
            return Err(DriverError::invalid("disk cloud_properties", format!("format must be qcow2 or raw, got {format:?}")));
        }
        if let Some(vm) = vm {
            // one host: the locality hint needs no action
            crate::debug!("create_disk for {vm}");
        }
        self.ensure_pool()?;
        let cid = format!("disk-{}", random_hex(15));
        let marker = self.begin(&cid)?;
        self.vol_create(&cid, size_mib << 20, &format, None)?;
        marker.commit();
        DiskCid::new(cid).map_err(DriverError::Other)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        self.reap();
        if !valid_disk(cid) {
            return Err(DriverError::DiskNotFound(format!("{cid} (not a disk CID of this CPI)")));
        }
        if !self.vol_delete(cid.as_str())? {
            info!("disk {cid} was already gone");
        }
        self.vol_delete(&format!("{cid}.meta.json"))?;
        Ok(())
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        if !valid_disk(cid) {
            return Err(DriverError::DiskNotFound(cid.to_string()));
        }
        let (cap, _) = self.vol_info(cid.as_str())?.ok_or_else(|| DriverError::DiskNotFound(cid.to_string()))?;
        let new = new_size_mib << 20;
        if new < cap {
            return Err(DriverError::NotSupported(format!("disk {cid} is {} MiB; shrinking to {new_size_mib} MiB would lose data", cap >> 20)));
        }
        if new == cap {
            return Ok(());
        }
        let size = format!("{new}b");
        self.virsh.run(["vol-resize", "--pool", self.pool(), cid.as_str(), size.as_str()]).context(|| format!("cannot resize {cid} (detach it first)"))?;
        Ok(())
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        Ok(valid_disk(cid) && self.vol_info(cid.as_str())?.is_some())
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        let info = self.dumpxml(vm)?;
        let family = Self::family_of(&info, vm)?;
        if !valid_disk(disk) {
            return Err(DriverError::DiskNotFound(format!("{disk} (not a disk CID of this CPI)")));
        }
        let (_, format) = self.vol_info(disk.as_str())?.ok_or_else(|| DriverError::DiskNotFound(disk.to_string()))?;
        if let Some(d) = info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())) {
            info!("{disk} is already attached to {vm}");
            return Ok(hint_for(family, d.target.unwrap_or(2)));
        }
        let used: Vec<u32> = info.disks.iter().filter(|d| d.bus.as_deref() == Some("scsi")).filter_map(|d| d.target).collect();
        let target = (2..=255).find(|t| !used.contains(t)).ok_or_else(|| DriverError::Other(format!("{vm} has no free SCSI target")))?;
        let dev = ScsiDisk { pool: self.pool().into(), volume: disk.to_string(), format, target, serial: Some(disk.to_string()) };
        let mut f = tempfile::Builder::new().suffix(".xml").tempfile().context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut f, domain::disk_xml(&dev).as_bytes()).context(|| "cannot write a temporary file".into())?;
        self.virsh
            .cmd()
            .args(["attach-device", vm.as_str()])
            .arg(f.path())
            .args(Self::scope(info.running))
            .run()
            .context(|| format!("cannot attach {disk} to {vm}"))?;
        let hint = hint_for(family, target);
        let refreshed = self.read_medium(vm.as_str(), family.medium()).and_then(|mut s| {
            s.attach_persistent(disk.as_str(), hint.clone());
            self.write_medium(vm.as_str(), family.medium(), &s, false)?;
            self.reload_medium(vm.as_str(), &info)
        });
        if let Err(e) = refreshed {
            warn!("settings refresh failed, detaching {disk} again");
            let _ = self.virsh.cmd().args(["detach-device", vm.as_str()]).arg(f.path()).args(Self::scope(info.running)).run();
            return Err(e);
        }
        Ok(hint)
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        let info = self.dumpxml(vm)?;
        let family = Self::family_of(&info, vm)?;
        let Some(d) = info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())) else {
            return Err(DriverError::DiskNotAttached { vm: vm.to_string(), disk: disk.to_string() });
        };
        let dev = ScsiDisk {
            pool: d.pool.clone().unwrap_or_else(|| self.pool().into()),
            volume: disk.to_string(),
            format: d.format.clone().unwrap_or_else(|| "qcow2".into()),
            target: d.target.unwrap_or(2),
            serial: d.serial.clone(),
        };
        let mut f = tempfile::Builder::new().suffix(".xml").tempfile().context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut f, domain::disk_xml(&dev).as_bytes()).context(|| "cannot write a temporary file".into())?;
        self.virsh
            .cmd()
            .args(["detach-device", vm.as_str()])
            .arg(f.path())
            .args(Self::scope(info.running))
            .run()
            .context(|| format!("cannot detach {disk} from {vm}"))?;
        let mut s = self.read_medium(vm.as_str(), family.medium())?;
        s.detach_persistent(disk.as_str());
        self.write_medium(vm.as_str(), family.medium(), &s, false)?;
        self.reload_medium(vm.as_str(), &info)
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        let info = self.dumpxml(vm)?;
        Ok(info
            .disks
            .iter()
            .filter_map(|d| d.volume.as_deref())
            .filter(|v| is_ours(v, "disk-", 15))
            .filter_map(|v| DiskCid::new(v).ok())
            .collect())
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        if !self.has_disk(cid)? {
            return Err(DriverError::DiskNotFound(cid.to_string()));
        }
        let name = format!("{cid}.meta.json");
        let body = serde_json::to_vec_pretty(metadata).context(|| "cannot encode metadata".into())?;
        let mut tmp = tempfile::NamedTempFile::new().context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut tmp, &body).context(|| "cannot write a temporary file".into())?;
        self.vol_delete(&name)?;
        self.vol_create(&name, body.len() as u64, "raw", None)?;
        self.vol_upload(&name, tmp.path())
    }

    fn snapshot_disk(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<SnapshotCid> {
        if !self.has_disk(cid)? {
            return Err(DriverError::DiskNotFound(cid.to_string()));
        }
        let snap = format!("snap-{}", random_hex(15));
        let marker = self.begin(&snap)?;
        info!("snapshot of {cid} as {snap} ({} metadata keys)", metadata.len());
        match self.virsh.run(["vol-clone", "--pool", self.pool(), cid.as_str(), snap.as_str()]) {
            Ok(_) => {}
            // attached to a running VM: QEMU holds the image lock, so let QEMU copy it (block job)
            Err(e) if e.output().contains("lock") => self.snapshot_live(cid, &snap)?,
            Err(e) => return Err(DriverError::failed(format!("cannot copy {cid} into snapshot {snap}"), e)),
        }
        marker.commit();
        SnapshotCid::new(snap).map_err(DriverError::Other)
    }

    fn delete_snapshot(&self, cid: &SnapshotCid) -> DriverResult<()> {
        self.reap();
        if !is_ours(cid.as_str(), "snap-", 15) {
            return Err(DriverError::SnapshotNotFound(format!("{cid} (not a snapshot CID of this CPI)")));
        }
        self.vol_delete(cid.as_str())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemcell_cids() {
        assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-os"), Some(StemcellKind { family: Family::OpenStack, efi: false, format: "qcow2" }));
        assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-osraw").unwrap().format, "raw");
        assert!(parse_stemcell_cid("sc-0123456789abcdef-vsefi").unwrap().efi);
        assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-xx"), None);
        assert_eq!(parse_stemcell_cid("sc-../../etc-os"), None);
        assert_eq!(parse_stemcell_cid("sc-0123456789ABCDEF-os"), None);
    }

    #[test]
    fn ours() {
        assert!(is_ours("disk-0123456789abcde", "disk-", 15));
        assert!(!is_ours("disk-0123456789abcd/", "disk-", 15));
        assert!(!is_ours("disk-../0123456789ab", "disk-", 15));
        assert_eq!(format!("disk-{}", random_hex(15)).len(), 20);
    }

    #[test]
    fn hints() {
        assert_eq!(hint_for(Family::Vsphere, 2), json!("2"));
        assert_eq!(hint_for(Family::OpenStack, 3), json!({"path": "/dev/sdd"}));
    }

    #[test]
    fn config_validation() {
        let c: LibvirtConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!((c.uri.as_str(), c.pool.as_str(), c.domain_type.as_str()), ("qemu:///system", "default", "kvm"));
        c.validate().unwrap();
        let c: LibvirtConfig = serde_json::from_value(json!({"virsh": "virsh"})).unwrap();
        assert!(c.validate().unwrap_err().contains("absolute"));
        let c: LibvirtConfig = serde_json::from_value(json!({"domain_type": "xen"})).unwrap();
        assert!(c.validate().is_err());
    }
}
