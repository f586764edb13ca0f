//! Hostile input on every method: wrong JSON types in every argument position, enormous and negative numbers,
//! CIDs and metadata full of path tricks, shell metacharacters, markup, NUL, newlines and 4 KB strings,
//! non-UTF-8 bytes on stdin. Expected: a BOSH error object or correct escaping, no effect outside the CPI's
//! own areas, never an internal error (panic). The wrong types need no peer; the values run on every peer.
use crate::peer::{files_below, finish, peer_tests, Peer};
use crate::util::{Cpi, Run};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

peer_tests!(hostile_values_leave_only_errors);

fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "../../../../etc/passwd",
        "../vms",
        "/",
        "a\u{0}b",
        "\"'",
        "x; touch /tmp/vmcpi-hostile-1",
        "$(touch /tmp/vmcpi-hostile-2)",
        "`touch /tmp/vmcpi-hostile-3`",
        "<&>",
        "]]></tag><evil/>",
        "line1\nevil.key = \"1\"\r\n",
        "a\" \nevil2 = \"x",
        "--help",
        "-T",
        "-c",
        "",
        " ",
        "vm-0000000000000000000/../../x",
        "\u{202e}ʇxǝʇ 🚀",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("A".repeat(4096));
    v.push("\"".repeat(4096));
    v
}

fn assert_no_side_effects() {
    for i in 1..=3 {
        assert!(!Path::new(&format!("/tmp/vmcpi-hostile-{i}")).exists(), "a shell ran user data");
    }
}

fn assert_clean(method: &str, r: &Run) {
    assert_eq!(r.status, 0, "{method}: exit status");
    if let Some(msg) = r.response["error"]["message"].as_str() {
        assert!(!msg.contains("internal error in vmcpi"), "{method} panicked: {msg}");
    }
}

/// The calls of every method with `s` in every CID and metadata position.
fn hostile_calls(peer: &dyn Peer, s: &str, vm: &str, disk: &str, sc: &Value) -> Vec<(&'static str, Value)> {
    let create = |agent: &str, sc: &Value, props: Value| peer.create_vm_args(agent, sc, props);
    vec![
        ("has_vm", json!([s])),
        ("delete_vm", json!([s])),
        ("reboot_vm", json!([s])),
        ("get_disks", json!([s])),
        ("attach_disk", json!([vm, s])),
        ("attach_disk", json!([s, disk])),
        ("detach_disk", json!([vm, s])),
        ("detach_disk", json!([s, disk])),
        ("has_disk", json!([s])),
        ("delete_disk", json!([s])),
        ("resize_disk", json!([s, 64])),
        ("update_disk", json!([s, 64, {}])),
        ("set_disk_metadata", json!([s, {"k": "v"}])),
        ("snapshot_disk", json!([s, {}])),
        ("snapshot_disk", json!([disk, {s: s}])),
        ("delete_snapshot", json!([s])),
        ("delete_stemcell", json!([s])),
        ("create_stemcell", json!([s, {}])),
        ("create_stemcell", json!([s, {"name": s, "version": s}])),
        ("create_disk", json!([64, {s: s}, s])),
        ("create_vm", create(s, &json!(s), json!({}))),
        ("create_vm", create("agent", sc, json!({s: s}))),
        ("create_vm", {
            let mut a = create("agent", sc, peer.vm_props(false));
            a[3] = json!({s: {"type": "manual", "ip": s, "netmask": s, "cloud_properties": {"name": s}}});
            a
        }),
        ("set_vm_metadata", json!([s, {"k": "v"}])),
        ("set_vm_metadata", json!([vm, {s: s, "name": s}])),
        ("set_disk_metadata", json!([disk, {s: s}])),
        ("calculate_vm_cloud_properties", json!([{"ram": s, "cpu": s, "ephemeral_disk_size": s}])),
    ]
}

/// Files in the peer's sandbox outside the CPI's own areas.
fn outside(peer: &dyn Peer) -> Option<Vec<PathBuf>> {
    let (root, areas) = peer.sandbox()?;
    Some(files_below(&root).into_iter().filter(|p| !areas.iter().any(|a| p.starts_with(a))).collect())
}

fn hostile_values_leave_only_errors(peer: &dyn Peer) {
    let cpi = Cpi::with_config(&peer.config());
    let img = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([peer.stemcell_image(img.path()), {}]));
    let vm = cpi.ok("create_vm", peer.create_vm_args("agent-hostile", &sc, peer.vm_props(false)))[0]
        .as_str()
        .unwrap()
        .to_string();
    let disk = cpi.ok("create_disk", json!([peer.disk_mib(), {}, vm])).as_str().unwrap().to_string();
    // what is beside the CPI's areas must stay as it is
    if let Some((root, _)) = peer.sandbox() {
        std::fs::write(root.join("outside"), "untouched").unwrap();
    }
    let outside_before = outside(peer);
    let objects_before = peer.objects();
    let mut tried = 0;
    let mut accepted = Vec::new();
    for s in hostile_strings() {
        for (method, args) in hostile_calls(peer, &s, &vm, &disk, &sc) {
            let r = cpi.call(method, args);
            assert_clean(method, &r);
            tried += 1;
            // a create that took the value (as the agent id, a metadata value) made an object: the director
            // deletes it
            let res = &r.response["result"];
            match method {
                "create_vm" if res.is_array() => accepted.push(("delete_vm", res[0].clone())),
                "create_disk" if res.is_string() => accepted.push(("delete_disk", res.clone())),
                "create_stemcell" if res.is_string() => accepted.push(("delete_stemcell", res.clone())),
                "snapshot_disk" if res.is_string() => accepted.push(("delete_snapshot", res.clone())),
                _ => {}
            }
        }
    }
    // enormous, negative and fractional numbers
    for n in [json!(u64::MAX), json!(1u64 << 60), json!(-5), json!(1.5), json!(1e308)] {
        for (method, args) in [
            ("create_disk", json!([n, {}, null])),
            ("resize_disk", json!([disk, n])),
            ("update_disk", json!([disk, n, {}])),
            ("create_vm", peer.create_vm_args("a", &sc, json!({"ram": n, "cpu": n, "disk": n}))),
            ("calculate_vm_cloud_properties", json!([{"ram": n, "cpu": n, "ephemeral_disk_size": n}])),
        ] {
            assert_clean(method, &cpi.call(method, args));
            tried += 1;
        }
    }
    eprintln!(
        "{} hostile: {tried} requests, {} creates accepted the value (as agent id or metadata)",
        peer.name(),
        accepted.len()
    );
    for (method, cid) in &accepted {
        cpi.ok(method, json!([cid]));
    }
    // CIDs that are not this CPI's never reach the hypervisor: the answers say so
    for cid in
        ["../../etc/passwd", "vm-$(touch /tmp/vmcpi-hostile-1)", "vm-`id`;rm -rf /", "vm-\n00", "/dev/sda", "vm-<&>\"'"]
    {
        assert_eq!(cpi.ok("has_vm", json!([cid])), json!(false), "{cid}");
        assert_eq!(cpi.err("delete_vm", json!([cid]))["type"], "Bosh::Clouds::VMNotFound", "{cid}");
        assert_eq!(cpi.err("delete_disk", json!([cid]))["type"], "Bosh::Clouds::DiskNotFound", "{cid}");
        assert_eq!(cpi.ok("has_disk", json!([cid])), json!(false), "{cid}");
        let e = cpi.err("create_vm", peer.create_vm_args("a", &json!(cid), peer.vm_props(false)));
        assert_eq!(
            (e["type"].as_str(), e["ok_to_retry"].as_bool()),
            (Some("Bosh::Clouds::VMCreationFailed"), Some(false)),
            "{cid}"
        );
    }
    assert_no_side_effects();
    // XML specials, quotes and newlines in metadata are kept as data
    let tricky = "<&>]]></tag><evil/>\"'\nevil.key = \"1\"";
    cpi.ok("set_vm_metadata", json!([vm, {"k\"<": tricky, "name": "a\nb"}]));
    peer.assert_metadata_kept(&vm, tricky);
    // the peer holds the test's own objects only (set_disk_metadata writes the disk's metadata beside it)
    let objects_after = peer.objects();
    let gone: Vec<&String> = objects_before.iter().filter(|o| !objects_after.contains(o)).collect();
    assert!(gone.is_empty(), "objects gone: {gone:?}");
    let new: Vec<&String> =
        objects_after.iter().filter(|o| !objects_before.contains(o) && !o.contains(disk.as_str())).collect();
    assert!(new.is_empty(), "objects made: {new:?}");
    // and the VM works
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(true));
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([]));
    cpi.ok("attach_disk", json!([vm, disk]));
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
    if let (Some(before), Some(after), Some((root, _))) = (outside_before, outside(peer), peer.sandbox()) {
        assert_eq!(after, before, "files made or removed outside the CPI's areas");
        assert_eq!(std::fs::read_to_string(root.join("outside")).unwrap(), "untouched");
    }
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    finish(peer, &cpi, &sc, &[]);
}

/// Every method, every argument position, every JSON type: no hypervisor behind the config.
#[test]
fn wrong_types_in_every_argument_position_need_no_peer() {
    let cpi = Cpi::with_config(
        &json!({"driver": {"kind": "libvirt", "uri": "qemu:///nonexistent-hostile", "state_dir": "/var/tmp/vmcpi-test-hostile-state"}}),
    );
    let spec_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    let wrong = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1e308),
        json!(18446744073709551615u64),
        json!("x"),
        json!([]),
        json!({}),
        json!([[[[[]]]]]),
    ];
    let mut tried = 0;
    for entry in std::fs::read_dir(spec_dir).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "json") {
            continue;
        }
        let spec: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        let method = spec["method"].as_str().unwrap();
        let args = spec["request"]["arguments"].as_array().unwrap().clone();
        for i in 0..args.len().max(1) {
            for w in &wrong {
                let mut a = args.clone();
                if a.is_empty() {
                    a.push(w.clone());
                } else {
                    a[i] = w.clone();
                }
                assert_clean(method, &cpi.call(method, Value::Array(a)));
                tried += 1;
            }
        }
        // too few and far too many arguments
        assert_clean(method, &cpi.call(method, json!([])));
        assert_clean(method, &cpi.call(method, Value::Array(vec![json!("x"); 64])));
        tried += 2;
    }
    // the whole request in odd shapes
    for raw in [
        &b"\xff\xfe\xfd"[..],
        b"{\"method\":\"info\",\"arguments\":[],\"x\":\"\xff\"}",
        b"{\"method\":\"info\"}{\"method\":\"info\"}",
        &[b'['; 100_000][..],
    ] {
        let r = cpi.raw(raw);
        assert_clean("raw", &r);
        assert_eq!(r.response["error"]["type"], "Bosh::Clouds::CpiError");
        tried += 1;
    }
    eprintln!("hostile: {tried} wrong-type requests");
    assert_no_side_effects();
}

/// Crafted stemcell disks (issue 19, item 2): a VMDK whose descriptor names a host file (a text descriptor, an
/// embedded one qemu reads as a descriptor file, several extents, a parent), a qcow2 with a backing file or an
/// external data file naming one, a "raw" root.img that is a VMDK. Each is refused by create_stemcell with a
/// permanent CloudError naming what was found, nothing is uploaded or left behind, and the host file's bytes
/// appear nowhere.
mod disks {
    use crate::peer::{peer_tests, Peer};
    use crate::util::Cpi;
    use serde_json::json;
    use std::path::Path;
    use std::process::Command;

    peer_tests!(crafted_disks_are_refused_and_read_no_host_file);

    /// Files that are no stemcell at all (issue 20): each answers a CloudError with `ok_to_retry: false` (the
    /// same file fails the same way however often the director tries), names what was wrong, leaves nothing.
    mod not_a_stemcell {
        use super::*;
        peer_tests!(images_that_are_no_stemcell_are_refused_for_good);
    }

    fn images_that_are_no_stemcell_are_refused_for_good(peer: &dyn Peer) {
        let cpi = Cpi::with_config(&peer.config());
        let dir = tempfile::tempdir().unwrap();
        let gz_of = |data: &[u8]| {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(data).unwrap();
            gz.finish().unwrap()
        };
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("an empty file", Vec::new(), "neither"),
            ("a text file", b"this is a release notes file, not a stemcell\n".repeat(40), "neither"),
            ("random bytes", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "neither"),
            ("a gzip of text", gz_of(&b"no tar in here\n".repeat(100)), "stemcell"),
            ("a truncated gzip", gz_of(&[0u8; 8192])[..40].to_vec(), "stemcell"),
        ];
        let no_disk = dir.path().join("no-disk.tgz");
        archive(&no_disk, &[("stemcell.MF", b"name: x\nversion: '1'\n"), ("README", b"hello")]);
        cases.push(("a tar with no disk in it", std::fs::read(&no_disk).unwrap(), "holds no disk"));
        let bad_ovf = dir.path().join("bad-ovf.tgz");
        archive(&bad_ovf, &[("image.ovf", b"<Envelope><not-closed>"), ("image-disk1.vmdk", b"KDMV")]);
        cases.push(("an OVF that is not XML", std::fs::read(&bad_ovf).unwrap(), "OVF"));
        for (i, (what, bytes, expect)) in cases.iter().enumerate() {
            let image = dir.path().join(format!("image-{i}"));
            std::fs::write(&image, bytes).unwrap();
            let r = cpi.call("create_stemcell", json!([image, {}]));
            let e = &r.response["error"];
            assert!(!e.is_null(), "{} {what}: accepted as {}\n{}", peer.name(), r.response["result"], r.stderr);
            assert_eq!(e["type"], "Bosh::Clouds::CloudError", "{} {what}: {e}", peer.name());
            assert_eq!(e["ok_to_retry"], false, "{} {what}: {e}", peer.name());
            let msg = e["message"].as_str().unwrap_or_default();
            assert!(msg.contains(expect), "{} {what}: the message does not say {expect:?}: {msg}", peer.name());
            assert_eq!(peer.leftovers(), Vec::<String>::new(), "{} {what}: left behind", peer.name());
            eprintln!("{} refuses {what}: {msg}", peer.name());
        }
    }

    const OVF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="image-disk1.vmdk" ovf:id="file1"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info><Name>vm</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>vm</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>512MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

    /// A gzipped tar of `files` (in this order).
    fn archive(path: &Path, files: &[(&str, &[u8])]) {
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, name, *data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
    }

    fn vsphere_image(path: &Path, vmdk: &[u8]) {
        archive(
            path,
            &[("image.ovf", OVF.as_bytes()), ("image.mf", b"SHA1(image.ovf)= 0\n"), ("image-disk1.vmdk", vmdk)],
        );
    }

    /// A sparse-extent header (`KDMV`) of `capacity` sectors, 64 KiB grains, with `descriptor` embedded at
    /// sector 1 (20 sectors) and nothing else: what qemu reads as a descriptor *file* when the capacity is 0.
    fn kdmv(flags: u32, capacity: u64, descriptor: &str) -> Vec<u8> {
        let mut v = vec![0u8; 512 * 21];
        v[0..4].copy_from_slice(b"KDMV");
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        v[8..12].copy_from_slice(&flags.to_le_bytes());
        v[12..20].copy_from_slice(&capacity.to_le_bytes());
        v[20..28].copy_from_slice(&128u64.to_le_bytes());
        v[28..36].copy_from_slice(&1u64.to_le_bytes());
        v[36..44].copy_from_slice(&20u64.to_le_bytes());
        v[44..48].copy_from_slice(&512u32.to_le_bytes());
        v[48..56].copy_from_slice(&21u64.to_le_bytes());
        v[56..64].copy_from_slice(&21u64.to_le_bytes());
        v[64..72].copy_from_slice(&21u64.to_le_bytes());
        v[73..77].copy_from_slice(b"\n \r\n");
        v[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
        v
    }

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A real stream-optimised VMDK (qemu-img) of 3 MiB with some data, and `descriptor_edit` applied to its
    /// embedded descriptor (sectors 1..21).
    fn stream_optimized(dir: &Path, descriptor_edit: impl Fn(&str) -> String) -> Vec<u8> {
        let raw = dir.join("so.raw");
        std::fs::write(&raw, vec![0x5au8; 3 << 20]).unwrap();
        let vmdk = dir.join("so.vmdk");
        crate::util::stream_optimized_vmdk(&raw, &vmdk, "");
        let mut v = std::fs::read(&vmdk).unwrap();
        let text = String::from_utf8_lossy(&v[512..512 * 21]).trim_end_matches('\0').to_string();
        let edited = descriptor_edit(&text);
        assert!(edited.len() < 512 * 20 && edited != text);
        v[512..512 * 21].fill(0);
        v[512..512 + edited.len()].copy_from_slice(edited.as_bytes());
        v
    }

    fn crafted_disks_are_refused_and_read_no_host_file(peer: &dyn Peer) {
        let cpi = Cpi::with_config(&peer.config());
        let dir = tempfile::tempdir().unwrap();
        // the host file a crafted disk names: its bytes must never leave it
        let canary_text = format!("VMCPI-HOST-FILE-CANARY-{:x}", std::process::id() as u64 * 7919);
        let canary = dir.path().join("host-secret.bin");
        std::fs::write(&canary, canary_text.repeat((64 << 10) / canary_text.len() + 1)).unwrap();
        let host = canary.to_str().unwrap();
        let flat = format!("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 8 FLAT \"{host}\" 0\n");
        let sparse_with = |extents: &str| {
            format!("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n{extents}\n")
        };
        let mut cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
            (
                "text descriptor, FLAT extent naming a host file",
                flat.clone().into_bytes(),
                vec!["FLAT".into(), host.into()],
            ),
            (
                "sparse header of capacity 0 (qemu reads its descriptor as a descriptor file)",
                kdmv(3, 0, &flat),
                vec!["FLAT".into(), host.into()],
            ),
            (
                "embedded descriptor with a second, FLAT extent",
                kdmv(3, 6144, &sparse_with(&format!("RW 6144 SPARSE \"image-disk1.vmdk\"\nRW 8 FLAT \"{host}\" 0"))),
                vec!["2 extents".into(), host.into()],
            ),
            (
                "stream-optimised with a parent naming a host file",
                stream_optimized(dir.path(), |d| {
                    d.replace("parentCID=ffffffff", &format!("parentCID=1234abcd\nparentFileNameHint=\"{host}\""))
                }),
                vec!["parent".into(), host.into()],
            ),
            (
                "createType vmfs",
                stream_optimized(dir.path(), |d| d.replace("streamOptimized", "vmfs")),
                vec!["vmfs".into()],
            ),
        ];
        // a well-formed head and first grain, then a grain on top of the first: refused as it streams
        let broken = {
            let mut w = vmcpi::diskimage::vmdk::StreamWriter::new(Vec::new(), 3 << 20, "image-disk1.vmdk").unwrap();
            w.data(0, &[7u8; 65536]).unwrap();
            let second = w.get_mut().len();
            w.data(65536, &[9u8; 65536]).unwrap();
            let mut v = w.finish().unwrap();
            v[second..second + 8].copy_from_slice(&0u64.to_le_bytes());
            v
        };
        cases.push(("stream-optimised with a grain on top of another", broken, vec!["overlaps".into()]));
        let mut images = Vec::new();
        for (i, (what, vmdk, expect)) in cases.drain(..).enumerate() {
            let image = dir.path().join(format!("vsphere-{i}.tgz"));
            vsphere_image(&image, &vmdk);
            images.push((what.to_string(), image, expect));
        }
        if peer.name() == "libvirt" {
            // OpenStack images: root.img as qcow2 with a backing file or an external data file, or a VMDK
            let backed = dir.path().join("backed.qcow2");
            qemu_img(&["create", "-q", "-f", "qcow2", "-b", host, "-F", "raw", backed.to_str().unwrap()]);
            // the data file is made beside the canary with a name of the same length, then the name is patched
            let decoy = dir.path().join("host-decoy1.bin");
            let with_data = dir.path().join("data.qcow2");
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("data_file={},data_file_raw=on", decoy.display()),
                with_data.to_str().unwrap(),
                "3M",
            ]);
            let mut q = std::fs::read(&with_data).unwrap();
            let at =
                q.windows(decoy.to_str().unwrap().len()).position(|w| w == decoy.to_str().unwrap().as_bytes()).unwrap();
            q[at..at + host.len()].copy_from_slice(host.as_bytes());
            let roots: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
                (
                    "qcow2 with a backing file",
                    std::fs::read(&backed).unwrap(),
                    vec!["backing file".into(), host.into()],
                ),
                ("qcow2 with an external data file", q, vec!["data file".into(), host.into()]),
                ("raw root.img that is a VMDK", kdmv(3, 0, &flat), vec!["raw".into(), "VMDK".into()]),
            ];
            for (i, (what, root, expect)) in roots.into_iter().enumerate() {
                let image = dir.path().join(format!("openstack-{i}.tgz"));
                archive(&image, &[("root.img", &root)]);
                images.push((what.to_string(), image, expect));
            }
        }
        for (what, image, expect) in &images {
            let r = cpi.call("create_stemcell", json!([image, {}]));
            let e = &r.response["error"];
            assert!(!e.is_null(), "{} {what}: accepted as {}\n{}", peer.name(), r.response["result"], r.stderr);
            let msg = e["message"].as_str().unwrap_or_default();
            assert_eq!(e["type"], "Bosh::Clouds::CloudError", "{} {what}: {e}", peer.name());
            assert_eq!(e["ok_to_retry"], false, "{} {what}: {e}", peer.name());
            for x in expect {
                assert!(msg.contains(x.as_str()), "{} {what}: the message does not name {x:?}: {msg}", peer.name());
            }
            assert!(
                !r.stdout.contains(&canary_text) && !r.stderr.contains(&canary_text),
                "{what}: canary in the output"
            );
            assert_eq!(peer.leftovers(), Vec::<String>::new(), "{} {what}: left behind", peer.name());
            assert_eq!(
                peer.files_with(&[&canary_text]),
                Vec::<String>::new(),
                "{} {what}: host file copied",
                peer.name()
            );
            eprintln!("{} refuses {what}: {msg}", peer.name());
        }
    }
}
