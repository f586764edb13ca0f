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

/// The CID scheme every driver uses for what it creates: a prefix and lowercase hex digits from the kernel's
/// random source. A CID that does not have this shape was not made by this CPI: drivers refuse it before they
/// contact the hypervisor (it names nothing there, and it may be hostile: paths, shell syntax).
pub fn is_generated(cid: &str, prefix: &str, hex_len: usize) -> bool {
    cid.strip_prefix(prefix)
        .is_some_and(|h| h.len() == hex_len && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl VmCid {
    pub const PREFIX: &'static str = "vm-";
    pub const HEX_LEN: usize = 20;
    /// A new VM CID, `vm-<20 hex>`.
    pub fn generate() -> Self {
        VmCid(format!("{}{}", Self::PREFIX, random_hex(Self::HEX_LEN)))
    }
    /// Whether this CID has the shape of one [`VmCid::generate`] makes.
    pub fn is_generated(&self) -> bool {
        is_generated(&self.0, Self::PREFIX, Self::HEX_LEN)
    }
}

impl DiskCid {
    pub const PREFIX: &'static str = "disk-";
    /// A new disk CID, `disk-<hex_len hex>` (15 in libvirt and vmrun, 20 in vSphere: kept so that the disks of
    /// existing deployments stay recognised).
    pub fn generate(hex_len: usize) -> Self {
        DiskCid(format!("{}{}", Self::PREFIX, random_hex(hex_len)))
    }
    pub fn is_generated(&self, hex_len: usize) -> bool {
        is_generated(&self.0, Self::PREFIX, hex_len)
    }
}

impl StemcellCid {
    pub const PREFIX: &'static str = "sc-";
    /// A new stemcell CID, `sc-<hex_len hex>` plus `suffix` (16 hex in libvirt and vmrun, 20 in vSphere).
    pub fn generate(hex_len: usize, suffix: &str) -> Self {
        StemcellCid(format!("{}{}{suffix}", Self::PREFIX, random_hex(hex_len)))
    }
}

impl SnapshotCid {
    pub const PREFIX: &'static str = "snap-";
    pub const HEX_LEN: usize = 15;
    /// A new snapshot CID, `snap-<15 hex>`.
    pub fn generate() -> Self {
        SnapshotCid(format!("{}{}", Self::PREFIX, random_hex(Self::HEX_LEN)))
    }
    pub fn is_generated(&self) -> bool {
        is_generated(&self.0, Self::PREFIX, Self::HEX_LEN)
    }
}

/// A random lowercase hex string of `n` characters, from the kernel's random source.
pub fn random_hex(n: usize) -> String {
    // getrandom fails only without a kernel random source, where no CID could be trusted to be unique
    try_random_hex(n).expect("the kernel's random source (getrandom) failed")
}

/// [`random_hex`] for callers that report the failure of the kernel's random source instead of stopping.
/// getrandom is the only source of random bytes in vmcpi: nothing falls back to the time or the pid.
pub fn try_random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("the kernel's random source (getrandom) failed: {e}")))?;
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    Ok(s)
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
    fn generated_cids_have_the_shared_shape() {
        let vm = VmCid::generate();
        assert!(vm.is_generated() && vm.as_str().len() == 23, "{vm}");
        assert_ne!(VmCid::generate(), vm);
        assert!(DiskCid::generate(15).is_generated(15));
        assert!(!DiskCid::generate(20).is_generated(15));
        assert!(SnapshotCid::generate().is_generated());
        assert!(StemcellCid::generate(16, "-os").as_str().ends_with("-os"));
        // upper-case hex, other lengths, paths and shell syntax are not ours
        for bad in [
            "vm-0123456789ABCDEF0123",
            "vm-0123",
            "vm-../../etc/passwd0",
            "vm-$(id)0123456789abcd",
            "VM-0123456789abcdef0123",
        ] {
            assert!(!VmCid::new(bad).unwrap().is_generated(), "{bad}");
        }
    }

    #[test]
    fn random_hex_is_hex_and_sized() {
        let a = random_hex(15);
        assert_eq!(a.len(), 15);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_hex(32), random_hex(32));
    }
}
