//! Crash safety for creates: a CPI process killed with SIGKILL half-way through create_vm (or any create)
//! returns no CID, so the director will never delete what it made. Each create therefore first writes an
//! in-flight marker `<state_dir>/inflight/<cid>.lock` and holds an exclusive lock on it; the marker is removed
//! just before the response is written. A marker that exists but is not locked belongs to a dead process:
//! the next create (in any process) reaps the resources of that CID and removes the marker. Child processes
//! inherit the lock, so a tool that outlives a killed CPI process holds it until its work is done.
//! Scratch space of a create (an unpacked stemcell) lives in `<state_dir>/work/<cid>` and is reaped with it.
//!
//! Several configs may share one state dir (a director's CPI config with several libvirt hosts, each with
//! the job's default state_dir). A reaper can only remove what lives where its own config points, so each
//! marker records its owner, the place its resources live ([`Inflight::owned_by`]: driver kind, host or
//! URI, pool or folders), and a reaper takes only the orphans of its own owner; the others stay for a
//! config that owns them. A marker without an owner (written by an older vmcpi) is anyone's.
//!
//! The state dir is trusted only as [`crate::cpi::statedir`] says (private to this user, no links), and the
//! reaper acts only on markers whose names have a shape the driver makes ([`Shapes`]: a CID's prefix and
//! its number of lowercase hex digits) and that are regular files: a marker named `...lock` (whose scratch
//! would be the state dir itself), `x.lock` or a link is left alone.
use crate::cpi::statedir::private_dir;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The names a driver gives its markers: `<prefix><n lowercase hex digits>` for each `(prefix, n)` (the CID
/// scheme of [`crate::common::ids`]). A create's marker must have one of them; the reaper takes no other.
pub type Shapes = &'static [(&'static str, usize)];

/// The in-flight directory of one state dir, as seen by one owner.
#[derive(Debug, Clone)]
pub struct Inflight {
    root: PathBuf,
    dir: PathBuf,
    shapes: Shapes,
    owner: String,
}

/// The first line of a marker file: `owner <where its resources live>`.
const OWNER_PREFIX: &str = "owner ";

/// A held in-flight marker. Dropping it without [`Marker::commit`] leaves the marker (the create failed and
/// cleaned up itself, or will be reaped); `commit` removes it.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
    root: PathBuf,
    cid: String,
    work: PathBuf,
    _file: File,
    /// The sync of a marker begun with [`Inflight::begin_syncing`], until [`Marker::durable`] joins it.
    sync: std::sync::Mutex<Option<std::thread::JoinHandle<io::Result<()>>>>,
}

/// Opens a marker file without following a link; without `create`, also without waiting (a FIFO put in
/// its place would block an open for writing) and only a regular file.
fn open_marker(path: &Path, create: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true);
    if create {
        o.create(true).truncate(false).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    } else {
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = o.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())));
    }
    Ok(file)
}

impl Inflight {
    /// The markers below `state_dir` of the names in `shapes`.
    pub fn new(state_dir: &Path, shapes: Shapes) -> Self {
        Inflight { root: state_dir.to_path_buf(), dir: state_dir.join("inflight"), shapes, owner: String::new() }
    }

    /// Whether `cid` has one of this driver's shapes (and so may be a marker's name).
    fn is_ours(&self, cid: &str) -> bool {
        self.shapes.iter().any(|(prefix, n)| crate::common::ids::is_generated(cid, prefix, *n))
    }

    /// Names where this config's resources live (e.g. `libvirt qemu:///system pool vmcpi`). Markers written
    /// by [`Inflight::begin`] record it, and [`Inflight::orphans`] returns only markers with the same owner
    /// (or none). Line breaks become spaces: the owner is one line of the marker file.
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = owner.replace(['\n', '\r'], " ");
        self
    }

    /// Writes and locks the marker for `cid` with its owner (durably: the file and the directory entry are synced).
    pub fn begin(&self, cid: &str) -> io::Result<Marker> {
        let marker = self.begin_syncing(cid)?;
        marker.durable()?;
        Ok(marker)
    }

    /// [`Inflight::begin`], with the marker made durable by a thread of its own (a sync waits for the disk:
    /// milliseconds, more on a busy one), so that the caller's lookups overlap it. The caller calls
    /// [`Marker::durable`] before it creates anything; dropping or committing the marker waits for the sync.
    pub fn begin_syncing(&self, cid: &str) -> io::Result<Marker> {
        if !self.is_ours(cid) {
            // a name the reaper would not take would leave its create's leftovers for ever
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{cid:?} is not an in-flight marker name"),
            ));
        }
        private_dir(&self.root, &["inflight"], true)?;
        let path = self.dir.join(format!("{cid}.lock"));
        let mut file = loop {
            let file = open_marker(&path, true)?;
            file.lock()?;
            // a reaper may have taken the fresh, not yet locked file for an orphan and removed it before our
            // lock: then we hold the lock of an unlinked file, which covers nothing. Open the path again.
            if same_file(&file, &path) {
                break file;
            }
        };
        inherit_to_children(&file)?;
        let owned = !self.owner.is_empty();
        if owned {
            file.set_len(0)?;
            writeln!(file, "{OWNER_PREFIX}{}", self.owner)?;
        }
        let (data, dir) = (file.try_clone()?, File::open(&self.dir)?);
        // the file's data and the directory entry are synced at the same time: both wait for the file
        // system's journal, and side by side they usually share one commit (measured on ext4: 0.5–1.7 ms
        // against 2.2–4.8 ms one after the other)
        let sync = std::thread::spawn(move || {
            let data = owned.then(|| std::thread::spawn(move || data.sync_data()));
            let entry = dir.sync_all();
            match data.map(|t| t.join()) {
                Some(Ok(Err(e))) => Err(e),
                Some(Err(_)) => Err(io::Error::other("the marker's data sync panicked")),
                _ => entry,
            }
        });
        Ok(Marker {
            path,
            root: self.root.clone(),
            cid: cid.to_string(),
            work: self.root.join("work").join(cid),
            _file: file,
            sync: std::sync::Mutex::new(Some(sync)),
        })
    }

    /// The owner a marker file records; `None` for a marker without one.
    fn recorded_owner(path: &Path) -> Option<String> {
        let mut text = String::new();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        file.take(64 << 10).read_to_string(&mut text).ok()?;
        text.lines().next()?.strip_prefix(OWNER_PREFIX).map(str::to_string)
    }

    /// Markers of dead processes: each comes back locked, for the caller to clean up and then commit.
    pub fn orphans(&self) -> Vec<(String, Marker)> {
        match private_dir(&self.root, &["inflight"], false) {
            Ok(Some(_)) => {}
            Ok(None) => return Vec::new(),
            Err(e) => {
                crate::warn!("interrupted creates are not reaped: {e}");
                return Vec::new();
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            // only the names this driver makes, and only regular files (a link is not followed)
            let Some(cid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".lock"))
                .filter(|cid| self.is_ours(cid))
                .map(str::to_string)
            else {
                continue;
            };
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                crate::warn!("{}: not a regular file; left alone", path.display());
                continue;
            }
            let Ok(file) = open_marker(&path, false) else { continue };
            // a live create holds the lock: skip it
            if file.try_lock().is_err() {
                continue;
            }
            // the file may have been committed (unlinked, perhaps made again) between read_dir and open
            if !same_file(&file, &path) {
                continue;
            }
            // another config's leftovers live elsewhere (another host or pool): only a config that owns them reaps them
            if let Some(owner) = Self::recorded_owner(&path) {
                if owner != self.owner {
                    crate::debug!("{cid}: an interrupted create of another config ({owner}); left for it");
                    continue;
                }
            }
            let work = self.root.join("work").join(&cid);
            let sync = std::sync::Mutex::new(None);
            out.push((cid.clone(), Marker { path, root: self.root.clone(), cid, work, _file: file, sync }));
        }
        out
    }
}

/// Lets child processes (virsh, qemu-img, …) inherit the marker's descriptor. The lock belongs to the open
/// file description, so it stays held until the last child exits: a tool still finishing its work after the
/// CPI process was killed keeps the reaper away until its effect is visible.
fn inherit_to_children(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(F_GETFD/F_SETFD) on a descriptor we own only changes its close-on-exec flag.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `path` still names the open `file` (it was not removed or replaced since it was opened).
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Marker {
    /// Waits until the marker is on disk (a no-op after the first call, and for a marker from
    /// [`Inflight::begin`] or [`Inflight::orphans`]).
    pub fn durable(&self) -> io::Result<()> {
        let handle = self.sync.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle.map(|h| h.join()) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the marker's sync thread panicked")),
        }
    }

    /// Scratch directory for this create, `<state_dir>/work/<cid>` (created on demand, mode 0700, checked
    /// like the state dir).
    pub fn work_dir(&self) -> io::Result<&Path> {
        private_dir(&self.root, &["work", &self.cid], true)?;
        Ok(&self.work)
    }

    /// Removes the scratch space now and keeps the marker: for a reaper that keeps the marker of a dead
    /// process for a while (its object may still appear) while the scratch is of no use to anyone.
    pub fn clear_work(&self) {
        // through a `work` that is a link, nothing is removed (remove_dir_all itself follows no link)
        match private_dir(&self.root, &["work"], false) {
            Ok(Some(work)) => {
                let _ = std::fs::remove_dir_all(work.join(&self.cid));
            }
            Ok(None) => {}
            Err(e) => crate::warn!("{}: scratch space not removed: {e}", self.cid),
        }
    }

    /// The create of `cid` is complete: the marker goes, and from here the response is the only record of
    /// the new object. A kill between this and the response leaves an object no caller hears of: the CPI
    /// protocol's own window, which no CPI can close (a marker kept until after the response would let the
    /// next call reap what the director holds). The debug line announces that window *before* the marker
    /// goes, so that a fault-injection test can tell such a kill from a leak: whenever the marker may be
    /// gone, the line is in the log. A kill between the line and the unlink leaves the marker, and the
    /// next create reaps the object (a test that deletes it as well finds it gone, which is fine).
    /// (Announced after the unlink, a kill between the two left an object with neither a marker nor the
    /// line: what the sigkill suite reported as a leak.)
    pub fn created(self, cid: &str) {
        crate::debug!("{cid}: created; from here the response is the only record of it");
        crate::cpi::killpoint::kill_point("inflight.created.announced");
        self.commit();
        crate::cpi::killpoint::kill_point("inflight.created.unlinked");
    }

    /// The create finished (or its leftovers were reaped): remove the scratch space and the marker.
    pub fn commit(self) {
        // the sync first: a removal must not race the sync of the directory that still lists the marker
        let _ = self.durable();
        self.clear_work();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        // no sync thread outlives its marker
        let _ = self.durable();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SHAPES: Shapes = &[("vm-", 20), ("sc-", 16)];
    const VM_RACING: &str = "vm-aaaaaaaaaaaaaaaaaaaa";
    const VM_OF_A: &str = "vm-bbbbbbbbbbbbbbbbbbbb";
    const VM_OF_B: &str = "vm-cccccccccccccccccccc";
    const VM_OLD: &str = "vm-dddddddddddddddddddd";
    const VM_OF_C: &str = "vm-eeeeeeeeeeeeeeeeeeee";
    const VM_CHILD: &str = "vm-ffffffffffffffffffff";
    const VM_LIVE: &str = "vm-11111111111111111111";
    const VM_DONE: &str = "vm-22222222222222222222";
    const SC_KEPT: &str = "sc-3333333333333333";

    // markers are inherited by every child process: tests that spawn children must not overlap (exec's
    // tests, which spawn many, take this lock too)
    pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The orphans of `inf` (by CID) once there are `n`: a child process that a test of another module
    /// spawns while a marker here is open inherits its descriptor (as the CPI's tools are meant to) and holds
    /// the lock for its short life, so a dead marker may look held for a moment.
    fn orphans_n(inf: &Inflight, n: usize) -> Vec<(String, Marker)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut found = inf.orphans();
            if found.len() == n || std::time::Instant::now() >= deadline {
                found.sort_by(|x, y| x.0.cmp(&y.0));
                return found;
            }
            drop(found);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn a_create_whose_fresh_marker_a_reaper_removed_marks_itself_again() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let inflight = Inflight::new(dir.path(), SHAPES).owned_by("test");
        // the creator has opened its marker but not locked it yet: to a reaper it looks like an orphan
        std::fs::create_dir_all(dir.path().join("inflight")).unwrap();
        std::fs::write(dir.path().join(format!("inflight/{VM_RACING}.lock")), b"").unwrap();
        let (cid, reaped) = orphans_n(&inflight, 1).pop().unwrap();
        assert_eq!(cid, VM_RACING);
        let creator = {
            let inflight = inflight.clone();
            std::thread::spawn(move || inflight.begin(VM_RACING).unwrap())
        };
        // the creator now waits for the reaper's lock; the reaper removes the marker and lets go
        std::thread::sleep(std::time::Duration::from_millis(200));
        reaped.commit();
        let marker = creator.join().unwrap();
        // the creator holds the lock of the file that is at the path, so no reaper takes it
        assert!(same_file(&marker._file, &marker.path));
        assert!(inflight.orphans().is_empty());
        marker.commit();
    }

    #[test]
    fn a_marker_syncing_in_the_background_is_held_and_complete_at_once() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let inflight = Inflight::new(dir.path(), SHAPES).owned_by("vsphere https://vc/sdk");
        let marker = inflight.begin_syncing(VM_LIVE).unwrap();
        // written and locked before the sync: no reaper takes it, its owner is there
        let path = dir.path().join(format!("inflight/{VM_LIVE}.lock"));
        assert_eq!(Inflight::recorded_owner(&path).as_deref(), Some("vsphere https://vc/sdk"));
        assert!(inflight.orphans().is_empty());
        marker.durable().unwrap();
        marker.durable().unwrap();
        marker.commit();
        assert!(!path.exists());
        // a marker dropped before its sync was awaited waits for it, and stays for the reaper
        drop(inflight.begin_syncing(VM_DONE).unwrap());
        assert_eq!(orphans_n(&inflight, 1)[0].0, VM_DONE);
    }

    #[test]
    fn only_the_owner_reaps_a_marker() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = Inflight::new(dir.path(), SHAPES).owned_by("libvirt qemu:///system pool a");
        let b = Inflight::new(dir.path(), SHAPES).owned_by("libvirt qemu+ssh://hv2/system pool a");
        drop(a.begin(VM_OF_A).unwrap());
        drop(b.begin(VM_OF_B).unwrap());
        let text = std::fs::read_to_string(dir.path().join(format!("inflight/{VM_OF_A}.lock"))).unwrap();
        assert_eq!(text, "owner libvirt qemu:///system pool a\n");
        // each sees only its own orphan, however often it looks
        for _ in 0..2 {
            let seen: Vec<String> = orphans_n(&a, 1).into_iter().map(|(c, _)| c).collect();
            assert_eq!(seen, [VM_OF_A]);
            let seen: Vec<String> = orphans_n(&b, 1).into_iter().map(|(c, _)| c).collect();
            assert_eq!(seen, [VM_OF_B]);
        }
        // a marker without an owner (an older vmcpi) is anyone's; one that names nobody sees only those
        std::fs::write(dir.path().join(format!("inflight/{VM_OLD}.lock")), b"").unwrap();
        let anyone = Inflight::new(dir.path(), SHAPES);
        let seen: Vec<String> = orphans_n(&anyone, 1).into_iter().map(|(c, _)| c).collect();
        assert_eq!(seen, [VM_OLD]);
        let seen: Vec<String> = orphans_n(&a, 2).into_iter().map(|(c, _)| c).collect();
        assert_eq!(seen, [VM_OF_A, VM_OLD]);
        // the owner commits its own: gone for good, the other's stays
        for (_, m) in orphans_n(&a, 2) {
            m.commit();
        }
        assert!(a.orphans().is_empty());
        assert_eq!(orphans_n(&b, 1).len(), 1);
        // an owner is one line
        let c = Inflight::new(dir.path(), SHAPES).owned_by("vsphere x\nowner libvirt qemu:///system pool a");
        drop(c.begin(VM_OF_C).unwrap());
        assert!(a.orphans().is_empty(), "a line break in an owner must not make a marker someone else's");
        assert_eq!(orphans_n(&c, 1).len(), 1);
    }

    /// Names of other shapes (`...lock`, whose scratch would be the state dir itself), links and FIFOs in
    /// the marker directory, and a `work` that is a link: the reaper takes none of them and removes nothing
    /// through a link; a create refuses a name the reaper would not take.
    #[test]
    fn hostile_names_and_links_are_left_alone() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let inf = Inflight::new(&state, SHAPES);
        for bad in ["../x", "..", "", "vm-1", "x", "vm-aaaaaaaaaaaaaaaaaaaa/../..", "VM-AAAAAAAAAAAAAAAAAAAA"] {
            assert!(inf.begin(bad).is_err(), "{bad:?} was accepted");
        }
        let live = inf.begin(VM_LIVE).unwrap();
        std::fs::write(live.work_dir().unwrap().join("image"), b"in use").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        for name in ["...lock", "..lock", "x.lock", "vm-1.lock", "sc-3333333333333333-vs.lock"] {
            std::fs::write(state.join("inflight").join(name), b"").unwrap();
        }
        std::os::unix::fs::symlink(outside.path().join("victim"), state.join(format!("inflight/{VM_OLD}.lock")))
            .unwrap();
        let fifo = std::ffi::CString::new(state.join(format!("inflight/{VM_DONE}.lock")).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(inf.orphans().is_empty(), "none of them is an orphan of ours");
        assert_eq!(std::fs::read(state.join(format!("work/{VM_LIVE}/image"))).unwrap(), b"in use");
        assert_eq!(std::fs::read(outside.path().join("victim")).unwrap(), b"keep");
        // `work` a link to elsewhere: an orphan's marker goes, nothing is removed through the link
        drop(live);
        std::fs::remove_dir_all(state.join("work")).unwrap();
        std::fs::create_dir(outside.path().join(VM_LIVE)).unwrap();
        std::fs::write(outside.path().join(format!("{VM_LIVE}/precious")), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), state.join("work")).unwrap();
        let found = orphans_n(&inf, 1);
        assert_eq!(found.len(), 1);
        for (_, m) in found {
            assert!(m.work_dir().is_err(), "a scratch directory through a link");
            m.commit();
        }
        assert_eq!(std::fs::read(outside.path().join(format!("{VM_LIVE}/precious"))).unwrap(), b"keep");
        assert!(!state.join(format!("inflight/{VM_LIVE}.lock")).exists());
    }

    #[test]
    fn a_child_process_keeps_the_marker_locked() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let inf = Inflight::new(dir.path(), SHAPES);
        let m = inf.begin(VM_CHILD).unwrap();
        let mut child = std::process::Command::new("/bin/sleep").arg("1").spawn().unwrap();
        drop(m);
        assert!(inf.orphans().is_empty(), "the child still holds the lock");
        child.wait().unwrap();
        assert_eq!(orphans_n(&inf, 1).len(), 1);
    }

    #[test]
    fn live_markers_are_not_orphans_dead_ones_are() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let inf = Inflight::new(dir.path(), SHAPES);
        let live = inf.begin(VM_LIVE).unwrap();
        std::fs::write(live.work_dir().unwrap().join("x"), b"x").unwrap();
        assert!(inf.orphans().is_empty(), "a held marker is not an orphan");
        // a dead process: the file stays, the lock is gone
        drop(live);
        let orphans = orphans_n(&inf, 1);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, VM_LIVE);
        // while one reaper holds it, another does not see it
        assert!(inf.orphans().is_empty());
        for (_, m) in orphans {
            m.commit();
        }
        assert!(inf.orphans().is_empty());
        assert!(!dir.path().join(format!("work/{VM_LIVE}")).exists());
        // a marker kept by its reaper loses its scratch at once
        let kept = inf.begin(SC_KEPT).unwrap();
        std::fs::write(kept.work_dir().unwrap().join("image"), b"x").unwrap();
        drop(kept);
        for (_, m) in orphans_n(&inf, 1) {
            m.clear_work();
        }
        assert!(!dir.path().join(format!("work/{SC_KEPT}")).exists());
        let kept = orphans_n(&inf, 1);
        assert_eq!(kept.len(), 1, "the marker stays");
        kept.into_iter().for_each(|(_, m)| m.commit());
        let done = inf.begin(VM_DONE).unwrap();
        done.commit();
        assert!(inf.orphans().is_empty());
    }
}
