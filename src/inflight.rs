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
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The in-flight directory of one state dir, as seen by one owner.
#[derive(Debug, Clone)]
pub struct Inflight {
    dir: PathBuf,
    work: PathBuf,
    owner: String,
}

/// The first line of a marker file: `owner <where its resources live>`.
const OWNER_PREFIX: &str = "owner ";

/// A held in-flight marker. Dropping it without [`Marker::commit`] leaves the marker (the create failed and
/// cleaned up itself, or will be reaped); `commit` removes it.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
    work: PathBuf,
    _file: File,
}

impl Inflight {
    pub fn new(state_dir: &Path) -> Self {
        Inflight { dir: state_dir.join("inflight"), work: state_dir.join("work"), owner: String::new() }
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
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{cid}.lock"));
        let mut file = loop {
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            file.lock()?;
            // a reaper may have taken the fresh, not yet locked file for an orphan and removed it before our
            // lock: then we hold the lock of an unlinked file, which covers nothing. Open the path again.
            if same_file(&file, &path) {
                break file;
            }
        };
        inherit_to_children(&file)?;
        if !self.owner.is_empty() {
            file.set_len(0)?;
            writeln!(file, "{OWNER_PREFIX}{}", self.owner)?;
            file.sync_data()?;
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(Marker { path, work: self.work.join(cid), _file: file })
    }

    /// The owner a marker file records; `None` for a marker without one.
    fn recorded_owner(path: &Path) -> Option<String> {
        let mut text = String::new();
        File::open(path).ok()?.take(64 << 10).read_to_string(&mut text).ok()?;
        text.lines().next()?.strip_prefix(OWNER_PREFIX).map(str::to_string)
    }

    /// Markers of dead processes: each comes back locked, for the caller to clean up and then commit.
    pub fn orphans(&self) -> Vec<(String, Marker)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let Some(cid) =
                path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".lock")).map(str::to_string)
            else {
                continue;
            };
            let Ok(file) = OpenOptions::new().write(true).open(&path) else { continue };
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
            out.push((cid.clone(), Marker { path, work: self.work.join(&cid), _file: file }));
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
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Marker {
    /// Scratch directory for this create (created on demand).
    pub fn work_dir(&self) -> io::Result<&Path> {
        std::fs::create_dir_all(&self.work)?;
        Ok(&self.work)
    }

    /// Removes the scratch space now and keeps the marker: for a reaper that keeps the marker of a dead
    /// process for a while (its object may still appear) while the scratch is of no use to anyone.
    pub fn clear_work(&self) {
        let _ = std::fs::remove_dir_all(&self.work);
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
        crate::killpoint::kill_point("inflight.created.announced");
        self.commit();
        crate::killpoint::kill_point("inflight.created.unlinked");
    }

    /// The create finished (or its leftovers were reaped): remove the scratch space and the marker.
    pub fn commit(self) {
        let _ = std::fs::remove_dir_all(&self.work);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
        let inflight = Inflight::new(dir.path()).owned_by("test");
        // the creator has opened its marker but not locked it yet: to a reaper it looks like an orphan
        std::fs::create_dir_all(dir.path().join("inflight")).unwrap();
        std::fs::write(dir.path().join("inflight/vm-racing.lock"), b"").unwrap();
        let (cid, reaped) = orphans_n(&inflight, 1).pop().unwrap();
        assert_eq!(cid, "vm-racing");
        let creator = {
            let inflight = inflight.clone();
            std::thread::spawn(move || inflight.begin("vm-racing").unwrap())
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
    fn only_the_owner_reaps_a_marker() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = Inflight::new(dir.path()).owned_by("libvirt qemu:///system pool a");
        let b = Inflight::new(dir.path()).owned_by("libvirt qemu+ssh://hv2/system pool a");
        drop(a.begin("vm-of-a").unwrap());
        drop(b.begin("vm-of-b").unwrap());
        let text = std::fs::read_to_string(dir.path().join("inflight/vm-of-a.lock")).unwrap();
        assert_eq!(text, "owner libvirt qemu:///system pool a\n");
        // each sees only its own orphan, however often it looks
        for _ in 0..2 {
            let seen: Vec<String> = orphans_n(&a, 1).into_iter().map(|(c, _)| c).collect();
            assert_eq!(seen, ["vm-of-a"]);
            let seen: Vec<String> = orphans_n(&b, 1).into_iter().map(|(c, _)| c).collect();
            assert_eq!(seen, ["vm-of-b"]);
        }
        // a marker without an owner (an older vmcpi) is anyone's; one that names nobody sees only those
        std::fs::write(dir.path().join("inflight/vm-old.lock"), b"").unwrap();
        let anyone = Inflight::new(dir.path());
        let seen: Vec<String> = orphans_n(&anyone, 1).into_iter().map(|(c, _)| c).collect();
        assert_eq!(seen, ["vm-old"]);
        let seen: Vec<String> = orphans_n(&a, 2).into_iter().map(|(c, _)| c).collect();
        assert_eq!(seen, ["vm-of-a", "vm-old"]);
        // the owner commits its own: gone for good, the other's stays
        for (_, m) in orphans_n(&a, 2) {
            m.commit();
        }
        assert!(a.orphans().is_empty());
        assert_eq!(orphans_n(&b, 1).len(), 1);
        // an owner is one line
        let c = Inflight::new(dir.path()).owned_by("vsphere x\nowner libvirt qemu:///system pool a");
        drop(c.begin("vm-of-c").unwrap());
        assert!(a.orphans().is_empty(), "a line break in an owner must not make a marker someone else's");
        assert_eq!(orphans_n(&c, 1).len(), 1);
    }

    #[test]
    fn a_child_process_keeps_the_marker_locked() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let inf = Inflight::new(dir.path());
        let m = inf.begin("vm-child").unwrap();
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
        let inf = Inflight::new(dir.path());
        let live = inf.begin("vm-live").unwrap();
        std::fs::write(live.work_dir().unwrap().join("x"), b"x").unwrap();
        assert!(inf.orphans().is_empty(), "a held marker is not an orphan");
        // a dead process: the file stays, the lock is gone
        drop(live);
        let orphans = orphans_n(&inf, 1);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, "vm-live");
        // while one reaper holds it, another does not see it
        assert!(inf.orphans().is_empty());
        for (_, m) in orphans {
            m.commit();
        }
        assert!(inf.orphans().is_empty());
        assert!(!dir.path().join("work/vm-live").exists());
        // a marker kept by its reaper loses its scratch at once
        let kept = inf.begin("sc-kept").unwrap();
        std::fs::write(kept.work_dir().unwrap().join("image"), b"x").unwrap();
        drop(kept);
        for (_, m) in orphans_n(&inf, 1) {
            m.clear_work();
        }
        assert!(!dir.path().join("work/sc-kept").exists());
        let kept = orphans_n(&inf, 1);
        assert_eq!(kept.len(), 1, "the marker stays");
        kept.into_iter().for_each(|(_, m)| m.commit());
        let done = inf.begin("vm-done").unwrap();
        done.commit();
        assert!(inf.orphans().is_empty());
    }
}
