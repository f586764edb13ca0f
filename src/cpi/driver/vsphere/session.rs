//! The vSphere session kept between CPI processes: one file per SDK URL and user in
//! `<state_dir>/sessions/`, mode 0600, holding the `vmware_soap_session` cookie and the server's service
//! content (which never changes while the server runs). A CPI call starts with the cookie from the file
//! and no request at all; its first request doubles as the check: a `NotAuthenticated` answer makes the
//! client log in again once (under an exclusive lock, so that parallel CPI processes log in one after the
//! other and pick up each other's fresh session) and write the file anew, atomically (a temporary file in
//! the same directory, renamed over the old one). The password is never written; the cookie is registered
//! as a secret, so that no log line or error shows it.
//!
//! The file also remembers inventory objects by path (the datacenter): a moref stays the same while its
//! object exists, and the driver checks a remembered one in a read it makes anyway ([`super::inventory`]),
//! so a later call needs no lookup.
use super::client::ServiceContent;
use super::soap::MoRef;
use crate::warn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A session file is a few hundred bytes; anything much larger is not ours.
const MAX_BYTES: u64 = 64 << 10;

/// Where one URL's and user's session lives.
#[derive(Debug, Clone)]
pub struct SessionStore {
    state_dir: PathBuf,
    dir: PathBuf,
    path: PathBuf,
    url: String,
    user: String,
}

/// What the file holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    url: String,
    user: String,
    cookie: String,
    service_content: ServiceContent,
    /// Inventory path → object, as [`SessionStore::remember`] wrote them.
    #[serde(default)]
    inventory: BTreeMap<String, MoRef>,
}

/// A session read from the file.
pub struct Stored {
    pub cookie: String,
    pub sc: ServiceContent,
    pub inventory: BTreeMap<String, MoRef>,
}

impl SessionStore {
    /// The file for `sdk_url` and `user` below `state_dir`: its name is a hash of both, so that neither
    /// shows in a directory listing and no URL can make a path.
    pub fn new(state_dir: &Path, sdk_url: &str, user: &str) -> SessionStore {
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{sdk_url}\n{user}").as_bytes());
        let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
        let dir = state_dir.join("sessions");
        let path = dir.join(format!("{hex}.json"));
        SessionStore { state_dir: state_dir.to_path_buf(), dir, path, url: sdk_url.to_string(), user: user.to_string() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved session; `None` when there is none or it cannot be used (a warning says why, without
    /// its contents).
    pub fn load(&self) -> Option<Stored> {
        let saved = self.read(true)?;
        crate::common::logger::add_secret(&saved.cookie);
        Some(Stored { cookie: saved.cookie, sc: saved.service_content, inventory: saved.inventory })
    }

    /// The file's contents when they are usable (with a warning why not when `warn`).
    fn read(&self, warn: bool) -> Option<Saved> {
        let warn = |msg: std::fmt::Arguments| {
            if warn {
                warn!("{msg}");
            }
        };
        // a session file in a directory that others could change may be theirs: not used
        match crate::cpi::statedir::private_dir(&self.state_dir, &["sessions"], false) {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                warn(format_args!("the kept vSphere session is not used: {e}; logging in"));
                return None;
            }
        }
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn(format_args!("cannot read the vSphere session file {}: {e}; logging in", self.path.display()));
                return None;
            }
        };
        if !meta.is_file() || meta.len() > MAX_BYTES {
            warn(format_args!(
                "the vSphere session file {} is not a small regular file; logging in",
                self.path.display()
            ));
            return None;
        }
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .and_then(|f| {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_BYTES + 1), &mut b).map(|_| b)
            });
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                warn(format_args!("cannot read the vSphere session file {}: {e}; logging in", self.path.display()));
                return None;
            }
        };
        let saved: Saved = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(_) => {
                warn(format_args!("the vSphere session file {} is damaged; logging in again", self.path.display()));
                return None;
            }
        };
        if saved.url != self.url || saved.user != self.user {
            return None;
        }
        // a cookie is a short token: anything that could break the Cookie header is not one
        if saved.cookie.is_empty()
            || saved.cookie.len() > 4096
            || !saved.cookie.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        {
            warn(format_args!(
                "the vSphere session file {} holds no usable cookie; logging in again",
                self.path.display()
            ));
            return None;
        }
        Some(saved)
    }

    /// Writes the session atomically (mode 0600 from the start: the temporary file is created so), keeping
    /// the inventory objects the file remembers.
    pub fn save(&self, cookie: &str, sc: &ServiceContent) -> std::io::Result<()> {
        let saved = Saved {
            url: self.url.clone(),
            user: self.user.clone(),
            cookie: cookie.to_string(),
            service_content: sc.clone(),
            inventory: self.read(false).map(|s| s.inventory).unwrap_or_default(),
        };
        self.write(&saved)
    }

    /// Remembers the object at inventory `path` (or forgets it: `None`) in the session file, for later
    /// calls; nothing when there is no usable session file. Holds the lock, so that a session another
    /// process saved meanwhile is kept.
    pub fn remember(&self, path: &str, obj: Option<&MoRef>) {
        let updated = self.locked(|| {
            let Some(mut saved) = self.read(false) else { return };
            let before = saved.inventory.get(path).cloned();
            if before.as_ref() == obj {
                return;
            }
            match obj {
                Some(o) => saved.inventory.insert(path.to_string(), o.clone()),
                None => saved.inventory.remove(path),
            };
            if let Err(e) = self.write(&saved) {
                warn!("cannot update the vSphere session file {}: {e}", self.path.display());
            }
        });
        // what is remembered is a shortcut for later calls: without the lock it is not written at all
        if let Err(e) = updated {
            warn!("not remembering {path} in the vSphere session file: {e}");
        }
    }

    fn write(&self, saved: &Saved) -> std::io::Result<()> {
        // the cookie is a credential: only into a directory of this user's that nobody else can change
        crate::cpi::statedir::private_dir(&self.state_dir, &["sessions"], true)?;
        let body = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::Builder::new().prefix(".session-").tempfile_in(&self.dir)?;
        tmp.write_all(&body)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes the file (after a logout, or when the server refuses the password).
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Runs `f` holding an exclusive lock beside the file (`flock(2)` through `File::lock`, released when the
    /// file is closed or the process dies), so that parallel CPI processes whose session expired log in one
    /// at a time. When the lock cannot be had, `f` does not run: the caller gets the error.
    pub fn locked<T>(&self, f: impl FnOnce() -> T) -> std::io::Result<T> {
        crate::cpi::statedir::private_dir(&self.state_dir, &["sessions"], true).map_err(std::io::Error::from)?;
        let lock = self.path.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open the lock file {}: {e}", lock.display())))?;
        file.lock().map_err(|e| std::io::Error::new(e.kind(), format!("cannot lock {}: {e}", lock.display())))?;
        let out = f();
        drop(file);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::driver::vsphere::soap::MoRef;
    use std::os::unix::fs::PermissionsExt;

    fn sc() -> ServiceContent {
        ServiceContent {
            root_folder: MoRef::new("Folder", "group-d1"),
            property_collector: MoRef::new("PropertyCollector", "propertyCollector"),
            session_manager: MoRef::new("SessionManager", "SessionManager"),
            search_index: MoRef::new("SearchIndex", "SearchIndex"),
            file_manager: Some(MoRef::new("FileManager", "FileManager")),
            virtual_disk_manager: None,
            ovf_manager: None,
            custom_fields_manager: None,
            guest_operations_manager: None,
            api_type: "VirtualCenter".into(),
        }
    }

    #[test]
    fn saves_loads_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path(), "https://vc/sdk", "admin");
        assert!(store.load().is_none());
        store.save("abc123", &sc()).unwrap();
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let got = store.load().unwrap();
        assert_eq!(got.cookie, "abc123");
        assert_eq!(got.sc.file_manager, Some(MoRef::new("FileManager", "FileManager")));
        // another user or URL has its own file
        assert!(SessionStore::new(dir.path(), "https://vc/sdk", "other").load().is_none());
        // damage of every kind: no panic, no session
        for bad in [
            &b"{"[..],
            b"",
            b"\xff\xfe",
            b"[]",
            br#"{"url":"https://vc/sdk","user":"admin","cookie":"a;b","service_content":{}}"#,
        ] {
            std::fs::write(store.path(), bad).unwrap();
            assert!(store.load().is_none());
        }
        std::fs::write(store.path(), vec![b' '; (MAX_BYTES + 1) as usize]).unwrap();
        assert!(store.load().is_none());
    }

    /// The cookie is a credential: it is never written into, or read from, a directory that others could
    /// change (a `sessions` that is a link elsewhere, a state dir open to everyone or owned by another user).
    #[test]
    fn sessions_go_only_into_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(outside.path(), state.join("sessions")).unwrap();
        let store = SessionStore::new(&state, "https://vc/sdk", "admin");
        assert!(store.save("cookie-through-a-link", &sc()).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "a session was written through the link");
        // one planted there is not read either
        let planted = SessionStore::new(outside.path(), "https://vc/sdk", "admin");
        std::fs::create_dir_all(&planted.dir).unwrap();
        std::fs::write(
            outside.path().join(store.path().file_name().unwrap()),
            serde_json::to_vec(&serde_json::json!({"url": "https://vc/sdk", "user": "admin", "cookie": "planted",
                "service_content": serde_json::to_value(sc()).unwrap()}))
            .unwrap(),
        )
        .unwrap();
        assert!(store.load().is_none(), "a session read through a link");
        // a state dir open to everyone
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let store = SessionStore::new(&open, "https://vc/sdk", "admin");
        assert!(store.save("cookie", &sc()).is_err());
        assert!(!open.join("sessions").exists());
        // a private one: the directory is made 0700
        let store = SessionStore::new(&dir.path().join("private"), "https://vc/sdk", "admin");
        store.save("cookie", &sc()).unwrap();
        let mode = std::fs::metadata(dir.path().join("private/sessions")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(store.load().unwrap().cookie, "cookie");
    }

    #[test]
    fn remembers_inventory_objects_across_new_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path(), "https://vc/sdk", "admin");
        let dc = MoRef::new("Datacenter", "datacenter-3");
        // nothing to remember into without a session
        store.remember("DC1", Some(&dc));
        assert!(store.load().is_none());
        store.save("abc123", &sc()).unwrap();
        store.remember("DC1", Some(&dc));
        assert_eq!(store.load().unwrap().inventory.get("DC1"), Some(&dc));
        // a new login keeps what the file remembers
        store.save("def456", &sc()).unwrap();
        let got = store.load().unwrap();
        assert_eq!((got.cookie.as_str(), got.inventory.get("DC1")), ("def456", Some(&dc)));
        store.remember("DC1", None);
        assert!(store.load().unwrap().inventory.is_empty());
        // a file of an older vmcpi, without the inventory, is still a session
        std::fs::write(
            store.path(),
            serde_json::json!({"url": "https://vc/sdk", "user": "admin", "cookie": "old", "service_content": sc()})
                .to_string(),
        )
        .unwrap();
        assert!(store.load().unwrap().inventory.is_empty());
    }

    #[test]
    fn without_the_lock_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path(), "https://vc/sdk", "admin");
        // the lock file's place is taken by a directory: the lock cannot be had, and the closure must not run
        std::fs::create_dir_all(store.path.with_extension("lock")).unwrap();
        let mut ran = false;
        let e = store.locked(|| ran = true).unwrap_err();
        assert!(!ran, "the closure ran without the lock");
        assert!(e.to_string().contains(".lock"), "{e}");
    }

    #[test]
    fn the_lock_serialises() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path(), "https://vc/sdk", "admin");
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (store, inside) = (store.clone(), inside.clone());
                std::thread::spawn(move || {
                    store
                        .locked(|| {
                            assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        })
                        .unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
