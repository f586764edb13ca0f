//! The values the client's procedures answer with or take: states, infos, typed parameters.

/// `virDomainState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
    Other(i32),
}

impl DomainState {
    pub fn from_i32(v: i32) -> DomainState {
        match v {
            0 => DomainState::NoState,
            1 => DomainState::Running,
            2 => DomainState::Blocked,
            3 => DomainState::Paused,
            4 => DomainState::Shutdown,
            5 => DomainState::Shutoff,
            6 => DomainState::Crashed,
            7 => DomainState::PmSuspended,
            v => DomainState::Other(v),
        }
    }

    /// Whether a QEMU process exists for the domain (running, blocked, paused, shutting down, suspended).
    pub fn is_active(self) -> bool {
        !matches!(self, DomainState::Shutoff | DomainState::NoState | DomainState::Crashed)
    }
}

/// `virStoragePoolState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Inactive,
    Building,
    Running,
    Degraded,
    Inaccessible,
    Other(u32),
}

/// `virStoragePoolInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolInfo {
    pub state: PoolState,
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
}

/// `virStorageVolInfo`: `kind` is `virStorageVolType` (0 file, 1 block, 2 dir, 3 network, 4 netdir, 5 ploop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolInfo {
    pub kind: i32,
    pub capacity: u64,
    pub allocation: u64,
}

/// `virDomainBlockJobInfo`: `kind` is `virDomainBlockJobType` (2 copy); the job is ready (a copy mirrors)
/// when `cur == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockJobInfo {
    pub kind: i32,
    pub bandwidth: u64,
    pub cur: u64,
    pub end: u64,
}

/// `virDomainMetadataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    Description = 0,
    Title = 1,
    /// An element of its own namespace under `<metadata>`: needs a key (prefix) and a URI.
    Element = 2,
}

/// The typed parameters of `virDomainBlockCopy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCopyParams {
    /// Bytes per second (`bandwidth`).
    pub bandwidth: Option<u64>,
    /// `granularity`, a power of two.
    pub granularity: Option<u32>,
    /// `buf-size`.
    pub buf_size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_states() {
        assert_eq!(DomainState::from_i32(1), DomainState::Running);
        assert!(DomainState::from_i32(3).is_active());
        assert!(!DomainState::from_i32(5).is_active());
        assert_eq!(DomainState::from_i32(99), DomainState::Other(99));
    }
}
