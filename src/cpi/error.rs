//! The one error a driver reports: a [`ErrorKind`] (which `Bosh::Clouds::*` type it becomes), an explicit
//! retry flag (whether the same call may succeed later), a message, and the cause it wraps.
//! [`crate::cpi::rpc::dispatch`] is the only place that turns them into BOSH error objects; drivers only say *what*
//! went wrong and *whether trying again can help*.
use crate::cpi::exec::ExecError;
use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong, as the director needs to know it (chooses the `Bosh::Clouds::*` type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    VmNotFound,
    DiskNotFound,
    DiskNotAttached,
    StemcellNotFound,
    SnapshotNotFound,
    NotSupported,
    NotImplemented,
    /// The request itself is wrong (cloud_properties, sizes, CIDs, credentials): retrying will not help.
    Invalid,
    NoDiskSpace,
    NetworkNotFound,
    /// The hypervisor, a tool or the infrastructure failed.
    Cloud,
}

/// A driver failure. `Display` prints the message followed by the cause chain, each cause once.
#[derive(Debug)]
pub struct DriverError {
    kind: ErrorKind,
    retry: bool,
    message: String,
    source: Option<BoxError>,
}

pub type DriverResult<T> = Result<T, DriverError>;

impl DriverError {
    /// An error of `kind` that is permanent (retrying the same call fails the same way).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DriverError { kind, retry: false, message: message.into(), source: None }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// Whether the same call may succeed when tried again (`ok_to_retry`).
    pub fn retryable(&self) -> bool {
        self.retry
    }
    /// Sets the retry flag explicitly.
    pub fn with_retry(mut self, retry: bool) -> Self {
        self.retry = retry;
        self
    }
    /// Adds the cause (printed once, after the message).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn vm_not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::VmNotFound, format!("VM {what} not found"))
    }
    pub fn disk_not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::DiskNotFound, format!("disk {what} not found"))
    }
    pub fn disk_not_attached(vm: impl fmt::Display, disk: impl fmt::Display) -> Self {
        Self::new(ErrorKind::DiskNotAttached, format!("disk {disk} is not attached to VM {vm}"))
    }
    pub fn stemcell_not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::StemcellNotFound, format!("stemcell {what} not found"))
    }
    pub fn snapshot_not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::SnapshotNotFound, format!("snapshot {what} not found"))
    }
    pub fn not_supported(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotSupported, format!("not supported: {what}"))
    }
    pub fn not_implemented(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotImplemented, format!("not implemented: {what}"))
    }
    /// The request is wrong: `what` names the part, `reason` says why. Never retryable.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, format!("invalid {}: {}", what.into(), reason.into()))
    }
    /// Out of space: retryable (space may be freed, or another datastore chosen).
    pub fn no_disk_space(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NoDiskSpace, format!("not enough disk space: {what}")).with_retry(true)
    }
    /// Adds a clause to the message (`message, extra`).
    pub fn append(mut self, extra: &str) -> Self {
        self.message.push_str(", ");
        self.message.push_str(extra);
        self
    }
    pub fn network_not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NetworkNotFound, format!("network {what} not found"))
    }
    /// A failure that the same call cannot get past (a broken stemcell, a VM without a free slot, …).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cloud, message)
    }
    /// A failure that may pass (a timeout, a busy resource, a hypervisor hiccup).
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cloud, message).with_retry(true)
    }
    /// A tool or library call failed while doing `context`: retryable, the cause is kept.
    pub fn failed(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Cloud, context).with_retry(true).with_source(source)
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(&self.message, self.source.as_deref().map(|s| s as &(dyn StdError + 'static))))
    }
}

impl StdError for DriverError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// `message: cause: cause…`, leaving out a cause whose text an outer message already shows (many errors
/// print their source inline), so every cause appears once. The message is vmcpi's own text; a cause of
/// another layer is shown as [`shown`] says.
fn chain(message: &str, mut next: Option<&(dyn StdError + 'static)>) -> String {
    let mut text = message.to_string();
    while let Some(e) = next {
        let part = shown(e);
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

/// The text of a cause. vmcpi's own error types scrub what they hold from outside (a tool's output, what the
/// guest said) themselves, so that their own words stay as they are; any other error — a library's, the
/// OS's, the vSphere client's (server faults) — is outside text as a whole and is scrubbed of secrets.
fn shown(e: &(dyn StdError + 'static)) -> String {
    use crate::cpi::driver::{libvirt, vmrun, vsphere};
    let own = e.is::<DriverError>()
        || e.is::<ExecError>()
        || e.is::<crate::cpi::transport::TransportError>()
        || e.is::<crate::cpi::statedir::StateDirError>()
        || e.is::<vmrun::host::ToolError>()
        || e.is::<vmrun::error::VmrunError>()
        || e.is::<libvirt::error::LibvirtError>()
        || e.is::<vsphere::error::VsphereError>()
        || e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<crate::cpi::statedir::StateDirError>());
    if own {
        e.to_string()
    } else {
        crate::common::logger::redact(&e.to_string())
    }
}

/// Whether an I/O error may pass when the same call is tried again: not when what was read is wrong,
/// missing or refused (`Other` is how libraries such as tar and serde report malformed data; an errno the
/// standard library does not name is `Uncategorized`, not `Other`).
pub fn io_may_pass(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    !matches!(
        e.kind(),
        UnexpectedEof
            | InvalidData
            | InvalidInput
            | NotFound
            | PermissionDenied
            | AlreadyExists
            | Unsupported
            | IsADirectory
            | NotADirectory
            | InvalidFilename
            | FileTooLarge
            | Other
    )
}

/// Adds context to an error from a tool or library: a [`DriverError::failed`] that is permanent unless the
/// cause is an I/O error that may pass ([`io_may_pass`]) or an external command that failed (whose own
/// error says so); a place that knows better sets the flag with [`DriverError::with_retry`].
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> DriverResult<T>;
}

impl<T, E: Into<BoxError>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> DriverResult<T> {
        self.map_err(|e| {
            let e: BoxError = e.into();
            let retry = e.downcast_ref::<std::io::Error>().is_some_and(io_may_pass) || e.is::<ExecError>();
            DriverError::failed(what(), e).with_retry(retry)
        })
    }
}

impl From<crate::cpi::stemcell::StemcellError> for DriverError {
    fn from(e: crate::cpi::stemcell::StemcellError) -> Self {
        match e {
            // a refused disk is permanent, and its message says what was found
            crate::cpi::stemcell::StemcellError::Disk(d) if !d.is_io() => d.into(),
            e => {
                let retry = e.retryable();
                DriverError::failed("cannot read the stemcell image", e).with_retry(retry)
            }
        }
    }
}

/// A driver's own error enum (with the CIDs and paths involved): each variant says whether the same call
/// may pass when tried again, and which kind it is ([`ErrorKind::Cloud`] unless it says otherwise). It
/// becomes a [`DriverError`] with its text as the message and itself as the source.
pub trait DriverFailure: StdError + Send + Sync + Sized + 'static {
    /// Whether the same call may succeed when tried again (`ok_to_retry`).
    fn retryable(&self) -> bool;
    fn kind(&self) -> ErrorKind {
        ErrorKind::Cloud
    }
}

impl<E: DriverFailure> From<E> for DriverError {
    fn from(e: E) -> Self {
        DriverError::new(e.kind(), e.to_string()).with_retry(e.retryable()).with_source(e)
    }
}

impl From<ExecError> for DriverError {
    fn from(e: ExecError) -> Self {
        DriverError::failed("external command failed", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_explicit_per_constructor() {
        assert!(!DriverError::other("stemcell sc-1 has no snapshot to clone from: upload it again").retryable());
        assert!(!DriverError::invalid("cloud_properties", "cpu must be a number").retryable());
        assert!(!DriverError::vm_not_found("vm-1").retryable());
        assert!(DriverError::transient("the guest was not ready within 5 s").retryable());
        assert!(DriverError::no_disk_space("ds1").retryable());
        assert!(DriverError::failed("cannot clone", "boom").retryable());
        // context: permanent unless the cause is an I/O error that may pass
        let malformed: Result<(), _> = Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad header"));
        assert!(!malformed.context(|| "cannot read".into()).unwrap_err().retryable());
        let eio: Result<(), _> = Err(std::io::Error::from_raw_os_error(5));
        assert!(eio.context(|| "cannot read".into()).unwrap_err().retryable());
        let json: Result<(), _> = serde_json::from_str::<()>("{");
        assert!(!json.context(|| "cannot parse".into()).unwrap_err().retryable());
        assert!(!DriverError::failed("cannot clone", "boom").with_retry(false).retryable());
    }

    /// A cause from outside (a library's, a server's error) loses the secrets it quotes, however short; the
    /// message and the causes of vmcpi's own types keep their words.
    #[test]
    fn outside_causes_are_scrubbed_and_own_words_kept() {
        // (the registry is the process's: the words are this test's own, so no other test sees them masked)
        crate::common::logger::add_secret("k9z");
        crate::common::logger::add_secret("frobnicate");
        let e = DriverError::failed("cannot frobnicate", "server said: bad password k9z");
        assert_eq!(e.to_string(), "cannot frobnicate: server said: bad password <redacted>");
        let exec = ExecError::Failed {
            cmdline: "virsh x".into(),
            status: "status 1".into(),
            stderr: "error: k9z rejected".into(),
            stdout: String::new(),
        };
        let e = DriverError::failed("cannot frobnicate vm-1", exec);
        assert_eq!(e.to_string(), "cannot frobnicate vm-1: `virsh x` exited with status 1: error: <redacted> rejected");
    }

    #[test]
    fn the_cause_chain_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot run qemu-img: {0}")]
        struct Inline(#[source] std::io::Error);
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = DriverError::failed("cannot convert the image", Inline(io()));
        assert_eq!(e.to_string(), "cannot convert the image: cannot run qemu-img: no such file");
        let e = DriverError::failed("cannot read settings", io());
        assert_eq!(e.to_string(), "cannot read settings: no such file");
        let outer = DriverError::failed("create_vm", DriverError::failed("cannot read settings", io()));
        assert_eq!(outer.to_string(), "create_vm: cannot read settings: no such file");
    }
}
