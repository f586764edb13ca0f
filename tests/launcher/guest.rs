//! The in-guest bootstrap in a real guest: the launcher drives the real `vmcpi` (libvirt driver, the machine's
//! libvirtd, `domain_type: qemu` = TCG) to boot the agent-launcher guest that `tools/test-stemcell/build.sh`
//! builds (Debian 12 + curl + jq, `examples/launcher/bootstrap.sh` and its systemd unit enabled, no BOSH agent,
//! a stand-in `buildkite-agent` that speaks the agent API's acquire/start/chunks/finish). The VM is on a QEMU
//! user-mode network, where the host's loopback is 10.0.2.2: the launcher's assignment endpoint and the fake
//! Buildkite listen on 127.0.0.1 and the VM is given `public_url`/`agent_endpoint` on 10.0.2.2. The pool has a
//! static IP range, so the bootstrap must apply the address itself. Checked: the job passes in the fake
//! Buildkite with the job log showing the static address on the guest's NIC; the guest powers itself off (the
//! fake holds the job `running` after the agent's finish until libvirt reports the domain shut off); then the
//! launcher deletes the VM. With CI set, a missing piece (libvirtd, the bosh-agent/monit inputs the image build
//! needs, root) fails the test. The GitHub variant (the second test) boots the same image with a `github`
//! source against the fake GitHub: the bootstrap's GitHub path and the image's stand-in runner.
use super::*;
use crate::util::{cpi_bin, in_ci, require_peer, Cpi};
use serde_json::json;

fn virsh(args: &[&str]) -> (bool, String) {
    match Command::new("virsh").args(["-q", "-c", "qemu:///system"]).args(args).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Err(_) => (false, String::new()),
    }
}

fn tail(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a real guest can run here: libvirtd, root and the image build's inputs (a failure when CI is set).
fn guest_peer_present() -> bool {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/bosh");
    let inputs = std::env::var_os("BOSH_AGENT").map(PathBuf::from).unwrap_or(shared.join("bosh-agent")).is_file()
        && std::env::var_os("MONIT_TARBALL").map(PathBuf::from).unwrap_or(shared.join("monit-5.2.5.tar.gz")).is_file();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    require_peer(
        "libvirtd at qemu:///system, root and the image build's inputs (../shared/tools/bosh or BOSH_AGENT/MONIT_TARBALL)",
        virsh(&["version"]).0 && inputs && root,
    )
}

/// The launcher guest image built by tools/test-stemcell/build.sh (cached by its inputs: a few seconds when
/// nothing changed, minutes after a change): its directory and its stemcell tarball.
fn launcher_guest_image() -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        Command::new("bash").arg(repo.join("tools/test-stemcell/build.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "tools/test-stemcell/build.sh failed");
    let sc_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim());
    let g = sc_dir.join("launcher-guest");
    let tarball = g.join("agent-launcher-guest-openstack-kvm-debian-bookworm.tgz");
    assert!(tarball.is_file() && g.join("vmlinuz").is_file(), "no launcher guest image in {}", g.display());
    (g, tarball)
}

#[test]
fn bootstrap_in_a_real_guest_runs_its_job_with_a_static_ip_then_powers_off() {
    if !guest_peer_present() {
        return;
    }
    let t0 = Instant::now();
    let mut timeline: Vec<(f64, String)> = vec![];
    let mut mark = |what: &str| {
        let e = t0.elapsed().as_secs_f64();
        eprintln!("guest timeline: {e:7.1} s  {what}");
        timeline.push((e, what.to_string()));
    };
    let (g, tarball) = launcher_guest_image();
    mark("image ready");

    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let cpi_cfg = json!({"driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": "vmcpi-launcher-guest", "pool_path": "/var/tmp/vmcpi-launcher-guest-pool", "domain_type": "qemu", "graphics": false},
                         "agent": {"mbus": "nats://nats:unused@127.0.0.1:4222"}});
    let cpi_json = dir.path().join("cpi.json");
    std::fs::write(&cpi_json, cpi_cfg.to_string()).unwrap();
    let pool = format!(
        r#"
[[pool]]
name = "guest"
tags = ["queue=vm", "os=linux"]
cpi = ["{bin}", "--config", "{cfg}"]
stemcell = {{ tarball = "{tarball}", cloud_properties = {{ infrastructure = "openstack", disk_format = "qcow2", container_format = "bare" }} }}
cloud_properties = {{ kernel = "{kernel}", initrd = "{initrd}", cmdline = "root=LABEL=rootfs console=ttyS0 rw", serial_log = "{serial}" }}
networks.default = {{ type = "manual", static_ips = ["10.0.2.50"], netmask = "255.255.255.0", gateway = "10.0.2.2", dns = ["10.0.2.3"], cloud_properties = {{ type = "user" }} }}
flavors.small = {{ cpu = 1, ram = 512 }}
boot_timeout_seconds = 600
"#,
        bin = cpi_bin().display(),
        cfg = cpi_json.display(),
        tarball = tarball.display(),
        kernel = g.join("vmlinuz").display(),
        initrd = g.join("initrd.img").display(),
        serial = serial.display(),
    );
    // the VM reaches the host's loopback as 10.0.2.2 (QEMU user networking): the launcher and the fake
    // Buildkite listen on 127.0.0.1, the VM is told their 10.0.2.2 addresses (plain http to an address that
    // is not loopback as the launcher sees it: allow_http says yes)
    let s = Setup::new("public_url = \"http://10.0.2.2:LISTEN_PORT\"", &pool);
    let bk_port = s.bk.url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/v3").to_string();
    let text = std::fs::read_to_string(&s.config).unwrap().replace("LISTEN_PORT", &s.port.to_string()).replace(
        "stack_key = \"test-stack\"",
        &format!("stack_key = \"test-stack\"\nagent_endpoint = \"http://10.0.2.2:{bk_port}/v3\"\nallow_http = true"),
    );
    std::fs::write(&s.config, text).unwrap();
    s.bk.st().hold_agent_finish = true;
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    let serial_tail = || format!("launcher log:\n{}\nserial console (tail):\n{}", s.log(), tail(&serial, 60));

    wait_for(300, "the VM to be created", &serial_tail, || {
        s.log().contains(&format!("job={j} vm=")) && s.log().contains(" created")
    });
    let cid =
        s.log().split(&format!("job={j} vm=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    mark(&format!("VM {cid} created (launcher: stemcell uploaded, create_vm done)"));
    let cpi = Cpi::at(&cpi_json);
    assert_eq!(cpi.ok("has_vm", json!([cid])), json!(true));
    // the VM's assignment secret, from the launcher's ledger (its intent record)
    let ledger = std::fs::read_to_string(s.dir.path().join("ledger/ledger.jsonl")).unwrap();
    let secret = ledger
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("secret").and_then(|x| x.as_str()).map(String::from))
        .filter(|x| !x.is_empty())
        .expect("an intent with the VM's secret in the ledger");

    let agent_state = || s.bk.job(&j).state;
    wait_for(400, "the guest's agent to acquire the job", &serial_tail, || agent_state() != "scheduled");
    mark("guest: bootstrap fetched its assignment, the agent acquired the job");
    wait_for(120, "the guest's agent to finish the job", &serial_tail, || s.bk.job(&j).agent.exit_status.is_some());
    let run = s.bk.job(&j).agent;
    mark(&format!("guest: the job finished with exit status {:?}", run.exit_status));
    eprintln!("guest: job log from the agent:\n{}", run.log);
    assert_eq!(run.exit_status, Some(0), "{}", serial_tail());
    assert!(run.log.contains("inet 10.0.2.50/24"), "the static IP is not on the guest's NIC:\n{}", run.log);
    assert_eq!(run.tags, "queue=vm,os=linux");
    assert!(!run.name.is_empty());

    // the guest powers itself off (the fake keeps the job running, so the launcher does not delete it yet)
    wait_for(120, "the guest to power itself off", &serial_tail, || {
        let (ok, st) = virsh(&["domstate", &cid]);
        ok && st == "shut off"
    });
    mark("guest powered itself off (libvirt: shut off)");
    s.bk.set_state(&j, "passed");
    mark("fake Buildkite: job passed");
    wait_for(120, "the launcher to delete the VM", &serial_tail, || s.log().contains(&format!("vm={cid} deleted")));
    assert_eq!(cpi.ok("has_vm", json!([cid])), json!(false));
    assert!(!virsh(&["domstate", &cid]).0, "the domain {cid} is still defined");
    mark("launcher deleted the VM (has_vm false, no domain)");
    assert_eq!(s.bk.job(&j).state, "passed");

    // neither the agent token nor the VM's secret is in the launcher log or the serial console
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(console.contains("agent-launcher-bootstrap: applying static IP 10.0.2.50/24"), "{}", serial_tail());
    assert!(console.contains("agent-launcher-bootstrap: powering off"), "{}", serial_tail());
    for text in [&s.log(), &console] {
        assert!(!text.contains(TOKEN), "the agent token leaked");
        assert!(!text.contains(&secret), "the VM's assignment secret leaked");
    }
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(30)), Some(0), "{}", s.log());
    let ledger_out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
    if let Some(sc) =
        String::from_utf8_lossy(&ledger_out.stdout).split("cid=").nth(1).and_then(|r| r.split_whitespace().next())
    {
        cpi.ok("delete_stemcell", json!([sc]));
    }
    mark("done");
    eprintln!("guest timeline (CI={}):", in_ci());
    for (t, what) in &timeline {
        eprintln!("  {t:7.1} s  {what}");
    }
}

/// The GitHub variant in a real guest: the launcher (github source, against the fake GitHub) drives the real
/// `vmcpi` on libvirtd to boot the same agent-launcher guest; its bootstrap fetches the assignment with the
/// VM's secret, finds a JIT runner config in it, and starts the image's stand-in runner
/// (`tools/test-stemcell/actions-runner-standin.sh` as /opt/actions-runner/run.sh — not GitHub's runner: it
/// speaks the fake's own runner protocol) as the user `runner` with the config in its environment; the runner
/// takes the queued job, reports it completed and exits; the guest powers itself off (the fake holds the job
/// `in_progress` until libvirt reports the domain shut off); then the launcher deletes the VM and no runner
/// registration is left. The network is DHCP (QEMU user mode), the other path of the bootstrap's network set-up.
#[test]
fn github_runner_in_a_real_guest_gets_its_jit_config_runs_one_job_then_powers_off() {
    use super::fake_gh::{FakeGh, GH_TOKEN, REPO};
    if !guest_peer_present() {
        return;
    }
    let t0 = Instant::now();
    let mut timeline: Vec<(f64, String)> = vec![];
    let mut mark = |what: &str| {
        let e = t0.elapsed().as_secs_f64();
        eprintln!("github guest timeline: {e:7.1} s  {what}");
        timeline.push((e, what.to_string()));
    };
    let (g, tarball) = launcher_guest_image();
    mark("image ready");

    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    // a libvirt pool of this checkout's own (other checkouts may run their guest tests on the same daemon)
    let tag = env!("CARGO_MANIFEST_DIR").bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let cpi_cfg = json!({"driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": format!("vmcpi-launcher-gh-{tag:08x}"), "pool_path": format!("/var/tmp/vmcpi-launcher-gh-{tag:08x}-pool"), "domain_type": "qemu", "graphics": false},
                         "agent": {"mbus": "nats://nats:unused@127.0.0.1:4222"}});
    let cpi_json = dir.path().join("cpi.json");
    std::fs::write(&cpi_json, cpi_cfg.to_string()).unwrap();
    let gh = FakeGh::start();
    let gh_port = gh.url.trim_start_matches("http://127.0.0.1:").to_string();
    {
        let mut st = gh.st();
        // the guest reaches the host's loopback as 10.0.2.2 (QEMU user networking)
        st.runner_url = format!("http://10.0.2.2:{gh_port}");
        st.hold_complete = true;
    }
    let port = free_port();
    let config = dir.path().join("launcher.toml");
    std::fs::write(
        &config,
        format!(
            r#"launcher_id = "gh-guest"
ledger_dir = "{ledger}"
listen = "127.0.0.1:{port}"
public_url = "http://10.0.2.2:{port}"
poll_interval_ms = 200
[github]
repository = "{REPO}"
api_url = "{api}"
token_env = "GH_TOKEN"
poll_interval_ms = 500
[[pool]]
name = "guest"
labels = ["self-hosted", "linux"]
cpi = ["{bin}", "--config", "{cfg}"]
stemcell = {{ tarball = "{tarball}", cloud_properties = {{ infrastructure = "openstack", disk_format = "qcow2", container_format = "bare" }} }}
cloud_properties = {{ kernel = "{kernel}", initrd = "{initrd}", cmdline = "root=LABEL=rootfs console=ttyS0 rw", serial_log = "{serial}" }}
networks.default = {{ type = "dynamic", cloud_properties = {{ type = "user" }} }}
flavors.small = {{ cpu = 1, ram = 512 }}
boot_timeout_seconds = 600
"#,
            ledger = dir.path().join("ledger").display(),
            api = gh.url,
            bin = cpi_bin().display(),
            cfg = cpi_json.display(),
            tarball = tarball.display(),
            kernel = g.join("vmlinuz").display(),
            initrd = g.join("initrd.img").display(),
            serial = serial.display(),
        ),
    )
    .unwrap();
    let job = gh.add_run(1, &["self-hosted", "linux"])[0];
    let log_path = dir.path().join("launcher.log");
    let err = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
    let mut l = Launcher {
        child: Command::new(launcher_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("GH_TOKEN", GH_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap(),
    };
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let serial_tail = || format!("launcher log:\n{}\nserial console (tail):\n{}", log(), tail(&serial, 60));

    wait_for(300, "the VM to be created", &serial_tail, || {
        log().contains(&format!("job={job} vm=")) && log().contains(" created")
    });
    let cid =
        log().split(&format!("job={job} vm=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    mark(&format!("VM {cid} created (launcher: stemcell uploaded, JIT runner config made, create_vm done)"));
    let cpi = Cpi::at(&cpi_json);
    assert_eq!(cpi.ok("has_vm", json!([cid])), json!(true));
    let ledger = std::fs::read_to_string(dir.path().join("ledger/ledger.jsonl")).unwrap();
    let secret = ledger
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("secret").and_then(|x| x.as_str()).map(String::from))
        .filter(|x| !x.is_empty())
        .expect("an intent with the VM's secret in the ledger");

    wait_for(400, "the guest's runner to take the job", &serial_tail, || gh.job(job).status != "queued");
    mark("guest: bootstrap fetched its JIT config, the runner took the job");
    wait_for(120, "the guest's runner to complete the job", &serial_tail, || gh.job(job).conclusion.is_some());
    let done = gh.job(job);
    mark(&format!("guest: the job completed ({:?})", done.conclusion));
    eprintln!("github guest: job output from the runner:\n{}", done.log);
    assert_eq!(done.conclusion.as_deref(), Some("success"), "{}", serial_tail());
    let runner = done.runner_name.clone().unwrap_or_default();
    assert!(runner.starts_with("gh-guest-guest-"), "the runner name leads back to the launcher and pool: {runner}");
    assert!(done.log.contains(&format!("runner {runner} as runner on launcher-guest")), "{}", done.log);
    assert!(done.log.contains("inet 10.0.2.15/"), "the guest's DHCP address:\n{}", done.log);

    // the guest powers itself off while the fake holds the job in progress
    wait_for(120, "the guest to power itself off", &serial_tail, || {
        let (ok, st) = virsh(&["domstate", &cid]);
        ok && st == "shut off"
    });
    mark("guest powered itself off (libvirt: shut off)");
    gh.release(job);
    mark("fake GitHub: job completed, ephemeral runner removed");
    wait_for(120, "the launcher to delete the VM", &serial_tail, || log().contains(&format!("vm={cid} deleted")));
    assert_eq!(cpi.ok("has_vm", json!([cid])), json!(false));
    assert!(!virsh(&["domstate", &cid]).0, "the domain {cid} is still defined");
    mark("launcher deleted the VM (has_vm false, no domain)");
    assert!(gh.runner_names().is_empty(), "no runner registration left: {:?}\n{}", gh.runner_names(), log());

    // neither the token, the JIT config nor the VM's secret is in the launcher log or on the serial console
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(console.contains("agent-launcher-bootstrap: starting runner gh-guest-guest-"), "{}", serial_tail());
    assert!(console.contains("agent-launcher-bootstrap: powering off"), "{}", serial_tail());
    let jit = gh.st().jit_configs.clone();
    assert!(!jit.is_empty());
    for text in [&log(), &console] {
        assert!(!text.contains(GH_TOKEN), "the token leaked");
        assert!(!text.contains(&secret), "the VM's assignment secret leaked");
        for c in &jit {
            assert!(!text.contains(c.as_str()), "a JIT runner config leaked");
        }
    }
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(30)), Some(0), "{}", log());
    let ledger_out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&config).output().unwrap();
    if let Some(sc) =
        String::from_utf8_lossy(&ledger_out.stdout).split("cid=").nth(1).and_then(|r| r.split_whitespace().next())
    {
        cpi.ok("delete_stemcell", json!([sc]));
    }
    mark("done");
    eprintln!("github guest timeline (CI={}):", in_ci());
    for (t, what) in &timeline {
        eprintln!("  {t:7.1} s  {what}");
    }
}
