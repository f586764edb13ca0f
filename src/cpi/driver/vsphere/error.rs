//! What goes wrong in the vSphere driver itself while it makes a VM, with the names involved. Each variant
//! says here whether retrying can help ([`DriverFailure`]), and so becomes a [`crate::cpi::error::DriverError`].
use crate::cpi::error::DriverFailure;

#[derive(Debug, thiserror::Error)]
pub enum VsphereError {
    #[error("stemcell {stemcell} has no snapshot to clone from: upload it again")]
    StemcellWithoutSnapshot { stemcell: String },
    #[error("stemcell {stemcell} has no disk")]
    StemcellWithoutDisk { stemcell: String },
    #[error("{call} returned no VM")]
    NoVmReturned { call: &'static str },
    #[error("the new VM {vm} vanished")]
    Vanished { vm: String },
    #[error("VM {vm} has no SCSI controller for its disks")]
    NoScsiController { vm: String },
    #[error("VM {vm} has no free SCSI unit for {what}")]
    NoFreeScsiUnit { vm: String, what: &'static str },
    #[error("VM {vm} has no free IDE slot for the settings CD-ROM")]
    NoFreeIdeSlot { vm: String },
}

impl DriverFailure for VsphereError {
    fn retryable(&self) -> bool {
        match self {
            // the server answered oddly or someone removed the VM meanwhile: another try may pass
            VsphereError::NoVmReturned { .. } | VsphereError::Vanished { .. } => true,
            // the stemcell or the VM's hardware is what it is: the same create fails the same way
            VsphereError::StemcellWithoutSnapshot { .. }
            | VsphereError::StemcellWithoutDisk { .. }
            | VsphereError::NoScsiController { .. }
            | VsphereError::NoFreeScsiUnit { .. }
            | VsphereError::NoFreeIdeSlot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::{DriverError, ErrorKind};

    #[test]
    fn permanent_create_failures_are_not_retryable() {
        for e in [
            VsphereError::StemcellWithoutSnapshot { stemcell: "sc-1".into() },
            VsphereError::NoFreeIdeSlot { vm: "vm-1".into() },
            VsphereError::NoScsiController { vm: "vm-1".into() },
        ] {
            let text = e.to_string();
            let d: DriverError = e.into();
            assert_eq!((d.kind(), d.retryable(), d.to_string()), (ErrorKind::Cloud, false, text));
        }
        let d: DriverError = VsphereError::Vanished { vm: "vm-1".into() }.into();
        assert!(d.retryable());
    }
}
