//! The `ovftool` stand-in: OVF to VMX (a stemcell's import) and VMX to VMX (a full copy).
use super::{read_vmx, remap_disks, set, write_vmx, Ctx, QEMU_IMG};
use std::fs;
use std::path::Path;
use std::process::{exit, Command};

/// What ovftool was asked: the options that matter here and the two locators.
struct OvfArgs {
    name: Option<String>,
    from_vmx: bool,
    extra_config: bool,
    pos: Vec<String>,
}

pub(super) fn ovftool(_ctx: &Ctx, args: Vec<String>) {
    let o = ovftool_args(&args);
    let [src, dst] = o.pos.as_slice() else {
        println!("Error: Expected a source and a target locator\nCompleted with errors");
        exit(1)
    };
    if o.from_vmx {
        ovftool_copy_vmx(src, dst, o.name)
    } else {
        ovftool_import(src, dst, o.name, o.extra_config)
    }
}

fn ovftool_args(args: &[String]) -> OvfArgs {
    let mut o = OvfArgs { name: None, from_vmx: false, extra_config: false, pos: Vec::new() };
    for a in args {
        if let Some(n) = a.strip_prefix("--name=") {
            o.name = Some(n.to_string());
        } else if a == "--sourceType=VMX" {
            o.from_vmx = true;
        } else if matches!(
            a.as_str(),
            "--allowExtraConfig" | "--allowAllExtraConfig" | "--allowExtraConfig=true" | "--allowAllExtraConfig=true"
        ) {
            o.extra_config = true;
        } else if matches!(a.as_str(), "--sourceType=OVF" | "--targetType=VMX" | "--acceptAllEulas" | "-q" | "--quiet")
        {
        } else if a.starts_with('-') {
            // [OVF] unknown options are refused
            println!("Error: Unknown option: '{}'\nCompleted with errors", a.trim_start_matches('-'));
            exit(1)
        } else {
            o.pos.push(a.clone());
        }
    }
    o
}

/// [OVF] The target must not exist yet.
fn ovftool_target(dst: &str) {
    println!("Opening VMX target: {dst}");
    if Path::new(dst).exists() {
        println!("Error: Duplicate name: {dst}\nCompleted with errors");
        exit(1)
    }
}

/// The VM's name: `--name`, else the target's file name without its extension.
fn vm_name(name: Option<String>, dst: &str) -> String {
    name.unwrap_or_else(|| Path::new(dst).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
}

/// The value of attribute `key` (`key="…"`) in the text of one element.
fn attr_in(el: &str, key: &str) -> Option<String> {
    let k = el.find(&format!("{key}=\""))? + key.len() + 2;
    Some(el[k..].split('"').next()?.to_string())
}

/// [OVF] OVF to VMX: the disk converted to `<name>-disk1.vmdk`, the VMX ovftool writes for a stemcell.
fn ovftool_import(src: &str, dst: &str, name: Option<String>, extra_config: bool) {
    println!("Opening OVF source: {src}");
    let Ok(ovf) = fs::read_to_string(src) else {
        println!("Error: Failed to open file: {src}\nCompleted with errors");
        exit(1)
    };
    ovftool_target(dst);
    let attr = |tag: &str, key: &str| -> Option<String> {
        let rest = &ovf[ovf.find(tag)?..];
        attr_in(&rest[..rest.find('>')?], key)
    };
    let href = attr("<File ", "ovf:href").unwrap_or_default();
    let src_disk = Path::new(src).parent().unwrap_or(Path::new(".")).join(&href);
    if href.is_empty() || !src_disk.is_file() {
        println!("Error: Failed to open disk: {}\nCompleted with errors", src_disk.display());
        exit(1)
    }
    let vm_name = vm_name(name, dst);
    let dst_dir = Path::new(dst).parent().unwrap_or(Path::new("/"));
    let disk_name = format!("{vm_name}-disk1.vmdk");
    let ok = Command::new(QEMU_IMG)
        .args(["convert", "-q", "-f", "vmdk", "-O", "vmdk", "-o", "adapter_type=lsilogic,subformat=monolithicSparse"])
        .arg(&src_disk)
        .arg(dst_dir.join(&disk_name))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("Error: Failed to convert disk: {}\nCompleted with errors", src_disk.display());
        exit(1)
    }
    let mut kv = ovf_vmx(&ovf, &vm_name, &disk_name);
    // [OVF] raw .vmx keys from vmw:ExtraConfig: only when allowed, else skipped with a warning
    let mut skipped = Vec::new();
    for el in ovf.split("<vmw:ExtraConfig").skip(1).filter_map(|r| r.split('>').next()) {
        let (Some(k), Some(v)) = (attr_in(el, "vmw:key"), attr_in(el, "vmw:value")) else { continue };
        if extra_config {
            set(&mut kv, &k, &v);
        } else {
            skipped.push(k);
        }
    }
    println!("Writing VMX file: {dst}");
    write_vmx(dst, &kv);
    if !skipped.is_empty() {
        println!("Warning:");
        for k in skipped {
            println!(" - ExtraConfig option '{k}' is not allowed, will skip it.");
        }
    }
    println!("Transfer Completed\nCompleted successfully");
}

/// [OVF] The VMX ovftool writes for a vSphere stemcell, including keys a struct-based editor drops: the
/// hardware version and firmware of the OVF, the disk on SCSI, a CD-ROM on SATA.
fn ovf_vmx(ovf: &str, vm_name: &str, disk_name: &str) -> Vec<(String, String)> {
    let efi = ovf.contains("vmw:value=\"efi\"");
    let hw =
        ovf.split("<vssd:VirtualSystemType>vmx-").nth(1).and_then(|r| r.split('<').next()).unwrap_or("13").to_string();
    let mut kv: Vec<(String, String)> = [
        (".encoding", "UTF-8"),
        ("config.version", "8"),
        ("virtualHW.version", hw.as_str()),
        ("nvram", &format!("{vm_name}.nvram")),
        ("pciBridge0.present", "TRUE"),
        ("vmci0.present", "TRUE"),
        ("floppy0.present", "FALSE"),
        ("memSize", "512"),
        ("scsi0.virtualDev", "lsilogic"),
        ("scsi0.present", "TRUE"),
        ("sata0.present", "TRUE"),
        ("sata0:0.deviceType", "cdrom-raw"),
        ("sata0:0.fileName", "auto detect"),
        ("sata0:0.autodetect", "TRUE"),
        ("sata0:0.startConnected", "FALSE"),
        ("sata0:0.present", "TRUE"),
        ("scsi0:0.fileName", disk_name),
        ("scsi0:0.present", "TRUE"),
        ("displayName", vm_name),
        ("guestOS", "ubuntu-64"),
        ("disk.enableUUID", "TRUE"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if efi {
        kv.insert(4, ("firmware".into(), "efi".into()));
    }
    kv
}

/// [OVF] VMX to VMX: a full copy, every disk converted to `<name>-diskN.vmdk` beside the target.
fn ovftool_copy_vmx(src: &str, dst: &str, name: Option<String>) {
    println!("Opening VMX source: {src}");
    if !Path::new(src).is_file() {
        println!("Error: Failed to open file: {src}\nCompleted with errors");
        exit(1)
    }
    ovftool_target(dst);
    let vm_name = vm_name(name, dst);
    let dst_dir = Path::new(dst).parent().unwrap_or(Path::new("/"));
    let mut kv = read_vmx(src);
    let copied = remap_disks(
        src,
        &mut kv,
        dst_dir,
        |n| format!("{vm_name}-disk{n}.vmdk"),
        |from, to| {
            Command::new(QEMU_IMG)
                .args(["convert", "-q", "-f", "vmdk", "-O", "vmdk"])
                .arg(from)
                .arg(to)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        },
    );
    if let Err(from) = copied {
        println!("Error: Failed to open disk: {from}\nCompleted with errors");
        exit(1)
    }
    set(&mut kv, "displayName", &vm_name);
    println!("Writing VMX file: {dst}");
    write_vmx(dst, &kv);
    println!("Transfer Completed\nCompleted successfully");
}
