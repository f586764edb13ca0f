//! Persistent disks: their record beside each `.vmdk` and the SCSI units they use.
use super::*;

/// `disk-….json` beside each persistent disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct DiskRecord {
    pub(super) size_mib: u64,
    #[serde(default)]
    pub(super) metadata: Metadata,
}

/// SCSI unit numbers for persistent disks (7 is the controller).
pub(super) const PERSISTENT_UNITS: [u32; 13] = [2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];

impl Vmrun {
    pub(super) fn read_disk_record(&self, disk: &str) -> DriverResult<DiskRecord> {
        let p = self.disk_record(disk);
        match self.t.read(&p) {
            Ok(b) => serde_json::from_slice(&b).context(|| format!("{p} is not valid")),
            Err(TransportError::NotFound { .. }) => Ok(DiskRecord::default()),
            Err(e) => Err(DriverError::failed(format!("cannot read {p}"), e)),
        }
    }

    pub(super) fn write_disk_record(&self, disk: &str, r: &DiskRecord) -> DriverResult<()> {
        let p = self.disk_record(disk);
        let body = serde_json::to_vec_pretty(r).context(|| "cannot encode the disk record".into())?;
        self.tr(|| format!("cannot write {p}"), self.t.write(&p, &body))
    }
}
