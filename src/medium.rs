//! Settings media: how agent settings reach the guest.
//!
//! - [`MediumKind::CdromEnv`] for vSphere-format stemcells: an ISO9660 image whose root holds one file,
//!   `ENV` (Linux shows it as `env`), read by the agent from the first optical drive (`/dev/sr0`).
//! - [`MediumKind::ConfigDrive`] for OpenStack-format stemcells: an ISO9660 image labelled `config-2` with
//!   Rock Ridge and Joliet, holding `ec2/latest/user-data` (the settings) and `ec2/latest/meta-data.json`.
//!
//! Images are written by Debian's `xorriso` with every date pinned, owner root and fixed modes, so the same
//! settings always give the same bytes (checked by a golden test). The `hadris-iso` crate was considered
//! first, but version 2.5 stamps the current time into its volume descriptors and directory records with no
//! way to fix it, so its images are not byte-stable.
use std::path::Path;

/// Which layout the stemcell's agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediumKind {
    CdromEnv,
    ConfigDrive,
}

/// Every date in the image: 2000-01-01 00:00:00 UTC.
const FIXED_DATE: &str = "2000010100000000";

#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    #[error("cannot stage the settings medium: {0}")]
    Stage(#[source] std::io::Error),
    #[error("xorriso failed to write the settings medium")]
    Write(#[source] crate::exec::ExecError),
    #[error("xorriso failed to read the settings medium")]
    Read(#[source] crate::exec::ExecError),
}

impl MediumKind {
    /// Path of the settings file inside the image.
    pub fn settings_path(self) -> &'static str {
        match self {
            MediumKind::CdromEnv => "/ENV",
            MediumKind::ConfigDrive => "/ec2/latest/user-data",
        }
    }
    fn volume_id(self) -> &'static str {
        match self {
            MediumKind::CdromEnv => "ENV",
            MediumKind::ConfigDrive => "config-2",
        }
    }
}

/// Builds the image for `settings` (the agent settings JSON); `instance_id` goes into the config drive's
/// meta-data.
pub fn build(kind: MediumKind, settings: &[u8], instance_id: &str, xorriso: &Path) -> Result<Vec<u8>, MediumError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("vmcpi-medium-").tempdir().map_err(MediumError::Stage)?;
    let root = dir.path().join("root");
    let write = |rel: &str, data: &[u8]| -> std::io::Result<()> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data)
    };
    let staged = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&root)?;
        match kind {
            MediumKind::CdromEnv => write("ENV", settings)?,
            MediumKind::ConfigDrive => {
                write("ec2/latest/user-data", settings)?;
                let meta = serde_json::json!({"instance-id": instance_id, "uuid": instance_id});
                write("ec2/latest/meta-data.json", meta.to_string().as_bytes())?;
            }
        }
        // fixed modes: the image must not depend on the umask of whoever runs the CPI
        for entry in walk(&root)? {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    })();
    staged.map_err(MediumError::Stage)?;
    let out = dir.path().join("medium.iso");
    let rock_ridge = if kind == MediumKind::ConfigDrive { "on" } else { "off" };
    crate::exec::Cmd::new(xorriso)
        .args(["-no_rc", "-report_about", "SORRY", "-abort_on", "FAILURE"])
        .arg("-outdev")
        .arg(&out)
        .args(["-volid", kind.volume_id()])
        .args(["-joliet", rock_ridge, "-rockridge", rock_ridge])
        .args(["-volume_date", "c", FIXED_DATE, "-volume_date", "m", FIXED_DATE])
        .args(["-volume_date", "x", "default", "-volume_date", "f", "default"])
        .args(["-volume_date", "uuid", FIXED_DATE, "-volume_date", "all_file_dates", FIXED_DATE])
        .arg("-map")
        .arg(&root)
        .arg("/")
        .args(["-chown_r", "0", "/", "--", "-chgrp_r", "0", "/", "--"])
        .arg("-commit")
        .run()
        .map_err(MediumError::Write)?;
    std::fs::read(&out).map_err(MediumError::Stage)
}

/// Reads the settings file back out of an image written by [`build`].
pub fn read_settings(kind: MediumKind, image: &Path, xorriso: &Path) -> Result<Vec<u8>, MediumError> {
    let dir = tempfile::Builder::new().prefix("vmcpi-medium-").tempdir().map_err(MediumError::Stage)?;
    let out = dir.path().join("settings.json");
    crate::exec::Cmd::new(xorriso)
        .args(["-no_rc", "-report_about", "SORRY", "-abort_on", "FAILURE", "-osirrox", "on"])
        .arg("-indev")
        .arg(image)
        .args(["-extract", kind.settings_path()])
        .arg(&out)
        .run()
        .map_err(MediumError::Read)?;
    std::fs::read(&out).map_err(MediumError::Stage)
}

fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
