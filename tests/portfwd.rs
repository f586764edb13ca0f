//! Port forwards on QEMU user-mode networks (network cloud_properties `port_forwards`) against the real libvirt
//! daemon: the host port is taken by the VM's QEMU process, survives reboot_vm (reset, and start of a stopped
//! VM), a busy port or a bad value is a VMCreationFailed that is not retried and leaves nothing, and delete_vm
//! frees the port.
use crate::libvirt::{config_in, domains_using, libvirt_available, openstack_image, virsh, volumes_in};
use crate::util::Cpi;
use serde_json::{json, Value};
use std::net::TcpListener;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether something (the VM's QEMU process) holds 127.0.0.1:port.
fn taken(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

fn user_net(forwards: Value) -> Value {
    json!({"default": {"type": "dynamic", "cloud_properties": {"type": "user", "port_forwards": forwards}}})
}

#[test]
fn user_network_port_forwards_live_with_the_vm() {
    if !libvirt_available() {
        return;
    }
    let pool = "vmcpi-test-fwd";
    let cpi = Cpi::with_config(&config_in(pool, json!({})));
    let dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([openstack_image(dir.path()), {}])).as_str().unwrap().to_string();
    let before = volumes_in(pool);
    let (p1, p2) = (free_port(), free_port());
    let created = cpi.ok("create_vm", json!(["fwd", sc, {"ram": 128}, user_net(json!([{"host": format!("127.0.0.1:{p1}"), "guest": 6868}, {"host": p2, "guest": 22}])), [], {}]));
    let vm = created[0].as_str().unwrap().to_string();
    assert!(taken(p1) && taken(p2), "the forwards hold their host ports");
    let (_, xml) = virsh(&["dumpxml", &vm]);
    assert!(xml.contains(&format!("127.0.0.1:{p1}=6868")), "kept in the metadata: {xml}");

    // reboot of a running VM: a reset, the same QEMU process keeps the forwards
    cpi.ok("reboot_vm", json!([vm]));
    assert!(taken(p1) && taken(p2), "forwards survive a reset");
    // reboot of a stopped VM: a new QEMU process gets them again
    assert!(virsh(&["destroy", &vm]).0);
    assert!(!taken(p1), "a stopped VM holds no port");
    cpi.ok("reboot_vm", json!([vm]));
    assert!(taken(p1) && taken(p2), "forwards come back when a stopped VM is started");

    // a second VM asking for a port the first holds: refused before anything is made
    let e = cpi.err("create_vm", json!(["fwd2", sc, {"ram": 128}, user_net(json!([{"host": p1, "guest": 6868}])), [], {}]));
    assert_eq!((e["type"].as_str(), e["ok_to_retry"].as_bool()), (Some("Bosh::Clouds::VMCreationFailed"), Some(false)), "{e}");
    assert!(e["message"].as_str().unwrap().contains(&format!("127.0.0.1:{p1}")), "{e}");

    // delete_vm frees the ports
    cpi.ok("delete_vm", json!([vm]));
    assert!(!taken(p1) && !taken(p2), "delete_vm frees the host ports");
    assert_eq!(volumes_in(pool), before);
    cpi.ok("delete_stemcell", json!([sc]));
}

#[test]
fn refused_forwards_leave_nothing() {
    if !libvirt_available() {
        return;
    }
    let pool = "vmcpi-test-fwd-bad";
    let cpi = Cpi::with_config(&config_in(pool, json!({})));
    let dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([openstack_image(dir.path()), {}])).as_str().unwrap().to_string();
    let before = volumes_in(pool);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let p = free_port();
    for (nets, want) in [
        (user_net(json!([{"host": busy_port, "guest": 6868}])), format!("127.0.0.1:{busy_port} cannot be forwarded")),
        (user_net(json!([{"host": "127.0.0.1:99999", "guest": 6868}])), "port_forwards[0]".to_string()),
        (user_net(json!([{"host": p, "guest": 0}])), "guest must be a TCP port".to_string()),
        (user_net(json!({"host": p, "guest": 22})), "must be a list".to_string()),
        (json!({"n": {"type": "dynamic", "cloud_properties": {"name": "default", "port_forwards": [{"host": p, "guest": 22}]}}}), "port_forwards needs type: user".to_string()),
        // two user networks asking for one host port: each is free alone, so QEMU's own bind refuses the
        // second after the domain runs; the rollback removes everything
        (
            json!({"a": {"type": "dynamic", "cloud_properties": {"type": "user", "port_forwards": [{"host": p, "guest": 22}]}},
                   "b": {"type": "dynamic", "cloud_properties": {"type": "user", "port_forwards": [{"host": p, "guest": 23}]}}}),
            "QEMU refused it".to_string(),
        ),
    ] {
        let e = cpi.err("create_vm", json!(["bad", sc, {"ram": 128}, nets, [], {}]));
        assert_eq!((e["type"].as_str(), e["ok_to_retry"].as_bool()), (Some("Bosh::Clouds::VMCreationFailed"), Some(false)), "{e}");
        assert!(e["message"].as_str().unwrap().contains(&want), "want {want:?} in {e}");
        assert_eq!(volumes_in(pool), before, "volumes left behind by {e}");
        assert_eq!(domains_using(pool), Vec::<String>::new(), "domain left behind by {e}");
        assert!(!taken(p), "port {p} left taken by {e}");
    }
    drop(busy);
    cpi.ok("delete_stemcell", json!([sc]));
}
