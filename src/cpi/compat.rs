//! bosh-vmrun-cpi's names, read as vmcpi's: an operator migrating from
//! [bosh-vmrun-cpi-release](https://github.com/micahyoung/bosh-vmrun-cpi-release) swaps the release and
//! keeps the manifest. Its job properties `vmrun.*` arrive (through the job's cpi.json template) as keys
//! of a `kind: vmrun` driver section, and its resource-pool `bootstrap` block as VM cloud_properties.
//! Each old key is renamed to vmcpi's and a note says so; a key whose job vmcpi does differently is
//! dropped with a note saying why. An old and a new key that disagree are refused, naming both.
use serde_json::{Map, Value};

/// bosh-vmrun-cpi's `vmrun.*` keys → vmcpi's `driver` keys.
const DRIVER_RENAMES: &[(&str, &str)] = &[
    ("vmrun_bin_path", "vmrun"),
    ("ovftool_bin_path", "ovftool"),
    ("vm_start_max_wait_seconds", "start_timeout_seconds"),
    ("vm_soft_shutdown_max_wait_seconds", "soft_shutdown_timeout_seconds"),
    ("ssh_tunnel", "ssh"),
];

/// bosh-vmrun-cpi's keys that vmcpi reads but does not need, and why.
const DRIVER_UNUSED: &[(&str, &str)] = &[
    (
        "stemcell_store_path",
        "vmcpi imports each stemcell it is given (uploading it over SSH in remote mode) into <vm_store_path>/stemcells, so it needs no store of stemcell tarballs",
    ),
    ("enable_human_readable_name", "vmcpi always sets a VM's displayName from set_vm_metadata (`name (vm-…)`); VM and disk file names stay CIDs"),
    ("use_linked_cloning", "vmcpi makes linked clones on Workstation and Fusion and full copies with ovftool on Player (host_type: player)"),
];

/// `ssh_tunnel` keys → vmcpi's `ssh` keys (the others are the same in both).
const SSH_RENAMES: &[(&str, &str)] = &[("username", "user")];

/// `bootstrap` keys → vmcpi's.
const BOOTSTRAP_RENAMES: &[(&str, &str)] =
    &[("script_content", "script"), ("interpreter_path", "interpreter"), ("ready_process_name", "ready_process")];

/// Renames `renames` in `map` (`what` names the map in messages); returns a note per renamed key.
fn rename(map: &mut Map<String, Value>, what: &str, renames: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for (old, new) in renames {
        let Some(value) = map.remove(*old) else {
            continue;
        };
        match map.get(*new) {
            Some(existing) if existing != &value => {
                return Err(format!("{what}.{old} (bosh-vmrun-cpi's name for {what}.{new}) and {what}.{new} are both set and disagree; set one of them"));
            }
            _ => {
                notes.push(format!("{what}.{old} is bosh-vmrun-cpi's name for {what}.{new}; read as {what}.{new}"));
                map.insert(new.to_string(), value);
            }
        }
    }
    Ok(notes)
}

/// Maps bosh-vmrun-cpi's keys in a `kind: vmrun` driver section onto vmcpi's. Returns the notes to log.
pub fn vmrun_driver(driver: &mut Map<String, Value>) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let tunnel = driver.contains_key("ssh_tunnel");
    if tunnel {
        let Some(Value::Object(ssh)) = driver.get_mut("ssh_tunnel") else {
            return Err("driver.ssh_tunnel (bosh-vmrun-cpi's vmrun.ssh_tunnel) must be a hash {host, port, username, private_key, platform}".into());
        };
        notes.extend(rename(ssh, "driver.ssh_tunnel", SSH_RENAMES)?);
        // bosh-vmrun-cpi's port is a string ("22")
        if let Some(Value::String(p)) = ssh.get("port") {
            let port: u16 =
                p.trim().parse().map_err(|_| format!("driver.ssh_tunnel.port must be a port number, got {p:?}"))?;
            ssh.insert("port".into(), Value::from(port));
        }
        // bosh-vmrun-cpi connected with StrictHostKeyChecking=no; vmcpi checks every host key
        if !ssh.contains_key("host_public_key") && !ssh.contains_key("known_hosts") {
            let host = ssh.get("host").and_then(Value::as_str).unwrap_or("HOST");
            return Err(format!(
                "driver.ssh_tunnel (bosh-vmrun-cpi's vmrun.ssh_tunnel) needs the host's key too, which bosh-vmrun-cpi never checked: add vmrun.ssh_tunnel.host_public_key, the \"ssh-ed25519 AAAA…\" part of `ssh-keyscan -t ed25519 {host}`"
            ));
        }
    }
    notes.extend(rename(driver, "driver", DRIVER_RENAMES)?);
    for (key, why) in DRIVER_UNUSED {
        if let Some(v) = driver.remove(*key) {
            notes.push(format!("driver.{key} ({v}) is a bosh-vmrun-cpi setting that vmcpi does not use: {why}"));
        }
    }
    Ok(notes)
}

/// Maps bosh-vmrun-cpi's names in VM cloud_properties' `bootstrap` block onto vmcpi's. `script_path` (where the
/// script is copied in the guest) is kept when the driver copies the script (`keeps_script_path`), and dropped
/// with a note otherwise. Returns the notes to log.
pub fn vm_cloud_properties(props: &mut Map<String, Value>, keeps_script_path: bool) -> Result<Vec<String>, String> {
    let Some(Value::Object(b)) = props.get_mut("bootstrap") else {
        return Ok(Vec::new());
    };
    let mut notes = rename(b, "cloud_properties.bootstrap", BOOTSTRAP_RENAMES)?;
    if !keeps_script_path {
        if let Some(p) = b.remove("script_path") {
            notes.push(format!("cloud_properties.bootstrap.script_path ({p}) is not used: this driver passes the script to the interpreter with -c"));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn bosh_vmrun_cpi_driver_keys_become_vmcpi_keys() {
        let mut d = obj(json!({
            "kind": "vmrun", "vm_store_path": "/vms", "vmrun_bin_path": "/usr/bin/vmrun", "ovftool_bin_path": "/usr/bin/ovftool",
            "vm_start_max_wait_seconds": 600, "vm_soft_shutdown_max_wait_seconds": 30, "stemcell_store_path": "/vms/stemcells",
            "enable_human_readable_name": true, "use_linked_cloning": true,
            "ssh_tunnel": {"host": "ws.example", "port": "2222", "username": "me", "private_key": "KEY", "platform": "linux", "host_public_key": "ssh-ed25519 AAAA"},
        }));
        let notes = vmrun_driver(&mut d).unwrap();
        assert_eq!(
            Value::Object(d),
            json!({"kind": "vmrun", "vm_store_path": "/vms", "vmrun": "/usr/bin/vmrun", "ovftool": "/usr/bin/ovftool",
                   "start_timeout_seconds": 600, "soft_shutdown_timeout_seconds": 30,
                   "ssh": {"host": "ws.example", "port": 2222, "user": "me", "private_key": "KEY", "platform": "linux", "host_public_key": "ssh-ed25519 AAAA"}})
        );
        assert_eq!(notes.len(), 9, "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("driver.vmrun_bin_path is bosh-vmrun-cpi's name for driver.vmrun")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("stemcell_store_path") && n.contains("does not use")), "{notes:?}");
        // vmcpi's own names: nothing to say
        let mut d = obj(json!({"kind": "vmrun", "vm_store_path": "/vms", "vmrun": "/usr/bin/vmrun"}));
        assert!(vmrun_driver(&mut d).unwrap().is_empty());
    }

    #[test]
    fn contradictions_and_unchecked_hosts_are_refused() {
        for (d, says) in [
            (json!({"vmrun_bin_path": "/a", "vmrun": "/b"}), "disagree"),
            (json!({"ssh_tunnel": "host"}), "must be a hash"),
            (json!({"ssh_tunnel": {"host": "h", "username": "u", "private_key": "k"}}), "ssh-keyscan -t ed25519 h"),
            (json!({"ssh_tunnel": {"host": "h", "port": "ssh", "host_public_key": "ssh-ed25519 A"}}), "port number"),
            (
                json!({"ssh_tunnel": {"host": "h", "username": "u", "user": "v", "host_public_key": "ssh-ed25519 A"}}),
                "disagree",
            ),
        ] {
            let err = vmrun_driver(&mut obj(d.clone())).expect_err(&d.to_string());
            assert!(err.contains(says), "{d}: {err}");
        }
        // agreeing duplicates are fine
        let mut d = obj(json!({"vmrun_bin_path": "/a", "vmrun": "/a"}));
        vmrun_driver(&mut d).unwrap();
        assert_eq!(Value::Object(d), json!({"vmrun": "/a"}));
    }

    #[test]
    fn bootstrap_block_of_bosh_vmrun_cpi() {
        let old = json!({"cpu": 2, "bootstrap": {"script_content": "echo hi", "script_path": "/tmp/b.sh", "interpreter_path": "/bin/sh",
                                                 "username": "vcap", "password": "pw", "ready_process_name": "bosh-agent",
                                                 "min_wait_seconds": 1, "max_wait_seconds": 60}});
        let mut p = obj(old.clone());
        let notes = vm_cloud_properties(&mut p, true).unwrap();
        assert_eq!(notes.len(), 3);
        assert!(!notes.iter().any(|n| n.contains("pw")), "{notes:?}");
        assert_eq!(
            p["bootstrap"],
            json!({"script": "echo hi", "script_path": "/tmp/b.sh", "interpreter": "/bin/sh", "username": "vcap", "password": "pw",
                   "ready_process": "bosh-agent", "min_wait_seconds": 1, "max_wait_seconds": 60})
        );
        let mut p = obj(old);
        let notes = vm_cloud_properties(&mut p, false).unwrap();
        assert!(p["bootstrap"].get("script_path").is_none());
        assert!(notes.iter().any(|n| n.contains("script_path")));
        // no bootstrap, or vmcpi's names: untouched
        let mut p = obj(json!({"cpu": 1}));
        assert!(vm_cloud_properties(&mut p, true).unwrap().is_empty());
        let err = vm_cloud_properties(&mut obj(json!({"bootstrap": {"script": "a", "script_content": "b"}})), true)
            .unwrap_err();
        assert!(err.contains("disagree"), "{err}");
    }
}
