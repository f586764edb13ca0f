//! A real BOSH director deploys through vmcpi, end to end. The director (cloudfoundry/bosh v276.1.0, started by
//! the shared kit's `director-up.sh`: PostgreSQL, NATS with TLS client certificates, nginx with a WebDAV
//! blobstore, the director and two workers, all on loopback) runs vmcpi as its CPI the way a director VM runs a
//! CPI job: `--cpi` is a wrapper that runs this release's own `jobs/vmcpi_cpi` `bin/cpi`, rendered (with
//! `config/cpi.json` and `bin/pre-start`) from the properties release/ops/director.yml gives the job, over the
//! vmcpi built by this `cargo test`. The real bosh CLI drives it; the VMs boot the test stemcell
//! (tools/test-stemcell/, a real bosh-agent) on local QEMU through libvirt, on QEMU user-mode networks: the
//! agents dial NATS and the blobstore at 10.0.2.2, the host's loopback as a guest sees it. Phases, each logged
//! by name with its time and the CPI calls it made (counted from the director's task debug logs):
//!
//!   director-up, update-cpi-config (two vmcpi CPIs, one storage pool each, standing for two hosts),
//!   update-cloud-config (an AZ per CPI, a manual network on `type: user`: 10.0.2.0/24, gateway 10.0.2.2,
//!   static IPs), upload-stemcell (OpenStack family: one stemcell per CPI), upload-release (the test release,
//!   whose package the director compiles on a compilation VM), deploy (2 instances across the two AZs, each with
//!   a persistent disk), recreate (one instance: a new VM, the same disk), cck (a VM deleted behind the
//!   director's back through libvirt; `bosh cck --auto` recreates it), stop --hard / start (the VM goes, the
//!   disk stays), disk size change (the director migrates each disk: this director has
//!   `enable_cpi_resize_disk: false`), delete-deployment; then a second case, the vSphere-family stemcell
//!   (upload-stemcell, a one-instance deployment that reuses the compiled package, delete-deployment); and
//!   delete-stemcell, clean-up --all.
//!
//! After each phase the guests' own reports are checked, not only the CLI's exit status: the agents' process
//! states (`bosh instances --ps`) and a status file the test job writes in its log directory (fetched with
//! `bosh logs`, through the agent and the blobstore): the job runs, the package was compiled elsewhere (on the
//! compilation VM), the persistent disk vmcpi attached (by its CID) is mounted at /var/vcap/store with the right
//! size, a marker file written there on the first start survives every new VM and the disk migration, and the
//! NIC has the MAC vmcpi gave it and the static address the director assigned. At the end nothing of vmcpi is
//! left in either pool (no domain, no volume), no in-flight marker, and no secret (private keys, the blobstore
//! passwords, the director's admin password) appears in any CPI output the director logged.
//!
//! Needs root, libvirtd (tools/libvirt-up.sh), the shared BOSH kit (../shared/tools/bosh: bosh CLI, bosh-agent,
//! monit source, director/ with davcli; BOSH_CLI, BOSH_AGENT, MONIT_TARBALL, BOSH_DAVCLI override them);
//! `director-up.sh` installs its own Debian packages (tools/packages.sh --tests does too). With CI set a
//! missing piece fails the test. Everything it makes is cleaned up, on failure too (director-down.sh,
//! domains, volumes, pools); the director's logs stay in the work directory (/var/tmp/vmcpi-director-e2e-<tag>)
//! when it fails.
#[path = "util.rs"]
mod util;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const DEPLOYMENT: &str = "vmcpi-director-e2e";
/// The second case: one instance from the vSphere-family stemcell.
const VS_DEPLOYMENT: &str = "vmcpi-director-e2e-vsphere";
const STEMCELL: &str = "bosh-openstack-kvm-debian-bookworm-go_agent";
const VS_STEMCELL: &str = "bosh-vsphere-esxi-debian-bookworm-go_agent";
const IPS: [&str; 2] = ["10.0.2.10", "10.0.2.11"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kit() -> PathBuf {
    repo().join("..").join("shared/tools/bosh")
}

fn input(var: &str, file: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| kit().join(file))
}

fn virsh(args: &[&str]) -> (bool, String) {
    let out =
        Command::new("/usr/bin/virsh").args(["-q", "-c", "qemu:///system"]).args(args).output().expect("run virsh");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Straight to the process's stderr (the harness captures eprintln!): CI's log shows the phases as they go.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "director e2e: {msg}");
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A port free now, and (for the director, whose puma takes the next one) optionally its successor too.
fn free_port(pair: bool, taken: &[u16]) -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ok = |p: u16| p < 65534 && !taken.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok();
        if ok(p) && (!pair || ok(p + 1)) {
            return p;
        }
    }
}

fn pieces_present() -> bool {
    let files = [
        ("BOSH_CLI", "bosh"),
        ("BOSH_AGENT", "bosh-agent"),
        ("MONIT_TARBALL", "monit-5.2.5.tar.gz"),
        ("BOSH_DAVCLI", "director/davcli"),
    ];
    let have = files.iter().all(|(v, f)| input(v, f).is_file())
        && kit().join("director/director-up.sh").is_file()
        && Path::new("/usr/bin/virsh").exists()
        && virsh(&["version"]).0;
    util::require_peer(
        "the BOSH kit (../shared/tools/bosh: bosh CLI, bosh-agent, monit source, director/ with davcli and director-up.sh) and libvirtd",
        have,
    )
}

/// One phase's figures.
struct Phase {
    name: String,
    secs: f64,
    calls: BTreeMap<String, usize>,
}

/// What the test made: the director's state, the two pools, the CPI's state dir. Dropping it stops and removes
/// all of it (the director's logs stay when the test failed).
struct Run {
    work: PathBuf,
    state: PathBuf,
    cpi_state: PathBuf,
    pools: [String; 2],
    ports: Ports,
    cli_env: Vec<(String, String)>,
    phases: Vec<Phase>,
    seen_tasks: BTreeSet<u64>,
    log_n: usize,
    started: Instant,
}

struct Ports {
    director: u16,
    nats: u16,
    blobstore: u16,
    postgres: u16,
}

/// One instance as the director and its agent report it.
#[derive(Debug, Clone)]
struct Instance {
    deployment: &'static str,
    id: String,
    az: String,
    ip: String,
    vm: String,
    disk: String,
    state: String,
    processes: Vec<(String, String)>,
}

impl Run {
    fn new() -> Run {
        let tag: u32 =
            env!("CARGO_MANIFEST_DIR").bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
        // outside the checkout: PostgreSQL (as postgres) and nginx (as nobody) must be able to enter it
        let work = PathBuf::from(format!("/var/tmp/vmcpi-director-e2e-{tag:08x}"));
        let director = free_port(true, &[]);
        let nats = free_port(false, &[director, director + 1]);
        let blobstore = free_port(false, &[director, director + 1, nats]);
        let postgres = free_port(false, &[director, director + 1, nats, blobstore]);
        let run = Run {
            state: work.join("director"),
            cpi_state: work.join("cpi-state"),
            pools: [format!("vmcpi-dir-z1-{tag:08x}"), format!("vmcpi-dir-z2-{tag:08x}")],
            ports: Ports { director, nats, blobstore, postgres },
            cli_env: Vec::new(),
            phases: Vec::new(),
            seen_tasks: BTreeSet::new(),
            log_n: 0,
            started: Instant::now(),
            work,
        };
        // what an earlier, interrupted run left
        run.teardown(false);
        let _ = std::fs::remove_dir_all(&run.work);
        for d in
            ["home", "logs", "jobs/vmcpi_cpi/bin", "jobs/vmcpi_cpi/config", "packages/vmcpi/bin", "pool-z1", "pool-z2"]
        {
            std::fs::create_dir_all(run.work.join(d)).unwrap();
        }
        run
    }

    fn pool_path(&self, i: usize) -> PathBuf {
        self.work.join(format!("pool-z{}", i + 1))
    }

    /// Defines, builds and starts the directory pool of CPI `i`, as an operator does on each host.
    fn define_pool(&self, i: usize) {
        let (pool, path) = (&self.pools[i], self.pool_path(i));
        for args in [
            vec!["pool-define-as", pool, "dir", "--target", path.to_str().unwrap()],
            vec!["pool-build", pool],
            vec!["pool-start", pool],
        ] {
            let (ok, out) = virsh(&args);
            assert!(ok, "virsh {args:?}: {out}");
        }
    }

    /// Stops the director, removes every domain and volume in the two pools and the pools themselves; with
    /// `purge` the work directory too.
    fn teardown(&self, purge: bool) {
        if self.state.join(".bosh-director-kit").exists() {
            let mut cmd = Command::new(kit().join("director/director-down.sh"));
            cmd.arg("--state").arg(&self.state);
            if purge {
                cmd.arg("--purge");
            }
            let _ = cmd.output();
        }
        for pool in &self.pools {
            for d in domains_using(pool) {
                virsh(&["destroy", &d]);
                virsh(&["undefine", &d, "--nvram"]);
            }
            for v in volumes(pool) {
                virsh(&["vol-delete", "--pool", pool, &v]);
            }
            if virsh(&["pool-info", pool]).0 {
                virsh(&["pool-destroy", pool]);
                virsh(&["pool-undefine", pool]);
            }
        }
        if purge {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }

    /// The wrapper the director runs for every CPI call: this release's bin/cpi with the job's directories, as on
    /// a director VM (where they are /var/vcap/jobs and /var/vcap/packages).
    fn write_cpi_wrapper(&self) -> PathBuf {
        let pkg = self.work.join("packages/vmcpi/bin/vmcpi");
        let _ = std::fs::remove_file(&pkg);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vmcpi"), &pkg).unwrap();
        let wrapper = self.work.join("cpi");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# the director runs this with PATH and TMPDIR only, as it runs a CPI job's bin/cpi on a director VM;\n\
                 # virsh, qemu-img, ssh and nc are tripwires for it (a director VM has none of them)\n\
                 BOSH_JOBS_DIR={w}/jobs BOSH_PACKAGES_DIR={w}/packages exec /bin/bash {tools}/without-libvirt-tools.sh \
                 {w}/logs/tripwire.log /bin/bash {w}/jobs/vmcpi_cpi/bin/cpi\n",
                w = self.work.display(),
                tools = repo().join("tools").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        wrapper
    }

    /// Renders the job's templates from the properties release/ops/director.yml gives the job on a director
    /// (agent.mbus and the dav blobstore as the director's agents reach them, here through 10.0.2.2), with a
    /// local libvirt instead of qemu+ssh, and runs bin/pre-start as a director VM does before the director
    /// starts.
    fn render_job(&self) -> Value {
        let settings: Value =
            serde_json::from_slice(&std::fs::read(self.state.join("agent-settings.json")).unwrap()).unwrap();
        let dav = &settings["blobstore"]["options"];
        let props = json!({
            "driver": {"kind": "libvirt", "uri": "qemu:///system", "domain_type": "qemu", "graphics": false,
                       "state_dir": self.cpi_state},
            "agent": {"mbus": format!("nats://10.0.2.2:{}", self.ports.nats)},
            "blobstore": {"provider": "dav", "address": "10.0.2.2", "port": self.ports.blobstore,
                          "agent": {"user": dav["user"], "password": dav["password"]},
                          "tls": {"cert": {"ca": dav["tls"]["cert"]["ca"]}}},
            "log_level": "debug",
        });
        let props_file = self.work.join("cpi-job-properties.json");
        std::fs::write(&props_file, serde_json::to_vec_pretty(&props).unwrap()).unwrap();
        for (template, out) in
            [("cpi.erb", "bin/cpi"), ("cpi.json.erb", "config/cpi.json"), ("pre-start.erb", "bin/pre-start")]
        {
            let o = Command::new("ruby")
                .arg(repo().join("release/render.rb"))
                .args(["vmcpi_cpi", template])
                .arg(&props_file)
                .arg(self.work.join("jobs/vmcpi_cpi").join(out))
                .output()
                .unwrap();
            assert!(o.status.success(), "render {template}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let o = Command::new("bash").arg(self.work.join("jobs/vmcpi_cpi/bin/pre-start")).output().unwrap();
        assert!(o.status.success(), "pre-start: {}", String::from_utf8_lossy(&o.stderr));
        assert!(self.cpi_state.is_dir(), "bin/pre-start made the state_dir");
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(self.work.join("jobs/vmcpi_cpi/config/cpi.json")).unwrap()).unwrap();
        assert_eq!(cfg["agent"]["mbus"], json!(format!("nats://10.0.2.2:{}", self.ports.nats)), "{cfg}");
        assert_eq!(cfg["agent"]["blobstore"]["provider"], "dav", "{cfg}");
        cfg
    }

    fn director_up(&mut self) {
        let wrapper = self.write_cpi_wrapper();
        let log = self.work.join("logs/director-up.log");
        let f = std::fs::File::create(&log).unwrap();
        let status = Command::new(kit().join("director/director-up.sh"))
            .arg("--state")
            .arg(&self.state)
            .arg("--cpi")
            .arg(&wrapper)
            .args(["--cpi-name", "vmcpi", "--extra-san", "10.0.2.2"])
            .args(["--director-port", &self.ports.director.to_string()])
            .args(["--nats-port", &self.ports.nats.to_string()])
            .args(["--blobstore-port", &self.ports.blobstore.to_string()])
            .args(["--pg-port", &self.ports.postgres.to_string()])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "director-up.sh failed ({status}):\n{}", tail(&out, 6000));
        // the CLI's environment, from DIR/env (shell exports): let bash expand it
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(". {}/env && env -0", self.state.display()))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        assert!(o.status.success());
        self.cli_env = String::from_utf8_lossy(&o.stdout)
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| k.starts_with("BOSH_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(self.env("BOSH_CLIENT_SECRET").is_some(), "no BOSH_CLIENT_SECRET in {}/env", self.state.display());
    }

    fn env(&self, key: &str) -> Option<&str> {
        self.cli_env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Runs the bosh CLI; returns (success, output). The output also goes to a numbered log in the work dir.
    fn bosh_run(&mut self, args: &[&str]) -> (bool, String) {
        self.log_n += 1;
        let name: String = args
            .iter()
            .filter(|a| !a.starts_with('-') && **a != DEPLOYMENT && **a != VS_DEPLOYMENT && !a.contains('/'))
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join("-");
        let log = self.work.join(format!("logs/{:02}-{name}.log", self.log_n));
        let f = std::fs::File::create(&log).unwrap();
        let status = Command::new(input("BOSH_CLI", "bosh"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.work.join("home"))
            .env("BOSH_NON_INTERACTIVE", "true")
            .envs(self.cli_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        (status.success(), std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// Runs the bosh CLI and panics (with its output, the failing task's debug log and the VMs' consoles) when
    /// it fails.
    fn bosh(&mut self, args: &[&str]) -> String {
        let (ok, out) = self.bosh_run(args);
        if !ok {
            panic!("bosh {}: failed:\n{}\n{}", args.join(" "), tail(&out, 5000), self.diagnostics());
        }
        out
    }

    /// The newest task's debug log and the serial consoles, for a failure report.
    fn diagnostics(&self) -> String {
        let mut s = String::new();
        if let Some(id) = self.task_ids().into_iter().max() {
            let debug =
                std::fs::read_to_string(self.tasks_dir().join(id.to_string()).join("debug")).unwrap_or_default();
            let errors: Vec<&str> = debug.lines().filter(|l| l.starts_with("E,")).collect();
            s += &format!("--- task {id}: errors:\n{}\n", tail(&errors.join("\n"), 4000));
        }
        for z in ["z1", "z2"] {
            let serial = std::fs::read_to_string(self.work.join(format!("serial-{z}.log"))).unwrap_or_default();
            s += &format!("--- serial console of the last VM in {z} (tail):\n{}\n", tail(&serial, 3000));
        }
        s
    }

    fn tasks_dir(&self) -> PathBuf {
        self.state.join("director/store/tasks")
    }

    fn task_ids(&self) -> BTreeSet<u64> {
        std::fs::read_dir(self.tasks_dir())
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// CPI calls in the debug logs of `tasks`, by method.
    fn cpi_calls(&self, tasks: &[u64]) -> BTreeMap<String, usize> {
        let mut calls = BTreeMap::new();
        for id in tasks {
            let debug =
                std::fs::read_to_string(self.tasks_dir().join(id.to_string()).join("debug")).unwrap_or_default();
            for l in debug.lines() {
                // `[external-cpi] [cpi-NNN] request: {...}` (a response's log may say "request:" too)
                let Some(rest) = l.split("[external-cpi] [").nth(1) else { continue };
                let Some(req) = rest.split_once("] ").and_then(|(_, r)| r.strip_prefix("request: ")) else { continue };
                let method = req.split("\"method\":\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or("?");
                *calls.entry(method.to_string()).or_insert(0) += 1;
            }
        }
        calls
    }

    /// Runs `f` as the phase `name`: its time and the CPI calls of the director tasks it started are logged.
    fn phase<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        say(&format!("{name} ..."));
        let t = Instant::now();
        let r = f(self);
        let secs = t.elapsed().as_secs_f64();
        let now = self.task_ids();
        let new: Vec<u64> = now.difference(&self.seen_tasks).copied().collect();
        self.seen_tasks = now;
        let calls = self.cpi_calls(&new);
        let total: usize = calls.values().sum();
        let list: Vec<String> = calls.iter().map(|(m, n)| format!("{m} {n}")).collect();
        say(&format!(
            "{name}: {secs:.0} s, {total} CPI calls{}{} (at {:.0} s)",
            if list.is_empty() { "" } else { ": " },
            list.join(", "),
            self.started.elapsed().as_secs_f64()
        ));
        self.phases.push(Phase { name: name.to_string(), secs, calls });
        r
    }

    /// `bosh instances --ps --details` as the director and the agents report it.
    fn instances(&mut self) -> Vec<Instance> {
        self.instances_of(DEPLOYMENT)
    }

    /// The instances once the agents report every one running: `cck --auto` recreates a VM without waiting
    /// for its processes (and monit looks every 10 s), so a check right after it may find one still starting.
    fn running_instances(&mut self, deployment: &'static str) -> Vec<Instance> {
        let started = Instant::now();
        loop {
            let list = self.instances_of(deployment);
            let running = |i: &Instance| i.state == "running" && i.processes.iter().all(|(_, s)| s == "running");
            if list.iter().all(running) || started.elapsed().as_secs() > 180 {
                return list;
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
    }

    fn instances_of(&mut self, deployment: &'static str) -> Vec<Instance> {
        let out = self.bosh(&["-d", deployment, "instances", "--ps", "--details", "--json"]);
        let v: Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..])
            .unwrap_or_else(|e| panic!("bosh instances --json: {e}:\n{out}"));
        let rows = v["Tables"][0]["Rows"].as_array().cloned().unwrap_or_default();
        let mut list: Vec<Instance> = Vec::new();
        for r in rows {
            let s = |k: &str| r[k].as_str().unwrap_or("").trim().to_string();
            // one row per instance, then one per process of it (the same `instance`, with `process` set)
            let Some(id) =
                s("instance").strip_prefix("status/").map(|i| i.split_whitespace().next().unwrap_or("").to_string())
            else {
                continue;
            };
            if !s("process").is_empty() {
                if let Some(i) = list.iter_mut().find(|i| i.id == id) {
                    i.processes.push((s("process"), s("process_state")));
                }
                continue;
            }
            list.push(Instance {
                deployment,
                id,
                az: s("az"),
                ip: s("ips"),
                vm: s("vm_cid"),
                disk: s("disk_cids"),
                state: s("process_state"),
                processes: Vec::new(),
            });
        }
        list.sort_by(|a, b| a.az.cmp(&b.az));
        list
    }

    /// The CIDs of the director's orphaned disks.
    fn orphaned_disks(&mut self) -> BTreeSet<String> {
        let out = self.bosh(&["disks", "--orphaned", "--json"]);
        let v: Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..])
            .unwrap_or_else(|e| panic!("bosh disks --orphaned --json: {e}:\n{out}"));
        v["Tables"][0]["Rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["disk_cid"].as_str().map(str::to_string))
            .collect()
    }

    /// The status file the job writes in its log directory, fetched from the VM with `bosh logs`.
    fn report(&mut self, instance: &Instance) -> BTreeMap<String, Vec<String>> {
        let dir = self.work.join(format!("logs/fetched-{}", self.log_n + 1));
        std::fs::create_dir_all(&dir).unwrap();
        let target = format!("status/{}", instance.id);
        self.bosh(&["-d", instance.deployment, "logs", &target, "--dir", dir.to_str().unwrap()]);
        let tgz = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .unwrap_or_else(|| panic!("bosh logs {target} wrote no tarball into {}", dir.display()));
        let o = Command::new("tar").arg("-xzf").arg(&tgz).arg("-C").arg(&dir).output().unwrap();
        assert!(o.status.success(), "{}: {}", tgz.display(), String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(dir.join("status/status.txt"))
            .or_else(|_| std::fs::read_to_string(dir.join("./status/status.txt")))
            .unwrap_or_else(|e| panic!("{target}: no status/status.txt in the fetched logs ({e})"));
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                m.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
        m
    }

    /// Checks one instance against its VM and its own report; returns the marker on its persistent disk.
    fn check_instance(&mut self, i: &Instance, min_mib: u64, max_mib: u64) -> (String, String) {
        let pool = &self.pools[if i.az == "z1" { 0 } else { 1 }].clone();
        assert_eq!(i.state, "running", "{i:?}");
        assert!(
            i.processes.iter().any(|(p, s)| p == "status" && s == "running"),
            "the agent reports the job's process running: {i:?}"
        );
        assert!(i.vm.starts_with("vm-") && i.disk.starts_with("disk-"), "{i:?}");
        // the VM and its disk live in the pool of the instance's AZ (its CPI)
        let (ok, xml) = virsh(&["dumpxml", &i.vm]);
        assert!(ok, "{}: no domain {}: {xml}", i.id, i.vm);
        assert!(xml.contains(&format!("pool='{pool}'")), "{} ({}) has its disks in {pool}: {xml}", i.vm, i.az);
        assert!(volumes(pool).iter().any(|v| v.starts_with(&i.disk)), "{} is in {pool}: {:?}", i.disk, volumes(pool));
        let mac = xml
            .split("<mac address='")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("a NIC MAC in the domain XML")
            .to_string();
        let r = self.report(i);
        let one = |k: &str| r.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
        say(&format!("status/{} ({}, {}): {r:?}", i.id, i.az, i.vm));
        assert_eq!(one("job"), "running", "{r:?}");
        assert_eq!(one("store"), "mounted", "the persistent disk is at /var/vcap/store: {r:?}");
        assert!(
            r.get("store_disk_id").into_iter().flatten().any(|id| id.contains(&i.disk)),
            "the mounted disk is {} (by its id): {r:?}",
            i.disk
        );
        let size: u64 = one("store_size_mib").parse().unwrap_or(0);
        assert!((min_mib..=max_mib).contains(&size), "a disk of {min_mib}..{max_mib} MiB: {r:?}");
        let nic = r
            .get("nic")
            .into_iter()
            .flatten()
            .find(|n| n.contains(&format!("mac={mac}")))
            .unwrap_or_else(|| panic!("no NIC with vmcpi's MAC {mac}: {r:?}"));
        assert!(nic.ends_with(&format!("addr={}/24", i.ip)), "the static address the director gave: {nic} ({i:?})");
        assert_eq!(one("default_route"), "10.0.2.2", "the manual network's gateway: {r:?}");
        let marker = one("marker");
        assert_eq!(marker.len(), 16, "the job wrote its marker on the persistent disk: {r:?}");
        let package = one("package");
        assert!(package.starts_with("compiled-on="), "{r:?}");
        let compiled_on =
            package.trim_start_matches("compiled-on=").split_whitespace().next().unwrap_or("").to_string();
        assert_ne!(compiled_on, one("hostname"), "the package was compiled on another VM (a compilation VM): {r:?}");
        (marker, package)
    }

    /// Instances and their reports, checked; returns the instances (by AZ) and their markers.
    fn check_all(&mut self, min_mib: u64, max_mib: u64) -> (Vec<Instance>, Vec<String>, Vec<String>) {
        let list = self.running_instances(DEPLOYMENT);
        assert_eq!(list.len(), 2, "two instances: {list:?}");
        assert_eq!(list.iter().map(|i| i.az.as_str()).collect::<Vec<_>>(), ["z1", "z2"], "one per AZ: {list:?}");
        let mut ips: Vec<&str> = list.iter().map(|i| i.ip.as_str()).collect();
        ips.sort();
        assert_eq!(ips, IPS, "the static IPs: {list:?}");
        let mut markers = Vec::new();
        let mut packages = Vec::new();
        for i in list.clone() {
            let (m, p) = self.check_instance(&i, min_mib, max_mib);
            markers.push(m);
            packages.push(p);
        }
        (list, markers, packages)
    }

    fn manifest(&self, disk_type: &str) -> PathBuf {
        let path = self.work.join(format!("manifest-{disk_type}.yml"));
        self.write_manifest(&path, DEPLOYMENT, STEMCELL, 2, &["z1", "z2"], &IPS, disk_type);
        path
    }

    #[allow(clippy::too_many_arguments)]
    fn write_manifest(
        &self,
        path: &Path,
        name: &str,
        stemcell: &str,
        instances: usize,
        azs: &[&str],
        ips: &[&str],
        disk_type: &str,
    ) {
        std::fs::write(
            path,
            format!(
                "name: {name}
releases:
- {{name: vmcpi-e2e, version: latest}}
stemcells:
- {{alias: default, name: {stemcell}, version: latest}}
update:
  # all instances at once: no canary, two in flight, and on the first deploy all AZs together (later
  # deploys update one AZ after the other: the director's rule)
  canaries: 0
  max_in_flight: 2
  initial_deploy_az_update_strategy: parallel
  canary_watch_time: 1000-300000
  update_watch_time: 1000-300000
instance_groups:
- name: status
  instances: {instances}
  azs: [{azs}]
  jobs:
  - {{name: status, release: vmcpi-e2e, properties: {{port: 8080}}}}
  vm_type: default
  stemcell: default
  persistent_disk_type: {disk_type}
  # no swap partition on the ephemeral disk: one partitioning step less at every boot under emulation
  env: {{bosh: {{swap_size: 0}}}}
  networks:
  - {{name: default, static_ips: [{ips}]}}
",
                azs = azs.join(", "),
                ips = ips.join(", ")
            ),
        )
        .unwrap();
    }

    /// The secrets no CPI output may hold: the director's admin password, both blobstore passwords, and any
    /// private key (the director's certificates' keys, the agents' NATS client keys the director signs for
    /// each VM and passes in create_vm's env).
    fn secrets(&self) -> Vec<String> {
        let mut s = vec![self.env("BOSH_CLIENT_SECRET").unwrap().to_string()];
        let settings: Value =
            serde_json::from_slice(&std::fs::read(self.state.join("agent-settings.json")).unwrap()).unwrap();
        s.push(settings["blobstore"]["options"]["password"].as_str().unwrap().to_string());
        let yml = std::fs::read_to_string(self.state.join("director/director.yml")).unwrap();
        if let Some(pw) =
            yml.lines().map(str::trim).filter_map(|l| l.strip_prefix("password: ")).find(|p| *p != "unused-trust-auth")
        {
            s.push(pw.to_string());
        }
        for k in std::fs::read_dir(self.state.join("certs")).unwrap().flatten() {
            if k.path().extension().is_some_and(|x| x == "key") {
                let pem = std::fs::read_to_string(k.path()).unwrap();
                // a line from the middle of the key: unique to it
                if let Some(line) = pem.lines().nth(5) {
                    s.push(line.to_string());
                }
            }
        }
        s.push("PRIVATE KEY".to_string());
        s
    }

    /// What the CPI wrote that the director logged: every task's `cpi` log, and in every task's debug log the
    /// CPI's responses and stderr (the requests are the director's own, redacted by it).
    fn cpi_output(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for id in self.task_ids() {
            let dir = self.tasks_dir().join(id.to_string());
            if let Ok(cpi) = std::fs::read_to_string(dir.join("cpi")) {
                out.push((format!("task {id} cpi"), cpi));
            }
            let debug = std::fs::read_to_string(dir.join("debug")).unwrap_or_default();
            let mut inside = false;
            let mut text = String::new();
            for l in debug.lines() {
                let entry =
                    l.len() > 3 && l.as_bytes()[1] == b',' && l.as_bytes()[2] == b' ' && l.as_bytes()[3] == b'[';
                if entry {
                    inside = l.contains("[external-cpi]") && l.contains("] response: ");
                }
                if inside {
                    text.push_str(l);
                    text.push('\n');
                }
            }
            out.push((format!("task {id} debug (CPI responses and stderr)"), text));
        }
        out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            say(&format!("failed: stopping the director and removing the VMs; logs stay in {}", self.work.display()));
        }
        self.teardown(!failed);
    }
}

/// The agent settings medium vmcpi made for `vm` (its volume's bytes, as text).
fn settings_medium(pool: &str, vm: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("settings.iso");
    let (ok, out) = virsh(&["vol-download", "--pool", pool, &format!("{vm}-settings.iso"), iso.to_str().unwrap()]);
    assert!(ok, "{out}");
    String::from_utf8_lossy(&std::fs::read(iso).unwrap()).into_owned()
}

fn domains_using(pool: &str) -> Vec<String> {
    let needle = format!("pool='{pool}'");
    let (_, names) = virsh(&["list", "--all", "--name"]);
    names
        .lines()
        .map(str::trim)
        .filter(|d| !d.is_empty() && virsh(&["dumpxml", d]).1.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn volumes(pool: &str) -> Vec<String> {
    let (ok, out) = virsh(&["vol-list", "--pool", pool]);
    if !ok {
        return Vec::new();
    }
    out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// The test stemcell (built and cached by tools/test-stemcell/build.sh).
fn stemcell_dir() -> PathBuf {
    let o = Command::new("bash")
        .arg(repo().join("tools/test-stemcell/build.sh"))
        .env("BOSH_AGENT", input("BOSH_AGENT", "bosh-agent"))
        .env("MONIT_TARBALL", input("MONIT_TARBALL", "monit-5.2.5.tar.gz"))
        .env("BOSH_DAVCLI", input("BOSH_DAVCLI", "director/davcli"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "tools/test-stemcell/build.sh:\n{}", tail(&String::from_utf8_lossy(&o.stderr), 4000));
    PathBuf::from(out.lines().last().unwrap().trim())
}

#[test]
fn a_director_deploys_recreates_repairs_and_deletes_through_vmcpi() {
    if !pieces_present() {
        return;
    }
    let total = Instant::now();
    let sc = stemcell_dir();
    let mut run = Run::new();
    let release = run.work.join("e2e-release.tgz");
    let o = Command::new("bash")
        .arg(repo().join("tools/test-release.sh"))
        .arg(&release)
        .env("BOSH_CLI", input("BOSH_CLI", "bosh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "tools/test-release.sh: {}", String::from_utf8_lossy(&o.stderr));
    say(&format!("stemcell and release ready after {:.0} s", total.elapsed().as_secs_f64()));

    run.phase("director-up", |r| r.director_up());
    let cpi_json = run.render_job();
    say(&format!("the CPI job's config/cpi.json renders agent.mbus {} and a dav blobstore", cpi_json["agent"]["mbus"]));

    // two CPIs, one pool each (two hosts in a real installation), as two AZs. A CPI config may name the pool
    // but not where it lives (a local path belongs in the job's own config): the operator makes the pools.
    for i in 0..2 {
        run.define_pool(i);
    }
    let cpi_config = run.work.join("cpi-config.yml");
    let wrapper = run.work.join("cpi");
    std::fs::write(
        &cpi_config,
        format!(
            "cpis:\n{}",
            (0..2)
                .map(|i| format!(
                    "- name: vmcpi-z{n}\n  type: vmcpi\n  exec_path: {w}\n  properties:\n    driver: {{pool: {p}}}\n",
                    n = i + 1,
                    w = wrapper.display(),
                    p = run.pools[i],
                ))
                .collect::<String>()
        ),
    )
    .unwrap();
    run.phase("update-cpi-config", |r| r.bosh(&["update-cpi-config", cpi_config.to_str().unwrap()]));

    let cloud_config = run.work.join("cloud-config.yml");
    std::fs::write(
        &cloud_config,
        format!(
            "azs:
- {{name: z1, cpi: vmcpi-z1, cloud_properties: {{serial_log: {w}/serial-z1.log}}}}
- {{name: z2, cpi: vmcpi-z2, cloud_properties: {{serial_log: {w}/serial-z2.log}}}}
vm_types:
- name: default
  cloud_properties:
    cpu: 1
    ram: 1024
    # the ephemeral disk the agent partitions and mounts at /var/vcap/data (no swap: env.bosh.swap_size 0)
    disk: 2048
    # the test stemcell boots its kernel directly (tools/test-stemcell/build.sh says why)
    kernel: {sc}/vmlinuz
    initrd: {sc}/initrd.img
    # no_timer_check: under emulation on a busy host the kernel's IO-APIC timer check can fail (a panic at boot)
    cmdline: root=LABEL=rootfs console=ttyS0 rw no_timer_check
disk_types:
- {{name: small, disk_size: 1024}}
- {{name: bigger, disk_size: 2048}}
networks:
- name: default
  type: manual
  subnets:
  - range: 10.0.2.0/24
    gateway: 10.0.2.2
    dns: [10.0.2.3]
    azs: [z1, z2]
    reserved: [10.0.2.1-10.0.2.9, 10.0.2.16-10.0.2.254]
    static: [{ips}]
    # QEMU user-mode networking: nothing on the host but loopback; the agents reach NATS and the blobstore
    # at 10.0.2.2, the host's 127.0.0.1
    cloud_properties: {{type: user}}
compilation:
  workers: 1
  az: z1
  vm_type: default
  network: default
  reuse_compilation_vms: true
  env: {{bosh: {{swap_size: 0}}}}
",
            w = run.work.display(),
            sc = sc.display(),
            ips = IPS.join(", ")
        ),
    )
    .unwrap();
    run.phase("update-cloud-config", |r| r.bosh(&["update-cloud-config", cloud_config.to_str().unwrap()]));

    let stemcell = sc.join(format!("{STEMCELL}.tgz"));
    run.phase("upload-stemcell", |r| r.bosh(&["upload-stemcell", stemcell.to_str().unwrap()]));
    let out = run.bosh(&["stemcells", "--json"]);
    let v: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let rows = v["Tables"][0]["Rows"].as_array().cloned().unwrap_or_default();
    let cpis: BTreeSet<&str> = rows.iter().filter_map(|r| r["cpi"].as_str()).collect();
    assert_eq!(cpis, BTreeSet::from(["vmcpi-z1", "vmcpi-z2"]), "one stemcell per CPI: {out}");
    for (i, pool) in run.pools.iter().enumerate() {
        let cid =
            rows.iter().find(|r| r["cpi"] == json!(format!("vmcpi-z{}", i + 1))).unwrap()["cid"].as_str().unwrap();
        assert!(volumes(pool).iter().any(|v| v == cid), "stemcell {cid} is in {pool}: {:?}", volumes(pool));
    }

    run.phase("upload-release", |r| r.bosh(&["upload-release", release.to_str().unwrap()]));

    // deploy: the package compiles on a compilation VM, then both instances at once
    let small = run.manifest("small");
    let out = run.phase("deploy", |r| r.bosh(&["-d", DEPLOYMENT, "deploy", small.to_str().unwrap(), "--tty"]));
    let compiled = out.lines().find(|l| l.contains("Compiling packages: statuspage/")).unwrap_or_default();
    say(&format!("compile: {}", compiled.trim()));
    assert!(!compiled.is_empty(), "the director compiled the package:\n{}", tail(&out, 3000));
    let deploy_calls = &run.phases.last().unwrap().calls;
    assert_eq!(deploy_calls.get("create_vm"), Some(&3), "a compilation VM and two instances: {deploy_calls:?}");
    let (first, markers, packages) = run.phase("check deploy", |r| r.check_all(800, 1100));
    assert_eq!(packages[0], packages[1], "compiled once, on the compilation VM: {packages:?}");
    // the secrets the leak check below looks for are real: they reached the VM's settings medium (the one place
    // they belong), the blobstore password from the CPI's config and the NATS client key from create_vm's env
    let medium = settings_medium(&run.pools[0], &first[0].vm);
    let blob_pw = run.secrets()[1].clone();
    assert!(medium.contains(&blob_pw), "the agents' blobstore password is in the settings medium");
    assert!(
        medium.contains("PRIVATE KEY"),
        "the agent's NATS client key (env.bosh.mbus.cert) is in the settings medium"
    );
    assert!(medium.contains(&format!("nats://10.0.2.2:{}", run.ports.nats)), "the mbus URL from the CPI job");

    // recreate one instance: a new VM, the same disk and its data
    let target = format!("status/{}", first[0].id);
    run.phase("recreate", |r| r.bosh(&["-d", DEPLOYMENT, "recreate", &target, "--tty"]));
    let (after, m, _) = run.phase("check recreate", |r| r.check_all(800, 1100));
    assert_ne!(after[0].vm, first[0].vm, "a new VM");
    assert_eq!(after[0].disk, first[0].disk, "the same persistent disk");
    assert_eq!(m, markers, "the marker on the persistent disk survived the new VM");
    assert!(!virsh(&["dominfo", &first[0].vm]).0, "the old VM is gone");
    assert_eq!(after[1].vm, first[1].vm, "the other instance was left alone");

    // a VM deleted behind the director's back, through libvirt: cck finds and recreates it
    let lost = after[1].vm.clone();
    assert!(virsh(&["destroy", &lost]).0);
    assert!(virsh(&["undefine", &lost, "--nvram"]).0);
    let out = run.phase("cck", |r| r.bosh(&["-d", DEPLOYMENT, "cck", "--auto", "--tty"]));
    assert!(out.contains(&lost), "cck names the missing VM {lost}:\n{}", tail(&out, 3000));
    let (after, m, _) = run.phase("check cck", |r| r.check_all(800, 1100));
    assert_ne!(after[1].vm, lost, "cck made a new VM");
    assert_eq!(m, markers, "the marker survived");
    let left: Vec<String> = volumes(&run.pools[1]).into_iter().filter(|v| v.starts_with(&lost)).collect();
    assert!(left.is_empty(), "the lost VM's volumes were removed (delete_vm of a missing domain): {left:?}");

    // stop --hard: the VM goes, the disk stays; start: a new VM with the disk
    let target = format!("status/{}", after[0].id);
    let before = after.clone();
    run.phase("stop --hard", |r| r.bosh(&["-d", DEPLOYMENT, "stop", &target, "--hard", "--tty"]));
    assert!(!virsh(&["dominfo", &before[0].vm]).0, "stop --hard deleted the VM");
    assert!(volumes(&run.pools[0]).iter().any(|v| v.starts_with(&before[0].disk)), "the disk stays");
    let stopped = run.instances();
    assert!(stopped[0].vm.is_empty(), "no VM: {stopped:?}");
    run.phase("start", |r| r.bosh(&["-d", DEPLOYMENT, "start", &target, "--tty"]));
    let (after, m, _) = run.phase("check start", |r| r.check_all(800, 1100));
    assert_ne!(after[0].vm, before[0].vm, "a new VM");
    assert_eq!(after[0].disk, before[0].disk, "the same disk");
    assert_eq!(m, markers, "the marker survived");

    // a bigger persistent disk: this director migrates it (enable_cpi_resize_disk is false in the kit)
    let bigger = run.manifest("bigger");
    let before = after;
    run.phase("disk size change", |r| r.bosh(&["-d", DEPLOYMENT, "deploy", bigger.to_str().unwrap(), "--tty"]));
    let calls = run.phases.last().unwrap().calls.clone();
    let how = if calls.get("resize_disk").copied().unwrap_or(0) > 0 { "resize_disk" } else { "disk migration" };
    say(&format!(
        "disk size change ran as {how}: create_disk {}, attach_disk {}, detach_disk {}, delete_disk {}, resize_disk {}",
        calls.get("create_disk").unwrap_or(&0),
        calls.get("attach_disk").unwrap_or(&0),
        calls.get("detach_disk").unwrap_or(&0),
        calls.get("delete_disk").unwrap_or(&0),
        calls.get("resize_disk").unwrap_or(&0)
    ));
    let (after, m, _) = run.phase("check disk size change", |r| r.check_all(1700, 2100));
    assert_eq!(m, markers, "the marker survived the disk change");
    // the director keeps a migrated disk as an orphan (deleted by `clean-up --all` below, or after 5 days)
    let orphans = run.orphaned_disks();
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a.vm, b.vm, "the same VMs");
        if how == "disk migration" {
            assert_ne!(a.disk, b.disk, "a new disk");
            assert!(orphans.contains(&b.disk), "the old disk {} is an orphaned disk: {orphans:?}", b.disk);
        }
    }

    // delete everything
    run.phase("delete-deployment", |r| r.bosh(&["-d", DEPLOYMENT, "delete-deployment", "--tty"]));
    for pool in &run.pools {
        assert!(domains_using(pool).is_empty(), "no VM left in {pool}");
    }

    // the second case: the vSphere-family stemcell (OVF + stream-optimised VMDK, the agent's settings from the
    // CD-ROM's `env` file, disks by SCSI target), one instance with a persistent disk in z2. It has the same
    // OS and version as the first, so the director reuses the compiled package: no compilation VM.
    let vs_stemcell = sc.join(format!("{VS_STEMCELL}.tgz"));
    run.phase("upload-stemcell (vSphere family)", |r| r.bosh(&["upload-stemcell", vs_stemcell.to_str().unwrap()]));
    let out = run.bosh(&["stemcells", "--json"]);
    let v: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let vs_cid = v["Tables"][0]["Rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == VS_STEMCELL && r["cpi"] == "vmcpi-z2")
        .and_then(|r| r["cid"].as_str())
        .unwrap_or_else(|| panic!("no {VS_STEMCELL} on vmcpi-z2: {out}"))
        .to_string();
    let vs_manifest = run.work.join("manifest-vsphere.yml");
    run.write_manifest(&vs_manifest, VS_DEPLOYMENT, VS_STEMCELL, 1, &["z2"], &[IPS[1]], "small");
    run.phase("deploy (vSphere family)", |r| {
        r.bosh(&["-d", VS_DEPLOYMENT, "deploy", vs_manifest.to_str().unwrap(), "--tty"])
    });
    let calls = run.phases.last().unwrap().calls.clone();
    assert_eq!(calls.get("create_vm"), Some(&1), "one VM, no compilation VM (the package is reused): {calls:?}");
    run.phase("check (vSphere family)", |r| {
        let list = r.running_instances(VS_DEPLOYMENT);
        assert_eq!(list.len(), 1, "{list:?}");
        let (ok, root) = virsh(&["vol-dumpxml", "--pool", &r.pools[1], &format!("{}-root", list[0].vm)]);
        assert!(ok && root.contains(&vs_cid), "{} boots the vSphere-family stemcell {vs_cid}: {root}", list[0].vm);
        let (marker, _) = r.check_instance(&list[0], 800, 1100);
        assert!(!markers.contains(&marker), "a new disk with its own marker");
    });
    run.phase("delete-deployment (vSphere family)", |r| r.bosh(&["-d", VS_DEPLOYMENT, "delete-deployment", "--tty"]));

    for name in [STEMCELL, VS_STEMCELL] {
        let sc_name = format!("{name}/0.1");
        run.phase(&format!("delete-stemcell {name}"), |r| r.bosh(&["delete-stemcell", &sc_name, "--tty"]));
    }
    let orphans = run.orphaned_disks();
    assert_eq!(orphans.len(), 5, "the migrated disks and the deployments' disks are orphans: {orphans:?}");
    run.phase("clean-up --all", |r| r.bosh(&["clean-up", "--all", "--tty"]));
    let deleted = run.phases.last().unwrap().calls.get("delete_disk").copied().unwrap_or(0);
    assert_eq!(deleted, 5, "clean-up --all deleted the orphaned disks through their CPIs");
    assert!(run.orphaned_disks().is_empty(), "no orphaned disk left");
    for pool in &run.pools {
        assert!(domains_using(pool).is_empty(), "no domain left in {pool}");
        assert_eq!(volumes(pool), Vec::<String>::new(), "nothing left in {pool}");
    }
    let markers_left: Vec<PathBuf> = std::fs::read_dir(run.cpi_state.join("inflight"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(markers_left.is_empty(), "in-flight markers left: {markers_left:?}");
    let scratch: Vec<PathBuf> = std::fs::read_dir(run.cpi_state.join("work"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "scratch space left: {scratch:?}");
    let tripped = std::fs::read_to_string(run.work.join("logs/tripwire.log")).expect("the CPI ran under the tripwires");
    assert!(tripped.is_empty(), "the CPI ran programs a director VM does not have:\n{tripped}");
    // no port forwards were configured, and no domain is left to hold one; no QEMU process of ours remains
    let qemu = Command::new("pgrep").args(["-af", "qemu-system"]).output().unwrap();
    let ours: Vec<String> = String::from_utf8_lossy(&qemu.stdout)
        .lines()
        .filter(|l| run.pools.iter().any(|p| l.contains(p.as_str())) || l.contains(run.work.to_str().unwrap()))
        .map(str::to_string)
        .collect();
    assert!(ours.is_empty(), "QEMU processes of this test left: {ours:?}");

    // no secret in anything the CPI wrote that the director logged
    let secrets = run.secrets();
    let mut leaks = Vec::new();
    let outputs = run.cpi_output();
    let bytes: usize = outputs.iter().map(|(_, t)| t.len()).sum();
    for (what, text) in &outputs {
        for s in &secrets {
            if !s.is_empty() && text.contains(s.as_str()) {
                leaks.push(format!(
                    "{what}: {}",
                    if s.contains("PRIVATE") {
                        s.clone()
                    } else {
                        format!("secret #{}", secrets.iter().position(|x| x == s).unwrap())
                    }
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in CPI output: {leaks:?}");
    say(&format!(
        "no secret ({} checked) in {} KiB of CPI output in {} task logs",
        secrets.len(),
        bytes / 1024,
        outputs.len()
    ));

    let summary: Vec<String> = run
        .phases
        .iter()
        .map(|p| format!("{} {:.0} s/{} calls", p.name, p.secs, p.calls.values().sum::<usize>()))
        .collect();
    say(&format!("total {:.0} s: {}", total.elapsed().as_secs_f64(), summary.join(", ")));
}
