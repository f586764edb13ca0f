//! What goes wrong in the vmrun driver itself, with the CIDs and paths involved. Each variant says here
//! whether retrying can help ([`DriverFailure`]), and so becomes a [`DriverError`].
use super::host::BASE_SNAPSHOT;
use crate::cpi::error::{DriverError, DriverFailure};

#[derive(Debug, thiserror::Error)]
pub enum VmrunError {
    #[error("unexpected `vmrun list` output: {:?}", crate::common::logger::redact(.head))]
    ListOutput { head: String },
    #[error("vmrun snapshot reported success but {vmx} has no snapshot {BASE_SNAPSHOT}")]
    NoBaseSnapshot { vmx: String },
    #[error("stemcell {stemcell} is the parent of linked clones {}; delete those VMs first", clones.join(", "))]
    StemcellInUse { stemcell: String, clones: Vec<String> },
    #[error("{disk} is in use by a running VM (VMware holds {lock}); detach it {when}")]
    DiskInUse { disk: String, lock: String, when: &'static str },
    #[error("{vm} has no free SCSI unit")]
    NoFreeUnit { vm: String },
    #[error("bootstrap script failed in {vm}")]
    Bootstrap {
        vm: String,
        #[source]
        source: DriverError,
    },
}

impl DriverFailure for VmrunError {
    fn retryable(&self) -> bool {
        match self {
            // vmrun printed something else than it does: a hiccup of the tool, worth another try
            VmrunError::ListOutput { .. } => true,
            // a stemcell without its base snapshot, a stemcell still in use, a disk held by a running VM,
            // a VM without a free unit, a script that fails: the same call fails the same way
            VmrunError::NoBaseSnapshot { .. }
            | VmrunError::StemcellInUse { .. }
            | VmrunError::DiskInUse { .. }
            | VmrunError::NoFreeUnit { .. }
            | VmrunError::Bootstrap { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::ErrorKind;

    #[test]
    fn kinds_retry_flags_and_messages() {
        let e: DriverError = VmrunError::NoBaseSnapshot { vmx: "/s/sc-1/sc-1.vmx".into() }.into();
        assert_eq!((e.kind(), e.retryable()), (ErrorKind::Cloud, false));
        assert_eq!(e.to_string(), "vmrun snapshot reported success but /s/sc-1/sc-1.vmx has no snapshot vmcpi-base");
        let e: DriverError = VmrunError::ListOutput { head: "x".into() }.into();
        assert!(e.retryable());
        let inner = DriverError::failed("vmrun runProgramInGuest on local", "exit 3");
        let e: DriverError = VmrunError::Bootstrap { vm: "vm-1".into(), source: inner }.into();
        assert!(!e.retryable());
        assert_eq!(e.to_string(), "bootstrap script failed in vm-1: vmrun runProgramInGuest on local: exit 3");
    }
}
