//! State directories on the CPI's host (`driver.state_dir`, vmrun's scratch directory): where vmcpi keeps
//! in-flight markers, scratch space and the vSphere session. vmcpi runs as root or as the director's user
//! and removes what it finds there, so it trusts a directory only when nobody else can change it:
//!
//! - no component of the path is a symbolic link (each is opened with `O_NOFOLLOW`, one below the other,
//!   `openat`-style, so the check and the walk are the same descriptors);
//! - the state directory and every directory vmcpi makes below it are owned by the effective user and not
//!   writable by group or others; what vmcpi makes, it makes with mode 0700;
//! - a directory above it that anyone may write to has the sticky bit (like /tmp and /var/tmp: others cannot
//!   rename or remove what is ours there).
//!
//! Anything else is refused with an error that names the path and says what to do. A directory created by
//! someone else first (another user racing for `/var/tmp/vmcpi`) is refused, not used.
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a state directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {path} must be an absolute path without `..`")]
    NotAbsolute { path: PathBuf },
    #[error("state directory {path}: {component} is a symbolic link; vmcpi follows no links in its state directories (set the real path)")]
    Symlink { path: PathBuf, component: PathBuf },
    #[error("state directory {path}: {component} is not a directory")]
    NotDir { path: PathBuf, component: PathBuf },
    #[error("state directory {path}: {component} is owned by uid {owner}, not by uid {me} that runs vmcpi; refusing to use it (another user could change what vmcpi reads and removes there): remove it, or set the state directory to one of your own")]
    Owner { path: PathBuf, component: PathBuf, owner: u32, me: u32 },
    #[error("state directory {path}: {component} is writable by its group or by others (mode {mode:04o}); refusing to use it: `chmod 700 {component}`")]
    Writable { path: PathBuf, component: PathBuf, mode: u32 },
    #[error("state directory {path}: {component} may be written by anyone and has no sticky bit (mode {mode:04o}), so others could replace what vmcpi keeps below it; choose another place")]
    OpenParent { path: PathBuf, component: PathBuf, mode: u32 },
    #[error("state directory {path}: cannot {op} {component}: {source}")]
    Io { path: PathBuf, component: PathBuf, op: &'static str, source: std::io::Error },
}

impl From<StateDirError> for std::io::Error {
    fn from(e: StateDirError) -> Self {
        let kind = match &e {
            StateDirError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::PermissionDenied,
        };
        std::io::Error::new(kind, e)
    }
}

/// `base` joined with `sub`, checked as the module says: every component a real directory, `base` and the
/// `sub` directories below it private to this user. With `create`, missing directories are made (mode
/// 0700); without, a missing one gives `Ok(None)`.
pub fn private_dir(base: &Path, sub: &[&str], create: bool) -> Result<Option<PathBuf>, StateDirError> {
    let whole: PathBuf = sub.iter().fold(base.to_path_buf(), |p, s| p.join(s));
    let err_path = || whole.clone();
    if !base.is_absolute() || sub.iter().any(|s| s.is_empty() || s.contains('/') || *s == "." || *s == "..") {
        return Err(StateDirError::NotAbsolute { path: err_path() });
    }
    let mut names: Vec<&OsStr> = Vec::new();
    for c in base.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => names.push(n),
            Component::ParentDir | Component::Prefix(_) => return Err(StateDirError::NotAbsolute { path: err_path() }),
        }
    }
    // the first component that must be private: the base itself (the root directory never is one)
    let private_from = names.len().saturating_sub(1);
    if names.is_empty() && sub.is_empty() {
        return Err(StateDirError::NotAbsolute { path: err_path() });
    }
    names.extend(sub.iter().map(OsStr::new));
    let me = unsafe_geteuid();
    let mut dir = open_root().map_err(|source| StateDirError::Io {
        path: err_path(),
        component: "/".into(),
        op: "open",
        source,
    })?;
    let mut at = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        at.push(name);
        let cname = CString::new(name.as_bytes()).map_err(|_| StateDirError::NotAbsolute { path: err_path() })?;
        let io = |op, source| StateDirError::Io { path: err_path(), component: at.clone(), op, source };
        let mut made = false;
        let child = loop {
            match open_dir_at(&dir, &cname) {
                Ok(fd) => break fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if !create {
                        return Ok(None);
                    }
                    // SAFETY: mkdirat with a directory descriptor we own and a NUL-terminated name
                    if unsafe { libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), 0o700) } == 0 {
                        made = true;
                        continue;
                    }
                    let e = std::io::Error::last_os_error();
                    // someone made it first: open it and judge it like any other
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(io("create", e));
                    }
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    return Err(match lstat_at(&dir, &cname) {
                        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                            StateDirError::Symlink { path: err_path(), component: at.clone() }
                        }
                        _ => StateDirError::NotDir { path: err_path(), component: at.clone() },
                    });
                }
                Err(e) => return Err(io("open", e)),
            }
        };
        let st = fstat(&child).map_err(|e| io("stat", e))?;
        let mode = st.st_mode & 0o7777;
        if i >= private_from || made {
            if st.st_uid != me {
                return Err(StateDirError::Owner { path: err_path(), component: at.clone(), owner: st.st_uid, me });
            }
            if mode & 0o022 != 0 {
                return Err(StateDirError::Writable { path: err_path(), component: at.clone(), mode });
            }
        } else if mode & 0o002 != 0 && mode & libc::S_ISVTX == 0 {
            return Err(StateDirError::OpenParent { path: err_path(), component: at.clone(), mode });
        }
        dir = child;
    }
    Ok(Some(whole))
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail
    unsafe { libc::geteuid() }
}

fn open_root() -> std::io::Result<OwnedFd> {
    // SAFETY: open of a constant NUL-terminated path; the descriptor is owned by the OwnedFd
    let fd = unsafe { libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, O_DIRECTORY | O_NOFOLLOW)`: fails with ELOOP or ENOTDIR on a link or a non-directory.
fn open_dir_at(dir: &OwnedFd, name: &CString) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat with a directory descriptor we own and a NUL-terminated name
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dir: &OwnedFd, name: &CString) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstatat to fill in
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat with a descriptor we own, a NUL-terminated name and a live stat
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: as in lstat_at
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of a descriptor we own into a live stat
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn missing_directories_are_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("a/b");
        assert!(private_dir(&base, &["inflight"], false).unwrap().is_none());
        let got = private_dir(&base, &["work", "vm-1"], true).unwrap().unwrap();
        assert_eq!(got, base.join("work/vm-1"));
        for p in [tmp.path().join("a"), base.clone(), base.join("work"), base.join("work/vm-1")] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        // an existing private directory (0755 is not writable by others: kept as it is)
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&base, &["work"], false).unwrap().is_some());
    }

    #[test]
    fn links_open_modes_and_other_owners_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        // a link anywhere in the path, the state dir itself, or a subdirectory vmcpi would use
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        let e = private_dir(&tmp.path().join("link/state"), &["inflight"], true).unwrap_err();
        assert!(matches!(e, StateDirError::Symlink { .. }) && e.to_string().contains("link"), "{e}");
        assert!(!real.join("state").exists(), "nothing made through the link");
        let e = private_dir(&tmp.path().join("link"), &[], false).unwrap_err();
        assert!(matches!(e, StateDirError::Symlink { .. }), "{e}");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), real.join("work")).unwrap();
        let e = private_dir(&real, &["work", "vm-1"], true).unwrap_err();
        assert!(matches!(e, StateDirError::Symlink { .. }), "{e}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing made outside");
        // a file where a directory belongs
        std::fs::write(real.join("inflight"), b"").unwrap();
        assert!(matches!(private_dir(&real, &["inflight"], true), Err(StateDirError::NotDir { .. })));
        // group- or world-writable
        for m in [0o777, 0o770, 0o1777] {
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(m)).unwrap();
            let e = private_dir(&real, &[], true).unwrap_err();
            assert!(matches!(e, StateDirError::Writable { .. }) && e.to_string().contains("chmod 700"), "{m:o}: {e}");
        }
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        // an open parent without the sticky bit; with it (like /tmp) it is fine
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&open.join("state"), &[], true).unwrap_err();
        assert!(matches!(e, StateDirError::OpenParent { .. }), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(private_dir(&open.join("state"), &[], true).unwrap().is_some());
        // relative paths and `..`
        assert!(matches!(private_dir(Path::new("rel"), &[], true), Err(StateDirError::NotAbsolute { .. })));
        assert!(matches!(private_dir(&real, &[".."], true), Err(StateDirError::NotAbsolute { .. })));
        assert!(matches!(private_dir(&real.join("../x"), &[], true), Err(StateDirError::NotAbsolute { .. })));
    }

    /// Owned by another user: as root, a directory given to nobody; otherwise one that root owns.
    #[test]
    fn another_users_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = if unsafe_geteuid() == 0 {
            let d = tmp.path().join("theirs");
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
            d
        } else {
            PathBuf::from("/")
        };
        let owner = std::fs::metadata(&theirs).unwrap().uid();
        assert_ne!(owner, unsafe_geteuid());
        let e = private_dir(&theirs, &["inflight"], true).unwrap_err();
        assert!(matches!(e, StateDirError::Owner { .. }) && e.to_string().contains(&format!("uid {owner}")), "{e}");
    }
}
