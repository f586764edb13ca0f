//! ISO 9660 images for the settings media, written and read in-process.
//!
//! The writer takes a volume label and a few small files (`path -> bytes`) and lays out an ECMA-119 image
//! with two name extensions, so every system shows the real, lower-case names:
//! - **Rock Ridge** (RRIP 1.10 over SUSP) on the primary tree: `SP` + `ER` on the root (the `ER` in a
//!   continuation area, as it does not fit in the root's record), `PX` (modes, owner root) and `NM` (the real
//!   name) on every record. Linux uses these names by default.
//! - **Joliet** (level 3, UCS-2): a second tree with the real names, for systems without Rock Ridge (and the
//!   label that libblkid, hence udev's `/dev/disk/by-label`, reports).
//!
//! The primary tree's own names are upper-case ISO 9660 level 2 identifiers (`META_DATA.JSON;1`), shown only
//! when both extensions are turned off. Every date in the image is 2000-01-01 00:00:00 UTC and every byte
//! follows from the input, so the same files always give the same image.
//!
//! The reader ([`read_file`], [`label`]) finds one file by path in an image made by this writer or by another
//! (older vmcpi media were written by xorriso): it matches Rock Ridge names, then plain ISO 9660 names (case
//! and version insensitive), then Joliet names. It checks every offset against the image and fails with an
//! [`IsoError`] on anything malformed; it never panics.
//!
//! The writer is in [`write`](mod@write), the reader in [`read`].
mod read;
mod write;

pub use read::{label, read_file};
pub use write::{write, write_padded};

/// Size of a logical sector (and block) in the images written and read.
pub const SECTOR: usize = 2048;

const FLAG_DIR: u8 = 0x02;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsoError {
    #[error("invalid volume label {0:?}: 1 to 16 characters of A-Z a-z 0-9 - _ .")]
    Label(String),
    #[error("invalid path {0:?} in the image: components of 1 to 64 printable ASCII characters, not . or .., no ;")]
    Path(String),
    #[error("{0:?} is given twice, or both as a file and as a directory")]
    FileAndDir(String),
    #[error("the files are too large for a settings image ({0} bytes)")]
    TooLarge(usize),
    #[error("not an ISO 9660 image: {0}")]
    NotIso(&'static str),
    #[error("malformed ISO 9660 image: {0}")]
    Malformed(String),
    #[error("{0} is not in the image")]
    NotFound(String),
    #[error("{0} is a directory, not a file")]
    NotAFile(String),
}

fn malformed(what: impl Into<String>) -> IsoError {
    IsoError::Malformed(what.into())
}

/// The padding byte after a file identifier of even length (so the system use field starts at an even
/// offset).
fn id_padding(name_len: usize) -> usize {
    usize::from(name_len.is_multiple_of(2))
}

#[cfg(test)]
mod tests {
    /// The files the tests write and read back.
    pub(super) const FILES: &[(&str, &[u8])] = &[
        ("ec2/latest/user-data", br#"{"agent_id":"a"}"#),
        ("ec2/latest/meta-data.json", br#"{"instance-id":"vm-1"}"#),
        ("env", b"{}"),
    ];
}
