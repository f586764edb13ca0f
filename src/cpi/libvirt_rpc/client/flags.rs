//! libvirt's flag values (libvirt-domain.h, libvirt-storage.h, libvirt-qemu.h) for the calls here.
/// `virDomainModificationImpact` / `virDomainDeviceModifyFlags` (attach, detach, update, metadata).
pub const AFFECT_CURRENT: u32 = 0;
pub const AFFECT_LIVE: u32 = 1;
pub const AFFECT_CONFIG: u32 = 2;
/// `VIR_DOMAIN_DEVICE_MODIFY_FORCE` (update device: eject a locked CD-ROM).
pub const DEVICE_MODIFY_FORCE: u32 = 4;
/// `virDomainUndefineFlagsValues`.
pub const UNDEFINE_MANAGED_SAVE: u32 = 1;
pub const UNDEFINE_SNAPSHOTS_METADATA: u32 = 2;
pub const UNDEFINE_NVRAM: u32 = 4;
pub const UNDEFINE_KEEP_NVRAM: u32 = 8;
pub const UNDEFINE_CHECKPOINTS_METADATA: u32 = 16;
/// `virDomainXMLFlags`.
pub const XML_SECURE: u32 = 1;
pub const XML_INACTIVE: u32 = 2;
/// `virDomainDefineFlags`.
pub const DEFINE_VALIDATE: u32 = 1;
/// `virConnectListAllDomainsFlags`.
pub const LIST_DOMAINS_ACTIVE: u32 = 1;
pub const LIST_DOMAINS_INACTIVE: u32 = 2;
pub const LIST_DOMAINS_PERSISTENT: u32 = 4;
pub const LIST_DOMAINS_TRANSIENT: u32 = 8;
pub const LIST_DOMAINS_RUNNING: u32 = 16;
pub const LIST_DOMAINS_PAUSED: u32 = 32;
pub const LIST_DOMAINS_SHUTOFF: u32 = 64;
/// `virStorageVolCreateFlags`.
pub const VOL_CREATE_PREALLOC_METADATA: u32 = 1;
pub const VOL_CREATE_REFLINK: u32 = 2;
pub const VOL_CREATE_VALIDATE: u32 = 4;
/// `virStorageVolResizeFlags`.
pub const VOL_RESIZE_ALLOCATE: u32 = 1;
pub const VOL_RESIZE_DELTA: u32 = 2;
pub const VOL_RESIZE_SHRINK: u32 = 4;
/// `virStorageVolUploadFlags` / `virStorageVolDownloadFlags`.
pub const VOL_SPARSE_STREAM: u32 = 1;
/// `virStoragePoolBuildFlags`.
pub const POOL_BUILD_NEW: u32 = 0;
pub const POOL_BUILD_NO_OVERWRITE: u32 = 4;
/// `virDomainBlockCopyFlags`.
pub const BLOCK_COPY_SHALLOW: u32 = 1;
pub const BLOCK_COPY_REUSE_EXT: u32 = 2;
pub const BLOCK_COPY_TRANSIENT_JOB: u32 = 4;
/// `virDomainBlockJobAbortFlags`.
pub const BLOCK_JOB_ABORT_ASYNC: u32 = 1;
pub const BLOCK_JOB_ABORT_PIVOT: u32 = 2;
/// `VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP`.
pub const MONITOR_HMP: u32 = 1;
/// `virDomainQemuAgentCommandTimeoutValues` (else seconds).
pub const AGENT_TIMEOUT_BLOCK: i32 = -2;
pub const AGENT_TIMEOUT_DEFAULT: i32 = -1;
pub const AGENT_TIMEOUT_NOWAIT: i32 = 0;
