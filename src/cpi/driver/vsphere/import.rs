//! Stemcell import: the OVF goes through `OvfManager.CreateImportSpec` and `ResourcePool.ImportVApp`; the
//! VMDK streams to the HTTP NFC lease straight out of the stemcell archive (no unpacked copy on disk; memory
//! stays flat whatever the size), with progress reported to the lease and on stderr every few seconds.
use super::client::{ClientError, Session};
use super::inventory::ctx_err;
use super::methods::{CreateImportSpec, HttpNfcLeaseAbort, HttpNfcLeaseComplete, HttpNfcLeaseProgress, ImportVApp};
use super::soap::MoRef;
use crate::cpi::error::{DriverError, DriverResult};
use crate::{info, warn};
use std::io::Read;
use std::time::{Duration, Instant};

/// OVF `ResourceType`s a simulator or an older host may refuse; dropped (with their children) when the
/// import spec reports them as unsupported. 20 = SATA controller (current stemcells put the CD-ROM there;
/// the CPI adds its own CD-ROM on IDE anyway).
const DROPPABLE: &[&str] = &["20", "15", "16", "14"];

/// The OVF descriptor of a stemcell disk: the image's own, or one generated for a bare VMDK (with the
/// virtual size its header says).
pub fn descriptor_for(disk: &crate::cpi::stemcell::Disk<'_>) -> String {
    if let Some(ovf) = &disk.ovf {
        return ovf.clone();
    }
    generated_ovf(&disk.name, disk.len, disk.image.virtual_size, disk.efi)
}

/// What may stream to an NFC lease: a stream-optimised VMDK, inspected by `with_disk` and checked further
/// as it passes. Anything else is refused before the lease is opened.
pub fn check_streamable(disk: &crate::cpi::stemcell::Disk<'_>) -> DriverResult<()> {
    use crate::cpi::diskimage::{vmdk::Kind, DiskImageError, Format};
    match disk.image.format {
        Format::Vmdk(Kind::StreamOptimized) => Ok(()),
        other => Err(DiskImageError::Unsupported {
            found: format!("a {other} disk"),
            wanted: "the vSphere import streams the disk to the host, which takes streamOptimized VMDKs only".into(),
        }
        .into()),
    }
}

/// The one disk file an import uploads: its name in the OVF, its size, its bytes.
pub struct Upload<'a> {
    pub name: &'a str,
    pub len: u64,
    pub reader: &'a mut dyn Read,
}

/// A minimal OVF for a lone VMDK: LSI Logic SCSI, the disk at unit 0, no NICs, no CD-ROM.
pub fn generated_ovf(file: &str, size: u64, capacity: u64, efi: bool) -> String {
    let file = quick_xml::escape::escape(file);
    let firmware = if efi { r#"<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>"# } else { "" };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References><File ovf:href="{file}" ovf:id="file1" ovf:size="{size}"/></References>
  <DiskSection><Info>Virtual disk information</Info><Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>The list of logical networks</Info></NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <Name>vm</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info>The kind of installed guest operating system</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>vm</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:Description>Number of Virtual CPUs</rasd:Description><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:Description>Memory Size</rasd:Description><rasd:ElementName>512MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Description>SCSI Controller</rasd:Description><rasd:ElementName>SCSI Controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      {firmware}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Removes the `<Item>`s whose ResourceType is in `types`, and items whose Parent is a removed item.
pub fn strip_items(ovf: &str, types: &[&str]) -> (String, Vec<String>) {
    // (start, end, resource type, instance id, parent id) of every Item
    type Item = (usize, usize, String, Option<String>, Option<String>);
    let mut items: Vec<Item> = Vec::new();
    let mut pos = 0;
    while let Some(start) = find_item_start(ovf, pos) {
        let Some(end_rel) = ovf[start..].find("Item>").and_then(|_| find_item_end(&ovf[start..])) else { break };
        let end = start + end_rel;
        let text = &ovf[start..end];
        items.push((
            start,
            end,
            element_text(text, "ResourceType").unwrap_or_default(),
            element_text(text, "InstanceID"),
            element_text(text, "Parent"),
        ));
        pos = end;
    }
    let mut removed_ids: Vec<String> = Vec::new();
    let mut removed: Vec<usize> = Vec::new();
    loop {
        let before = removed.len();
        for (i, (_, _, rt, id, parent)) in items.iter().enumerate() {
            if removed.contains(&i) {
                continue;
            }
            if types.contains(&rt.as_str()) || parent.as_ref().is_some_and(|p| removed_ids.contains(p)) {
                removed.push(i);
                if let Some(id) = id {
                    removed_ids.push(id.clone());
                }
            }
        }
        if removed.len() == before {
            break;
        }
    }
    let mut out = String::new();
    let mut last = 0;
    let mut names = Vec::new();
    for (i, (s, e, rt, id, _)) in items.iter().enumerate() {
        if removed.contains(&i) {
            out.push_str(&ovf[last..*s]);
            last = *e;
            names.push(format!("item {} (resource type {rt})", id.as_deref().unwrap_or("?")));
        }
    }
    out.push_str(&ovf[last..]);
    (out, names)
}

fn find_item_start(s: &str, from: usize) -> Option<usize> {
    let mut p = from;
    while let Some(i) = s[p..].find('<') {
        let at = p + i;
        let rest = &s[at + 1..];
        let name_end = rest.find(|c: char| c == '>' || c.is_whitespace()).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name == "Item" || name.ends_with(":Item") {
            return Some(at);
        }
        p = at + 1;
    }
    None
}

fn find_item_end(s: &str) -> Option<usize> {
    let mut p = 0;
    while let Some(i) = s[p..].find("</") {
        let at = p + i;
        let rest = &s[at + 2..];
        let name_end = rest.find('>')?;
        let name = &rest[..name_end];
        if name == "Item" || name.ends_with(":Item") {
            return Some(at + 2 + name_end + 1);
        }
        p = at + 2;
    }
    None
}

fn element_text(s: &str, local: &str) -> Option<String> {
    let mut p = 0;
    while let Some(i) = s[p..].find('<') {
        let at = p + i + 1;
        let rest = &s[at..];
        let end = rest.find('>')?;
        let name = &rest[..end];
        if name == local || name.ends_with(&format!(":{local}")) {
            let body = &rest[end + 1..];
            return body.find('<').map(|e| body[..e].trim().to_string());
        }
        p = at;
    }
    None
}

/// Runs the import; returns the new VM. Cleans up (aborts the lease, destroys the VM) on failure.
pub fn import(
    s: &Session,
    descriptor: &str,
    disk: Upload<'_>,
    name: &str,
    pool: &MoRef,
    ds: &MoRef,
    folder: &MoRef,
) -> DriverResult<MoRef> {
    let ovf_manager =
        s.sc.ovf_manager.clone().ok_or_else(|| DriverError::not_supported("this server has no OvfManager"))?;
    let mut descriptor = descriptor.to_string();
    let mut result = None;
    for attempt in 0..2 {
        let req = CreateImportSpec {
            this: ovf_manager.clone(),
            ovf_descriptor: descriptor.clone(),
            resource_pool: pool.clone(),
            datastore: ds.clone(),
            entity_name: name.to_string(),
        };
        let r = s.call(&req).map_err(ctx_err("cannot create the import spec"))?;
        let r = r.child("returnval").cloned().unwrap_or_default();
        for w in r.children_named("warning") {
            warn!("import spec warning: {}", w.str_at("localizedMessage").unwrap_or_default());
        }
        let errors: Vec<String> = r
            .children_named("error")
            .map(|e| crate::common::logger::redact(e.str_at("localizedMessage").unwrap_or(e.kind())))
            .collect();
        if errors.is_empty() {
            result = Some(r);
            break;
        }
        let unsupported = errors.iter().all(|e| e.contains("unsupported resource type"));
        if attempt == 0 && unsupported {
            let (stripped, names) = strip_items(&descriptor, DROPPABLE);
            if !names.is_empty() {
                warn!(
                    "the server refuses parts of the stemcell OVF ({}); importing without {}",
                    errors.join("; "),
                    names.join(", ")
                );
                descriptor = stripped;
                continue;
            }
        }
        return Err(DriverError::other(format!("the server refuses the stemcell OVF: {}", errors.join("; "))));
    }
    let r = result.ok_or_else(|| DriverError::other("the server refuses the stemcell OVF"))?;
    let spec =
        r.child("importSpec").cloned().ok_or_else(|| DriverError::other("CreateImportSpec returned no import spec"))?;
    let files: Vec<(String, String, u64)> = r
        .children_named("fileItem")
        .filter_map(|f| {
            Some((
                f.str_at("deviceId")?.to_string(),
                f.str_at("path")?.to_string(),
                f.str_at("size").and_then(|v| v.parse().ok()).unwrap_or(0),
            ))
        })
        .collect();
    let lease = s
        .call(&ImportVApp { this: pool.clone(), spec, folder: Some(folder.clone()), host: None })
        .map_err(ctx_err("ImportVApp failed"))?
        .moref_at("returnval")
        .ok_or_else(|| DriverError::other("ImportVApp returned no lease"))?;
    match upload(s, &lease, disk, &files) {
        Ok(vm) => Ok(vm),
        Err(e) => {
            let reason = e.to_string();
            if let Err(a) = s.call(&HttpNfcLeaseAbort { this: lease.clone(), reason }) {
                warn!("cannot abort NFC lease {}: {a}", lease.value);
            }
            Err(e)
        }
    }
}

fn upload(s: &Session, lease: &MoRef, disk: Upload<'_>, files: &[(String, String, u64)]) -> DriverResult<MoRef> {
    // the stream holds one file, the disk: an OVF naming others (a second disk, an ISO) cannot be imported
    if let Some((_, other, _)) = files.iter().find(|(_, p, _)| p != disk.name) {
        return Err(DriverError::other(format!(
            "the OVF names a file other than its disk {}: {other} (a stemcell has one disk)",
            disk.name
        )));
    }
    // the lease's info (its device URLs) is set once it is ready: read with its state, one request when the
    // lease is ready at once (as it usually is)
    let state = s
        .wait_for(lease, &["state", "error", "info"], "NFC lease", |v| {
            v.iter().any(|(p, n)| p == "state" && n.text != "initializing")
        })
        .map_err(ctx_err("waiting for the NFC lease failed"))?;
    let st = state.iter().find(|(p, _)| p == "state").map(|(_, n)| n.text.clone()).unwrap_or_default();
    if st != "ready" {
        let err = state
            .iter()
            .find(|(p, _)| p == "error")
            .map(|(_, n)| super::soap::Fault::from_localized(n).to_string())
            .unwrap_or_default();
        return Err(DriverError::other(format!("NFC lease is {st}: {err}")));
    }
    let info = match state.iter().find(|(p, _)| p == "info") {
        Some((_, info)) => info.clone(),
        // a server that sent the state change without the info: ask for it
        None => s
            .object(lease, &["info"])
            .map_err(ctx_err("cannot read the NFC lease"))?
            .and_then(|o| o.get("info").cloned())
            .ok_or_else(|| DriverError::other("NFC lease has no info"))?,
    };
    let entity = info.moref_at("entity").ok_or_else(|| DriverError::other("NFC lease names no VM"))?;
    let urls: Vec<(String, String, Option<String>)> = info
        .children_named("deviceUrl")
        .filter_map(|d| {
            Some((
                d.str_at("importKey")?.to_string(),
                d.str_at("url")?.to_string(),
                d.str_at("sslThumbprint").map(str::to_string),
            ))
        })
        .collect();
    if let Some((device, path, _)) = files.first() {
        let (_, url, thumb) = urls
            .iter()
            .find(|(k, _, _)| k == device)
            .ok_or_else(|| DriverError::other(format!("NFC lease has no URL for {device} ({path})")))?;
        info!("uploading {path} ({} MiB) to the NFC lease", disk.len >> 20);
        let started = Instant::now();
        let mut reader = Progress {
            inner: disk.reader,
            s,
            lease,
            done: 0,
            total: disk.len.max(1),
            last_report: started,
            name: path.clone(),
        };
        s.put_stream(url, thumb.as_deref(), disk.len, &mut reader)
            .map_err(|e| DriverError::failed(format!("uploading {path} failed"), e))?;
        if reader.done != disk.len {
            return Err(DriverError::other(format!(
                "uploading {path} failed: the image held {} bytes of it, its header said {}",
                reader.done, disk.len
            )));
        }
        let secs = started.elapsed().as_secs_f64();
        let mib = disk.len >> 20;
        info!("{path}: 100 % uploaded ({mib} MiB in {secs:.1} s, {:.0} MiB/s)", mib as f64 / secs.max(0.001));
    }
    // no progress call at 100 %: HttpNfcLeaseComplete says it
    s.call(&HttpNfcLeaseComplete { this: lease.clone() }).map_err(ctx_err("cannot complete the NFC lease"))?;
    Ok(entity)
}

/// How often an upload tells the lease (and stderr) how far it is. vSphere aborts a lease that hears
/// nothing for 5 minutes; a call per few seconds costs nothing next to the upload.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Counts uploaded bytes; every [`PROGRESS_EVERY`] tells the lease (`HttpNfcLeaseProgress`) and stderr.
struct Progress<'a> {
    inner: &'a mut dyn Read,
    s: &'a Session,
    lease: &'a MoRef,
    done: u64,
    total: u64,
    last_report: Instant,
    name: String,
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            let percent = ((self.done.saturating_mul(100)) / self.total).min(99) as u32;
            info!("{}: {percent} % uploaded ({} MiB)", self.name, self.done >> 20);
            if let Err(e) = self.s.call(&HttpNfcLeaseProgress { this: self.lease.clone(), percent }) {
                let e: ClientError = e;
                warn!("NFC lease progress update failed: {e}");
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_sata_and_children() {
        let ovf = r#"<VirtualHardwareSection><Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item><Item><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>20</rasd:ResourceType></Item><Item><rasd:InstanceID>10</rasd:InstanceID><rasd:Parent>9</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item><ovf:Item ovf:required="false"><rasd:InstanceID>11</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></ovf:Item></VirtualHardwareSection>"#;
        let (out, names) = strip_items(ovf, &["20"]);
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(out.contains("<rasd:ResourceType>6<") && out.contains("<rasd:ResourceType>10<"), "{out}");
        assert!(!out.contains(">20<") && !out.contains(">15<"), "{out}");
    }

    #[test]
    fn generated_ovf_parses() {
        let ovf = generated_ovf("a&b.vmdk", 10, 4096, true);
        let info = crate::cpi::stemcell::parse_ovf(&ovf).unwrap();
        assert_eq!(info.disk_href, "a&b.vmdk");
        assert!(info.efi);
    }
}
