//! Settings media: how agent settings reach the guest.
//!
//! - [`MediumKind::CdromEnv`] for vSphere-format stemcells: an ISO 9660 image labelled `ENV` whose root holds
//!   one file, `env`, which the agent reads from the first optical drive (bosh-agent's `CDROM` settings
//!   source mounts `/dev/sr0` and reads `env`).
//! - [`MediumKind::ConfigDrive`] for OpenStack-format stemcells: an ISO 9660 image labelled `config-2` holding
//!   `ec2/latest/user-data` (the settings) and `ec2/latest/meta-data.json`: the paths of the `ConfigDrive`
//!   source in the OpenStack stemcells' agent.json, which mounts `/dev/disk/by-label/config-2` (or
//!   `CONFIG-2`).
//!
//! Both are written in-process by [`crate::cpi::iso9660`] (Rock Ridge and Joliet names, every date pinned), so the
//! same settings always give the same bytes (checked by a golden test). They used to be written by Debian's
//! `xorriso`, which cost about 115 ms a medium (a fixed 100 ms sleep inside libisofs and an fsync); the
//! reader still reads those media, so VMs created before keep working.

/// Which layout the stemcell's agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediumKind {
    CdromEnv,
    ConfigDrive,
}

#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    #[error("cannot write the settings medium")]
    Write(#[source] crate::cpi::iso9660::IsoError),
    #[error("cannot read the settings medium")]
    Read(#[source] crate::cpi::iso9660::IsoError),
}

impl MediumKind {
    /// Path of the settings file inside the image.
    pub fn settings_path(self) -> &'static str {
        match self {
            MediumKind::CdromEnv => "/env",
            MediumKind::ConfigDrive => "/ec2/latest/user-data",
        }
    }

    /// The volume label the agent (or udev's `/dev/disk/by-label`) looks for.
    pub fn label(self) -> &'static str {
        match self {
            MediumKind::CdromEnv => "ENV",
            MediumKind::ConfigDrive => "config-2",
        }
    }
}

/// Builds the image for `settings` (the agent settings JSON); `instance_id` goes into the config drive's
/// meta-data.
pub fn build(kind: MediumKind, settings: &[u8], instance_id: &str) -> Result<Vec<u8>, MediumError> {
    build_with(kind, settings, instance_id, true)
}

/// [`build`] without the run-out padding (150 zero sectors, 300 KiB): for a virtual drive whose size is the
/// image's own (a vSphere CD-ROM backed by an ISO file on a datastore, which the image is uploaded to on
/// every settings change; the official vSphere CPI's env ISO has never been padded either).
pub fn build_unpadded(kind: MediumKind, settings: &[u8], instance_id: &str) -> Result<Vec<u8>, MediumError> {
    build_with(kind, settings, instance_id, false)
}

fn build_with(kind: MediumKind, settings: &[u8], instance_id: &str, padded: bool) -> Result<Vec<u8>, MediumError> {
    let meta;
    let files: Vec<(&str, &[u8])> = match kind {
        MediumKind::CdromEnv => vec![("env", settings)],
        MediumKind::ConfigDrive => {
            meta = serde_json::json!({"instance-id": instance_id, "uuid": instance_id}).to_string();
            vec![("ec2/latest/user-data", settings), ("ec2/latest/meta-data.json", meta.as_bytes())]
        }
    };
    let image = if padded {
        crate::cpi::iso9660::write(kind.label(), &files)
    } else {
        crate::cpi::iso9660::write_padded(kind.label(), &files, 0)
    };
    image.map_err(MediumError::Write)
}

/// Reads the settings file back out of an image written by [`build`] (or by the xorriso-based writer of
/// earlier versions).
pub fn read_settings(kind: MediumKind, image: &[u8]) -> Result<Vec<u8>, MediumError> {
    crate::cpi::iso9660::read_file(image, kind.settings_path()).map_err(MediumError::Read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpadded_media_end_with_their_last_file() {
        let s = br#"{"agent_id":"a"}"#;
        let padded = build(MediumKind::CdromEnv, s, "vm-1").unwrap();
        let img = build_unpadded(MediumKind::CdromEnv, s, "vm-1").unwrap();
        assert_eq!(padded.len() - img.len(), 150 * crate::cpi::iso9660::SECTOR);
        assert!(img.len() < 64 << 10, "{} bytes", img.len());
        assert_eq!(read_settings(MediumKind::CdromEnv, &img).unwrap(), s);
        assert_eq!(crate::cpi::iso9660::label(&img).unwrap(), "ENV");
        // the volume's size is the image's
        let blocks = u32::from_le_bytes(img[16 * 2048 + 80..16 * 2048 + 84].try_into().unwrap()) as usize;
        assert_eq!(blocks * crate::cpi::iso9660::SECTOR, img.len());
    }

    #[test]
    fn layouts_the_agents_read() {
        let s = br#"{"agent_id":"a"}"#;
        let img = build(MediumKind::ConfigDrive, s, "vm-1").unwrap();
        assert_eq!(crate::cpi::iso9660::label(&img).unwrap(), "config-2");
        assert_eq!(read_settings(MediumKind::ConfigDrive, &img).unwrap(), s);
        let meta: serde_json::Value =
            serde_json::from_slice(&crate::cpi::iso9660::read_file(&img, "ec2/latest/meta-data.json").unwrap())
                .unwrap();
        assert_eq!(meta, serde_json::json!({"instance-id": "vm-1", "uuid": "vm-1"}));
        let img = build(MediumKind::CdromEnv, s, "vm-1").unwrap();
        assert_eq!(crate::cpi::iso9660::label(&img).unwrap(), "ENV");
        assert_eq!(read_settings(MediumKind::CdromEnv, &img).unwrap(), s);
        assert!(matches!(read_settings(MediumKind::ConfigDrive, &img), Err(MediumError::Read(_))));
    }

    #[test]
    fn a_foreign_image_is_an_error() {
        assert!(matches!(read_settings(MediumKind::CdromEnv, b"not an iso"), Err(MediumError::Read(_))));
    }
}
