//! The model's answers: a function a group of procedures, each as libvirt answers (its error codes too).
use super::{
    attribute, element, no_domain, no_pool, no_vol, remote, remove_disk, xml_escape, Dom, FakeDaemon, Model, Pool,
    Volume, KEEP_BYTES,
};
use crate::cpi::libvirt_rpc::error::{code, RemoteError};
use crate::cpi::libvirt_rpc::proto::{self as p, Domain, Proc, StoragePool, StorageVol};
use crate::cpi::libvirt_rpc::xdr::{from_bytes, to_bytes, Decode, Decoder, Encode, List, XdrError};

impl FakeDaemon {
    /// Answers a call from the model: each group of procedures has its own function.
    pub(super) fn answer(&self, proc_: Proc, body: &[u8]) -> Reply {
        let group: fn(&mut Model, &'static str, &[u8]) -> Reply = match proc_.name {
            n if n.starts_with("STORAGE_VOL_") => Model::volume,
            n if n.starts_with("STORAGE_POOL_") => Model::pool,
            "DOMAIN_CREATE_WITH_FLAGS" | "DOMAIN_DESTROY_FLAGS" | "DOMAIN_RESET" | "DOMAIN_REBOOT" => Model::power,
            "DOMAIN_ATTACH_DEVICE_FLAGS"
            | "DOMAIN_DETACH_DEVICE_FLAGS"
            | "DOMAIN_UPDATE_DEVICE_FLAGS"
            | "DOMAIN_BLOCK_COPY"
            | "DOMAIN_GET_BLOCK_JOB_INFO"
            | "DOMAIN_BLOCK_JOB_ABORT"
            | "DOMAIN_HAS_MANAGED_SAVE_IMAGE" => Model::device,
            n if n.starts_with("QEMU_") => Model::device,
            n if n.starts_with("DOMAIN_") => Model::domain,
            _ => Model::connection,
        };
        group(&mut self.model(), proc_.name, body)
    }
}

/// The answer to a call, or libvirt's error.
type Reply = Result<Answer, RemoteError>;

/// The arguments of a call; libvirt's error when they do not decode.
fn args<T: Decode>(body: &[u8]) -> Result<T, RemoteError> {
    from_bytes(body).map_err(bad_args)
}

fn bad_args(e: XdrError) -> RemoteError {
    remote(code::RPC, &format!("cannot decode the arguments: {e}"))
}

fn ok<T: Encode>(v: &T) -> Reply {
    Ok(Answer::Body(to_bytes(v).map_err(|e| remote(code::INTERNAL_ERROR, &e.to_string()))?))
}

fn none() -> Reply {
    Ok(Answer::Body(Vec::new()))
}

fn invalid(message: &str) -> RemoteError {
    remote(code::OPERATION_INVALID, message)
}

fn unsupported(proc_: &str) -> Reply {
    Err(remote(code::NO_SUPPORT, &format!("{proc_} is not modelled by the fake daemon")))
}

impl Model {
    /// The handle of domain `name` (its id while it runs).
    fn domain_handle(&self, name: &str) -> Result<Domain, RemoteError> {
        let d = self.domains.get(name).ok_or_else(|| no_domain(name))?;
        Ok(Domain { name: name.to_string(), uuid: d.uuid, id: d.id.unwrap_or(-1) })
    }

    fn dom_mut(&mut self, name: &str) -> Result<&mut Dom, RemoteError> {
        self.domains.get_mut(name).ok_or_else(|| no_domain(name))
    }

    /// Authentication, opening and closing, versions, the list of domains.
    fn connection(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        match proc_ {
            "AUTH_LIST" => ok(&p::AuthListRet { types: List(vec![p::auth::NONE]) }),
            "CONNECT_OPEN" => none(),
            "CONNECT_CLOSE" => Ok(Answer::Close),
            "CONNECT_GET_LIB_VERSION" | "CONNECT_GET_VERSION" => ok(&p::VersionRet { version: 9_000_000 }),
            "CONNECT_GET_HOSTNAME" => ok(&p::HostnameRet { hostname: "fake".into() }),
            "CONNECT_GET_DOMAIN_CAPABILITIES" => {
                ok(&p::StringRet { value: "<domainCapabilities><devices/></domainCapabilities>".into() })
            }
            "CONNECT_LIST_ALL_DOMAINS" => {
                let a: p::ListAllArgs = args(body)?;
                let running_only = a.flags & crate::cpi::libvirt_rpc::client::flags::LIST_DOMAINS_RUNNING != 0;
                let doms = self
                    .domains
                    .iter()
                    .filter(|(_, d)| !running_only || d.id.is_some())
                    .map(|(n, d)| Domain { name: n.clone(), uuid: d.uuid, id: d.id.unwrap_or(-1) })
                    .collect::<Vec<_>>();
                let n = doms.len() as u32;
                ok(&p::ListAllDomainsRet { domains: List(doms), ret: n })
            }
            _ => unsupported(proc_),
        }
    }

    /// A domain's definition: lookup, define, undefine, XML, state, metadata.
    fn domain(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        match proc_ {
            "DOMAIN_LOOKUP_BY_NAME" => {
                let a: p::NameArgs = args(body)?;
                ok(&p::DomainRet { dom: self.domain_handle(&a.name)? })
            }
            "DOMAIN_DEFINE_XML_FLAGS" => {
                let a: p::XmlFlagsArgs = args(body)?;
                let name = element(&a.xml, "name").ok_or_else(|| remote(code::XML_ERROR, "missing name"))?;
                let uuid = self.uuid();
                let d = self.domains.entry(name.clone()).or_insert_with(|| Dom { uuid, ..Default::default() });
                d.xml = a.xml;
                ok(&p::DomainRet { dom: Domain { name, uuid: d.uuid, id: d.id.unwrap_or(-1) } })
            }
            "DOMAIN_UNDEFINE_FLAGS" => {
                let a: p::DomainFlagsArgs = args(body)?;
                if self.dom_mut(&a.dom.name)?.id.is_some() {
                    // a running domain becomes transient; the model keeps it simple: it goes
                    return Err(invalid("cannot undefine a running domain in the fake"));
                }
                self.domains.remove(&a.dom.name);
                none()
            }
            "DOMAIN_GET_XML_DESC" => {
                let a: p::DomainFlagsArgs = args(body)?;
                let d = self.dom_mut(&a.dom.name)?;
                let mut xml = d.xml.clone();
                if let Some(id) = d.id {
                    xml = xml.replacen("<domain ", &format!("<domain id='{id}' "), 1);
                }
                if let Some(t) = &d.title {
                    if let Some(at) = xml.find("</name>") {
                        xml.insert_str(at + "</name>".len(), &format!("<title>{}</title>", xml_escape(t)));
                    }
                }
                ok(&p::StringRet { value: xml })
            }
            "DOMAIN_GET_STATE" => {
                let a: p::DomainFlagsArgs = args(body)?;
                let d = self.dom_mut(&a.dom.name)?;
                ok(&p::DomainStateRet { state: if d.id.is_some() { 1 } else { 5 }, reason: 0 })
            }
            "DOMAIN_SET_METADATA" => {
                let a: p::SetMetadataArgs = args(body)?;
                let d = self.dom_mut(&a.dom.name)?;
                match a.kind {
                    1 => d.title = a.metadata,
                    2 => {
                        let uri = a.uri.unwrap_or_default();
                        match a.metadata {
                            Some(v) => d.metadata.insert(uri, v),
                            None => d.metadata.remove(&uri),
                        };
                    }
                    _ => {}
                }
                none()
            }
            _ => unsupported(proc_),
        }
    }

    /// Starting, stopping and resetting a domain.
    fn power(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        let a: p::DomainFlagsArgs = args(body)?;
        match proc_ {
            "DOMAIN_CREATE_WITH_FLAGS" => {
                self.next_id += 1;
                let id = self.next_id;
                let d = self.dom_mut(&a.dom.name)?;
                if d.id.is_some() {
                    return Err(invalid("Requested operation is not valid: domain is already running"));
                }
                d.id = Some(id);
                ok(&p::DomainRet { dom: Domain { id, ..a.dom } })
            }
            "DOMAIN_DESTROY_FLAGS" => {
                if self.dom_mut(&a.dom.name)?.id.take().is_none() {
                    return Err(invalid("Requested operation is not valid: domain is not running"));
                }
                none()
            }
            "DOMAIN_RESET" | "DOMAIN_REBOOT" => {
                let d = self.dom_mut(&a.dom.name)?;
                if d.id.is_none() {
                    return Err(invalid("Requested operation is not valid: domain is not running"));
                }
                d.resets += 1;
                none()
            }
            _ => unsupported(proc_),
        }
    }

    /// A domain's devices, block jobs and QEMU's monitor and guest agent.
    fn device(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        match proc_ {
            "DOMAIN_ATTACH_DEVICE_FLAGS" => {
                let a: p::DeviceArgs = args(body)?;
                let d = self.dom_mut(&a.dom.name)?;
                let at = d.xml.rfind("</devices>").ok_or_else(|| remote(code::XML_ERROR, "no devices"))?;
                d.xml.insert_str(at, &a.xml);
                none()
            }
            "DOMAIN_DETACH_DEVICE_FLAGS" => {
                let a: p::DeviceArgs = args(body)?;
                let d = self.dom_mut(&a.dom.name)?;
                let vol = attribute(&a.xml, "source", "volume").unwrap_or_default();
                if !remove_disk(&mut d.xml, &vol) {
                    return Err(remote(code::DEVICE_MISSING, &format!("device not found: no disk {vol}")));
                }
                none()
            }
            "DOMAIN_UPDATE_DEVICE_FLAGS" => {
                let a: p::DeviceArgs = args(body)?;
                let d = self.dom_mut(&a.dom.name)?;
                // as libvirt: a device that does not repeat its address would move, which an update may not
                if d.xml.contains("device=\"cdrom\"") && d.xml.contains("<address") && !a.xml.contains("<address") {
                    return Err(remote(
                        code::OPERATION_UNSUPPORTED,
                        "Operation not supported: cannot modify field 'address' of the disk",
                    ));
                }
                none()
            }
            "DOMAIN_BLOCK_COPY" => {
                let a: p::BlockCopyArgs = args(body)?;
                self.dom_mut(&a.dom.name)?;
                none()
            }
            "DOMAIN_GET_BLOCK_JOB_INFO" => ok(&p::BlockJobInfoRet { found: 1, kind: 2, bandwidth: 0, cur: 1, end: 1 }),
            "DOMAIN_BLOCK_JOB_ABORT" => none(),
            "DOMAIN_HAS_MANAGED_SAVE_IMAGE" => ok(&p::IntRet { value: 0 }),
            "QEMU_DOMAIN_MONITOR_COMMAND" => {
                let a: p::MonitorCommandArgs = args(body)?;
                self.dom_mut(&a.dom.name)?.monitor.push(a.cmd);
                ok(&p::StringRet { value: String::new() })
            }
            "QEMU_DOMAIN_AGENT_COMMAND" => Err(remote(
                code::AGENT_UNRESPONSIVE,
                "Guest agent is not responding: QEMU guest agent is not connected",
            )),
            _ => unsupported(proc_),
        }
    }

    /// Storage pools.
    fn pool(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        match proc_ {
            "STORAGE_POOL_LOOKUP_BY_NAME" => {
                let a: p::NameArgs = args(body)?;
                let pool = self.pools.get(&a.name).ok_or_else(|| no_pool(&a.name))?;
                ok(&p::PoolRet { pool: StoragePool { name: a.name.clone(), uuid: pool.uuid } })
            }
            "STORAGE_POOL_GET_INFO" => {
                let a: p::PoolArgs = args(body)?;
                let pool = self.pools.get(&a.pool.name).ok_or_else(|| no_pool(&a.pool.name))?;
                ok(&p::PoolInfoRet {
                    state: if pool.active { 2 } else { 0 },
                    capacity: 1 << 40,
                    allocation: 0,
                    available: 1 << 40,
                })
            }
            "STORAGE_POOL_DEFINE_XML" => {
                let a: p::XmlFlagsArgs = args(body)?;
                let name = element(&a.xml, "name").ok_or_else(|| remote(code::XML_ERROR, "missing name"))?;
                if self.pools.contains_key(&name) {
                    return Err(remote(code::OPERATION_FAILED, &format!("pool '{name}' already exists")));
                }
                let uuid = self.uuid();
                let path = element(&a.xml, "path").unwrap_or_default();
                self.pools.insert(name.clone(), Pool { uuid, path, ..Default::default() });
                ok(&p::PoolRet { pool: StoragePool { name, uuid } })
            }
            "STORAGE_POOL_BUILD" | "STORAGE_POOL_REFRESH" | "STORAGE_POOL_CREATE" | "STORAGE_POOL_SET_AUTOSTART" => {
                let name = StoragePool::decode(&mut Decoder::new(body)).map_err(bad_args)?.name;
                let probe_as = self.probe_as.clone();
                let pool = self.pools.get_mut(&name).ok_or_else(|| no_pool(&name))?;
                match proc_ {
                    "STORAGE_POOL_CREATE" if pool.active => return Err(invalid("storage pool is already active")),
                    "STORAGE_POOL_CREATE" => pool.active = true,
                    "STORAGE_POOL_SET_AUTOSTART" => pool.autostart = true,
                    "STORAGE_POOL_REFRESH" => {
                        // libvirt probes each file's format
                        for v in pool.volumes.values_mut().filter(|v| !v.data.is_empty()) {
                            if let Some(f) = &probe_as {
                                v.format.clone_from(f);
                            } else if v.data.starts_with(b"QFI\xfb") {
                                v.format = "qcow2".into();
                            }
                        }
                    }
                    _ => {}
                }
                none()
            }
            _ => unsupported(proc_),
        }
    }

    /// Storage volumes: made, looked up, or acted on.
    fn volume(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        match proc_ {
            "STORAGE_VOL_CREATE_XML" => {
                let a: p::VolCreateArgs = args(body)?;
                self.create_volume(a.pool.name, &a.xml, None)
            }
            "STORAGE_VOL_CREATE_XML_FROM" => {
                let a: p::VolCreateFromArgs = args(body)?;
                self.create_volume(a.pool.name, &a.xml, Some(a.clonevol))
            }
            "STORAGE_VOL_LOOKUP_BY_NAME" => {
                let a: p::VolLookupArgs = args(body)?;
                let pool = self.pools.get(&a.pool.name).ok_or_else(|| no_pool(&a.pool.name))?;
                if !pool.active {
                    return Err(invalid("storage pool is not active"));
                }
                pool.volumes.get(&a.name).ok_or_else(|| no_vol(&a.name))?;
                let key = format!("{}/{}", pool.path, a.name);
                ok(&p::VolRet { vol: StorageVol { pool: a.pool.name, name: a.name, key } })
            }
            "STORAGE_VOL_DELETE"
            | "STORAGE_VOL_GET_XML_DESC"
            | "STORAGE_VOL_GET_PATH"
            | "STORAGE_VOL_GET_INFO"
            | "STORAGE_VOL_RESIZE"
            | "STORAGE_VOL_UPLOAD"
            | "STORAGE_VOL_DOWNLOAD" => self.on_volume(proc_, body),
            _ => unsupported(proc_),
        }
    }

    /// `STORAGE_VOL_CREATE_XML`, and `…_FROM` a volume whose bytes the new one gets.
    fn create_volume(&mut self, pool_name: String, xml: &str, from: Option<StorageVol>) -> Reply {
        let name = element(xml, "name").ok_or_else(|| remote(code::XML_ERROR, "missing name"))?;
        let capacity = element(xml, "capacity").and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        let format = attribute(xml, "format", "type").unwrap_or_else(|| "raw".into());
        let backing = element(xml, "backingStore").and(element(xml, "path"));
        let source = match &from {
            Some(f) => Some(
                self.pools.get(&f.pool).and_then(|p| p.volumes.get(&f.name)).cloned().ok_or_else(|| no_vol(&f.name))?,
            ),
            None => None,
        };
        let pool = self.pools.get_mut(&pool_name).ok_or_else(|| no_pool(&pool_name))?;
        if !pool.active {
            return Err(invalid("storage pool is not active"));
        }
        if pool.volumes.contains_key(&name) {
            return Err(remote(code::STORAGE_VOL_EXIST, &format!("storage volume '{name}' exists already")));
        }
        let mut v = Volume { format, capacity, backing, ..Default::default() };
        if let Some(src) = source {
            v.data = src.data;
        }
        pool.volumes.insert(name.clone(), v);
        let key = format!("{}/{name}", pool.path);
        ok(&p::VolRet { vol: StorageVol { pool: pool_name, name, key } })
    }

    /// The calls on an existing volume.
    fn on_volume(&mut self, proc_: &'static str, body: &[u8]) -> Reply {
        let vol = StorageVol::decode(&mut Decoder::new(body)).map_err(bad_args)?;
        let pool = self.pools.get_mut(&vol.pool).ok_or_else(|| no_pool(&vol.pool))?;
        let path = format!("{}/{}", pool.path, vol.name);
        let v = pool.volumes.get_mut(&vol.name).ok_or_else(|| no_vol(&vol.name))?;
        match proc_ {
            "STORAGE_VOL_DELETE" => {
                pool.volumes.remove(&vol.name);
                none()
            }
            "STORAGE_VOL_GET_XML_DESC" => ok(&p::StringRet {
                value: format!(
                    "<volume type='file'><name>{}</name><key>{}</key><capacity unit='bytes'>{}</capacity><target><path>{}</path><format type='{}'/></target></volume>",
                    xml_escape(&vol.name),
                    xml_escape(&path),
                    v.capacity,
                    xml_escape(&path),
                    xml_escape(&v.format)
                ),
            }),
            "STORAGE_VOL_GET_PATH" => ok(&p::StringRet { value: path }),
            "STORAGE_VOL_GET_INFO" => ok(&p::VolInfoRet { kind: 0, capacity: v.capacity, allocation: v.data.len() as u64 }),
            "STORAGE_VOL_RESIZE" => {
                let a: p::VolResizeArgs = args(body)?;
                v.capacity = a.capacity;
                none()
            }
            "STORAGE_VOL_UPLOAD" => {
                v.data.clear();
                Ok(Answer::Upload(vol.pool.clone(), vol.name.clone()))
            }
            _ => {
                let mut bytes = v.data.clone();
                bytes.resize(v.capacity.min(KEEP_BYTES) as usize, 0);
                Ok(Answer::Download(bytes))
            }
        }
    }
}

pub(super) enum Answer {
    Body(Vec<u8>),
    Close,
    Upload(String, String),
    Download(Vec<u8>),
}
