//! A stand-in for VMware's `vmrun`, `ovftool` and `vmware-vdiskmanager`, for tests only (VMware's programs
//! cannot run here). Called through a symlink named `vmrun`, `ovftool` or `vmware-vdiskmanager` (or with that
//! name as first argument). It keeps real state on disk, accepts exactly the command lines the vmrun driver
//! documents (docs/vmrun.md; the same as bosh-vmrun-cpi, cpi-protocol.md §6.3), prints the real tools'
//! output and fails the way they fail. Where each behaviour comes from is cited beside it:
//!
//! - [VIX]   VMware VIX API reference, error codes and texts (`vix.h` doc comments, e.g. VIX_E_FILE_ALREADY_LOCKED
//!   "The file is already in use."); vmrun prints `Error: <text>` on stdout and exits 255.
//! - [VMRUN] `vmrun` usage text and output: `list` prints "Total running VMs: N" then one .vmx path per line;
//!   `listSnapshots` prints "Total snapshots: N" then one name per line; authentication flags
//!   (-T, -gu, -gp) come before the command.
//! - [VR]    bosh-vmrun-cpi-release (cpi-protocol.md §6): command lines, "This VM is in use"-style failures
//!   when files are locked, and that a running VM's .vmx is VMware's (edits are lost).
//! - [WS]    VMware Workstation behaviour: a powered-on VM holds `<file>.lck` directories next to its .vmx
//!   and disks; the running VM's configuration is written back to the .vmx at power-off;
//!   `runtimeConfig` variables written with `writeVariable` persist; "Cannot open the disk '…' or one
//!   of the snapshot disks it depends on." when a disk is missing.
//! - [OVF]   ovftool output lines ("Opening OVF source: …", "Completed successfully") and the VMX it writes
//!   for a vSphere stemcell (hardware v13, EFI, SATA CD-ROM, `<name>-disk1.vmdk`). `vmw:ExtraConfig`
//!   elements of the OVF (raw .vmx keys) are written into the .vmx only with `--allowExtraConfig` or
//!   `--allowAllExtraConfig` (OVF Tool User's Guide: "These options are a security risk as they control
//!   low-level and potential unsafe options on the VM"); without, each is skipped with the warning
//!   "ExtraConfig option '<key>' is not allowed, will skip it." (ovftool's text, as users report it).
//!
//! Simplifications (stated, not hidden): there is no guest; "VMware Tools" in a guest exist only when the
//! test writes `STATE/guest-tools` (`user:password`); snapshots are recorded in the `.vmsd` file without
//! making redo logs; linked clones are real qemu-img VMDK overlays whose parent is the stemcell's disk.
//!
//! STATE is `<directory of the symlink>/fake-vmware-state/`: `running` (the power registry), `log` (every
//! command line, for tests), `hooks/delay-<command>` (seconds to sleep half-way, after writing
//! `hooks/started-<command>`), `guest-tools`, `guest-exit`, `guest-log`.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

// the crate root is this file, so its modules are named by path: src/bin/fake-vmware/
#[path = "fake-vmware/ovftool.rs"]
mod ovftool;
#[path = "fake-vmware/vdiskmanager.rs"]
mod vdiskmanager;
use ovftool::ovftool;
use vdiskmanager::vdiskmanager;

const QEMU_IMG: &str = "/usr/bin/qemu-img";

struct Ctx {
    state: PathBuf,
}

fn die_vmrun(msg: &str) -> ! {
    // [VIX]/[VMRUN]: errors on stdout as "Error: …", exit status 255
    println!("Error: {msg}");
    exit(255)
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = PathBuf::from(args.remove(0));
    let mut tool = argv0.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !matches!(tool.as_str(), "vmrun" | "ovftool" | "vmware-vdiskmanager") && !args.is_empty() {
        tool = args.remove(0);
    }
    let dir = argv0.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let state = dir.join("fake-vmware-state");
    let _ = fs::create_dir_all(state.join("hooks"));
    let ctx = Ctx { state };
    ctx.log(&tool, &args);
    match tool.as_str() {
        "vmrun" => vmrun(&ctx, args),
        "ovftool" => ovftool(&ctx, args),
        "vmware-vdiskmanager" => vdiskmanager(&ctx, args),
        other => {
            eprintln!("fake_vmware: call me as vmrun, ovftool or vmware-vdiskmanager, not {other:?}");
            exit(2)
        }
    }
}

impl Ctx {
    fn log(&self, tool: &str, args: &[String]) {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(self.state.join("log")) {
            let _ = writeln!(f, "{tool} {}", args.join(" "));
        }
    }

    /// Sleeps half-way through `cmd` when the test asked for it (to cut a connection mid-call).
    fn hook(&self, cmd: &str) {
        if let Ok(s) = fs::read_to_string(self.state.join("hooks").join(format!("delay-{cmd}"))) {
            let _ = fs::write(self.state.join("hooks").join(format!("started-{cmd}")), std::process::id().to_string());
            let secs: f64 = s.trim().parse().unwrap_or(1.0);
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        }
    }

    /// Runs `f` on the power registry under an exclusive lock (parallel vmrun processes). The lock is a
    /// directory (std only, so the tests can build this file with plain rustc); one left by a killed
    /// process is taken over after 10 s.
    fn registry<T>(&self, f: impl FnOnce(&mut Vec<String>) -> T) -> T {
        let lock = self.state.join("registry.lck");
        let started = std::time::Instant::now();
        while fs::create_dir(&lock).is_err() {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                let _ = fs::remove_dir(&lock);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let path = self.state.join("running");
        let mut list: Vec<String> = fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let out = f(&mut list);
        let tmp = self.state.join(format!("running.{}", std::process::id()));
        let _ = fs::write(&tmp, list.iter().map(|l| format!("{l}\n")).collect::<String>());
        let _ = fs::rename(&tmp, &path);
        let _ = fs::remove_dir(&lock);
        out
    }

    fn running(&self, vmx: &str) -> bool {
        self.registry(|l| l.iter().any(|p| p == vmx))
    }

    fn guest_tools(&self) -> Option<String> {
        fs::read_to_string(self.state.join("guest-tools")).ok().map(|s| s.trim().to_string())
    }
}

// ---- a minimal .vmx reader/writer (key = "value", order kept) ---------------------------------------------

fn read_vmx(path: &str) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

fn write_vmx(path: &str, kv: &[(String, String)]) {
    let text: String = kv.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect();
    fs::write(path, text).expect("write vmx");
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}

fn set(kv: &mut Vec<(String, String)>, key: &str, val: &str) {
    match kv.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
        Some(e) => e.1 = val.to_string(),
        None => kv.push((key.to_string(), val.to_string())),
    }
}

/// Disk files of present, non-CD-ROM devices, resolved against the .vmx's directory.
fn disks(vmx: &str, kv: &[(String, String)]) -> Vec<String> {
    let dir = Path::new(vmx).parent().unwrap_or(Path::new("/"));
    kv.iter()
        .filter_map(|(k, v)| {
            let dev = k.strip_suffix(".fileName").or_else(|| k.strip_suffix(".filename"))?;
            if !["scsi", "sata", "ide", "nvme"].iter().any(|b| dev.starts_with(b)) || !v.ends_with(".vmdk") {
                return None;
            }
            if get(kv, &format!("{dev}.present")).is_some_and(|p| p.eq_ignore_ascii_case("false")) {
                return None;
            }
            Some(if v.starts_with('/') { v.clone() } else { dir.join(v).display().to_string() })
        })
        .collect()
}

fn lck(path: &str) -> String {
    format!("{path}.lck")
}

/// Points every disk of `kv` (the .vmx `src`: keys `….fileName` with a `.vmdk` value) at a new file in
/// `dst_dir`, `name_of(n)` for the n-th (from 1), which `make(source disk, new file)` makes. Stops at the
/// first disk `make` fails for, and returns that source disk.
fn remap_disks(
    src: &str,
    kv: &mut [(String, String)],
    dst_dir: &Path,
    name_of: impl Fn(usize) -> String,
    make: impl Fn(&str, &Path) -> bool,
) -> Result<(), String> {
    let src_disks = disks(src, kv);
    let mut n = 0;
    for (k, v) in kv.iter_mut() {
        if !k.to_ascii_lowercase().ends_with(".filename") || !v.ends_with(".vmdk") {
            continue;
        }
        let from = src_disks.get(n).cloned().unwrap_or_default();
        n += 1;
        let to = name_of(n);
        if !make(&from, &dst_dir.join(&to)) {
            return Err(from);
        }
        *v = to;
    }
    Ok(())
}

// ---- vmrun ------------------------------------------------------------------------------------------------

fn vmrun(ctx: &Ctx, mut args: Vec<String>) {
    let (host_type, guest) = vmrun_flags(&mut args);
    if args.is_empty() {
        // [VMRUN] no command: usage, non-zero
        println!("vmrun version 1.17.0 (fake_vmware)\n\nUsage: vmrun [AUTHENTICATION-FLAGS] COMMAND [PARAMETERS]");
        exit(255)
    }
    let cmd = args.remove(0);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match (cmd.as_str(), a.as_slice()) {
        ("list", []) => {
            let list = ctx.registry(|l| l.clone());
            println!("Total running VMs: {}", list.len());
            for p in list {
                println!("{p}");
            }
        }
        ("start", [vmx] | [vmx, "gui" | "nogui"]) => start(ctx, vmx),
        ("stop", [vmx] | [vmx, "hard" | "soft"]) => stop(ctx, vmx, a.get(1) == Some(&"soft")),
        ("reset", [vmx] | [vmx, "hard" | "soft"]) => reset(ctx, vmx, a.get(1) == Some(&"soft")),
        ("deleteVM", [vmx]) => delete_vm(ctx, vmx),
        ("clone", [src, dst, mode @ ("full" | "linked"), rest @ ..]) => clone(ctx, &host_type, src, dst, mode, rest),
        ("snapshot", [_, _]) if host_type == "player" => {
            die_vmrun("The operation is not supported for the specified parameters")
        } // [VR] Player has no snapshots
        ("snapshot", [vmx, name]) => snapshot(ctx, vmx, name),
        ("listSnapshots", [vmx]) => {
            require_vm(vmx);
            let names = snapshots(vmx);
            println!("Total snapshots: {}", names.len());
            for n in names {
                println!("{n}");
            }
        }
        ("writeVariable", [vmx, "runtimeConfig", name, value]) => write_variable(ctx, vmx, name, value),
        ("readVariable", [vmx, "runtimeConfig", name]) => {
            require_vm(vmx);
            if !ctx.running(vmx) {
                die_vmrun("The virtual machine needs to be powered on");
            }
            println!("{}", get(&read_vmx(&format!("{}/config.vmx", lck(vmx))), name).unwrap_or(""));
        }
        ("listProcessesInGuest", [vmx]) => {
            guest_op(ctx, vmx, &guest);
            println!("Process list: 2\npid=1, owner=root, cmd=/sbin/init\npid=812, owner=root, cmd=/var/vcap/bosh/bin/bosh-agent");
        }
        ("copyFileFromHostToGuest", [vmx, host, guest_path]) => {
            guest_op(ctx, vmx, &guest);
            copy_to_guest(ctx, host, guest_path);
        }
        ("runProgramInGuest", [vmx, program, rest @ ..]) => {
            guest_op(ctx, vmx, &guest);
            run_in_guest(ctx, program, rest);
        }
        _ => die_vmrun(&format!("Unrecognized command: {cmd}")),
    }
}

/// [VMRUN] The authentication flags that precede the command, taken off `args`: the host type and the
/// guest's user and password (both given, or none).
fn vmrun_flags(args: &mut Vec<String>) -> (String, Option<(String, String)>) {
    let mut host_type = "ws".to_string();
    let (mut gu, mut gp) = (None, None);
    while let Some(first) = args.first().cloned() {
        match first.as_str() {
            "-T" | "-gu" | "-gp" => {
                if args.len() < 2 {
                    die_vmrun("Invalid argument");
                }
                let v = args.remove(1);
                args.remove(0);
                match first.as_str() {
                    "-T" => {
                        if !matches!(
                            v.as_str(),
                            "ws" | "fusion" | "player" | "server" | "server1" | "esx" | "vc" | "ws-shared"
                        ) {
                            die_vmrun("Invalid host type");
                        }
                        host_type = v;
                    }
                    "-gu" => gu = Some(v),
                    _ => gp = Some(v),
                }
            }
            s if s.starts_with('-') => die_vmrun(&format!("Unrecognized option: {s}")),
            _ => break,
        }
    }
    let guest = match (gu, gp) {
        (Some(u), Some(p)) => Some((u, p)),
        _ => None,
    };
    (host_type, guest)
}

fn reset(ctx: &Ctx, vmx: &str, soft: bool) {
    require_vm(vmx);
    if !ctx.running(vmx) {
        die_vmrun("The virtual machine needs to be powered on"); // [VIX] VIX_E_VM_NOT_RUNNING
    }
    if soft && ctx.guest_tools().is_none() {
        die_vmrun("Guest tools is not running."); // [VIX] VIX_E_TOOLS_NOT_RUNNING
    }
}

fn write_variable(ctx: &Ctx, vmx: &str, name: &str, value: &str) {
    require_vm(vmx);
    if !ctx.running(vmx) {
        die_vmrun("The virtual machine needs to be powered on"); // [VIX] runtimeConfig needs a running VM
    }
    // [WS] the running VM's configuration changes and is persisted to the .vmx
    for path in [vmx.to_string(), format!("{}/config.vmx", lck(vmx))] {
        let mut kv = read_vmx(&path);
        set(&mut kv, name, value);
        write_vmx(&path, &kv);
    }
}

fn copy_to_guest(ctx: &Ctx, host: &str, guest_path: &str) {
    let data = fs::read(host).unwrap_or_else(|_| die_vmrun("A file was not found")); // [VIX] VIX_E_FILE_NOT_FOUND
    let store = ctx.state.join("guest-fs");
    let _ = fs::create_dir_all(&store);
    let _ = fs::write(store.join(guest_path.replace('/', "_")), data);
}

fn run_in_guest(ctx: &Ctx, program: &str, rest: &[&str]) {
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(ctx.state.join("guest-log")) {
        let _ = writeln!(f, "{program} {}", rest.join(" "));
    }
    let code: i32 =
        fs::read_to_string(ctx.state.join("guest-exit")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if code != 0 {
        // [VMRUN] a guest program's failure
        println!("Guest program exited with non-zero exit code: {code}");
        exit(255)
    }
}

fn require_vm(vmx: &str) {
    if !Path::new(vmx).is_file() {
        // [VMRUN]/[VIX] VIX_E_VM_NOT_FOUND as vmrun words it
        die_vmrun(&format!("Cannot open VM: {vmx}, The virtual machine cannot be found"));
    }
}

fn guest_op(ctx: &Ctx, vmx: &str, guest: &Option<(String, String)>) {
    require_vm(vmx);
    if !ctx.running(vmx) {
        die_vmrun("The virtual machine needs to be powered on"); // [VIX] VIX_E_VM_NOT_RUNNING
    }
    let Some(tools) = ctx.guest_tools() else {
        die_vmrun("Guest tools is not running."); // [VIX] VIX_E_TOOLS_NOT_RUNNING
    };
    let Some((u, p)) = guest else {
        die_vmrun("Invalid user name or password for the guest OS"); // [VMRUN] guest ops need -gu/-gp
    };
    if tools != format!("{u}:{p}") {
        die_vmrun("Authentication failure or insufficient permissions in guest operating system.");
        // [VIX] 3015
    }
}

fn start(ctx: &Ctx, vmx: &str) {
    require_vm(vmx);
    if ctx.running(vmx) {
        die_vmrun("The virtual machine should not be powered on. It appears to be running already.");
        // [VIX] 3007
    }
    let kv = read_vmx(vmx);
    // [WS] a VM whose files another process holds (GUI, a clone in progress) cannot start
    if Path::new(&lck(vmx)).exists() {
        die_vmrun("The file is already in use"); // [VIX] VIX_E_FILE_ALREADY_LOCKED
    }
    let ds = disks(vmx, &kv);
    for d in &ds {
        if !Path::new(d).is_file() {
            die_vmrun(&format!("Cannot open the disk '{d}' or one of the snapshot disks it depends on."));
            // [WS]
        }
        if Path::new(&lck(d)).exists() {
            die_vmrun(&format!(
                "Cannot open the disk '{d}' or one of the snapshot disks it depends on. Failed to lock the file"
            )); // [WS]
        }
    }
    if let Some(m) = get(&kv, "memsize") {
        if m.parse::<u64>().map_or(true, |m| m % 4 != 0) {
            die_vmrun("The operation is not supported for the specified parameters");
            // [WS] memsize must be a multiple of 4
        }
    }
    ctx.hook("start");
    // the VM runs first, then its locks appear: in VMware the VM's own process holds them, so a vmrun killed
    // half-way never leaves locks without a running VM (which would say "in use" forever); a running VM
    // whose locks are not all there yet is stopped as usual
    ctx.registry(|l| l.push(vmx.to_string()));
    let _ = fs::create_dir(lck(vmx));
    let _ = fs::copy(vmx, format!("{}/config.vmx", lck(vmx)));
    for d in &ds {
        let _ = fs::create_dir(lck(d));
    }
}

fn stop(ctx: &Ctx, vmx: &str, soft: bool) {
    require_vm(vmx);
    if !ctx.running(vmx) {
        die_vmrun("The virtual machine needs to be powered on"); // [VIX] VIX_E_VM_NOT_RUNNING
    }
    if soft && ctx.guest_tools().is_none() {
        die_vmrun("Guest tools is not running."); // [VIX] a soft stop asks the guest (VMware Tools)
    }
    ctx.hook("stop");
    // [WS] at power-off VMware writes its view of the configuration back: offline edits made while the
    // VM ran are lost
    let cfg = format!("{}/config.vmx", lck(vmx));
    let kv = read_vmx(&cfg);
    if !kv.is_empty() {
        let _ = fs::copy(&cfg, vmx);
    }
    for d in disks(vmx, &kv) {
        let _ = fs::remove_dir_all(lck(&d));
    }
    let _ = fs::remove_dir_all(lck(vmx));
    ctx.registry(|l| l.retain(|p| p != vmx));
}

fn delete_vm(ctx: &Ctx, vmx: &str) {
    require_vm(vmx);
    if ctx.running(vmx) {
        die_vmrun("The virtual machine should not be powered on. It appears to be running already.");
        // [VIX] 3007
    }
    if Path::new(&lck(vmx)).exists() {
        die_vmrun("The file is already in use"); // [VIX] VIX_E_FILE_ALREADY_LOCKED (e.g. GUI tab open)
    }
    ctx.hook("deleteVM");
    // [VIX] VIX_VMDELETE_DISK_FILES: every disk the VM references goes, wherever it lives
    for d in disks(vmx, &read_vmx(vmx)) {
        let _ = fs::remove_file(&d);
    }
    if let Some(dir) = Path::new(vmx).parent() {
        let _ = fs::remove_dir_all(dir);
    }
}

fn snapshots(vmx: &str) -> Vec<String> {
    let vmsd = vmx.replace(".vmx", ".vmsd");
    let kv = read_vmx(&vmsd);
    kv.iter()
        .filter(|(k, _)| k.starts_with("snapshot") && k.ends_with(".displayName"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn snapshot(ctx: &Ctx, vmx: &str, name: &str) {
    require_vm(vmx);
    if Path::new(&lck(vmx)).exists() && !ctx.running(vmx) {
        die_vmrun("The file is already in use");
    }
    let vmsd = vmx.replace(".vmx", ".vmsd");
    let mut kv = read_vmx(&vmsd);
    let n = snapshots(vmx).len();
    if n == 0 {
        set(&mut kv, ".encoding", "UTF-8");
    }
    // [WS] .vmsd layout: snapshotN.uid/displayName, snapshot.numSnapshots, snapshot.current
    let uid = n + 1;
    set(&mut kv, "snapshot.lastUID", &uid.to_string());
    set(&mut kv, "snapshot.current", &uid.to_string());
    set(&mut kv, &format!("snapshot{n}.uid"), &uid.to_string());
    set(&mut kv, &format!("snapshot{n}.displayName"), name);
    set(&mut kv, "snapshot.numSnapshots", &uid.to_string());
    write_vmx(&vmsd, &kv);
}

fn clone(ctx: &Ctx, host_type: &str, src: &str, dst: &str, mode: &str, rest: &[&str]) {
    if host_type == "player" {
        die_vmrun("The operation is not supported for the specified parameters");
        // [VR] Player cannot clone
    }
    require_vm(src);
    let mut snap = None;
    let mut name = None;
    for r in rest {
        if let Some(s) = r.strip_prefix("-snapshot=") {
            snap = Some(s.to_string());
        } else if let Some(n) = r.strip_prefix("-cloneName=") {
            name = Some(n.to_string());
        } else {
            die_vmrun(&format!("Unrecognized option: {r}"));
        }
    }
    let snaps = snapshots(src);
    match &snap {
        Some(s) if !snaps.contains(s) => die_vmrun(&format!("Invalid snapshot name '{s}'")),
        None if mode == "linked" && snaps.is_empty() => {
            die_vmrun("The virtual machine must have at least one snapshot to create a linked clone")
        }
        _ => {}
    }
    if Path::new(dst).exists() {
        die_vmrun("The file already exists"); // [VIX] VIX_E_FILE_ALREADY_EXISTS
    }
    // [WS]/[VR] the source is locked while it is cloned: a second clone of it at the same time fails.
    // [WS] a lock whose owner process is gone is stale and broken, as VMware does
    if fs::create_dir(lck(src)).is_err() {
        let owner =
            fs::read_to_string(format!("{}/clone.pid", lck(src))).ok().and_then(|p| p.trim().parse::<u32>().ok());
        let stale = owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if !stale {
            die_vmrun("The file is already in use"); // [VIX] VIX_E_FILE_ALREADY_LOCKED
        }
    }
    let _ = fs::write(format!("{}/clone.pid", lck(src)), std::process::id().to_string());
    let result = std::panic::catch_unwind(|| {
        let dst_dir = Path::new(dst).parent().unwrap_or(Path::new("/"));
        let _ = fs::create_dir_all(dst_dir);
        let mut kv = read_vmx(src);
        let stem = Path::new(dst).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let made = remap_disks(
            src,
            &mut kv,
            dst_dir,
            |n| format!("{stem}-cl{n}.vmdk"),
            |parent, child| {
                let st = if mode == "linked" {
                    Command::new(QEMU_IMG)
                        .args(["create", "-q", "-f", "vmdk", "-F", "vmdk", "-b"])
                        .arg(parent)
                        .arg(child)
                        .status()
                } else {
                    Command::new(QEMU_IMG).args(["convert", "-q", "-O", "vmdk"]).arg(parent).arg(child).status()
                };
                st.map(|s| s.success()).unwrap_or(false)
            },
        );
        if let Err(parent) = made {
            println!("Error: Cannot open the disk '{parent}' or one of the snapshot disks it depends on.");
            exit(255)
        }
        ctx.hook("clone");
        kv.retain(|(k, _)| !k.starts_with("uuid.") && !k.ends_with(".generatedAddress"));
        if let Some(n) = &name {
            set(&mut kv, "displayName", n);
        }
        write_vmx(dst, &kv);
    });
    let _ = fs::remove_dir_all(lck(src));
    if result.is_err() {
        exit(255)
    }
}
