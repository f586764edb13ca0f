//! CID newtypes. A CID is an opaque, non-empty string chosen by the CPI; the types keep a disk CID from
//! being passed where a VM CID is expected, and deserialization rejects empty values and NUL bytes.
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

macro_rules! cid {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a CID; `Err` names what is wrong with it.
            pub fn new(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                if value.is_empty() {
                    return Err(format!("{} must not be empty", $what));
                }
                if value.contains('\0') {
                    return Err(format!("{} must not contain NUL bytes", $what));
                }
                if value.len() > 1024 {
                    return Err(format!("{} is longer than 1024 bytes", $what));
                }
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

cid!(/// A VM CID.
    VmCid, "VM CID");
cid!(/// A persistent disk CID.
    DiskCid, "disk CID");
cid!(/// A stemcell CID.
    StemcellCid, "stemcell CID");
cid!(/// A disk snapshot CID.
    SnapshotCid, "snapshot CID");
cid!(/// The agent id given to create_vm.
    AgentId, "agent id");

/// A random lowercase hex string of `n` characters, from the kernel's random source.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n.div_ceil(2)];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // no /dev/urandom (a strange chroot): mix time and pid, still unique enough per host
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
                ^ (u128::from(std::process::id()) << 64);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_nul() {
        assert!(VmCid::new("").is_err());
        assert!(VmCid::new("a\0b").is_err());
        assert!(serde_json::from_str::<DiskCid>("\"\"").is_err());
        assert_eq!(serde_json::from_str::<DiskCid>("\"d\"").unwrap().as_str(), "d");
        assert!(serde_json::from_str::<DiskCid>("3").is_err());
    }

    #[test]
    fn random_hex_is_hex_and_sized() {
        let a = random_hex(15);
        assert_eq!(a.len(), 15);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_hex(32), random_hex(32));
    }
}
