//! The state directory on the CPI's host (in-flight markers, scratch space) is trusted only when nobody else
//! can change it, and the reaper of interrupted creates acts only on the names vmcpi makes and follows no
//! link. The libvirt daemon is the in-process fake (`vmcpi::libvirt_rpc::fake`, at `qemu:///session` through
//! `XDG_RUNTIME_DIR`), which records every call and the object it names (what matters is which names reach
//! it); the CPI, its state directory and the markers are real.
use crate::util::Cpi;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use vmcpi::libvirt_rpc::fake::{Dom, FakeDaemon};

struct Fake {
    tmp: tempfile::TempDir,
    daemon: FakeDaemon,
    runtime: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = tmp.path().join("run");
        let daemon = FakeDaemon::new().with_pool("p");
        daemon.listen(&runtime, false).unwrap();
        Fake { tmp, daemon, runtime }
    }
    fn cpi(&self, state: &Path) -> Cpi {
        let mut c = Cpi::with_config(&json!({"driver": {"kind": "libvirt", "uri": "qemu:///session", "pool": "p",
            "state_dir": state}, "agent": {"mbus": "nats://10.0.0.6:4222"}}));
        c.envs.push(("XDG_RUNTIME_DIR".into(), self.runtime.display().to_string()));
        c
    }
    /// The calls since the last look, one a line.
    fn log(&self) -> String {
        self.daemon.take_calls().join("\n")
    }
}

fn private(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A state dir owned by another user, open to everyone, or reached through a symbolic link: create_disk
/// fails with a message that names the problem, before any volume is made, and nothing is made there.
#[test]
fn a_state_dir_others_could_change_is_refused() {
    let fake = Fake::new();
    let root = fake.tmp.path();
    // owned by another user: as root, a directory given to nobody; otherwise /usr, which root owns
    let theirs = if unsafe { libc::geteuid() } == 0 {
        let d = root.join("theirs");
        private(&d);
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        d
    } else {
        PathBuf::from("/usr")
    };
    let open = root.join("open");
    private(&open);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let real = root.join("real");
    private(&real);
    std::os::unix::fs::symlink(&real, root.join("link")).unwrap();
    let outside = root.join("outside");
    private(&outside);
    let with_work_link = root.join("with-work-link");
    private(&with_work_link);
    std::os::unix::fs::symlink(&outside, with_work_link.join("inflight")).unwrap();
    for (state, says) in [
        (theirs.clone(), "owned by uid"),
        (open.clone(), "writable by its group or by others"),
        (root.join("link/state"), "symbolic link"),
        (root.join("link"), "symbolic link"),
        (with_work_link.clone(), "symbolic link"),
    ] {
        fake.log();
        let e = fake.cpi(&state).err("create_disk", json!([1024, {}, null]));
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(says), "{}: {msg}", state.display());
        let log = fake.log();
        assert!(!log.contains("STORAGE_VOL_CREATE_XML"), "{}: a volume was made:\n{log}", state.display());
    }
    assert!(!real.join("state").exists(), "a state dir was made through the link");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "markers were written through the link");
    assert!(!theirs.join("inflight").exists() && !open.join("inflight").exists());
}

/// Leftovers the reaper must not act on: a marker named `...lock` (its CID would be `..`, whose scratch
/// directory is the state dir itself), names of other shapes, a marker that is a link, and a `work`
/// directory that is a link to elsewhere. A live create's marker and scratch stay; an ordinary orphan is
/// still reaped.
#[test]
fn the_reaper_acts_only_on_its_own_names_and_follows_no_link() {
    let fake = Fake::new();
    let root = fake.tmp.path();
    let state = root.join("state");
    private(&state.join("inflight"));
    private(&state.join("work"));
    let outside = root.join("outside");
    private(&outside);
    // a live create: its marker is locked, its scratch in use
    let live = "vm-aaaaaaaaaaaaaaaaaaaa";
    let live_marker = std::fs::File::create(state.join(format!("inflight/{live}.lock"))).unwrap();
    live_marker.lock().unwrap();
    private(&state.join(format!("work/{live}")));
    std::fs::write(state.join(format!("work/{live}/image")), b"in use").unwrap();
    // names the reaper must leave alone
    for name in
        ["...lock", "..lock", "x.lock", "vm-0123.lock", "VM-bbbbbbbbbbbbbbbbbbbb.lock", "vm-$(id)cccccccccccc.lock"]
    {
        std::fs::write(state.join("inflight").join(name), b"").unwrap();
    }
    // a marker that is a link to a file outside
    std::fs::write(outside.join("victim"), b"keep me").unwrap();
    let linked = "disk-ddddddddddddddd";
    std::os::unix::fs::symlink(outside.join("victim"), state.join(format!("inflight/{linked}.lock"))).unwrap();

    let cpi = fake.cpi(&state);
    cpi.ok("create_disk", json!([1024, {}, null]));
    let log = fake.log();
    for bad in ["..", " x", "vm-0123", "VM-bbbb", "$(id)", linked] {
        assert!(!log.lines().any(|l| l.starts_with("STORAGE_VOL_") && l.contains(bad)), "reaped {bad}:\n{log}");
    }
    assert!(!log.contains("DOMAIN_"), "reaped something:\n{log}");
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep me");
    assert!(state.join(format!("inflight/{live}.lock")).exists(), "the live marker was removed");
    assert_eq!(std::fs::read(state.join(format!("work/{live}/image"))).unwrap(), b"in use", "the live scratch");
    for name in ["...lock", "x.lock", "vm-0123.lock"] {
        assert!(state.join("inflight").join(name).exists(), "{name} was removed");
    }

    // `work` replaced by a link to elsewhere, and an ordinary orphan: the orphan is reaped, nothing
    // outside is removed through the link
    let orphan = "vm-eeeeeeeeeeeeeeeeeeee";
    let elsewhere = root.join("elsewhere");
    private(&elsewhere.join(orphan));
    std::fs::write(elsewhere.join(format!("{orphan}/precious")), b"keep me").unwrap();
    std::fs::rename(state.join("work"), root.join("old-work")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.join("work")).unwrap();
    std::fs::write(state.join(format!("inflight/{orphan}.lock")), b"owner libvirt qemu:///session pool p\n").unwrap();
    let xml = format!("<domain type=\"qemu\"><name>{orphan}</name><devices></devices></domain>");
    fake.daemon.model().domains.insert(orphan.into(), Dom { xml, ..Default::default() });
    fake.log();
    let r = cpi.call("create_disk", json!([1024, {}, null]));
    let log = fake.log();
    assert!(
        log.contains(&format!("DOMAIN_UNDEFINE_FLAGS {orphan}")),
        "the orphan was not reaped:\n{log}\n{}",
        r.stderr
    );
    assert!(fake.daemon.domains().is_empty());
    assert_eq!(std::fs::read(elsewhere.join(format!("{orphan}/precious"))).unwrap(), b"keep me");
    let _: Value = r.response;
    drop(live_marker);
}
