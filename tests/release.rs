//! The BOSH release (jobs/, packages/): the job templates rendered with Ruby's ERB through
//! release/render.rb (BOSH's p()/if_p() semantics, spec defaults applied), the package installed by
//! its packaging script in create-env's isolated environment, and the built binary run through the
//! rendered bin/cpi with the rendered cpi.json, as `bosh create-env` runs it. Needs `ruby`.
use crate::util::{require_peer, run_raw, Cpi};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have_ruby() -> bool {
    require_peer(
        "ruby (apt-get install ruby) to render the BOSH job templates",
        Command::new("ruby")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    )
}

/// Renders `jobs/vmcpi_cpi/templates/<template>` with `props`; Err(stderr) when rendering fails.
fn render(template: &str, props: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let props_path = dir.path().join("props.json");
    std::fs::write(&props_path, props.to_string()).unwrap();
    let out = Command::new("ruby")
        .arg(root().join("release/render.rb"))
        .args(["vmcpi_cpi", template])
        .arg(&props_path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn render_config(props: &Value) -> Value {
    let text =
        render("cpi.json.erb", props).unwrap_or_else(|e| panic!("cpi.json.erb did not render for {props}:\n{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("rendered cpi.json is not JSON ({e}):\n{text}"))
}

/// Runs `info` with `config` the way the CLI does and returns the result, failing on an error reply.
fn info_accepts(config: &Value) -> Value {
    let cpi = Cpi::with_config(config);
    let r = cpi.call("info", json!([]));
    assert_eq!(r.status, 0);
    assert!(r.response["error"].is_null(), "vmcpi refused the rendered config {config}: {}", r.response["error"]);
    r.response["result"].clone()
}

/// A YAML file of the repository, parsed by Ruby's YAML (as BOSH does) and handed over as JSON.
fn yaml(path: &str) -> Value {
    let out = Command::new("ruby")
        .args(["-ryaml", "-rjson", "-e", "puts JSON.dump(YAML.safe_load(File.read(ARGV[0])))"])
        .arg(root().join(path))
        .output()
        .unwrap();
    assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn job_spec() -> Value {
    yaml("jobs/vmcpi_cpi/spec")
}

/// A create-env style property set for libvirt (bosh-deployment's shape, with the convenience properties).
fn libvirt_create_env_props() -> Value {
    json!({
        "libvirt": {"uri": "qemu:///system", "pool": "vmcpi", "pool_path": "/var/lib/vmcpi/pool", "domain_type": "qemu",
                    "machine": "q35", "default_network": "default", "graphics": false, "virsh": "/usr/bin/virsh",
                    "qemu_img": "/usr/bin/qemu-img", "xorriso": "/usr/bin/xorriso", "state_dir": "/var/tmp/vmcpi-release"},
        "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868"},
        "blobstore": {"provider": "local", "path": "/var/vcap/micro_bosh/data/cache"},
        "ntp": ["time1.google.com"],
    })
}

#[test]
fn libvirt_properties_render_a_config_vmcpi_accepts() {
    if !have_ruby() {
        return;
    }
    let config = render_config(&libvirt_create_env_props());
    assert_eq!(
        config,
        json!({
            "driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": "vmcpi", "pool_path": "/var/lib/vmcpi/pool",
                       "domain_type": "qemu", "machine": "q35", "default_network": "default", "graphics": false,
                       "virsh": "/usr/bin/virsh", "qemu_img": "/usr/bin/qemu-img", "xorriso": "/usr/bin/xorriso",
                       "state_dir": "/var/tmp/vmcpi-release"},
            "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868", "ntp": ["time1.google.com"],
                      "blobstore": {"provider": "local", "options": {"blobstore_path": "/var/vcap/micro_bosh/data/cache"}}},
            "log_level": "info",
        })
    );
    let info = info_accepts(&config);
    assert_eq!(info["api_version"], 2);
    assert!(info["stemcell_formats"].as_array().unwrap().contains(&json!("openstack-qcow2")));
}

#[test]
fn no_driver_properties_fail_to_render_instead_of_picking_one() {
    if !have_ruby() {
        return;
    }
    // nothing that names a hypervisor (agent settings alone, or a bosh-vmrun-cpi property BOSH hides): no config
    for props in [
        json!({}),
        json!({"agent": {"mbus": "https://mbus:pw@0.0.0.0:6868"}, "ntp": ["a"]}),
        json!({"vmrun": {"network_name": "vmnet8"}}),
    ] {
        let err = render("cpi.json.erb", &props).expect_err(&format!("{props} rendered a config"));
        assert!(err.contains("no driver is configured") && err.contains("vmrun.*"), "{props}: {err}");
    }
    // one libvirt.* property names libvirt
    let config = render_config(&json!({"libvirt": {"pool": "p"}}));
    assert_eq!(config, json!({"driver": {"kind": "libvirt", "pool": "p"}, "agent": {"ntp": []}, "log_level": "info"}));
    info_accepts(&config);
}

#[test]
fn driver_hash_passes_through_and_director_style_agent_settings() {
    if !have_ruby() {
        return;
    }
    // a director's properties: the mbus built from nats.*, a dav blobstore over TLS
    let props = json!({
        "driver": {"kind": "libvirt", "uri": "qemu+ssh://cpi@hv1/system", "pool": "bosh", "domain_type": "kvm"},
        "nats": {"address": "10.0.0.6", "password": "nats:pw/1"},
        "blobstore": {"provider": "dav", "address": "10.0.0.6", "agent": {"user": "agent", "password": "dav-pw"},
                      "tls": {"cert": {"ca": "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"}}},
        "log_level": "debug",
    });
    let config = render_config(&props);
    assert_eq!(config["driver"], props["driver"]);
    assert_eq!(config["agent"]["mbus"], "nats://nats:nats%3Apw%2F1@10.0.0.6:4222");
    assert_eq!(config["agent"]["blobstore"]["options"]["endpoint"], "https://10.0.0.6:25250");
    assert_eq!(config["agent"]["blobstore"]["options"]["tls"]["cert"]["ca"], props["blobstore"]["tls"]["cert"]["ca"]);
    assert_eq!(config["log_level"], "debug");
    info_accepts(&config);

    // agent.mbus wins over nats.*; agent.blobstore over blobstore.*; nats without a password has no credentials
    let config = render_config(&json!({
        "driver": {"kind": "libvirt"},
        "agent": {"mbus": "nats://10.0.0.6:4222", "blobstore": {"provider": "local", "options": {"blobstore_path": "/b"}}},
        "nats": {"address": "10.9.9.9", "password": "unused"},
        "blobstore": {"provider": "dav", "address": "10.9.9.9"},
    }));
    assert_eq!(config["agent"]["mbus"], "nats://10.0.0.6:4222");
    assert_eq!(config["agent"]["blobstore"], json!({"provider": "local", "options": {"blobstore_path": "/b"}}));
    let config = render_config(
        &json!({"driver": {"kind": "libvirt"}, "nats": {"address": "10.0.0.6"}, "agent": {"nats": {"address": "192.168.1.6"}}}),
    );
    assert_eq!(config["agent"]["mbus"], "nats://192.168.1.6:4222");

    // another driver kind goes through untouched (vmcpi itself decides whether it knows the kind)
    let config = render_config(&json!({"driver": {"kind": "vmrun", "vm_store_path": "/vms"}}));
    assert_eq!(config["driver"], json!({"kind": "vmrun", "vm_store_path": "/vms"}));
}

#[test]
fn contradictory_properties_fail_to_render() {
    if !have_ruby() {
        return;
    }
    for (props, says) in [
        (json!({"driver": {"kind": "vsphere"}, "libvirt": {"pool": "x"}}), "driver.kind"),
        (json!({"driver": {"kind": "libvirt", "pool": "a"}, "libvirt": {"pool": "b"}}), "disagree"),
        (json!({"driver": {"uri": "qemu:///system"}}), "kind"),
        (json!({"driver": "libvirt"}), "kind"),
        (json!({"driver": {"kind": "libvirt"}, "blobstore": {"provider": "s3"}}), "agent.blobstore"),
        (
            json!({"driver": {"kind": "libvirt"}, "vmrun": {"vm_store_path": "/vms"}}),
            "the driver's kind is \"libvirt\"",
        ),
        (json!({"libvirt": {"pool": "p"}, "vmrun": {"vm_store_path": "/vms"}}), "driver.kind is \"vmrun\""),
        (json!({"driver": {"kind": "vmrun", "vm_store_path": "/a"}, "vmrun": {"vm_store_path": "/b"}}), "disagree"),
    ] {
        let err = render("cpi.json.erb", &props).expect_err(&format!("{props} should not render"));
        assert!(err.contains(says), "rendering {props} failed without naming {says}: {err}");
    }
    // agreeing duplicates are fine
    let config = render_config(&json!({"driver": {"kind": "libvirt", "pool": "a"}, "libvirt": {"pool": "a"}}));
    assert_eq!(config["driver"], json!({"kind": "libvirt", "pool": "a"}));
}

/// The property names a template reads with p(), if_p() or else_if_p() (single-quoted literals).
fn property_names(template: &str) -> Vec<String> {
    let mut read = Vec::new();
    for (at, _) in template.match_indices("p(") {
        // p( and if_p( / else_if_p(, not dump( or any other call ending in p
        if at > 0 && template.as_bytes()[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let names = template[at + 2..].split(')').next().unwrap();
        for quoted in names.split('\'').skip(1).step_by(2) {
            if !quoted.contains('#') && quoted.contains(|c: char| c.is_ascii_lowercase()) {
                read.push(quoted.to_string());
            }
        }
    }
    read
}

#[test]
fn every_property_is_documented_and_every_example_is_accepted() {
    if !have_ruby() {
        return;
    }
    let spec = job_spec();
    assert_eq!(spec["name"], "vmcpi_cpi");
    assert_eq!(
        spec["templates"],
        json!({"cpi.erb": "bin/cpi", "pre-start.erb": "bin/pre-start", "cpi.json.erb": "config/cpi.json",
               "ssh_key.erb": "config/ssh_key", "known_hosts.erb": "config/known_hosts",
               "tls_ca.erb": "config/pki/cacert.pem", "tls_certificate.erb": "config/pki/clientcert.pem",
               "tls_private_key.erb": "config/pki/clientkey.pem"})
    );
    assert_eq!(spec["packages"], json!(["vmcpi"]));
    let props = spec["properties"].as_object().unwrap();
    for (name, def) in props {
        assert!(def["description"].as_str().is_some_and(|d| d.len() > 10), "property {name} has no description");
        assert!(
            def.get("default").is_some() || def.get("example").is_some(),
            "property {name} has neither default nor example"
        );
    }
    // every property a template reads is declared (BOSH hides undeclared ones)
    let mut read = Vec::new();
    for name in spec["templates"].as_object().unwrap().keys() {
        let template = std::fs::read_to_string(root().join("jobs/vmcpi_cpi/templates").join(name)).unwrap();
        read.extend(property_names(&template));
    }
    assert!(read.len() > 10, "found only {read:?}");
    assert!(read.iter().any(|n| n == "pinned_ssh.private_key"), "{read:?}");
    for name in &read {
        assert!(props.contains_key(name), "a template reads {name}, which the spec does not declare");
    }

    // every libvirt.* example together renders a config vmcpi accepts: each names a real LibvirtConfig field
    let mut libvirt = serde_json::Map::new();
    for (name, def) in props {
        if let Some(key) = name.strip_prefix("libvirt.") {
            libvirt.insert(key.to_string(), def["example"].clone());
        }
    }
    assert!(libvirt.len() >= 11, "{libvirt:?}");
    let config = render_config(&json!({"libvirt": libvirt, "agent": {"mbus": props["agent.mbus"]["example"]}}));
    for (key, value) in &libvirt {
        assert_eq!(&config["driver"][key], value, "libvirt.{key} is declared but not rendered into driver.{key}");
    }
    info_accepts(&config);
    // and so does the driver example
    info_accepts(&render_config(&json!({"driver": props["driver"]["example"]})));

    // and every bosh-vmrun-cpi vmrun.* example together: each reaches the rendered driver, and vmcpi reads them all
    let mut vmrun = json!({});
    for (name, def) in props {
        if let Some(key) = name.strip_prefix("vmrun.") {
            match key.strip_prefix("ssh_tunnel.") {
                Some(k) => vmrun["ssh_tunnel"][k] = def["example"].clone(),
                None => vmrun[key] = def["example"].clone(),
            }
        }
    }
    assert!(vmrun.as_object().unwrap().len() >= 9 && vmrun["ssh_tunnel"].as_object().unwrap().len() == 6, "{vmrun}");
    let config = render_config(&json!({"vmrun": vmrun}));
    assert_eq!(config["driver"]["kind"], "vmrun");
    for (key, value) in vmrun.as_object().unwrap() {
        assert_eq!(&config["driver"][key], value, "vmrun.{key} is declared but not rendered into driver.{key}");
    }
    info_accepts(&config);
}

#[test]
fn pre_start_makes_the_libvirt_state_dir() {
    if !have_ruby() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("data/vmcpi state's");
    for props in
        [json!({"libvirt": {"state_dir": state_dir}}), json!({"driver": {"kind": "libvirt", "state_dir": state_dir}})]
    {
        let _ = std::fs::remove_dir_all(tmp.path().join("data"));
        let script = tmp.path().join("pre-start");
        std::fs::write(&script, render("pre-start.erb", &props).unwrap()).unwrap();
        let out = isolated(Command::new("bash").arg(&script)).output().unwrap();
        assert!(out.status.success(), "pre-start failed: {}", String::from_utf8_lossy(&out.stderr));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777, 0o700, "{props}");
    }
    // nothing to do without a state_dir, or for another driver
    for props in [json!({}), json!({"driver": {"kind": "vmrun", "state_dir": state_dir}})] {
        let text = render("pre-start.erb", &props).unwrap();
        assert!(!text.contains("mkdir"), "{props}: {text}");
    }
}

/// The value an ops file writes at `path`, with `((variables))` replaced from `vars`.
fn ops_value(file: &str, path: &str, vars: &[(&str, &str)]) -> Value {
    let ops = yaml(file);
    let op = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"] == path)
        .unwrap_or_else(|| panic!("{file} has no op at {path}"));
    let mut text = op["value"].to_string();
    for (name, value) in vars {
        text = text.replace(&format!("(({name}))"), value);
    }
    assert!(!text.contains("(("), "{file} {path}: a variable is left: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn ops_files_render_configs_vmcpi_accepts() {
    if !have_ruby() {
        return;
    }
    let vars = [
        ("libvirt_uri", "qemu:///system"),
        ("libvirt_pool", "vmcpi"),
        ("libvirt_pool_path", "/var/lib/libvirt/vmcpi"),
        ("libvirt_host", "192.168.122.1"),
        ("libvirt_ssh_user", "cpi"),
        (
            "libvirt_ssh_key.private_key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Blbg==\\n-----END OPENSSH PRIVATE KEY-----\\n",
        ),
        ("libvirt_known_hosts", "192.168.122.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"),
        ("internal_ip", "192.168.122.6"),
        ("blobstore_agent_password", "blobstore-canary-pw"),
        ("blobstore_server_tls.ca", "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"),
        ("libvirt_network", "default"),
        ("vmcpi_release", "/tmp/vmcpi.tgz"),
        ("stemcell", "/tmp/stemcell.tgz"),
    ];
    // create-env: the ops file's driver plus what bosh-deployment's bosh.yml gives cloud_provider.properties
    let driver = ops_value("release/ops/create-env.yml", "/cloud_provider/properties/driver?", &vars);
    let config = render_config(&json!({
        "driver": driver,
        "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868"},
        "blobstore": {"provider": "local", "path": "/var/vcap/micro_bosh/data/cache"},
    }));
    assert_eq!(config["driver"]["pool_path"], "/var/lib/libvirt/vmcpi");
    info_accepts(&config);
    assert_eq!(
        ops_value("release/ops/create-env.yml", "/cloud_provider/template?", &vars),
        json!({"name": "vmcpi_cpi", "release": "vmcpi"})
    );
    let pool = ops_value("release/ops/create-env.yml", "/resource_pools/name=vms/cloud_properties?", &vars);
    assert_eq!(pool, json!({"cpu": 2, "ram": 4096, "disk": 40000}));

    // the director: the colocated job's own properties
    let job = ops_value("release/ops/director.yml", "/instance_groups/name=bosh/jobs/-", &vars);
    assert_eq!(job["name"], "vmcpi_cpi");
    let config = render_config(&job["properties"]);
    assert_eq!(config["agent"]["mbus"], "nats://192.168.122.6:4222");
    // the agents' dav blobstore: a director that does not pass it in create_vm's env (v276) needs it here
    assert_eq!(
        config["agent"]["blobstore"],
        json!({"provider": "dav", "options": {"endpoint": "https://192.168.122.6:25250", "user": "agent",
               "password": "blobstore-canary-pw", "tls": {"cert": {"ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}}})
    );
    assert_eq!(config["driver"]["uri"], "qemu+ssh://cpi@192.168.122.1/system?keyfile=ssh_key&known_hosts=known_hosts");
    info_accepts(&config);
    assert!(render("ssh_key.erb", &job["properties"]).unwrap().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    assert_eq!(
        render("known_hosts.erb", &job["properties"]).unwrap(),
        "192.168.122.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n"
    );
    assert_eq!(
        ops_value("release/ops/director.yml", "/variables/-", &vars),
        json!({"name": "libvirt_ssh_key", "type": "ssh"})
    );
    assert_eq!(
        ops_value("release/ops/director.yml", "/instance_groups/name=bosh/properties/director/cpi_job?", &vars),
        "vmcpi_cpi"
    );
}

/// create-env's isolated environment: no HOME, this PATH, plus the variables it sets.
fn isolated(cmd: &mut Command) -> &mut Command {
    cmd.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin:/sbin")
}

/// The blob name packaging looks for on this machine (the release ships vmcpi-linux-amd64).
fn host_blob() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("vmcpi-linux-{arch}")
}

/// A CPI installed the way `bosh create-env` installs it: the package compiled by its packaging script
/// in the isolated environment, every job template rendered into `jobs/vmcpi_cpi` (bin/* made
/// executable, as the CLI does; config files world-readable, the SSH key and TLS key too).
struct Installation {
    _dir: tempfile::TempDir,
    packages: PathBuf,
    jobs: PathBuf,
}

impl Installation {
    fn new(props: &Value) -> Installation {
        let dir = tempfile::tempdir().unwrap();
        let (packages, jobs) = (dir.path().join("packages"), dir.path().join("jobs"));

        // compile the package as the CLI does: the package's files in a fresh directory, `bash -x packaging`
        let compile = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(compile.path().join("vmcpi")).unwrap();
        std::fs::copy(crate::util::cpi_bin(), compile.path().join("vmcpi").join(host_blob())).unwrap();
        std::fs::copy(root().join("packages/vmcpi/packaging"), compile.path().join("packaging")).unwrap();
        let target = packages.join("vmcpi");
        std::fs::create_dir_all(&target).unwrap();
        let out = isolated(Command::new("bash").args(["-x", "packaging"]).current_dir(compile.path()))
            .env("BOSH_COMPILE_TARGET", compile.path())
            .env("BOSH_INSTALL_TARGET", &target)
            .env("BOSH_PACKAGE_NAME", "vmcpi")
            .env("BOSH_PACKAGES_DIR", &packages)
            .output()
            .unwrap();
        assert!(out.status.success(), "packaging failed:\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(target.join("bin/vmcpi").is_file(), "packaging did not install bin/vmcpi");

        let job = jobs.join("vmcpi_cpi");
        for (template, dest) in job_spec()["templates"].as_object().unwrap() {
            let dest = job.join(dest.as_str().unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let text = render(template, props).unwrap_or_else(|e| panic!("{template} did not render: {e}"));
            std::fs::write(&dest, text).unwrap();
            let mode = if dest.parent().unwrap().ends_with("bin") { 0o755 } else { 0o644 };
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        Installation { _dir: dir, packages, jobs }
    }

    fn job(&self) -> PathBuf {
        self.jobs.join("vmcpi_cpi")
    }

    /// Runs bin/cpi in create-env's isolated environment: one request on stdin, one reply on stdout.
    fn call(&self, method: &str, args: Value) -> Value {
        use std::io::Write;
        let request =
            json!({"method": method, "arguments": args, "context": {"director_uuid": "cli"}, "api_version": 2});
        let mut cmd = Command::new(self.job().join("bin/cpi"));
        isolated(&mut cmd).env("BOSH_PACKAGES_DIR", &self.packages).env("BOSH_JOBS_DIR", &self.jobs);
        // a libvirt CPI: create-env's PATH, where libvirt's tools are tripwires (vmcpi runs none of them)
        let config: Value =
            serde_json::from_slice(&std::fs::read(self.job().join("config/cpi.json")).unwrap()).unwrap();
        if config["driver"]["kind"] == "libvirt" {
            crate::util::without_libvirt_tools(&mut cmd, true);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "bin/cpi exited {:?}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        crate::util::assert_no_libvirt_tools_ran();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for secret in ["mbus-canary-pw", "PRIVATE KEY", "guest-canary-pw"] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} leaked:\n{stdout}\n{stderr}");
        }
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bin/cpi stdout is not JSON ({e}): {stdout}"))
    }
}

#[test]
fn package_installs_the_binary_and_bin_cpi_runs_it_like_create_env() {
    if !have_ruby() {
        return;
    }
    let cpi = Installation::new(&libvirt_create_env_props());
    let reply = cpi.call("info", json!([]));
    assert!(reply["error"].is_null(), "{reply}");
    assert_eq!(reply["result"]["api_version"], 2);
    let reply = cpi.call("delete_stemcell", json!([42]));
    assert_eq!(reply["error"]["type"], "Bosh::Clouds::CpiError", "{reply}");
    // the installed config reads the same through the test harness
    let r = run_raw(&cpi.job().join("config/cpi.json"), br#"{"method":"info","arguments":[]}"#, &[]);
    assert!(r.response["error"].is_null(), "{}", r.stdout);
    // the job has no program of its own but bin/cpi and bin/pre-start (vmcpi needs no ssh wrapper)
    let mut bins: Vec<String> = std::fs::read_dir(cpi.job().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    bins.sort();
    assert_eq!(bins, ["cpi", "pre-start"]);

    // a platform without a binary fails with a message saying what to do
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("vmcpi")).unwrap();
    std::fs::write(other.path().join("vmcpi/vmcpi-darwin-arm64"), "not this one").unwrap();
    let out = isolated(Command::new("bash").arg(root().join("packages/vmcpi/packaging")).current_dir(other.path()))
        .env("BOSH_INSTALL_TARGET", other.path().join("install"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Linux x86_64"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Port of this module's own loopback sshd (tests/remote.rs uses another).
const SSHD_PORT: u16 = 22298;

#[test]
fn pinned_ssh_and_libvirt_tls_reach_libvirt_from_an_installed_job() {
    if !have_ruby() || !crate::libvirt::libvirt_available() {
        return;
    }
    let dir = PathBuf::from(format!("/tmp/vmcpi-test-sshd-{SSHD_PORT}"));
    let up = Command::new("bash")
        .arg(root().join("tools/sshd-up.sh"))
        .arg(&dir)
        .arg(SSHD_PORT.to_string())
        .output()
        .is_ok_and(|o| o.status.success());
    if !require_peer("OpenSSH server on loopback (tools/sshd-up.sh)", up) {
        return;
    }
    let key = std::fs::read_to_string(dir.join("id_ed25519")).unwrap();
    let known_hosts = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    let props = |uri: &str, known_hosts: &str| {
        json!({
            "libvirt": {"uri": uri, "domain_type": "qemu"},
            "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868"},
            "pinned_ssh": {"private_key": key.trim_end(), "known_hosts": known_hosts},
        })
    };
    // a URI as the README recommends, and one of an earlier manifest (its ?command=pinned-ssh is dropped)
    for uri in [
        format!("qemu+ssh://root@127.0.0.1:{SSHD_PORT}/system"),
        format!("qemu+ssh://root@127.0.0.1:{SSHD_PORT}/system?command=pinned-ssh"),
    ] {
        let cpi = Installation::new(&props(&uri, &known_hosts));
        let config = std::fs::read_to_string(cpi.job().join("config/cpi.json")).unwrap();
        assert!(!config.contains("PRIVATE KEY"), "{config}");
        assert!(config.contains("/system?keyfile=ssh_key&known_hosts=known_hosts"), "{config}");
        // has_vm asks libvirt on the far side of ssh, with the job's files (BOSH renders them world-readable)
        let reply = cpi.call("has_vm", json!(["vm-00000000000000000000"]));
        assert!(reply["error"].is_null(), "has_vm over ssh failed: {reply}");
        assert_eq!(reply["result"], false);
    }

    // another host key pinned for the same host: refused, and said so
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("id");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap()
        .success());
    let other_pub = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let other_pub: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let uri = format!("qemu+ssh://root@127.0.0.1:{SSHD_PORT}/system");
    let cpi = Installation::new(&props(&uri, &format!("[127.0.0.1]:{SSHD_PORT} {}", other_pub.join(" "))));
    let reply = cpi.call("has_vm", json!(["vm-00000000000000000000"]));
    let msg = reply["error"]["message"].as_str().unwrap_or_else(|| panic!("a wrong host key was accepted: {reply}"));
    assert!(msg.contains("does NOT match"), "{msg}");

    // qemu+tls:// with the job's libvirt_tls.* (the test PKI of tools/libvirt-up.sh)
    let pki =
        PathBuf::from(std::env::var("LIBVIRT_UP_STATE").unwrap_or_else(|_| "/var/tmp/cpi-testinfra/libvirt".into()))
            .join("pki/client");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let tls = json!({
        "libvirt": {"uri": "qemu+tls://127.0.0.1/system", "domain_type": "qemu"},
        "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868"},
        "libvirt_tls": {"ca": read("cacert.pem"), "certificate": read("clientcert.pem"), "private_key": read("clientkey.pem")},
    });
    let cpi = Installation::new(&tls);
    let config = std::fs::read_to_string(cpi.job().join("config/cpi.json")).unwrap();
    assert!(config.contains("qemu+tls://127.0.0.1/system?pkipath=pki") && !config.contains("PRIVATE KEY"), "{config}");
    let reply = cpi.call("has_vm", json!(["vm-00000000000000000000"]));
    assert!(reply["error"].is_null(), "has_vm over TLS failed: {reply}");
    // a partial TLS set is a rendering error
    let mut partial = tls.clone();
    partial["libvirt_tls"].as_object_mut().unwrap().remove("private_key");
    assert!(render("cpi.json.erb", &partial).unwrap_err().contains("libvirt_tls needs all of"));
}

/// The bosh CLI v7: VMCPI_BOSH_CLI, else the project's copy beside the repository, else `bosh` on PATH.
fn bosh_cli() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("VMCPI_BOSH_CLI").map(PathBuf::from),
        Some(root().join("../shared/tools/bosh/bosh")),
        Some(PathBuf::from("bosh")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

/// A PATH without cargo, rustc or rustup: a directory of links to everything else in the system's bin directories.
fn path_without_rust(dir: &std::path::Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for sys in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let Ok(entries) = std::fs::read_dir(sys) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if n.starts_with("cargo") || n.starts_with("rustc") || n.starts_with("rustup") || bin.join(&name).exists() {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), bin.join(&name)).unwrap();
        }
    }
    let path = bin.display().to_string();
    let found = Command::new("bash").args(["-c", "command -v cargo rustc"]).env("PATH", &path).output().unwrap();
    assert!(found.stdout.is_empty(), "cargo is still on {path}: {}", String::from_utf8_lossy(&found.stdout));
    path
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=vmcpi-test", "-c", "user.email=test@vmcpi.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `release.MF` of a release tarball, parsed.
fn release_manifest(tarball: &std::path::Path) -> Value {
    let out = Command::new("ruby")
        .args(["-ryaml", "-rjson", "-e", "puts JSON.dump(YAML.safe_load(`tar -xOzf #{ARGV[0]} release.MF`))"])
        .arg(tarball)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn release_builds_from_a_clean_clone_with_a_given_binary_and_no_cargo_and_leaves_it_clean() {
    if !have_ruby() {
        return;
    }
    let bosh = bosh_cli();
    if !require_peer("the bosh CLI v7 (VMCPI_BOSH_CLI, ../shared/tools/bosh/bosh or bosh on PATH)", bosh.is_some()) {
        return;
    }
    let bosh = bosh.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // a fresh clone, with this checkout's release files (committed there, so that the clone is clean)
    let clone = tmp.path().join("clone");
    let out = Command::new("git").args(["clone", "-q"]).arg(root()).arg(&clone).output().unwrap();
    assert!(out.status.success(), "git clone: {}", String::from_utf8_lossy(&out.stderr));
    for dir in ["release", "jobs", "packages", "config"] {
        std::fs::remove_dir_all(clone.join(dir)).unwrap();
        assert!(Command::new("cp").arg("-R").arg(root().join(dir)).arg(clone.join(dir)).status().unwrap().success());
    }
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "--allow-empty", "-m", "this checkout's release files"]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
    let path = path_without_rust(tmp.path());
    let elsewhere = tmp.path().join("downloads");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(crate::util::cpi_bin(), elsewhere.join("vmcpi")).unwrap();
    let build = |args: &[&str]| {
        // run from another directory: relative paths are the caller's
        Command::new("bash")
            .arg(clone.join("release/build.sh"))
            .args(args)
            .current_dir(&elsewhere)
            .env("PATH", &path)
            .env("BOSH", &bosh)
            .output()
            .unwrap()
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // no cargo and no binary: a message saying both ways
    let o = build(&["--tarball", "out.tgz"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cargo is not on PATH") && stderr(&o).contains("--binary linux-amd64=PATH"),
        "{}",
        stderr(&o)
    );
    // wrong files and platforms are refused before anything is built
    for (arg, says) in [
        ("linux-amd64=../clone/README.md", "is not a 64-bit linux-amd64 executable"),
        ("linux-arm64=vmcpi", "is not a 64-bit linux-arm64 executable"),
        ("darwin-arm64=vmcpi", "is not a 64-bit darwin-arm64 executable"),
        ("windows-amd64=vmcpi", "the platform must be"),
        ("linux-amd64=missing", "no such file"),
        ("vmcpi", "expected PLATFORM=PATH"),
    ] {
        let o = build(&["--binary", arg, "--tarball", "out.tgz"]);
        assert_eq!(o.status.code(), Some(2), "--binary {arg}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "--binary {arg}: {}", stderr(&o));
    }
    let o = build(&["--binary", "linux-amd64=vmcpi", "--binary", "linux-amd64=vmcpi"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("given twice"), "{}", stderr(&o));
    assert!(!elsewhere.join("out.tgz").exists(), "a refused build wrote a tarball");

    // a downloaded binary, given with a path relative to the caller: the release builds and the clone stays clean
    let o = build(&["--binary", "linux-amd64=vmcpi", "--tarball", "out.tgz"]);
    assert!(o.status.success(), "build.sh failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    // a second build under another HOME (an empty ~/.bosh/cache) works too: no build index is kept across
    // builds that names artifacts only the first HOME's cache has ("Cannot find blob named …")
    let other_home = tmp.path().join("other-home");
    std::fs::create_dir_all(&other_home).unwrap();
    let o2 = Command::new("bash")
        .arg(clone.join("release/build.sh"))
        .args(["--binary", "linux-amd64=vmcpi", "--tarball", "out2.tgz"])
        .current_dir(&elsewhere)
        .env("PATH", &path)
        .env("BOSH", &bosh)
        .env("HOME", &other_home)
        .output()
        .unwrap();
    assert!(o2.status.success(), "a second build under another HOME:\n{}", stderr(&o2));
    assert_eq!(git(&clone, &["status", "--porcelain", "--ignored=no"]), "", "the build changed the clone");
    assert_eq!(git(&clone, &["diff", "HEAD", "--stat"]), "");
    let tarball = elsewhere.join("out.tgz");
    let mf = release_manifest(&tarball);
    let head = git(&clone, &["rev-parse", "--short", "HEAD"]);
    assert_eq!(mf["commit_hash"], head.trim(), "{mf}");
    assert_eq!(mf["uncommitted_changes"], false, "{mf}");
    assert_eq!(mf["name"], "vmcpi");
    // bosh prints the commit with a `+` when it has changes
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains(head.trim()) && !printed.contains(&format!("{}+", head.trim())), "{printed}");
    // the package carries exactly the given binary
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let st = Command::new("bash")
        .args(["-c", "tar -xOzf \"$1\" packages/vmcpi.tgz | tar -xzf - -C \"$2\""])
        .args(["-", &tarball.display().to_string(), &pkg.display().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read_dir(pkg.join("vmcpi")).unwrap().count(), 1);
    assert!(
        std::fs::read(pkg.join("vmcpi/vmcpi-linux-amd64")).unwrap() == std::fs::read(crate::util::cpi_bin()).unwrap()
    );

    // a checkout with changes is marked as such (and still not changed further by the build)
    std::fs::write(clone.join("README.md"), "changed\n").unwrap();
    let o = build(&["--binary", "linux-amd64=vmcpi", "--tarball", "out2.tgz"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(git(&clone, &["status", "--porcelain"]), " M README.md\n");
    let mf = release_manifest(&elsewhere.join("out2.tgz"));
    assert_eq!(mf["commit_hash"], head.trim(), "{mf}");
    assert_eq!(mf["uncommitted_changes"], true, "{mf}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{}+", head.trim())),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// The README's three commands: no `sudo` in front, and the scripts run as root without sudo.
#[test]
fn readme_commands_work_as_root_without_sudo() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## The three commands").nth(1).unwrap();
    let block = section.split("```sh").nth(1).unwrap().split("```").next().unwrap();
    let commands: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(commands, ["bash tools/demo.sh", "bash tools/test.sh", "bash tools/create-env.sh"]);
    assert!(!readme.contains("sudo bash tools/"), "the README still puts sudo in front of a command");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "bash tools/test.sh"), ".ci/run does not run the README's test command");
    assert!(!ci.contains("sudo"), ".ci/run mentions sudo");
    for script in ["tools/demo.sh", "tools/test.sh", "tools/create-env.sh"] {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        let first =
            text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with("set ")).unwrap();
        assert_eq!(first, ". \"$(dirname \"$0\")/as-root.sh\"", "{script} does not start with tools/as-root.sh");
    }

    // tools/as-root.sh itself, in a script of its own: as root it runs on with no sudo anywhere; as another
    // user it runs the script again with sudo when there is one, else it says what to do
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(root().join("tools/as-root.sh"), tmp.path().join("as-root.sh")).unwrap();
    let script = tmp.path().join("needs-root.sh");
    std::fs::write(&script, "set -euo pipefail\n. \"$(dirname \"$0\")/as-root.sh\"\necho \"uid=$(id -u) args=$*\"\n")
        .unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // where the fake sudo, run by `nobody`, writes what it was asked
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sudo_log = logs.join("sudo.log");
    std::fs::write(bin.join("sudo"), format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\nexit 0\n", sudo_log.display()))
        .unwrap();
    for f in [bin.join("sudo"), script.clone(), tmp.path().join("as-root.sh")] {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if uid.trim() != "0" {
        eprintln!("SKIP: the as-root part needs root");
        return;
    }
    let run = |as_nobody: bool, path: &str| {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
            c
        } else {
            Command::new("bash")
        };
        cmd.arg(&script)
            .args(["one", "two words"])
            .env("PATH", path)
            .env("HOME", "/nonexistent")
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let with_sudo = format!("{}:/usr/bin:/bin", bin.display());
    // root: straight on, the fake sudo first on PATH is not called
    let o = run(false, &with_sudo);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "uid=0 args=one two words\n");
    assert!(!sudo_log.exists(), "as root, sudo was called");
    // another user with sudo: the same script again through sudo, its arguments intact
    let o = run(true, &with_sudo);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "the script ran on without root");
    let argv: Vec<String> = std::fs::read_to_string(&sudo_log).unwrap().lines().map(str::to_string).collect();
    assert_eq!(argv[..2], ["-E", "env"], "{argv:?}");
    assert!(argv.contains(&format!("PATH={with_sudo}")), "{argv:?}");
    assert_eq!(
        argv[argv.len() - 4..],
        ["bash".to_string(), script.display().to_string(), "one".into(), "two words".into()],
        "{argv:?}"
    );
    // another user, no sudo: a clear message, non-zero
    let o = run(true, "/usr/bin:/bin");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs root")
            && String::from_utf8_lossy(&o.stderr).contains("sudo is not installed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
}

/// A bosh-vmrun-cpi create-env manifest's `cloud_provider.properties` (its job spec's names, as its
/// ci/vmrun-cpi-opsfile.yml and bosh-deployment's bosh.yml give them), pointed at the VMware test double.
fn bosh_vmrun_cpi_props(fake: &crate::vmrun::Fake) -> Value {
    json!({
        "vmrun": {
            "vm_store_path": fake.store(),
            "vmrun_bin_path": fake.bin("vmrun"),
            "ovftool_bin_path": fake.bin("ovftool"),
            "stemcell_store_path": fake.store().join("stemcells"),
            "vm_start_max_wait_seconds": 600,
            "vm_soft_shutdown_max_wait_seconds": 5,
            "enable_human_readable_name": true,
            "use_linked_cloning": true,
            // in bosh-vmrun-cpi's ops file, but not in its job spec: BOSH hides it from the templates
            "network_name": "vmnet8",
        },
        "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868"},
        "blobstore": {"provider": "local", "path": "/var/vcap/micro_bosh/data/cache"},
        "ntp": ["time1.google.com", "time2.google.com"],
    })
}

#[test]
fn bosh_vmrun_cpi_manifest_properties_drive_vmrun_with_this_release_swapped_in() {
    if !have_ruby() {
        return;
    }
    let fake = crate::vmrun::Fake::new();
    let props = bosh_vmrun_cpi_props(&fake);
    let config = render_config(&props);
    assert_eq!(config["driver"]["kind"], "vmrun", "the vmrun properties must choose the vmrun driver: {config}");
    assert_eq!(config["driver"]["vmrun_bin_path"], fake.bin("vmrun"));
    assert!(config["driver"].get("network_name").is_none());
    assert_eq!(config["agent"]["blobstore"]["options"]["blobstore_path"], "/var/vcap/micro_bosh/data/cache");

    // installed as create-env installs it, bin/cpi answers with the vmrun driver and says how it read the old names
    let cpi = Installation::new(&props);
    let reply = cpi.call("info", json!([]));
    assert!(reply["error"].is_null(), "{reply}");
    assert_eq!(reply["result"]["stemcell_formats"], json!(["vsphere-ovf", "vsphere-ova"]));
    let log = reply["log"].as_str().unwrap();
    for note in [
        "driver.vmrun_bin_path is bosh-vmrun-cpi's name for driver.vmrun",
        "driver.ovftool_bin_path is bosh-vmrun-cpi's name for driver.ovftool",
        "driver.vm_start_max_wait_seconds is bosh-vmrun-cpi's name for driver.start_timeout_seconds",
        "driver.vm_soft_shutdown_max_wait_seconds is bosh-vmrun-cpi's name for driver.soft_shutdown_timeout_seconds",
        "driver.stemcell_store_path",
        "driver.use_linked_cloning",
    ] {
        assert!(log.contains(note), "no note {note:?} in the log:\n{log}");
    }

    // a stemcell and a VM with bosh-vmrun-cpi's resource-pool bootstrap block, through the old tool paths
    let img_dir = tempfile::tempdir().unwrap();
    let image = crate::vmrun::stemcell_image(img_dir.path(), 64, 1);
    let reply = cpi.call("create_stemcell", json!([image.display().to_string(), {}]));
    assert!(reply["error"].is_null(), "{reply}");
    let sc = reply["result"].clone();
    std::fs::write(fake.state("guest-tools"), "vcap:guest-canary-pw").unwrap();
    let bootstrap = json!({
        "script_content": "#!/bin/bash\necho bootstrapped\n", "script_path": "/tmp/bootstrap.sh", "interpreter_path": "/bin/bash",
        "username": "vcap", "password": "guest-canary-pw", "ready_process_name": "bosh-agent", "min_wait_seconds": 0, "max_wait_seconds": 30,
    });
    let reply = cpi.call(
        "create_vm",
        crate::vmrun::create_vm_args(&sc, json!({"cpu": 2, "ram": 1024, "disk": 2048, "bootstrap": bootstrap})),
    );
    assert!(reply["error"].is_null(), "create_vm with bosh-vmrun-cpi's bootstrap block failed: {reply}");
    let vm = reply["result"][0].as_str().unwrap().to_string();
    assert!(
        reply["log"].as_str().unwrap().contains(
            "cloud_properties.bootstrap.script_content is bosh-vmrun-cpi's name for cloud_properties.bootstrap.script"
        ),
        "{reply}"
    );
    // the script went to bosh-vmrun-cpi's script_path and ran with its interpreter_path (the fake logs the guest command)
    assert_eq!(
        std::fs::read_to_string(fake.state("guest-log")).unwrap().lines().next(),
        Some("/bin/bash /tmp/bootstrap.sh")
    );
    let copied: Vec<_> = std::fs::read_dir(fake.state("guest-fs")).unwrap().flatten().collect();
    assert_eq!(copied.len(), 1);
    assert_eq!(std::fs::read_to_string(copied[0].path()).unwrap(), "#!/bin/bash\necho bootstrapped\n");
    let reply = cpi.call("has_vm", json!([vm]));
    assert_eq!(reply["result"], true, "{reply}");
    let reply = cpi.call("delete_vm", json!([vm]));
    assert!(reply["error"].is_null(), "{reply}");

    // a bad old value is refused with the old name
    let mut bad = bootstrap.clone();
    bad["script_path"] = json!("relative.sh");
    let reply = cpi.call("create_vm", crate::vmrun::create_vm_args(&sc, json!({"bootstrap": bad})));
    assert!(
        reply["error"]["message"].as_str().unwrap().contains("bootstrap.script_path must be an absolute"),
        "{reply}"
    );
}

#[test]
fn bosh_vmrun_cpi_ssh_tunnel_needs_the_host_key_and_then_reaches_the_host() {
    if !have_ruby() {
        return;
    }
    let fake = crate::vmrun::Fake::new();
    let mut props = bosh_vmrun_cpi_props(&fake);
    // bosh-vmrun-cpi's tunnel as its manifests have it: no host key (it used StrictHostKeyChecking=no)
    props["vmrun"]["ssh_tunnel"] = json!({"host": "127.0.0.1", "port": "22", "username": "root", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", "platform": "linux"});
    let config = render_config(&props);
    let r = Cpi::with_config(&config).call("info", json!([]));
    let msg = r.response["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an unpinned ssh_tunnel was accepted: {}", r.response));
    assert!(
        msg.contains("vmrun.ssh_tunnel.host_public_key") && msg.contains("ssh-keyscan -t ed25519 127.0.0.1"),
        "{msg}"
    );
    assert!(!r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"));

    // with the host's key added, it reaches the loopback sshd and drives the test double there
    let Some((dir, port)) = crate::vmrun::sshd() else {
        require_peer("OpenSSH server on loopback (tools/sshd-up.sh)", false);
        return;
    };
    let known = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    let host_key: Vec<&str> = known.lines().next().unwrap().split_whitespace().skip(1).take(2).collect();
    props["vmrun"]["ssh_tunnel"] = json!({
        "host": "127.0.0.1", "port": port.to_string(), "username": "root", "platform": "linux",
        "private_key": std::fs::read_to_string(dir.join("id_ed25519")).unwrap(), "host_public_key": host_key.join(" "),
    });
    let cpi = Installation::new(&props);
    let reply = cpi.call("has_vm", json!(["vm-00000000000000000000"]));
    assert!(reply["error"].is_null(), "has_vm over bosh-vmrun-cpi's ssh_tunnel failed: {reply}");
    assert_eq!(reply["result"], false);
    assert!(
        reply["log"]
            .as_str()
            .unwrap()
            .contains("driver.ssh_tunnel.username is bosh-vmrun-cpi's name for driver.ssh_tunnel.user"),
        "{reply}"
    );
}

/// Two configs sharing one state_dir (a director's CPI config with two libvirt hosts, each with the job's
/// default state_dir): a create killed in one leaves a marker that only that one reaps. The two hosts are
/// two in-process fake daemons (`vmcpi::libvirt_rpc::fake`, each recording the calls it gets, which the real
/// libvirtd cannot show per host) behind two URIs with the same pool name; the CPI, the kill and the
/// markers are real.
#[test]
fn two_configs_on_one_state_dir_reap_only_their_own_leftovers() {
    use vmcpi::libvirt_rpc::fake::{FakeDaemon, Volume};
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("run");
    let (hv1, hv2) = (FakeDaemon::new().with_pool("vmcpi"), FakeDaemon::new().with_pool("vmcpi"));
    hv1.listen(&runtime, false).unwrap();
    hv2.listen(&runtime, true).unwrap();
    let (uri1, uri2) = ("qemu:///session", "qemu:///session?mode=direct");
    let state = tmp.path().join("state");
    let config = |uri: &str| {
        json!({"driver": {"kind": "libvirt", "uri": uri, "pool": "vmcpi", "state_dir": state},
               "agent": {"mbus": "https://mbus:mbus-canary-pw@0.0.0.0:6868"}})
    };
    let xdg = ("XDG_RUNTIME_DIR".to_string(), runtime.display().to_string());
    let mut a = Cpi::with_config(&config(uri1));
    a.envs.push(xdg.clone());
    let mut b = Cpi::with_config(&config(uri2));
    b.envs.push(xdg.clone());

    // a create_disk of config A, killed while libvirt makes the volume
    hv1.hang("STORAGE_VOL_CREATE_XML");
    let path = tmp.path().join("a.json");
    std::fs::write(&path, config(uri1).to_string()).unwrap();
    let mut cmd = Command::new(crate::util::cpi_bin());
    cmd.arg("--config").arg(&path);
    crate::util::cpi_env(&mut cmd, &path).env(&xdg.0, &xdg.1);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"method":"create_disk","arguments":[1024,{},null],"context":{"director_uuid":"d"},"api_version":2}"#).unwrap();
    }
    let started = std::time::Instant::now();
    let disk = loop {
        let made = hv1.model().calls.iter().find_map(|c| c.strip_prefix("STORAGE_VOL_CREATE_XML ").map(str::to_string));
        if let Some(d) = made {
            break d;
        }
        assert!(started.elapsed().as_secs() < 30, "create_disk never reached the volume: {:?}", hv1.take_calls());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    hv1.model().clear_hangs();
    // libvirt made the volume before the CPI died
    hv1.model().pools.get_mut("vmcpi").unwrap().volumes.insert(disk.clone(), Volume::default());
    let markers: Vec<String> = std::fs::read_dir(state.join("inflight"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(markers, [format!("{disk}.lock")]);
    assert_eq!(
        std::fs::read_to_string(state.join("inflight").join(&markers[0])).unwrap(),
        format!("owner libvirt {uri1} pool vmcpi\n")
    );
    hv1.take_calls();

    // config B (another host, the same pool name) creates: A's leftover is not B's to reap, and stays
    let made = b.ok("create_disk", json!([1024, {}, null]));
    let calls2 = hv2.take_calls();
    assert!(!calls2.iter().any(|c| c.contains(&disk)), "config B touched config A's leftover {disk}: {calls2:?}");
    assert!(calls2.contains(&format!("STORAGE_VOL_CREATE_XML {}", made.as_str().unwrap())), "{calls2:?}");
    assert!(hv1.take_calls().is_empty(), "config B called A's host");
    assert!(state.join("inflight").join(format!("{disk}.lock")).exists(), "config B dropped config A's marker");

    // config A's next create reaps it, on A's host and pool
    a.ok("create_disk", json!([1024, {}, null]));
    let calls1 = hv1.take_calls();
    assert!(calls1.contains(&format!("STORAGE_VOL_DELETE {disk}")), "A did not reap its leftover: {calls1:?}");
    assert!(calls1.contains(&format!("STORAGE_VOL_LOOKUP_BY_NAME {disk}.meta.json")), "{calls1:?}");
    assert!(!hv1.volumes("vmcpi").contains(&disk));
    assert!(hv2.take_calls().is_empty(), "config A called B's host");
    assert!(!state.join("inflight").join(format!("{disk}.lock")).exists(), "the reaped marker stays");
}

/// The vSphere driver's bootstrap block reads bosh-vmrun-cpi's names too (docs/vsphere.md "as in
/// bosh-vmrun-cpi"). The block is read before the vCenter is contacted, so a closed local port shows it.
#[test]
fn vsphere_bootstrap_reads_bosh_vmrun_cpi_names() {
    let state = tempfile::tempdir().unwrap();
    let cpi = Cpi::with_config(&json!({
        "driver": {"kind": "vsphere", "host": "https://127.0.0.1:9", "user": "u", "password": "vc-canary-pw", "datacenter": "DC0",
                   "state_dir": state.path()},
        "agent": {"mbus": "nats://10.0.0.6:4222"},
    }));
    let args = |bootstrap: Value| json!(["agent-1", "sc-00000000000000000000", {"cpu": 1, "ram": 512, "bootstrap": bootstrap}, {}, [], {}]);
    // a wrong value under an old name is reported as a bootstrap value, not as an unknown key
    let e = cpi.err(
        "create_vm",
        args(json!({"script_content": "x", "username": "vcap", "password": "guest-canary-pw", "interpreter_path": 7})),
    );
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("cloud_properties.bootstrap") && msg.contains("invalid type"), "{msg}");
    // all of bosh-vmrun-cpi's block is read; the call gets as far as the (absent) vCenter
    let r = cpi.call(
        "create_vm",
        args(json!({"script_content": "echo hi", "script_path": "/tmp/b.sh", "interpreter_path": "/bin/bash", "username": "vcap",
                    "password": "guest-canary-pw", "ready_process_name": "bosh-agent", "min_wait_seconds": 0, "max_wait_seconds": 60})),
    );
    let msg = r.response["error"]["message"].as_str().unwrap();
    assert!(
        !msg.contains("unknown field") && !msg.contains("cloud_properties"),
        "the bootstrap block was refused: {msg}"
    );
    let log = r.response["log"].as_str().unwrap();
    assert!(log.contains("cloud_properties.bootstrap.ready_process_name is bosh-vmrun-cpi's name for cloud_properties.bootstrap.ready_process"), "{log}");
    assert!(log.contains("bootstrap.script_path (\"/tmp/b.sh\") is not used"), "{log}");
    for secret in ["guest-canary-pw", "vc-canary-pw"] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{secret} leaked:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// Renders `jobs/<job>/templates/<template>` with `props`; Err(stderr) when rendering fails.
fn render_job(job: &str, template: &str, props: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let props_path = dir.path().join("props.json");
    std::fs::write(&props_path, props.to_string()).unwrap();
    let out = Command::new("ruby")
        .arg(root().join("release/render.rb"))
        .args([job, template])
        .arg(&props_path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn launcher_props() -> Value {
    json!({
        "launcher_id": "ci-host-1",
        "listen": "127.0.0.1:0",
        "public_url": "http://10.0.0.10:9595",
        "buildkite": {"token": "bkct_rendered_secret_token", "queues": ["vm-linux", "vm-gpu"], "stack_key": "al-ci-1",
                      "reservation_expiry_seconds": 300},
        "limits": {"max_vms": 6},
        "breaker": {"failures": 2, "open_seconds": 10},
        "pools": [
            {"name": "linux", "tags": ["queue=vm-linux", "os=linux"], "cpi": ["/bin/true", "--config", "/x y/cpi.json"],
             "stemcell": {"cid": "sc-1"}, "networks": {"default": {"type": "dynamic", "cloud_properties": {"name": "a \"b\""}}},
             "flavors": {"small": {"cpu": 2, "ram": 4096, "disk": 10240}}, "warm": 1, "max_lifetime_minutes": 90.5,
             "limits": {"max_vms": 4, "reserve_smallest": true}},
            {"name": "gpu", "tags": ["queue=vm-gpu"], "cpi": ["/bin/true"], "stemcell": {"cid": "sc-2"},
             "networks": {"default": {"type": "dynamic"}}, "flavors": {"big": {"cpu": 8, "ram": 16384}}}
        ]
    })
}

/// What `launcher_props()` (its keys sorted, as serde_json hands them over) rendered to before the job knew
/// GitHub, TLS and `[listener]` (the template of commit a404528): a manifest with only buildkite.* properties
/// must keep rendering exactly this.
const LAUNCHER_BUILDKITE_CONFIG: &str = r#"# Rendered by the agent_launcher job from its properties; see docs/launcher.md.
launcher_id = "ci-host-1"
ledger_dir = "/var/vcap/store/agent_launcher"
listen = "127.0.0.1:0"
public_url = "http://10.0.0.10:9595"
poll_interval_ms = 1000
on_shutdown = "leave"
placement = "spread"

[limits]
max_vms = 6

[breaker]
failures = 2
open_seconds = 10

[buildkite]
endpoint = "https://agent.buildkite.com/v3"
token_file = "/var/vcap/jobs/agent_launcher/config/cluster-token"
queues = ["vm-linux", "vm-gpu"]
stack_key = "al-ci-1"
reservation_expiry_seconds = 300

[[pool]]
cpi = ["/bin/true", "--config", "/x y/cpi.json"]
flavors = { small = { cpu = 2, disk = 10240, ram = 4096 } }
limits = { max_vms = 4, reserve_smallest = true }
max_lifetime_minutes = 90.5
name = "linux"
networks = { default = { cloud_properties = { name = "a \"b\"" }, type = "dynamic" } }
stemcell = { cid = "sc-1" }
tags = ["queue=vm-linux", "os=linux"]
warm = 1

[[pool]]
cpi = ["/bin/true"]
flavors = { big = { cpu = 8, ram = 16384 } }
name = "gpu"
networks = { default = { type = "dynamic" } }
stemcell = { cid = "sc-2" }
tags = ["queue=vm-gpu"]
"#;

/// The agent_launcher job's secrets: the template, the file it renders (under the job's directory) and the
/// property it holds.
const LAUNCHER_SECRETS: [(&str, &str, &str); 7] = [
    ("cluster-token.erb", "config/cluster-token", "buildkite.token"),
    ("buildkite-api-token.erb", "config/buildkite-api-token", "buildkite.rest.token"),
    ("github-token.erb", "config/github-token", "github.token"),
    ("github-private-key.erb", "config/github-app-key.pem", "github.private_key"),
    ("github-webhook-secret.erb", "config/github-webhook-secret", "github.webhook_secret"),
    ("tls-certificate.erb", "config/tls-cert.pem", "tls.certificate"),
    ("tls-private-key.erb", "config/tls-key.pem", "tls.private_key"),
];

/// The agent_launcher job installed into a temp dir: every template of its spec rendered from the properties
/// into the file BOSH writes (mode 0644, as a umask leaves it), the job's /var/vcap paths moved into the temp
/// dir, then bin/pre-start run in an empty environment: it makes the secret files 0600 and runs
/// `agent-launcher check-config`.
struct LauncherJob {
    dir: tempfile::TempDir,
    /// bin/pre-start succeeded (check-config accepted the config and every file it names).
    ok: bool,
    /// bin/pre-start's stdout and stderr.
    out: String,
    /// The config as the job renders it (with the /var/vcap paths).
    config: String,
}

impl LauncherJob {
    fn deploy(props: &Value) -> LauncherJob {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let jobdir = dir.path().join("jobs/agent_launcher");
        let moved = |text: &str| {
            text.replace("/var/vcap/jobs/agent_launcher", &jobdir.display().to_string())
                .replace("/var/vcap/store/agent_launcher", &dir.path().join("store").display().to_string())
                .replace("/var/vcap/sys/", &format!("{}/sys/", dir.path().display()))
                .replace("/var/vcap/packages/agent_launcher/bin/agent-launcher", env!("CARGO_BIN_EXE_agent-launcher"))
        };
        let mut config = String::new();
        for (template, file) in yaml("jobs/agent_launcher/spec")["templates"].as_object().unwrap() {
            let text = render_job("agent_launcher", template, props)
                .unwrap_or_else(|e| panic!("{template} did not render for {props}:\n{e}"));
            if template == "agent-launcher.toml.erb" {
                config = text.clone();
            }
            let text = moved(&text);
            assert!(!text.contains("/var/vcap"), "{template} names a path the test does not move:\n{text}");
            let path = jobdir.join(file.as_str().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let out = isolated(Command::new("bash").arg(jobdir.join("bin/pre-start"))).output().unwrap();
        let out_text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        LauncherJob { ok: out.status.success(), out: out_text, config, dir }
    }

    /// check-config accepted the job; `pools` is its list of pool names.
    fn assert_accepted(&self, pools: &str) {
        assert!(self.ok, "check-config refused the rendered config:\n{}\n{}", self.out, self.config);
        assert!(self.out.contains(pools), "{}", self.out);
    }

    /// Each secret set in `props` is in its own file, mode 0600, which the config names; each secret not set
    /// is an empty file the config does not name; no secret's text is in the config or in pre-start's output.
    fn assert_secrets_apart(&self, props: &Value) {
        use std::os::unix::fs::PermissionsExt;
        for (template, file, prop) in LAUNCHER_SECRETS {
            let value = prop.split('.').fold(props, |v, k| &v[k]).as_str().unwrap_or("");
            let path = self.dir.path().join("jobs/agent_launcher").join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "bin/pre-start left {file} mode {mode:o}");
            let named = format!("\"/var/vcap/jobs/agent_launcher/{file}\"");
            if value.trim().is_empty() {
                assert!(text.is_empty(), "{template} rendered {prop}, which is not set: {text:?}");
                assert!(
                    !self.config.contains(&named),
                    "the config names {file}, but {prop} is not set:\n{}",
                    self.config
                );
                continue;
            }
            assert_eq!(text.trim_end(), value.trim_end(), "{file} does not hold {prop}");
            assert!(text.ends_with('\n'), "{file} does not end its last line");
            assert!(self.config.contains(&named), "the config does not name {file}:\n{}", self.config);
            for line in value.lines().map(str::trim).filter(|l| l.len() >= 8 && !l.starts_with("-----")) {
                assert!(!self.config.contains(line), "the config holds text of {prop} ({line:?}):\n{}", self.config);
                assert!(!self.out.contains(line), "pre-start printed text of {prop}:\n{}", self.out);
            }
        }
    }
}

/// A property value as the job's template writes it into TOML (strings and numbers as JSON writes them).
fn toml_value(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The agent_launcher job: its config renders from the properties into a file that `agent-launcher
/// check-config` accepts (run by the rendered bin/pre-start, with the job's paths moved into a temp dir), a
/// manifest with only buildkite.* properties renders as it always did, the tokens go only to their own files,
/// bad properties fail the rendering with a message, and monit and bin/ctl agree on the pid file.
#[test]
fn agent_launcher_job_renders_a_config_that_check_config_accepts() {
    if !have_ruby() {
        return;
    }
    let props = launcher_props();
    assert_eq!(render_job("agent_launcher", "agent-launcher.toml.erb", &props).unwrap(), LAUNCHER_BUILDKITE_CONFIG);
    let job = LauncherJob::deploy(&props);
    job.assert_accepted("2 pools: linux, gpu");
    job.assert_secrets_apart(&props);
    // one queue, spec defaults elsewhere
    let mut one = launcher_props();
    one["buildkite"] = json!({"token": "bkct_rendered_secret_token", "queue": "vm-linux", "stack_key": "al-ci-1"});
    one["pools"][1]["tags"] = json!(["queue=vm-linux", "gpu=true"]);
    one.as_object_mut().unwrap().remove("limits");
    let job = LauncherJob::deploy(&one);
    job.assert_accepted("2 pools");
    assert!(
        job.config.contains("queue = \"vm-linux\"") && job.config.contains("placement = \"spread\""),
        "{}",
        job.config
    );
    assert!(job.config.contains("endpoint = \"https://agent.buildkite.com/v3\"\n"), "{}", job.config);
    assert!(job.config.contains("reservation_expiry_seconds = 900\n"), "{}", job.config);
    for absent in ["tls =", "[listener]", "[github]", "[buildkite.rest]", "source =", "allow_http"] {
        assert!(!job.config.contains(absent), "{absent} is rendered though no property sets it:\n{}", job.config);
    }
    // a pool the launcher would refuse: check-config says why, and pre-start fails
    let mut bad = launcher_props();
    bad["pools"][0]["cpi"] = json!(["relative/cpi"]);
    let job = LauncherJob::deploy(&bad);
    assert!(!job.ok && job.out.contains("absolute path"), "{}", job.out);
    assert!(job.out.contains("does not pass check-config"), "{}", job.out);

    // every buildkite.* example of the spec together (the REST source: its keys need it) renders into the
    // config key of its name, and check-config accepts them
    let spec = yaml("jobs/agent_launcher/spec");
    let mut bk = json!({});
    for (name, def) in spec["properties"].as_object().unwrap() {
        match name.strip_prefix("buildkite.") {
            Some("queues") | None => {}
            Some(key) => match key.strip_prefix("rest.") {
                Some(k) => bk["rest"][k] = def["example"].clone(),
                None => bk[key] = def["example"].clone(),
            },
        }
    }
    bk["source"] = json!("rest");
    assert!(bk.as_object().unwrap().len() == 12 && bk["rest"].as_object().unwrap().len() == 4, "{bk}");
    let mut every = one.clone();
    every["buildkite"] = bk.clone();
    let job = LauncherJob::deploy(&every);
    job.assert_accepted("2 pools");
    job.assert_secrets_apart(&every);
    let (main, rest) = job.config.split_once("[buildkite.rest]\n").expect("no [buildkite.rest] table");
    for (key, value) in bk.as_object().unwrap() {
        let (table, key, value) = match key.as_str() {
            "token" => continue,
            "rest" => {
                for (k, v) in value.as_object().unwrap().iter().filter(|(k, _)| *k != "token") {
                    assert!(rest.contains(&format!("{k} = {}\n", toml_value(v))), "buildkite.rest.{k}:\n{rest}");
                }
                continue;
            }
            _ => (main, key, value),
        };
        assert!(
            table.contains(&format!("\n{key} = {}\n", toml_value(value))),
            "buildkite.{key} is not rendered:\n{table}"
        );
    }

    // properties that cannot make a config fail the rendering
    for (patch, says) in [
        (json!({"queue": "a", "queues": ["b"]}), "exactly one of buildkite.queue and buildkite.queues"),
        (json!({}), "exactly one of buildkite.queue and buildkite.queues"),
    ] {
        let mut p = launcher_props();
        let mut bk = patch.clone();
        bk["token"] = json!("t");
        bk["stack_key"] = json!("k");
        p["buildkite"] = bk;
        let e = render_job("agent_launcher", "agent-launcher.toml.erb", &p).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
    let mut p = launcher_props();
    p["pools"] = json!([]);
    let e = render_job("agent_launcher", "agent-launcher.toml.erb", &p).unwrap_err();
    assert!(e.contains("pools must be a non-empty list"), "{e}");
    // monit starts and stops through bin/ctl, which writes the pid file monit watches
    let monit = std::fs::read_to_string(root().join("jobs/agent_launcher/monit")).unwrap();
    let ctl = render_job("agent_launcher", "ctl.erb", &launcher_props()).unwrap();
    assert!(monit.contains("/var/vcap/sys/run/agent_launcher/pid") && ctl.contains("PIDFILE=$RUN_DIR/pid"));
    assert!(ctl.contains("RUN_DIR=/var/vcap/sys/run/agent_launcher"));
    assert!(monit.contains("/var/vcap/jobs/agent_launcher/bin/ctl start"));
    let pre = render_job("agent_launcher", "pre-start.erb", &launcher_props()).unwrap();
    assert!(pre.contains("/var/vcap/store/agent_launcher") && pre.contains("check-config"));
    // the spec's templates: the config, one file per secret, bin/ctl and bin/pre-start
    let mut templates = json!({"agent-launcher.toml.erb": "config/agent-launcher.toml", "ctl.erb": "bin/ctl",
                               "pre-start.erb": "bin/pre-start"});
    for (template, file, _) in LAUNCHER_SECRETS {
        templates[template] = json!(file);
        let name = file.strip_prefix("config/").unwrap();
        assert!(
            pre.contains(&format!(" {name} ")) || pre.contains(&format!(" {name};")),
            "pre-start does not chmod {file}"
        );
    }
    assert_eq!(spec["templates"], templates);
    // every property of the spec is documented and used by a template, and the spec's example pool renders
    let text: String = spec["templates"]
        .as_object()
        .unwrap()
        .keys()
        .map(|t| std::fs::read_to_string(root().join("jobs/agent_launcher/templates").join(t)).unwrap())
        .collect();
    for (name, def) in spec["properties"].as_object().unwrap() {
        assert!(text.contains(&format!("'{name}'")), "property {name} is not used by a template");
        assert!(def["description"].as_str().is_some_and(|d| d.len() > 10), "property {name} has no description");
        assert!(
            def.get("default").is_some() || def.get("example").is_some(),
            "property {name}: no default, no example"
        );
    }
    let mut ex = launcher_props();
    ex["pools"] = spec["properties"]["pools"]["example"].clone();
    ex["pools"][0]["cpi"] = json!(["/bin/true"]);
    ex["buildkite"] = json!({"token": "t0ken", "queue": "vm-linux", "stack_key": "k"});
    LauncherJob::deploy(&ex).assert_accepted("1 pools: linux");
}

/// launcher_props() with a `github` source in place of `buildkite`, and a pool of runner labels.
fn github_props(github: Value) -> Value {
    let mut p = launcher_props();
    p.as_object_mut().unwrap().remove("buildkite");
    p["github"] = github;
    p["pools"] = json!([{"name": "linux", "labels": ["self-hosted", "linux", "x64"], "cpi": ["/bin/true"],
                         "stemcell": {"cid": "sc-1"}, "networks": {"default": {"type": "dynamic"}},
                         "flavors": {"small": {"cpu": 2, "ram": 4096}}}]);
    p
}

/// The job's GitHub source with a fine-grained token on an organisation, and its webhook: the config names the
/// token's and the secret's files, check-config (run by bin/pre-start) reads both, and every github.* example of
/// the spec renders into the config key of its name.
#[test]
fn agent_launcher_job_renders_a_github_token_source_with_its_webhook() {
    if !have_ruby() {
        return;
    }
    let mut org = github_props(json!({"organization": "acme", "repositories": ["app", "lib"], "runner_group_id": 3,
                                      "token": "github_pat_rendered_canary_0123",
                                      "webhook_secret": "webhook-rendered-canary-0123456789"}));
    let job = LauncherJob::deploy(&org);
    job.assert_accepted("1 pools: linux");
    job.assert_secrets_apart(&org);
    let want = "\n[github]\norganization = \"acme\"\nrepositories = [\"app\", \"lib\"]\nrunner_group_id = 3\n\
                token_file = \"/var/vcap/jobs/agent_launcher/config/github-token\"\n\
                webhook_secret_file = \"/var/vcap/jobs/agent_launcher/config/github-webhook-secret\"\n\n[[pool]]\n";
    assert!(job.config.contains(want), "{}", job.config);
    for absent in ["[buildkite]", "cluster-token", "app_id", "private_key_file", "tls =", "[listener]"] {
        assert!(!job.config.contains(absent), "{absent} is rendered:\n{}", job.config);
    }
    // check-config reads the secret from its file: a short one is refused, and pre-start with it
    org["github"]["webhook_secret"] = json!("too-short");
    let job = LauncherJob::deploy(&org);
    assert!(!job.ok && job.out.contains("shorter than 16 characters"), "{}", job.out);

    // every github.* example of the spec but the App's and the repository scope's, together
    let spec = yaml("jobs/agent_launcher/spec");
    let mut gh = json!({});
    for (name, def) in spec["properties"].as_object().unwrap() {
        match name.strip_prefix("github.") {
            None | Some("repository" | "app_id" | "installation_id" | "private_key") => {}
            Some(key) => gh[key] = def["example"].clone(),
        }
    }
    assert!(gh.as_object().unwrap().len() >= 12, "{gh}");
    let every = github_props(gh.clone());
    let job = LauncherJob::deploy(&every);
    job.assert_accepted("1 pools: linux");
    job.assert_secrets_apart(&every);
    for (key, value) in gh.as_object().unwrap() {
        if !["token", "webhook_secret"].contains(&key.as_str()) {
            let line = format!("\n{key} = {}\n", toml_value(value));
            assert!(job.config.contains(&line), "github.{key} is not rendered as {line:?}:\n{}", job.config);
        }
    }
}

fn have_openssl() -> bool {
    require_peer(
        "openssl (apt-get install openssl) to make the test's GitHub App key and TLS certificate",
        Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()),
    )
}

/// Throwaway PEM texts made by openssl (none is kept in the repository): a GitHub App key (RSA, PKCS#1 as GitHub
/// hands it out) and a self-signed certificate for 127.0.0.1 with its key (ECDSA P-256).
fn throwaway_pems(dir: &std::path::Path) -> (String, String, String) {
    let (app, cert, key) = (dir.join("app.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl").args(["genrsa", "-traditional", "-out"]).arg(&app).arg("2048").output().unwrap();
    assert!(out.status.success(), "openssl genrsa: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    (read(&app), read(&cert), read(&key))
}

/// The job's GitHub source as a GitHub App on a repository, with the listener over TLS and its limits: the key,
/// the certificate and the TLS key each go to their own file, which check-config (run by bin/pre-start) loads.
#[test]
fn agent_launcher_job_renders_a_github_app_source_and_a_tls_listener() {
    if !have_ruby() || !have_openssl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (app_key, cert, key) = throwaway_pems(tmp.path());
    assert!(app_key.contains("BEGIN RSA PRIVATE KEY") && key.contains("PRIVATE KEY"), "{app_key}");
    let mut app =
        github_props(json!({"repository": "acme/app", "app_id": "Iv1.0123456789abcdef", "installation_id": 42,
                                      "private_key": app_key}));
    app["public_url"] = json!("https://10.0.0.10:9595");
    app["tls"] = json!({"certificate": cert, "private_key": key});
    app["listener"] = json!({"max_connections": 32, "timeout_seconds": 7});
    app["unhealthy_after_failed_polls"] = json!(5);
    let job = LauncherJob::deploy(&app);
    job.assert_accepted("1 pools: linux");
    job.assert_secrets_apart(&app);
    for want in [
        "\nplacement = \"spread\"\nunhealthy_after_failed_polls = 5\ntls = { cert_file = \
         \"/var/vcap/jobs/agent_launcher/config/tls-cert.pem\", key_file = \
         \"/var/vcap/jobs/agent_launcher/config/tls-key.pem\" }\n\n[limits]\n",
        "\n[listener]\nmax_connections = 32\ntimeout_seconds = 7\n",
        "\n[github]\nrepository = \"acme/app\"\napp_id = \"Iv1.0123456789abcdef\"\ninstallation_id = 42\n\
         private_key_file = \"/var/vcap/jobs/agent_launcher/config/github-app-key.pem\"\n\n[[pool]]\n",
    ] {
        assert!(job.config.contains(want), "{want:?} is not in:\n{}", job.config);
    }
    for absent in ["[buildkite]", "token_file", "webhook_secret_file"] {
        assert!(!job.config.contains(absent), "{absent} is rendered:\n{}", job.config);
    }
    // the App's IDs as a credential store may hand them over (a numeric app ID, the installation as a string)
    let mut ids = app.clone();
    ids["github"]["app_id"] = json!(123456);
    ids["github"]["installation_id"] = json!("42");
    let text = render_job("agent_launcher", "agent-launcher.toml.erb", &ids).unwrap();
    assert!(text.contains("\napp_id = \"123456\"\ninstallation_id = 42\n"), "{text}");
    // check-config loads the files: a key that is not one is refused, naming the file and not its text
    let mut bad = app.clone();
    bad["github"]["private_key"] =
        json!("-----BEGIN RSA PRIVATE KEY-----\nnot-a-key-rendered-canary\n-----END RSA PRIVATE KEY-----\n");
    let job = LauncherJob::deploy(&bad);
    assert!(!job.ok && job.out.contains("github-app-key.pem"), "{}", job.out);
    assert!(!job.out.contains("not-a-key-rendered-canary"), "{}", job.out);
    let mut bad = app.clone();
    bad["tls"]["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nnot-a-key-rendered-canary\n-----END PRIVATE KEY-----\n");
    let job = LauncherJob::deploy(&bad);
    assert!(!job.ok && job.out.contains("tls-key.pem"), "{}", job.out);
}

/// The job renders exactly one CI source: both or neither, an incomplete source, or half a TLS pair fail the
/// rendering with a message that names the properties.
#[test]
fn agent_launcher_job_renders_exactly_one_ci_source() {
    if !have_ruby() {
        return;
    }
    let token = json!({"repository": "acme/app", "token": "github_pat_x"});
    let mut both = launcher_props();
    both["github"] = token.clone();
    let mut neither = launcher_props();
    neither.as_object_mut().unwrap().remove("buildkite");
    // a blank secret (a variable that resolved to nothing) does not name a source
    let mut blank = neither.clone();
    blank["buildkite"] = json!({"token": " "});
    let mut half_tls = github_props(token.clone());
    half_tls["tls"] = json!({"private_key": "k"});
    let mut rest_without_token = launcher_props();
    rest_without_token["buildkite"]["source"] = json!("rest");
    rest_without_token["buildkite"]["rest"] = json!({"organization": "acme"});
    let mut rest_without_source = launcher_props();
    rest_without_source["buildkite"]["rest"] = json!({"organization": "acme"});
    let mut no_token = launcher_props();
    no_token["buildkite"].as_object_mut().unwrap().remove("token");
    for (props, says) in [
        (
            both,
            "set exactly one CI source, the buildkite.* or the github.* properties; both are set: buildkite.token, ",
        ),
        (neither, "set exactly one CI source"),
        (blank, "neither is set"),
        (github_props(json!({"repository": "acme/app"})), "either with github.token"),
        (github_props(json!({"repository": "acme/app", "token": "t", "app_id": "1"})), "either with github.token"),
        (github_props(json!({"token": "t"})), "exactly one of github.repository (owner/repo) and github.organization"),
        (
            github_props(json!({"repository": "acme/app", "organization": "acme", "token": "t"})),
            "exactly one of github.repository",
        ),
        (
            github_props(json!({"repository": "acme/app", "app_id": "1"})),
            "a GitHub App needs github.installation_id and github.private_key as well",
        ),
        (half_tls, "tls.private_key is set without tls.certificate"),
        (rest_without_token, "buildkite.source rest needs buildkite.rest.token"),
        (rest_without_source, "the buildkite.rest.* properties go with buildkite.source rest"),
        (no_token, "buildkite.token (the cluster agent token, bkct_…) is not set"),
    ] {
        let e = render_job("agent_launcher", "agent-launcher.toml.erb", &props)
            .expect_err(&format!("{props} rendered a config"));
        assert!(e.contains(says), "want {says:?} in {e}");
    }
}
