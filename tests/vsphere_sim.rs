//! The vSphere simulator as a test peer (shared by the integration tests and `benches/vsphere.rs`):
//! finds or builds `target/vcsim` with `tools/vcsim/build.sh` (or `../shared/tools/vcsim/build.sh`), starts one per test on a free
//! port with its own datastore directory, and stops it (by its own pid) when dropped. Also builds
//! stemcell images: a gzipped tar with an OVF and a VMDK, as vSphere stemcells carry them.
#![allow(dead_code)]
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the simulator binary is: `$VCSIM` (any build), else the patched simulator
/// ([`vcsim_patched_binary`], more faithful to vSphere where vmcpi's calls meet its patches) unless
/// `VMCPI_VCSIM=stock`, else the stock `<crate>/target/vcsim` (built on first use when the build script is
/// beside the repository).
pub fn vcsim_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VCSIM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    if std::env::var("VMCPI_VCSIM").map_or(true, |v| v != "stock") {
        if let Some(p) = vcsim_patched_binary() {
            return Some(p);
        }
    }
    stock_vcsim_binary()
}

/// The stock simulator, `<crate>/target/vcsim` (built on first use when the build script is beside the
/// repository).
pub fn stock_vcsim_binary() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/vcsim");
    if bin.is_file() {
        return Some(bin);
    }
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if bin.is_file() {
        return Some(bin);
    }
    for script in [root.join("tools/vcsim/build.sh"), root.join("../shared/tools/vcsim/build.sh")] {
        if script.is_file() {
            let ok = Command::new("bash").arg(&script).arg(&bin).status().map(|s| s.success()).unwrap_or(false);
            if ok && bin.is_file() {
                return Some(bin);
            }
        }
    }
    None
}

/// The patched simulator (govmomi 0.24's vcsim with the fidelity patches of the vsphere-cpi kit in
/// `../shared/tools/vsphere-cpi`): `$VCSIM_PATCHED`, else `<crate>/target/vcsim-patched`, built (or rebuilt
/// when the kit changed) by `tools/vcsim/build-patched.sh`; `None` when neither works (no kit).
pub fn vcsim_patched_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VCSIM_PATCHED") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/vcsim-patched");
    static BUILD: std::sync::Mutex<Option<bool>> = std::sync::Mutex::new(None);
    let mut built = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if built.is_none() {
        // the script is quick when the binary is up to date; once per process
        let ok = Command::new("bash")
            .arg(root.join("tools/vcsim/build-patched.sh"))
            .arg(&bin)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        *built = Some(ok);
    }
    (*built == Some(true) && bin.is_file()).then_some(bin)
}

/// A running simulator.
pub struct Vcsim {
    child: Child,
    /// Its binary.
    pub bin: PathBuf,
    pub url: String,
    pub model: &'static str,
    pub dir: tempfile::TempDir,
    pub cert: Option<PathBuf>,
    pub password: String,
}

impl Vcsim {
    /// `model`: `vpx` (vCenter, datacenter `DC0`) or `esx` (standalone host, `ha-datacenter`).
    pub fn start(bin: &Path, model: &'static str, tls: bool) -> Vcsim {
        Self::start_with(bin, model, tls, "pass")
    }

    /// With a login password of the test's choosing.
    pub fn start_with(bin: &Path, model: &'static str, tls: bool, password: &str) -> Vcsim {
        Self::start_in(bin, model, tls, password, tempfile::tempdir().unwrap())
    }

    /// With its files (the datastores, its URL and certificate) in `dir`.
    pub fn start_in(bin: &Path, model: &'static str, tls: bool, password: &str, dir: tempfile::TempDir) -> Vcsim {
        let url_file = dir.path().join("url");
        let cert = dir.path().join("cert.pem");
        let mut cmd = Command::new(bin);
        cmd.args(["-listen", "127.0.0.1:0", "-model", model, "-password", password])
            .arg("-url-file")
            .arg(&url_file)
            .arg("-ds-dir")
            .arg(dir.path().join("ds"));
        if tls {
            cmd.args(["-tls", "on"]).arg("-cert-file").arg(&cert);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start vcsim");
        let started = Instant::now();
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(&url_file) {
                if !u.trim().is_empty() {
                    // the URL carries user:password@; the CPI gets them from its config instead
                    let u = u.trim();
                    break match (u.find("://"), u.rfind('@')) {
                        (Some(i), Some(at)) if at > i => format!("{}{}", &u[..i + 3], &u[at + 1..]),
                        _ => u.to_string(),
                    };
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "vcsim did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        Vcsim {
            child,
            bin: bin.to_path_buf(),
            url,
            model,
            dir,
            cert: tls.then_some(cert),
            password: password.to_string(),
        }
    }

    /// Whether this is the patched simulator (which, among others, keeps virtual disks' capacity).
    pub fn patched(&self) -> bool {
        vcsim_patched_binary().is_some_and(|p| p == self.bin)
    }

    pub fn datacenter(&self) -> &'static str {
        if self.model == "esx" {
            "ha-datacenter"
        } else {
            "DC0"
        }
    }

    /// The driver section for this simulator.
    pub fn driver(&self) -> Value {
        json!({"kind": "vsphere", "host": self.url, "user": "user", "password": self.password, "datacenter": self.datacenter()})
    }

    pub fn config(&self) -> Value {
        let mut driver = self.driver();
        driver["state_dir"] = json!(self.dir.path().join("state"));
        json!({"driver": driver, "agent": {"mbus": "nats://nats:nats-secret-pw@10.0.0.6:4222", "ntp": ["0.pool.ntp.org"]}})
    }

    /// The datastore's directory on this machine (the simulator keeps files there).
    pub fn datastore_dir(&self) -> PathBuf {
        let ds = self.dir.path().join("ds");
        std::fs::read_dir(&ds)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .expect("datastore dir")
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OVF like a vSphere stemcell's (LSI Logic SCSI root disk, EFI firmware, a CD-ROM), with the CD-ROM
/// on IDE, or on SATA as current stemcells have it when `sata` is set.
pub fn stemcell_ovf(sata: bool, disk_bytes: u64) -> String {
    let cdrom = if sata {
        r#"<Item><rasd:Address>0</rasd:Address><rasd:ElementName>SATA Controller 0</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:AutomaticAllocation>false</rasd:AutomaticAllocation><rasd:ElementName>CD-ROM 1</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>5</rasd:Parent><rasd:ResourceSubType>vmware.cdrom.remotepassthrough</rasd:ResourceSubType><rasd:ResourceType>15</rasd:ResourceType></Item>"#
    } else {
        r#"<Item><rasd:Address>1</rasd:Address><rasd:ElementName>IDE Controller 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:AutomaticAllocation>false</rasd:AutomaticAllocation><rasd:ElementName>CD-ROM 1</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>5</rasd:Parent><rasd:ResourceSubType>vmware.cdrom.remotepassthrough</rasd:ResourceSubType><rasd:ResourceType>15</rasd:ResourceType></Item>"#
    };
    let generated = vmcpi::driver::vsphere::import::generated_ovf("image-disk1.vmdk", disk_bytes, disk_bytes, true);
    generated.replace("      <vmw:Config", &format!("      {cdrom}\n      <vmw:Config"))
}

/// A stream-optimised VMDK (10 MiB, or as large as its grains need) with about `bytes` of grain payload (not
/// deflate data: the simulator discards NFC uploads and vmcpi checks only the stream's structure on its way
/// there); `vmdk(0)` has no grain.
pub fn vmdk(bytes: usize) -> Vec<u8> {
    let payload = vec![0xabu8; 65000];
    let capacity = (10u64 << 20).max(bytes.div_ceil(payload.len()) as u64 * 65536);
    let mut w = vmcpi::diskimage::vmdk::StreamWriter::new(Vec::new(), capacity, "image-disk1.vmdk").unwrap();
    let mut left = bytes;
    let mut offset = 0;
    while left > 0 {
        let n = left.min(payload.len());
        w.record(offset, &payload[..n]).unwrap();
        left -= n;
        offset += w.grain_bytes();
    }
    w.finish().unwrap()
}

/// Writes a stemcell `image` (gzipped tar of image.ovf, image.mf, image-disk1.vmdk) into `dir`.
pub fn stemcell_image(dir: &Path, sata: bool) -> PathBuf {
    let disk = vmdk(200_000);
    let ovf = stemcell_ovf(sata, disk.len() as u64);
    let path = dir.join("image");
    let f = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, data) in [
        ("image.ovf", ovf.as_bytes()),
        ("image.mf", b"SHA1(image.ovf)= 0\n".as_slice()),
        ("image-disk1.vmdk", &disk[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, name, data).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
    path
}
