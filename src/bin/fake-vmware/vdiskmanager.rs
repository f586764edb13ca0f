//! The `vmware-vdiskmanager` stand-in: create (`-c`) and expand (`-x`) a disk.
use super::{lck, Ctx, QEMU_IMG};
use std::fs;
use std::path::Path;
use std::process::{exit, Command};

fn size_mb(s: &str) -> Option<u64> {
    let s = s.strip_suffix("MB")?;
    s.parse().ok()
}

pub(super) fn vdiskmanager(_ctx: &Ctx, args: Vec<String>) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["-c", "-s", size, "-a", "lsilogic" | "buslogic" | "ide", "-t", "0" | "1" | "2" | "3", path] => {
            let Some(mb) = size_mb(size) else {
                println!("Invalid disk size: {size}");
                exit(1)
            };
            if Path::new(path).exists() {
                println!("Failed to create disk: The file already exists (0x3e8)");
                exit(1)
            }
            let ok = Command::new(QEMU_IMG)
                .args([
                    "create",
                    "-q",
                    "-f",
                    "vmdk",
                    "-o",
                    "adapter_type=lsilogic,subformat=monolithicSparse",
                    path,
                    &format!("{mb}M"),
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                println!(
                    "Failed to create disk: A file access error occurred on the host or guest operating system (0xc)"
                );
                exit(1)
            }
            println!("Creating disk '{path}'\n  Create: 100% done.\nVirtual disk creation successful.");
        }
        ["-x", size, path] => {
            let Some(mb) = size_mb(size) else {
                println!("Invalid disk size: {size}");
                exit(1)
            };
            if !Path::new(path).is_file() {
                println!("Failed to expand the disk '{path}': A file was not found (0x4)");
                exit(1)
            }
            if Path::new(&lck(path)).exists() {
                println!("Failed to expand the disk '{path}': The file is already in use (0xf)");
                exit(1)
            }
            let tmp = format!("{path}.fake-grow.vmdk");
            let ok = Command::new(QEMU_IMG)
                .args(["create", "-q", "-f", "vmdk", &tmp, &format!("{mb}M")])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
                && Command::new(QEMU_IMG)
                    .args(["convert", "-q", "-n", "-f", "vmdk", "-O", "vmdk", path, &tmp])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
                && fs::rename(&tmp, path).is_ok();
            if !ok {
                println!("Failed to expand the disk '{path}': A file access error occurred on the host or guest operating system (0xc)");
                exit(1)
            }
            println!("  Grow: 100% done.\nDisk expansion completed successfully.");
        }
        _ => {
            println!("VMware Virtual Disk Manager - build fake_vmware.\nUsage: vmware-vdiskmanager OPTIONS <disk-name> | <mount-point>");
            exit(1)
        }
    }
}
