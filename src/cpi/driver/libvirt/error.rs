//! What goes wrong in the libvirt driver itself, with the CIDs, volumes and pools involved. Each variant
//! says here whether retrying can help ([`DriverFailure`]), and so becomes a [`crate::cpi::error::DriverError`].
//! A failed libvirt call becomes one through [`rpc`]: libvirt's code and message are kept as the cause.
use crate::cpi::error::{DriverError, DriverFailure};
use crate::cpi::libvirt_rpc::{self, code};

/// libvirt's codes for a request that the same call repeats the same way: bad XML or arguments, a feature
/// the hypervisor lacks, a refusal.
const PERMANENT: &[i32] = &[
    code::NO_SUPPORT,
    code::INVALID_ARG,
    code::XML_ERROR,
    code::OPERATION_DENIED,
    code::AUTH_FAILED,
    code::CONFIG_UNSUPPORTED,
    code::ARGUMENT_UNSUPPORTED,
    code::OPERATION_UNSUPPORTED,
    code::ACCESS_DENIED,
    code::XML_INVALID_SCHEMA,
];

/// A failed libvirt call while doing `what`, libvirt's code and message kept as the cause. A full pool is
/// its own BOSH error (retryable: space may be freed); a request libvirt refuses as such is not retried.
pub fn rpc(what: impl Into<String>, e: libvirt_rpc::Error) -> DriverError {
    let what = what.into();
    if let Some(r) = e.remote() {
        let msg = r.message.as_deref().unwrap_or("");
        if msg.contains("No space left") || msg.contains("Not enough space") {
            return DriverError::no_disk_space(format!("{what}: {}", crate::common::logger::redact(&r.to_string())));
        }
        let permanent = PERMANENT.contains(&r.code);
        return DriverError::failed(what, e).with_retry(!permanent);
    }
    let permanent = matches!(e, libvirt_rpc::Error::Invalid(_) | libvirt_rpc::Error::Uri { .. });
    DriverError::failed(what, e).with_retry(!permanent)
}

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("domain {vm} was not created by vmcpi (no vmcpi metadata)")]
    NotOurs { vm: String },
    #[error("{vm} has no free SCSI target")]
    NoFreeScsiTarget { vm: String },
    #[error("{disk} is locked by a process that is not a running vmcpi VM; cannot snapshot it")]
    LockedElsewhere { disk: String },
    #[error(
        "storage pool {pool} does not exist: create it (virsh pool-define-as {pool} dir --target DIR; virsh pool-start {pool}) or set driver.pool_path"
    )]
    NoPool { pool: String },
    // the fields that hold what a tool, the guest or libvirt said are scrubbed of secrets when shown
    #[error("cannot read the XML of {what}: {}", crate::common::logger::redact(.reason))]
    Xml { what: String, reason: String },
    #[error("volume {volume} vanished after upload")]
    Vanished { volume: String },
    #[error("volume {volume} was probed as {probed}, expected {expected}")]
    ProbedFormat { volume: String, probed: String, expected: &'static str },
    #[error("bootstrap script exited with {code} in {vm}: {}", crate::common::logger::redact(.tail))]
    BootstrapExit { vm: String, code: i64, tail: String },
    #[error("bootstrap: {call} in {vm} failed: {}", crate::common::logger::redact(.reason))]
    GuestAgent { vm: String, call: String, reason: String },
}

impl DriverFailure for LibvirtError {
    fn retryable(&self) -> bool {
        match self {
            // someone removed the volume meanwhile: another upload may pass
            LibvirtError::Vanished { .. } => true,
            // a domain of someone else, a full bus, a disk held by another program, a missing pool, XML that
            // vmcpi cannot read, an image of another format, a script that fails, a guest agent that refuses:
            // the same call fails the same way
            LibvirtError::NotOurs { .. }
            | LibvirtError::NoFreeScsiTarget { .. }
            | LibvirtError::LockedElsewhere { .. }
            | LibvirtError::NoPool { .. }
            | LibvirtError::Xml { .. }
            | LibvirtError::ProbedFormat { .. }
            | LibvirtError::BootstrapExit { .. }
            | LibvirtError::GuestAgent { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::{DriverError, ErrorKind};

    #[test]
    fn permanent_failures_are_not_retryable() {
        for e in [
            LibvirtError::NoFreeScsiTarget { vm: "vm-1".into() },
            LibvirtError::NoPool { pool: "p".into() },
            LibvirtError::ProbedFormat { volume: "sc-1".into(), probed: "raw".into(), expected: "qcow2" },
            LibvirtError::BootstrapExit { vm: "vm-1".into(), code: 3, tail: "no such file".into() },
        ] {
            let text = e.to_string();
            let d: DriverError = e.into();
            assert_eq!((d.kind(), d.retryable(), d.to_string()), (ErrorKind::Cloud, false, text));
        }
        let d: DriverError = LibvirtError::Vanished { volume: "sc-1".into() }.into();
        assert!(d.retryable());
        assert_eq!(d.to_string(), "volume sc-1 vanished after upload");
    }
}
