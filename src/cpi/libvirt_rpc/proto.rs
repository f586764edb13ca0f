//! The procedures the client calls and their argument and return structs, written by hand after libvirt's
//! `src/remote/remote_protocol.x` and `src/remote/qemu_protocol.x` (names in comments are the .x names;
//! field order is wire order). Only what the libvirt driver needs is here; the numbers never change once
//! libvirt has released them.
use super::packet::{QEMU_PROGRAM, REMOTE_PROGRAM};
use super::xdr::{xdr_struct, Decode, Decoder, Encode, Encoder, List, XdrError};

/// One procedure: its program, number and a name for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub prog: u32,
    pub num: i32,
    /// The .x name without its `REMOTE_PROC_`/`QEMU_PROC_` prefix, e.g. `DOMAIN_LOOKUP_BY_NAME`.
    pub name: &'static str,
}

macro_rules! procs {
    ($( $(#[$m:meta])* $id:ident = $prog:ident : $num:literal ),* $(,)?) => {
        $( $(#[$m])* pub const $id: Proc = Proc { prog: $prog, num: $num, name: stringify!($id) }; )*
        /// Every procedure the client implements, in the order above.
        pub const ALL: &[Proc] = &[ $( $id ),* ];
    };
}

procs! {
    CONNECT_OPEN = REMOTE_PROGRAM: 1,
    CONNECT_CLOSE = REMOTE_PROGRAM: 2,
    CONNECT_GET_VERSION = REMOTE_PROGRAM: 4,
    CONNECT_GET_HOSTNAME = REMOTE_PROGRAM: 59,
    AUTH_LIST = REMOTE_PROGRAM: 66,
    AUTH_POLKIT = REMOTE_PROGRAM: 70,
    CONNECT_GET_LIB_VERSION = REMOTE_PROGRAM: 157,
    CONNECT_LIST_ALL_DOMAINS = REMOTE_PROGRAM: 273,
    CONNECT_LIST_ALL_STORAGE_POOLS = REMOTE_PROGRAM: 281,
    CONNECT_GET_DOMAIN_CAPABILITIES = REMOTE_PROGRAM: 342,

    DOMAIN_GET_XML_DESC = REMOTE_PROGRAM: 14,
    DOMAIN_LOOKUP_BY_NAME = REMOTE_PROGRAM: 23,
    DOMAIN_LOOKUP_BY_UUID = REMOTE_PROGRAM: 24,
    DOMAIN_REBOOT = REMOTE_PROGRAM: 27,
    DOMAIN_ATTACH_DEVICE_FLAGS = REMOTE_PROGRAM: 160,
    DOMAIN_DETACH_DEVICE_FLAGS = REMOTE_PROGRAM: 161,
    DOMAIN_UPDATE_DEVICE_FLAGS = REMOTE_PROGRAM: 174,
    DOMAIN_HAS_MANAGED_SAVE_IMAGE = REMOTE_PROGRAM: 183,
    DOMAIN_CREATE_WITH_FLAGS = REMOTE_PROGRAM: 196,
    DOMAIN_GET_STATE = REMOTE_PROGRAM: 212,
    DOMAIN_UNDEFINE_FLAGS = REMOTE_PROGRAM: 231,
    DOMAIN_DESTROY_FLAGS = REMOTE_PROGRAM: 234,
    DOMAIN_BLOCK_JOB_ABORT = REMOTE_PROGRAM: 237,
    DOMAIN_GET_BLOCK_JOB_INFO = REMOTE_PROGRAM: 238,
    DOMAIN_RESET = REMOTE_PROGRAM: 245,
    DOMAIN_SET_METADATA = REMOTE_PROGRAM: 264,
    DOMAIN_GET_METADATA = REMOTE_PROGRAM: 265,
    DOMAIN_BLOCK_COPY = REMOTE_PROGRAM: 345,
    DOMAIN_DEFINE_XML_FLAGS = REMOTE_PROGRAM: 350,

    STORAGE_POOL_DEFINE_XML = REMOTE_PROGRAM: 77,
    STORAGE_POOL_CREATE = REMOTE_PROGRAM: 78,
    STORAGE_POOL_BUILD = REMOTE_PROGRAM: 79,
    STORAGE_POOL_DESTROY = REMOTE_PROGRAM: 80,
    STORAGE_POOL_UNDEFINE = REMOTE_PROGRAM: 82,
    STORAGE_POOL_REFRESH = REMOTE_PROGRAM: 83,
    STORAGE_POOL_LOOKUP_BY_NAME = REMOTE_PROGRAM: 84,
    STORAGE_POOL_GET_INFO = REMOTE_PROGRAM: 87,
    STORAGE_POOL_GET_XML_DESC = REMOTE_PROGRAM: 88,
    STORAGE_POOL_SET_AUTOSTART = REMOTE_PROGRAM: 90,
    STORAGE_POOL_LIST_ALL_VOLUMES = REMOTE_PROGRAM: 282,

    STORAGE_VOL_CREATE_XML = REMOTE_PROGRAM: 93,
    STORAGE_VOL_DELETE = REMOTE_PROGRAM: 94,
    STORAGE_VOL_LOOKUP_BY_NAME = REMOTE_PROGRAM: 95,
    STORAGE_VOL_GET_INFO = REMOTE_PROGRAM: 98,
    STORAGE_VOL_GET_XML_DESC = REMOTE_PROGRAM: 99,
    STORAGE_VOL_GET_PATH = REMOTE_PROGRAM: 100,
    STORAGE_VOL_CREATE_XML_FROM = REMOTE_PROGRAM: 125,
    /// `@writestream`: the reply opens a stream from the client to the volume.
    STORAGE_VOL_UPLOAD = REMOTE_PROGRAM: 208,
    /// `@readstream`: the reply opens a stream from the volume to the client.
    STORAGE_VOL_DOWNLOAD = REMOTE_PROGRAM: 209,
    STORAGE_VOL_RESIZE = REMOTE_PROGRAM: 260,

    /// `QEMU_PROC_DOMAIN_MONITOR_COMMAND`.
    QEMU_DOMAIN_MONITOR_COMMAND = QEMU_PROGRAM: 1,
    /// `QEMU_PROC_DOMAIN_AGENT_COMMAND`.
    QEMU_DOMAIN_AGENT_COMMAND = QEMU_PROGRAM: 3,
}

/// `REMOTE_DOMAIN_LIST_MAX`.
pub const DOMAIN_LIST_MAX: usize = 16384;
/// `REMOTE_STORAGE_POOL_LIST_MAX`.
pub const STORAGE_POOL_LIST_MAX: usize = 16384;
/// `REMOTE_STORAGE_VOL_LIST_MAX`.
pub const STORAGE_VOL_LIST_MAX: usize = 16384;
/// `REMOTE_AUTH_TYPE_LIST_MAX`.
pub const AUTH_TYPE_LIST_MAX: usize = 20;
/// `REMOTE_DOMAIN_BLOCK_COPY_PARAMETERS_MAX`.
pub const BLOCK_COPY_PARAMETERS_MAX: usize = 16;

/// `remote_auth_type`.
pub mod auth {
    pub const NONE: i32 = 0;
    pub const SASL: i32 = 1;
    pub const POLKIT: i32 = 2;
}

xdr_struct! {
    /// `remote_nonnull_domain`: a domain handle (name, UUID, and the id while it runs, else -1).
    pub struct Domain {
        pub name: String,
        pub uuid: [u8; 16],
        pub id: i32,
    }
}

xdr_struct! {
    /// `remote_nonnull_storage_pool`.
    pub struct StoragePool {
        pub name: String,
        pub uuid: [u8; 16],
    }
}

xdr_struct! {
    /// `remote_nonnull_storage_vol`: the pool's name, the volume's name and its key (the path for files).
    pub struct StorageVol {
        pub pool: String,
        pub name: String,
        pub key: String,
    }
}

/// `remote_typed_param_value` (a union on `VIR_TYPED_PARAM_*`).
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Double(f64),
    Boolean(bool),
    String(String),
}

impl Encode for TypedValue {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        match self {
            TypedValue::Int(v) => {
                e.i32(1);
                e.i32(*v)
            }
            TypedValue::UInt(v) => {
                e.i32(2);
                e.u32(*v)
            }
            TypedValue::LLong(v) => {
                e.i32(3);
                e.i64(*v)
            }
            TypedValue::ULLong(v) => {
                e.i32(4);
                e.u64(*v)
            }
            TypedValue::Double(v) => {
                e.i32(5);
                e.f64(*v)
            }
            TypedValue::Boolean(v) => {
                e.i32(6);
                e.i32(i32::from(*v))
            }
            TypedValue::String(v) => {
                e.i32(7);
                v.encode(e)?
            }
        }
        Ok(())
    }
}

impl Decode for TypedValue {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(match d.i32("a typed parameter's type")? {
            1 => TypedValue::Int(d.i32("an int parameter")?),
            2 => TypedValue::UInt(d.u32("an unsigned int parameter")?),
            3 => TypedValue::LLong(d.i64("a hyper parameter")?),
            4 => TypedValue::ULLong(d.u64("an unsigned hyper parameter")?),
            5 => TypedValue::Double(d.f64("a double parameter")?),
            6 => TypedValue::Boolean(d.i32("a boolean parameter")? != 0),
            7 => TypedValue::String(String::decode(d)?),
            t => return Err(XdrError::Invalid { what: "a typed parameter's type", value: t.into() }),
        })
    }
}

xdr_struct! {
    /// `remote_typed_param`.
    pub struct TypedParam {
        pub field: String,
        pub value: TypedValue,
    }
}

xdr_struct! {
    /// `remote_connect_open_args`.
    pub struct ConnectOpenArgs {
        pub name: Option<String>,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_auth_list_ret`.
    pub struct AuthListRet {
        pub types: List<i32, AUTH_TYPE_LIST_MAX>,
    }
}
xdr_struct! {
    /// `remote_auth_polkit_ret`.
    pub struct AuthPolkitRet {
        pub complete: i32,
    }
}
xdr_struct! {
    /// `remote_connect_get_version_ret` (also `..._get_lib_version_ret`): major * 1,000,000 + minor * 1,000 + micro.
    pub struct VersionRet {
        pub version: u64,
    }
}
xdr_struct! {
    /// `remote_connect_get_hostname_ret`.
    pub struct HostnameRet {
        pub hostname: String,
    }
}
xdr_struct! {
    /// `remote_connect_get_domain_capabilities_args`.
    pub struct DomainCapabilitiesArgs {
        pub emulatorbin: Option<String>,
        pub arch: Option<String>,
        pub machine: Option<String>,
        pub virttype: Option<String>,
        pub flags: u32,
    }
}
xdr_struct! {
    /// Every `..._ret { remote_nonnull_string xml; }` (and capabilities, metadata, path, monitor output).
    pub struct StringRet {
        pub value: String,
    }
}
xdr_struct! {
    /// `remote_connect_list_all_domains_args` (also `..._storage_pools_args`).
    pub struct ListAllArgs {
        pub need_results: i32,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_connect_list_all_domains_ret`.
    pub struct ListAllDomainsRet {
        pub domains: List<Domain, DOMAIN_LIST_MAX, 24>,
        pub ret: u32,
    }
}
xdr_struct! {
    /// `remote_connect_list_all_storage_pools_ret`.
    pub struct ListAllPoolsRet {
        pub pools: List<StoragePool, STORAGE_POOL_LIST_MAX, 20>,
        pub ret: u32,
    }
}

xdr_struct! {
    /// `remote_domain_define_xml_flags_args`.
    pub struct XmlFlagsArgs {
        pub xml: String,
        pub flags: u32,
    }
}
xdr_struct! {
    /// Every `..._ret { remote_nonnull_domain dom; }`.
    pub struct DomainRet {
        pub dom: Domain,
    }
}
xdr_struct! {
    /// Every `..._args { remote_nonnull_domain dom; unsigned int flags; }`: create with flags, destroy
    /// flags, undefine flags, get XML desc, get state, reboot, reset, has managed save image.
    pub struct DomainFlagsArgs {
        pub dom: Domain,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_domain_lookup_by_name_args` (also pools: `remote_storage_pool_lookup_by_name_args`).
    pub struct NameArgs {
        pub name: String,
    }
}
xdr_struct! {
    /// `remote_domain_lookup_by_uuid_args`.
    pub struct UuidArgs {
        pub uuid: [u8; 16],
    }
}
xdr_struct! {
    /// `remote_domain_get_state_ret`.
    pub struct DomainStateRet {
        pub state: i32,
        pub reason: i32,
    }
}
xdr_struct! {
    /// `remote_domain_set_metadata_args`.
    pub struct SetMetadataArgs {
        pub dom: Domain,
        pub kind: i32,
        pub metadata: Option<String>,
        pub key: Option<String>,
        pub uri: Option<String>,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_domain_get_metadata_args`.
    pub struct GetMetadataArgs {
        pub dom: Domain,
        pub kind: i32,
        pub uri: Option<String>,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_domain_attach_device_flags_args` (also detach and update device flags).
    pub struct DeviceArgs {
        pub dom: Domain,
        pub xml: String,
        pub flags: u32,
    }
}
xdr_struct! {
    /// Every `..._ret { int ...; }`: has managed save image (`result`), auth polkit (`complete`).
    pub struct IntRet {
        pub value: i32,
    }
}
xdr_struct! {
    /// `remote_domain_block_copy_args`.
    pub struct BlockCopyArgs {
        pub dom: Domain,
        pub path: String,
        pub destxml: String,
        pub params: List<TypedParam, BLOCK_COPY_PARAMETERS_MAX, 12>,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_domain_get_block_job_info_args` (also `remote_domain_block_job_abort_args`).
    pub struct BlockJobArgs {
        pub dom: Domain,
        pub path: String,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_domain_get_block_job_info_ret`.
    pub struct BlockJobInfoRet {
        pub found: i32,
        pub kind: i32,
        pub bandwidth: u64,
        pub cur: u64,
        pub end: u64,
    }
}

xdr_struct! {
    /// Every `..._ret { remote_nonnull_storage_pool pool; }`.
    pub struct PoolRet {
        pub pool: StoragePool,
    }
}
xdr_struct! {
    /// `remote_storage_pool_create_args`, `..._build_args`, `..._refresh_args`, `..._get_xml_desc_args`.
    pub struct PoolFlagsArgs {
        pub pool: StoragePool,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_storage_pool_destroy_args`, `..._undefine_args`, `..._get_info_args`.
    pub struct PoolArgs {
        pub pool: StoragePool,
    }
}
xdr_struct! {
    /// `remote_storage_pool_get_info_ret` (`unsigned char state` is 4 bytes in XDR).
    pub struct PoolInfoRet {
        pub state: u32,
        pub capacity: u64,
        pub allocation: u64,
        pub available: u64,
    }
}
xdr_struct! {
    /// `remote_storage_pool_set_autostart_args`.
    pub struct PoolAutostartArgs {
        pub pool: StoragePool,
        pub autostart: i32,
    }
}
xdr_struct! {
    /// `remote_storage_pool_list_all_volumes_args`.
    pub struct ListAllVolumesArgs {
        pub pool: StoragePool,
        pub need_results: i32,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_storage_pool_list_all_volumes_ret`.
    pub struct ListAllVolumesRet {
        pub vols: List<StorageVol, STORAGE_VOL_LIST_MAX, 12>,
        pub ret: u32,
    }
}
xdr_struct! {
    /// `remote_storage_vol_create_xml_args`.
    pub struct VolCreateArgs {
        pub pool: StoragePool,
        pub xml: String,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_storage_vol_create_xml_from_args`.
    pub struct VolCreateFromArgs {
        pub pool: StoragePool,
        pub xml: String,
        pub clonevol: StorageVol,
        pub flags: u32,
    }
}
xdr_struct! {
    /// Every `..._ret { remote_nonnull_storage_vol vol; }`.
    pub struct VolRet {
        pub vol: StorageVol,
    }
}
xdr_struct! {
    /// `remote_storage_vol_lookup_by_name_args`.
    pub struct VolLookupArgs {
        pub pool: StoragePool,
        pub name: String,
    }
}
xdr_struct! {
    /// `remote_storage_vol_delete_args`, `..._get_xml_desc_args`.
    pub struct VolFlagsArgs {
        pub vol: StorageVol,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_storage_vol_get_info_args`, `..._get_path_args`.
    pub struct VolArgs {
        pub vol: StorageVol,
    }
}
xdr_struct! {
    /// `remote_storage_vol_get_info_ret` (`char type` is 4 bytes in XDR).
    pub struct VolInfoRet {
        pub kind: i32,
        pub capacity: u64,
        pub allocation: u64,
    }
}
xdr_struct! {
    /// `remote_storage_vol_resize_args`.
    pub struct VolResizeArgs {
        pub vol: StorageVol,
        pub capacity: u64,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `remote_storage_vol_upload_args` and `remote_storage_vol_download_args`.
    pub struct VolTransferArgs {
        pub vol: StorageVol,
        pub offset: u64,
        pub length: u64,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `virNetStreamHole` (virnetprotocol.x): the body of a `VIR_NET_STREAM_HOLE` packet.
    pub struct StreamHole {
        pub length: i64,
        pub flags: u32,
    }
}

xdr_struct! {
    /// `qemu_domain_monitor_command_args`.
    pub struct MonitorCommandArgs {
        pub dom: Domain,
        pub cmd: String,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `qemu_domain_agent_command_args`.
    pub struct AgentCommandArgs {
        pub dom: Domain,
        pub cmd: String,
        pub timeout: i32,
        pub flags: u32,
    }
}
xdr_struct! {
    /// `qemu_domain_agent_command_ret`.
    pub struct AgentCommandRet {
        pub result: Option<String>,
    }
}

/// Decodes `body` as the reply of `p` (the fuzz target's entry: every return type the client reads).
pub fn decode_reply(p: Proc, body: &[u8]) -> Result<(), XdrError> {
    use super::xdr::from_bytes;
    fn d<T: Decode>(b: &[u8]) -> Result<(), XdrError> {
        from_bytes::<T>(b).map(|_| ())
    }
    let is = |list: &[Proc]| list.contains(&p);
    if is(&[AUTH_LIST]) {
        d::<AuthListRet>(body)
    } else if is(&[AUTH_POLKIT, DOMAIN_HAS_MANAGED_SAVE_IMAGE]) {
        d::<IntRet>(body)
    } else if is(&[CONNECT_GET_VERSION, CONNECT_GET_LIB_VERSION]) {
        d::<VersionRet>(body)
    } else if is(&[CONNECT_GET_HOSTNAME]) {
        d::<HostnameRet>(body)
    } else if is(&[CONNECT_LIST_ALL_DOMAINS]) {
        d::<ListAllDomainsRet>(body)
    } else if is(&[CONNECT_LIST_ALL_STORAGE_POOLS]) {
        d::<ListAllPoolsRet>(body)
    } else if is(&[
        CONNECT_GET_DOMAIN_CAPABILITIES,
        DOMAIN_GET_XML_DESC,
        DOMAIN_GET_METADATA,
        STORAGE_POOL_GET_XML_DESC,
        STORAGE_VOL_GET_XML_DESC,
        STORAGE_VOL_GET_PATH,
        QEMU_DOMAIN_MONITOR_COMMAND,
    ]) {
        d::<StringRet>(body)
    } else if is(&[DOMAIN_LOOKUP_BY_NAME, DOMAIN_LOOKUP_BY_UUID, DOMAIN_CREATE_WITH_FLAGS, DOMAIN_DEFINE_XML_FLAGS]) {
        d::<DomainRet>(body)
    } else if is(&[DOMAIN_GET_STATE]) {
        d::<DomainStateRet>(body)
    } else if is(&[DOMAIN_GET_BLOCK_JOB_INFO]) {
        d::<BlockJobInfoRet>(body)
    } else if is(&[STORAGE_POOL_LOOKUP_BY_NAME, STORAGE_POOL_DEFINE_XML]) {
        d::<PoolRet>(body)
    } else if is(&[STORAGE_POOL_GET_INFO]) {
        d::<PoolInfoRet>(body)
    } else if is(&[STORAGE_POOL_LIST_ALL_VOLUMES]) {
        d::<ListAllVolumesRet>(body)
    } else if is(&[STORAGE_VOL_CREATE_XML, STORAGE_VOL_CREATE_XML_FROM, STORAGE_VOL_LOOKUP_BY_NAME]) {
        d::<VolRet>(body)
    } else if is(&[STORAGE_VOL_GET_INFO]) {
        d::<VolInfoRet>(body)
    } else if is(&[QEMU_DOMAIN_AGENT_COMMAND]) {
        d::<AgentCommandRet>(body)
    } else {
        d::<()>(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::libvirt_rpc::xdr::{from_bytes, to_bytes};

    #[test]
    fn procedure_numbers_are_libvirts() {
        // spot checks against remote_protocol.x / qemu_protocol.x
        assert_eq!((CONNECT_OPEN.num, AUTH_LIST.num, DOMAIN_LOOKUP_BY_NAME.num), (1, 66, 23));
        assert_eq!((STORAGE_VOL_UPLOAD.num, STORAGE_VOL_DOWNLOAD.num, DOMAIN_BLOCK_COPY.num), (208, 209, 345));
        assert_eq!((QEMU_DOMAIN_AGENT_COMMAND.prog, QEMU_DOMAIN_AGENT_COMMAND.num), (0x2000_8087, 3));
        assert_eq!(DOMAIN_LOOKUP_BY_NAME.name, "DOMAIN_LOOKUP_BY_NAME");
        let mut seen = std::collections::HashSet::new();
        for p in ALL {
            assert!(seen.insert((p.prog, p.num)), "{} twice", p.name);
        }
    }

    #[test]
    fn a_lookup_reply_decodes() {
        let dom = Domain { name: "vm-1".into(), uuid: [0xab; 16], id: 4 };
        let b = to_bytes(&DomainRet { dom: dom.clone() }).unwrap();
        assert_eq!(from_bytes::<DomainRet>(&b).unwrap().dom, dom);
        decode_reply(DOMAIN_LOOKUP_BY_NAME, &b).unwrap();
        assert!(decode_reply(DOMAIN_LOOKUP_BY_NAME, &b[..b.len() - 1]).is_err());
        assert!(decode_reply(DOMAIN_DESTROY_FLAGS, &b).is_err(), "destroy returns nothing");
    }

    #[test]
    fn typed_params_round_trip() {
        let params = List::<TypedParam, 16, 12>(vec![
            TypedParam { field: "bandwidth".into(), value: TypedValue::ULLong(1 << 40) },
            TypedParam { field: "granularity".into(), value: TypedValue::UInt(65536) },
            TypedParam { field: "s".into(), value: TypedValue::String("x".into()) },
            TypedParam { field: "b".into(), value: TypedValue::Boolean(true) },
            TypedParam { field: "d".into(), value: TypedValue::Double(0.5) },
            TypedParam { field: "i".into(), value: TypedValue::Int(-3) },
            TypedParam { field: "l".into(), value: TypedValue::LLong(-3) },
        ]);
        let b = to_bytes(&params).unwrap();
        assert_eq!(from_bytes::<List<TypedParam, 16, 12>>(&b).unwrap(), params);
        // type 8 does not exist
        let mut bad = to_bytes(&TypedParam { field: "x".into(), value: TypedValue::Int(1) }).unwrap();
        bad[11] = 8;
        assert!(from_bytes::<TypedParam>(&bad).is_err());
    }
}
