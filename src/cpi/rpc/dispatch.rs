//! One request in, one response out. This is the only place where errors become `Bosh::Clouds::*` error
//! objects, and it always produces a response: for unreadable input, a bad config, an unknown method,
//! a failing hypervisor and even a panic.
use crate::cpi::config::{Config, LogLevel};
use crate::cpi::driver::{self, CallContext, Driver};
use crate::cpi::error::{DriverError, ErrorKind};
use crate::cpi::rpc::method::{Method, MethodError};
use crate::cpi::rpc::wire::{Request, Response};
use crate::{info, logger};
use serde_json::{json, Value};
use std::path::Path;

/// The CPI API version this CPI implements.
pub const API_VERSION: u32 = 2;

pub const CPI_ERROR: &str = "Bosh::Clouds::CpiError";
pub const CLOUD_ERROR: &str = "Bosh::Clouds::CloudError";
pub const NOT_IMPLEMENTED: &str = "Bosh::Clouds::NotImplemented";
pub const NOT_SUPPORTED: &str = "Bosh::Clouds::NotSupported";
pub const VM_NOT_FOUND: &str = "Bosh::Clouds::VMNotFound";
pub const DISK_NOT_FOUND: &str = "Bosh::Clouds::DiskNotFound";
pub const DISK_NOT_ATTACHED: &str = "Bosh::Clouds::DiskNotAttached";
pub const VM_CREATION_FAILED: &str = "Bosh::Clouds::VMCreationFailed";
pub const NO_DISK_SPACE: &str = "Bosh::Clouds::NoDiskSpace";
pub const NETWORK_NOT_FOUND: &str = "Bosh::Clouds::NetworkNotFound";

/// Handles one request: never panics, always returns a response whose strings are redacted.
pub fn handle(input: &[u8], config_path: Option<&Path>) -> Response {
    let caught = std::panic::catch_unwind(|| handle_inner(input, config_path));
    let mut response = caught.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        // a panic's text may hold anything it was given: outside text
        let what = logger::redact(&what);
        logger::log(logger::Level::Error, &format!("internal error: {what}"));
        Response::err(CLOUD_ERROR, format!("internal error in vmcpi (please report this bug): {what}"), false)
    });
    // the message is vmcpi's own text; what came from outside (tool output, API errors, echoed input) was
    // scrubbed where it entered; the safety net takes what slipped through, without masking its own words
    if let Some(e) = &mut response.error {
        e.message = logger::safety_net(&e.message);
        logger::log(logger::Level::Error, &format!("{}: {}", e.kind, e.message));
    }
    response.log = logger::take_buffer();
    response
}

/// The request that undoes a create whose response could not be written (the caller closed its end of
/// stdout: a director worker or a `bosh` CLI that died mid-call). Nobody will ever hear of that object, so
/// no one would delete it: the CPI deletes it itself with the same config and context. `None` when
/// `response` is not a create's success (every other method's effect is known to the caller, or harmless).
pub fn undo_request(input: &[u8], response: &Response) -> Option<Vec<u8>> {
    if response.error.is_some() {
        return None;
    }
    let request = Request::parse(input).ok()?;
    let (delete, cid) = match request.method.as_str() {
        "create_stemcell" => ("delete_stemcell", &response.result),
        // v2: [cid, networks]; v1: cid
        "create_vm" => ("delete_vm", response.result.get(0).unwrap_or(&response.result)),
        "create_disk" => ("delete_disk", &response.result),
        "snapshot_disk" => ("delete_snapshot", &response.result),
        _ => return None,
    };
    let cid = cid.as_str().filter(|c| !c.is_empty())?;
    let undo = json!({
        "method": delete,
        "arguments": [cid],
        "context": request.context,
        "api_version": request.api_version,
    });
    Some(undo.to_string().into_bytes())
}

fn handle_inner(input: &[u8], config_path: Option<&Path>) -> Response {
    let request = match Request::parse(input) {
        Ok(r) => r,
        // a JSON error may quote the input: outside text (nothing is registered yet, but keep the rule)
        Err(e) => return Response::err(CPI_ERROR, logger::redact(&e.to_string()), false),
    };
    // arguments (env) and context (CPI-config properties) may carry secrets too
    crate::cpi::config::register_secrets(&request.context);
    request.arguments.iter().for_each(crate::cpi::config::register_secrets);

    let Some(config_path) = config_path else {
        return Response::err(CPI_ERROR, "no config file given: run as `vmcpi --config /path/to/cpi.json`", false);
    };
    let config = match Config::load(config_path, Some(&request.context)) {
        Ok(c) => c,
        // serde's messages quote the values they refuse: outside text
        Err(e) => return Response::err(CPI_ERROR, logger::redact(&e.to_string()), false),
    };
    crate::cpi::timing::mark("config");
    logger::set_level(match config.log_level {
        LogLevel::Debug => logger::Level::Debug,
        LogLevel::Info => logger::Level::Info,
        LogLevel::Warn => logger::Level::Warn,
    });
    for note in &config.notes {
        info!("config: {note}");
    }
    let ctx = call_context(&request);
    crate::debug!(
        "request: method={} api_version={} request_id={}",
        request.method,
        request.api_version,
        ctx.request_id.as_deref().unwrap_or("-")
    );

    let method = match Method::parse(&request.method, &request.arguments) {
        Ok(m) => m,
        Err(e @ MethodError::Unknown(_)) => {
            return Response::err(NOT_IMPLEMENTED, logger::redact(&e.to_string()), false)
        }
        // an argument of the wrong type is quoted by serde: outside text
        Err(e) => return Response::err(CPI_ERROR, logger::redact(&e.to_string()), false),
    };
    if std::env::var("VMCPI_DEBUG_PANIC").is_ok_and(|m| m == method.name()) {
        // lets the tests prove that a panic still yields a JSON response
        panic!("VMCPI_DEBUG_PANIC requested a panic in {}", method.name());
    }
    if let Method::Info = method {
        // info never contacts the hypervisor: the CLI calls it before every other method
        return Response::ok(json!({
            "stemcell_formats": config.driver.stemcell_formats(),
            "api_version": API_VERSION,
        }));
    }
    let started = std::time::Instant::now();
    let driver = driver::from_config(&config.driver, &config.agent);
    let result = call(driver.as_ref(), &ctx, &method);
    info!("{} finished in {} ms", method.name(), started.elapsed().as_millis());
    crate::cpi::timing::mark("method");
    crate::debug!("timing: {}", crate::cpi::timing::summary());
    match result {
        Ok(v) => Response::ok(v),
        Err(e) => to_response(&method, &e),
    }
}

fn call_context(r: &Request) -> CallContext {
    let get = |path: &[&str]| -> Option<&Value> { path.iter().try_fold(&r.context, |v, k| v.get(k)) };
    CallContext {
        api_version: r.api_version,
        stemcell_api_version: get(&["vm", "stemcell", "api_version"]).and_then(Value::as_u64).map(|v| v as u32),
        director_uuid: get(&["director_uuid"]).and_then(Value::as_str).map(str::to_string),
        request_id: get(&["request_id"]).and_then(Value::as_str).map(str::to_string),
    }
}

fn call(d: &dyn Driver, ctx: &CallContext, method: &Method) -> Result<Value, DriverError> {
    let v2 = ctx.api_version >= 2;
    Ok(match method {
        Method::Info => unreachable_info(),
        Method::CreateStemcell { image_path, cloud_properties } => {
            if let Some(name) = cloud_properties.get("name").and_then(Value::as_str) {
                let version = cloud_properties.get("version").and_then(Value::as_str).unwrap_or("");
                crate::info!("importing stemcell {name} {version}");
            }
            json!(d.create_stemcell(image_path, cloud_properties)?)
        }
        Method::DeleteStemcell(cid) => {
            d.delete_stemcell(cid)?;
            Value::Null
        }
        Method::CreateVm(req) => {
            let vm = d.create_vm(ctx, req)?;
            if v2 {
                json!([vm.cid, vm.networks])
            } else {
                json!(vm.cid)
            }
        }
        Method::DeleteVm(cid) => {
            d.delete_vm(cid)?;
            Value::Null
        }
        Method::HasVm(cid) => json!(d.has_vm(cid)?),
        Method::RebootVm(cid) => {
            d.reboot_vm(cid)?;
            Value::Null
        }
        Method::SetVmMetadata(cid, md) => {
            d.set_vm_metadata(cid, md)?;
            Value::Null
        }
        Method::SetDiskMetadata(cid, md) => {
            d.set_disk_metadata(cid, md)?;
            Value::Null
        }
        Method::CalculateVmCloudProperties(res) => d.calculate_vm_cloud_properties(res)?,
        Method::CreateDisk { size_mib, cloud_properties, vm } => {
            let req = crate::cpi::driver::CreateDisk { size_mib: *size_mib, cloud_properties, vm: vm.as_ref() };
            json!(d.create_disk(&req)?)
        }
        Method::DeleteDisk(cid) => {
            d.delete_disk(cid)?;
            Value::Null
        }
        Method::ResizeDisk(cid, size) => {
            d.resize_disk(cid, *size)?;
            Value::Null
        }
        Method::UpdateDisk(..) => {
            return Err(DriverError::not_supported(
                "update_disk: change a disk's size with resize_disk; other cloud_properties changes are done by the director's copy fallback",
            ))
        }
        Method::HasDisk(cid) => json!(d.has_disk(cid)?),
        Method::AttachDisk(vm, disk) => {
            let hint = d.attach_disk(ctx, vm, disk)?;
            if v2 {
                hint
            } else {
                Value::Null
            }
        }
        Method::DetachDisk(vm, disk) => {
            d.detach_disk(vm, disk)?;
            Value::Null
        }
        Method::GetDisks(vm) => json!(d.get_disks(vm)?),
        Method::SnapshotDisk(cid, md) => json!(d.snapshot_disk(cid, md)?),
        Method::DeleteSnapshot(cid) => {
            d.delete_snapshot(cid)?;
            Value::Null
        }
        Method::ConfigureNetworks => {
            return Err(DriverError::not_supported("configure_networks: the director recreates the VM instead"))
        }
    })
}

fn unreachable_info() -> Value {
    // handled before the driver is built; kept total so a refactor cannot make info contact the hypervisor
    Value::Null
}

/// The one mapping from driver errors to BOSH error types: the error's kind picks the type, its own retry flag
/// says `ok_to_retry`, and the method (typed) decides where create_vm's failures all become VMCreationFailed.
pub fn to_response(method: &Method, e: &DriverError) -> Response {
    let message = e.to_string();
    let retry = e.retryable();
    let kind = match (method, e.kind()) {
        (_, ErrorKind::NotImplemented) => NOT_IMPLEMENTED,
        (Method::CreateVm(_), _) => VM_CREATION_FAILED,
        (_, ErrorKind::VmNotFound) => VM_NOT_FOUND,
        (_, ErrorKind::DiskNotFound) => DISK_NOT_FOUND,
        (_, ErrorKind::DiskNotAttached) => DISK_NOT_ATTACHED,
        (_, ErrorKind::NotSupported) => NOT_SUPPORTED,
        (_, ErrorKind::Invalid) => CPI_ERROR,
        (_, ErrorKind::NoDiskSpace) => NO_DISK_SPACE,
        (_, ErrorKind::NetworkNotFound) => NETWORK_NOT_FOUND,
        (_, ErrorKind::StemcellNotFound | ErrorKind::SnapshotNotFound | ErrorKind::Cloud) => CLOUD_ERROR,
    };
    Response::err(kind, message, retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::ids::DiskCid;

    fn create_vm() -> Method {
        let args = serde_json::json!(["agent", "sc-1", {}, {}, [], {}]);
        Method::parse("create_vm", args.as_array().unwrap()).unwrap()
    }

    #[test]
    fn create_vm_failures_are_vm_creation_failed_with_retry_flag() {
        let r = to_response(&create_vm(), &DriverError::invalid("cloud_properties", "cpu must be a number"));
        let e = r.error.unwrap();
        assert_eq!((e.kind.as_str(), e.ok_to_retry), (VM_CREATION_FAILED, false));
        let r = to_response(&create_vm(), &DriverError::failed("cannot start the domain", "libvirt hiccup"));
        assert!(r.error.unwrap().ok_to_retry);
        let r = to_response(&Method::DeleteDisk(DiskCid::new("d").unwrap()), &DriverError::disk_not_found("d"));
        assert_eq!(r.error.unwrap().kind, DISK_NOT_FOUND);
    }

    #[test]
    fn permanent_create_failures_are_not_retryable() {
        use crate::cpi::driver::libvirt::error::LibvirtError;
        use crate::cpi::driver::vmrun::error::VmrunError;
        use crate::cpi::driver::vsphere::error::VsphereError;
        for e in [
            VsphereError::StemcellWithoutSnapshot { stemcell: "sc-1".into() }.into(),
            VsphereError::NoFreeIdeSlot { vm: "vm-1".into() }.into(),
            VmrunError::NoBaseSnapshot { vmx: "/s/sc-1/sc-1.vmx".into() }.into(),
            LibvirtError::NoFreeScsiTarget { vm: "vm-1".into() }.into(),
            LibvirtError::ProbedFormat { volume: "sc-1".into(), probed: "raw".into(), expected: "qcow2" }.into(),
            DriverError::stemcell_not_found("sc-1"),
        ] {
            let r = to_response(&create_vm(), &e).error.unwrap();
            assert_eq!((r.kind.as_str(), r.ok_to_retry), (VM_CREATION_FAILED, false), "{e}");
        }
        let r = to_response(&create_vm(), &DriverError::not_implemented("x")).error.unwrap();
        assert_eq!((r.kind.as_str(), r.ok_to_retry), (NOT_IMPLEMENTED, false));
    }

    #[test]
    fn an_unanswered_create_is_undone_with_its_context() {
        let ctx = json!({"director_uuid": "d", "driver": {"pool": "p2"}});
        let req = |method: &str, v: u32| {
            json!({"method": method, "arguments": [], "context": ctx, "api_version": v}).to_string().into_bytes()
        };
        let undo = |method: &str, v: u32, result: Value| {
            undo_request(&req(method, v), &Response::ok(result)).map(|r| serde_json::from_slice::<Value>(&r).unwrap())
        };
        let u = undo("create_vm", 2, json!(["vm-1", {"n": {}}])).unwrap();
        assert_eq!(u, json!({"method": "delete_vm", "arguments": ["vm-1"], "context": ctx, "api_version": 2}));
        assert_eq!(undo("create_vm", 1, json!("vm-2")).unwrap()["arguments"], json!(["vm-2"]));
        assert_eq!(undo("create_disk", 2, json!("disk-1")).unwrap()["method"], "delete_disk");
        assert_eq!(undo("create_stemcell", 2, json!("sc-1")).unwrap()["method"], "delete_stemcell");
        assert_eq!(undo("snapshot_disk", 2, json!("snap-1")).unwrap()["method"], "delete_snapshot");
        // nothing to undo: other methods, failures, no CID
        assert!(undo("attach_disk", 2, json!({"path": "/dev/sdc"})).is_none());
        assert!(undo("delete_vm", 2, Value::Null).is_none());
        assert!(undo("create_disk", 2, Value::Null).is_none());
        let failed = Response::err(CLOUD_ERROR, "no", false);
        assert!(undo_request(&req("create_vm", 2), &failed).is_none());
        assert!(undo_request(b"not json", &Response::ok(json!("vm-1"))).is_none());
    }

    #[test]
    fn bad_input_gives_cpi_error() {
        let r = handle(b"not json", None);
        assert_eq!(r.error.unwrap().kind, CPI_ERROR);
        let r = handle(br#"{"method":"info"}"#, None);
        assert!(r.error.unwrap().message.contains("--config"));
    }
}
