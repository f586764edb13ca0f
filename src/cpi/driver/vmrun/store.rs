//! The host and the store: the transport, locks and `.vmx` files.
use super::*;

impl Vmrun {
    pub(super) fn player(&self) -> bool {
        self.cfg.host_type == "player"
    }

    pub(super) fn host(&self) -> Host<'_> {
        Host { t: self.t.as_ref(), cfg: &self.cfg }
    }

    pub(super) fn tr<T>(&self, what: impl FnOnce() -> String, r: Result<T, TransportError>) -> DriverResult<T> {
        r.map_err(|e| DriverError::failed(what(), e))
    }

    /// The lock `locks/<name>.lock`.
    pub(super) fn lock(&self, name: &str) -> DriverResult<Box<dyn LockGuard + '_>> {
        let dir = self.store("locks");
        let path = join(&dir, &format!("{name}.lock"));
        let timeout = Duration::from_secs(self.cfg.lock_timeout_seconds);
        match self.t.lock(&path, timeout) {
            Ok(g) => Ok(g),
            // the first lock on a new store: make the directory (another process may be doing the same)
            Err(TransportError::Io { .. }) => {
                self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
                self.tr(|| format!("cannot lock {name}"), self.t.lock(&path, timeout))
            }
            Err(e) => Err(DriverError::failed(format!("cannot lock {name}"), e)),
        }
    }

    /// Removes the lock file of something just deleted, while its lock is held. A call that waited on the
    /// old file then finds the thing gone, as it would anyway; the store does not collect a file per VM.
    pub(super) fn forget_lock(&self, name: &str) {
        let path = join(&self.store("locks"), &format!("{name}.lock"));
        if let Err(e) = self.t.remove_file(&path) {
            warn!("could not remove lock file {path}: {e}");
        }
    }

    pub(super) fn read_vmx(&self, path: &str) -> DriverResult<Vmx> {
        let bytes = self.tr(|| format!("cannot read {path}"), self.t.read(path))?;
        Ok(Vmx::parse(&String::from_utf8_lossy(&bytes)))
    }

    pub(super) fn write_vmx(&self, path: &str, v: &Vmx) -> DriverResult<()> {
        self.tr(|| format!("cannot write {path}"), self.t.write(path, v.render().as_bytes()))
    }
}
