//! Fleets: failover between pools (per-pool circuit breakers), several launchers on one queue, host power.
use super::*;
use serde_json::json;
use std::collections::BTreeMap;

/// A timeline of one scenario, printed at the end (run with `--nocapture` to see it).
pub struct Timeline {
    t0: Instant,
    pub lines: Vec<String>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline { t0: Instant::now(), lines: Vec::new() }
    }
    pub fn at(&mut self, what: &str) {
        let l = format!("t={:6.2}s  {what}", self.t0.elapsed().as_secs_f64());
        eprintln!("{l}");
        self.lines.push(l);
    }
    pub fn print(&self, title: &str) {
        eprintln!("---- timeline: {title} ----");
        for l in &self.lines {
            eprintln!("{l}");
        }
        eprintln!("---- end of timeline ----");
    }
}

/// Successful create_vm calls per job in the fake CPI whose state is in `dir`.
fn creates_in(dir: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default().lines() {
        let c: Vec<&str> = l.split(' ').collect();
        if c[0] == "create_vm" {
            *m.entry(c[2].to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn status(s: &Setup) -> String {
    let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The value of one metric line (`name{labels}`), if present.
fn metric(s: &Setup, line_start: &str) -> Option<f64> {
    let (_, body) = s.http_get("/metrics", None);
    body.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

const TWO_HOSTS: &str = r#"
[[pool]]
name = "kvm1"
tags = ["queue=vm", "os=linux"]
cpi = {CPI}
stemcell = { image = "{IMAGE}" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
limits = { max_vms = 4, max_concurrent_creates = 4 }
create_attempts = 3
[[pool]]
name = "kvm2"
tags = ["queue=vm", "os=linux"]
cpi = {CPI2}
stemcell = { cid = "sc-kvm2" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
limits = { max_vms = 4, max_concurrent_creates = 4 }
create_attempts = 3
"#;

/// Host kvm1 is down when the launcher starts (its create_stemcell fails): the launcher runs anyway, kvm1's
/// breaker starts open, and its jobs go to kvm2. kvm1 comes back: a probe (`info`, then the stemcell upload)
/// makes it half-open, one create closes it. kvm1 goes down again while jobs are placed there: after two
/// failed creates its breaker opens and the waiting jobs move to kvm2. No job ever gets two VMs.
#[test]
fn failover_between_pools_with_circuit_breakers() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.qcow2");
    std::fs::write(&image, b"fake image").unwrap();
    let pools = TWO_HOSTS.replace("{IMAGE}", &image.display().to_string());
    let s = Setup::new("breaker = { failures = 2, open_seconds = 2, max_open_seconds = 4 }", &pools);
    let cpi2 = s.dir.path().join("cpi2");
    let mut tl = Timeline::new();
    s.script(json!({"down": true}));
    tl.at("host kvm1 is down (its CPI cannot reach it); kvm2 is up");
    let _a1 = s.agents(300);
    let _a2 = s.agents_in(cpi2.clone(), 300);
    let mut l = s.spawn();
    wait_for(20, "kvm1's breaker to open at start", &|| s.log(), || s.log().contains("pool=kvm1 breaker open"));
    tl.at("launcher started; create_stemcell of kvm1 failed: kvm1's breaker starts open, the launcher runs on");
    let first: Vec<String> = (0..3).map(|_| s.bk.add_job(&["queue=vm", "os=linux"], 0)).collect();
    tl.at("3 jobs scheduled");
    wait_for(30, "the first jobs to pass on kvm2", &|| s.log(), || first.iter().all(|j| s.bk.job(j).state == "passed"));
    let on2 = creates_in(&cpi2);
    assert!(first.iter().all(|j| on2.get(j) == Some(&1)), "every job ran on kvm2 once: {on2:?}");
    assert!(creates_in(&s.cpi_dir()).is_empty());
    tl.at("the 3 jobs ran on kvm2 (one VM each) and passed");
    let st = status(&s);
    assert!(st.contains("pool      kvm1 breaker=open"), "{st}");
    assert!(st.contains("pool      kvm2 breaker=closed"), "{st}");
    assert_eq!(metric(&s, "launcher_pool_breaker{pool=\"kvm1\",state=\"open\"}"), Some(1.0));
    tl.at("`status` and /metrics show kvm1 open, kvm2 closed");

    // kvm1 comes back: the probe finds it, uploads its stemcell, and one create closes the breaker
    s.script(json!({}));
    tl.at("host kvm1 is back");
    wait_for(20, "kvm1 to be half-open", &|| s.log(), || s.log().contains("pool=kvm1 breaker half-open"));
    assert!(s.log().contains("pool=kvm1 stemcell=sc-fake"), "{}", s.log());
    tl.at("probe: kvm1's CPI answers info, its stemcell is uploaded: half-open");
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    wait_for(20, "kvm1's breaker to close", &|| s.log(), || s.log().contains("pool=kvm1 breaker closed"));
    wait_for(20, "the job to pass", &|| s.log(), || s.bk.job(&j).state == "passed");
    assert_eq!(creates_in(&s.cpi_dir()).get(&j), Some(&1));
    wait_for(20, "the VM on kvm1 to be deleted", &|| s.log(), || s.vms().is_empty());
    tl.at("one job made its VM on kvm1 (breaker closed), passed, its VM was deleted");

    // kvm1 fails again while jobs are placed there: they move to kvm2
    s.script(json!({"down": true}));
    tl.at("host kvm1 goes down again");
    let more: Vec<String> = (0..4).map(|_| s.bk.add_job(&["queue=vm", "os=linux"], 0)).collect();
    tl.at("4 jobs scheduled (spread: some are placed on kvm1)");
    wait_for(20, "kvm1's breaker to open again", &|| s.log(), || {
        s.log().matches("pool=kvm1 breaker open").count() >= 2
    });
    tl.at("two create_vm on kvm1 failed: breaker open");
    wait_for(40, "every job to pass", &|| s.log(), || more.iter().all(|j| s.bk.job(j).state == "passed"));
    let (on1, on2) = (creates_in(&s.cpi_dir()), creates_in(&cpi2));
    for j in &more {
        let n = on1.get(j).unwrap_or(&0) + on2.get(j).unwrap_or(&0);
        assert_eq!(n, 1, "job {j} got {n} VMs: {on1:?} {on2:?}\n{}", s.log());
        assert!(s.bk.job(j).finish.is_none(), "no job failed with -1");
    }
    let moved = s.log().matches("failover: pool kvm1").count();
    assert!(moved >= 1, "jobs moved from kvm1 to kvm2\n{}", s.log());
    tl.at(&format!("{moved} job(s) waiting on kvm1 moved to kvm2; all 4 passed with one VM each"));
    assert!(
        metric(&s, "launcher_jobs_failed_over_total{pool=\"kvm1\",to=\"kvm2\"}").is_some_and(|v| v >= 1.0),
        "{}",
        s.http_get("/metrics", None).1
    );
    wait_for(20, "every VM to be deleted", &|| s.log(), || s.vms().is_empty() && s.vms_in(&cpi2).is_empty());
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    for line in s.log().lines().filter(|l| l.contains("breaker") || l.contains("failover")) {
        tl.lines.push(format!("    log: {line}"));
    }
    tl.print("host down → jobs elsewhere");
}

/// A second launcher process beside the one of `s`: its own id, ledger, port, stack key and host (the fake
/// CPI whose state is in `cpi2`). Returns its config path.
fn second_launcher_config(s: &Setup) -> (PathBuf, u16) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let port2 = free_port();
    let cpi1 = format!("{}\"", s.cpi_dir().display());
    let cpi2 = format!("{}\"", s.dir.path().join("cpi2").display());
    let text = text
        .replace("launcher_id = \"test-launcher\"", "launcher_id = \"test-launcher-2\"")
        .replace(
            &format!("{}\"", s.dir.path().join("ledger").display()),
            &format!("{}\"", s.dir.path().join("ledger2").display()),
        )
        .replace(&format!("127.0.0.1:{}", s.port), &format!("127.0.0.1:{port2}"))
        .replace("stack_key = \"test-stack\"", "stack_key = \"test-stack-2\"")
        .replace(&cpi1, &cpi2);
    assert!(text.contains("ledger2") && text.contains("cpi2\"") && !text.contains(&cpi1));
    let path = s.dir.path().join("launcher2.toml");
    std::fs::write(&path, text).unwrap();
    (path, port2)
}

fn spawn_with(config: &Path, log: &Path) -> Launcher {
    let err = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(launcher_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("BK_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap();
    Launcher { child }
}

/// SIGKILLs the fake CPI's create_vm processes in flight (their host dies with the launcher).
fn kill_cpi_creates(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("pid.").and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains("fake_cpi.pl") {
            Command::new("/bin/kill").args(["-s", "KILL", &pid.to_string()]).status().unwrap();
            n += 1;
        }
        let _ = std::fs::remove_file(e.path());
    }
    n
}

/// Two launcher processes on one queue, each with its own stack key and host: the load is shared, no job gets
/// two VMs, and when one launcher is killed with -9 (its host and its creates in flight with it), the jobs it
/// had reserved come back when their reservations run out and the other launcher runs them. Restarted, the
/// killed launcher settles its records without making a VM.
#[test]
fn two_launchers_share_a_queue_and_survive_a_kill_9() {
    let pool = POOL.replace(
        "limits = { max_vms = 4, max_concurrent_creates = 4 }",
        "limits = { max_vms = 2, max_concurrent_creates = 2 }",
    );
    let s = Setup::new("", &pool);
    let cpi2 = s.dir.path().join("cpi2");
    let (config2, port2) = second_launcher_config(&s);
    let log2 = s.dir.path().join("launcher2.log");
    let both_logs = || {
        format!(
            "== launcher 1 ==\n{}\n== launcher 2 ==\n{}",
            s.log(),
            std::fs::read_to_string(&log2).unwrap_or_default()
        )
    };
    s.script(json!({"create_vm": {"delay_ms": 200}}));
    std::fs::write(cpi2.join("script.json"), json!({"create_vm": {"delay_ms": 200}}).to_string()).unwrap();
    let _a1 = s.agents(300);
    let _a2 = s.agents_in(cpi2.clone(), 300);
    let mut l1 = s.spawn();
    let mut l2 = spawn_with(&config2, &log2);
    let jobs: Vec<String> = (0..8).map(|_| s.bk.add_job(&["queue=vm", "os=linux"], 0)).collect();
    wait_for(60, "the first 8 jobs to pass", &both_logs, || jobs.iter().all(|j| s.bk.job(j).state == "passed"));
    let (c1, c2) = (creates_in(&s.cpi_dir()), creates_in(&cpi2));
    assert!(!c1.is_empty() && !c2.is_empty(), "both launchers ran jobs: {c1:?} {c2:?}");
    for j in &jobs {
        let n = c1.get(j).unwrap_or(&0) + c2.get(j).unwrap_or(&0);
        assert_eq!(n, 1, "job {j} got {n} VMs\n{}", both_logs());
    }
    // launcher 1's host hangs in create_vm; it reserves jobs, then it dies with its host
    s.script(json!({"create_vm": {"delay_ms": 60000}}));
    let more: Vec<String> = (0..6).map(|_| s.bk.add_job(&["queue=vm", "os=linux"], 0)).collect();
    wait_for(20, "launcher 1 to be creating", &both_logs, || {
        std::fs::read_dir(s.cpi_dir()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("pid."))
    });
    let held: Vec<String> =
        more.iter().filter(|j| s.bk.job(j).reserved_by.as_deref() == Some("test-stack")).cloned().collect();
    l1.kill9();
    // the CPI processes it started have written their pid files within this (perl starts in ~50 ms)
    std::thread::sleep(Duration::from_millis(700));
    let killed = kill_cpi_creates(&s.cpi_dir());
    assert!(!held.is_empty() && killed >= 1, "launcher 1 held jobs when it died");
    wait_for(60, "every job to pass", &both_logs, || more.iter().all(|j| s.bk.job(j).state == "passed"));
    let (c1, c2) = (creates_in(&s.cpi_dir()), creates_in(&cpi2));
    for j in &more {
        let n = c1.get(j).unwrap_or(&0) + c2.get(j).unwrap_or(&0);
        assert_eq!(n, 1, "job {j} got {n} VMs\n{}", both_logs());
        assert!(s.bk.job(j).finish.is_none());
    }
    for j in &held {
        assert_eq!(c2.get(j), Some(&1), "launcher 2 ran job {j} after the reservation ran out");
        assert!(s.bk.job(j).lapses >= 1, "job {j}'s reservation ran out");
    }
    // launcher 1 comes back: its interrupted creates made nothing, their jobs are done: no new VM
    s.script(json!({}));
    let mut l1 = s.spawn();
    wait_for(30, "launcher 1 to settle its ledger", &both_logs, || status(&s).contains("no open records"));
    wait_for(20, "every VM to go", &both_logs, || s.vms().is_empty() && s.vms_in(&cpi2).is_empty());
    assert_eq!(creates_in(&s.cpi_dir()), c1, "no VM made after the restart");
    let (code, _) = http_get(port2, "/healthz", None);
    assert_eq!(code, 200);
    for l in [&mut l1, &mut l2] {
        l.signal("TERM");
        assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", both_logs());
    }
    assert_eq!(s.bk.st().stacks.len(), 0, "both stacks deregistered");
}

/// One launcher serves two queues, one stack each: pools of their own (vm on one host, gpu on another) and a
/// pool both share (`queue=*`, os=bsd). Every job runs once, in a pool of its queue, its VM's agent has its
/// queue's tag (a clustered agent acquires only jobs of its queue), and each job is reserved by its queue's stack.
#[test]
fn one_launcher_serves_several_queues_with_own_and_shared_pools() {
    let pools = r#"
[[pool]]
name = "vm-only"
tags = ["queue=vm", "os=linux"]
cpi = {CPI}
stemcell = { cid = "sc-1" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
[[pool]]
name = "gpu-only"
tags = ["queue=gpu", "os=linux"]
cpi = {CPI2}
stemcell = { cid = "sc-2" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
[[pool]]
name = "shared"
tags = ["queue=*", "os=bsd"]
cpi = {CPI}
stemcell = { cid = "sc-1" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
"#;
    let s = Setup::new("", pools);
    let text = std::fs::read_to_string(&s.config).unwrap().replace("queue = \"vm\"", "queues = [\"vm\", \"gpu\"]");
    std::fs::write(&s.config, text).unwrap();
    let cpi2 = s.dir.path().join("cpi2");
    let _a1 = s.agents(200);
    let _a2 = s.agents_in(cpi2.clone(), 200);
    let mut l = s.spawn();
    let vm: Vec<String> = (0..2).map(|_| s.bk.add_job(&["queue=vm", "os=linux"], 0)).collect();
    let gpu: Vec<String> = (0..2).map(|_| s.bk.add_job(&["queue=gpu", "os=linux"], 0)).collect();
    let bsd_vm = s.bk.add_job(&["queue=vm", "os=bsd"], 0);
    let bsd_gpu = s.bk.add_job(&["queue=gpu", "os=bsd"], 0);
    // a queue this launcher does not serve: its stack never lists it
    let other = s.bk.add_job(&["queue=other", "os=linux"], 0);
    let all: Vec<String> = vm.iter().chain(&gpu).chain([&bsd_vm, &bsd_gpu]).cloned().collect();
    wait_for(30, "every job of both queues to pass", &|| s.log(), || all.iter().all(|j| s.bk.job(j).state == "passed"));
    {
        let st = s.bk.st();
        assert!(st.stacks.contains("test-stack-vm") && st.stacks.contains("test-stack-gpu"), "{:?}", st.stacks);
    }
    let (c1, c2) = (creates_in(&s.cpi_dir()), creates_in(&cpi2));
    for j in vm.iter().chain([&bsd_vm, &bsd_gpu]) {
        assert_eq!(c1.get(j), Some(&1), "job {j} ran on host 1: {c1:?} {c2:?}");
    }
    for j in &gpu {
        assert_eq!(c2.get(j), Some(&1), "job {j} ran on host 2: {c1:?} {c2:?}");
        assert!(!c1.contains_key(j));
    }
    assert!(!c1.contains_key(&other) && !c2.contains_key(&other));
    assert_eq!(s.bk.job(&other).state, "scheduled");
    assert_eq!(s.bk.job(&other).reservations, 0);
    // each job was reserved by its own queue's stack, also those of the shared pool
    for (j, stack) in vm
        .iter()
        .map(|j| (j, "test-stack-vm"))
        .chain(gpu.iter().map(|j| (j, "test-stack-gpu")))
        .chain([(&bsd_vm, "test-stack-vm"), (&bsd_gpu, "test-stack-gpu")])
    {
        let stacks: Vec<String> = s.bk.job(j).reserved_stacks.into_iter().collect();
        assert_eq!(stacks, [stack], "job {j}");
    }
    // the shared pool's agents get their job's queue (a clustered agent acquires only jobs of its queue)
    let calls = std::fs::read_to_string(s.cpi_dir().join("calls.log")).unwrap();
    for (j, q) in [(&bsd_vm, "queue=vm"), (&bsd_gpu, "queue=gpu")] {
        let line = calls.lines().find(|l| l.starts_with("create_vm ") && l.contains(j.as_str())).unwrap();
        let tags: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
        assert!(tags.contains(&q) && tags.contains(&"os=bsd"), "{line}");
    }
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    assert!(s.bk.st().stacks.is_empty(), "both stacks deregistered");
}

/// Host power management with a stand-in host whose CPI answers only 1.5 s after its power_on command ran.
/// The host is asleep at start; a job that the always-on pool can take does not wake it; a job that waits
/// for capacity does: power_on, the CPI answers, the VM is made there, the job passes, the VM is deleted, and
/// after 2 idle seconds power_off runs — never while the host has a VM.
#[test]
fn host_power_wake_on_demand_and_power_off_when_idle() {
    let pools = r#"
[[pool]]
name = "always"
tags = ["queue=vm", "os=linux"]
cpi = {CPI2}
stemcell = { cid = "sc-2" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
limits = { max_vms = 1 }
[[pool]]
name = "sleepy"
tags = ["queue=vm", "os=linux"]
cpi = {CPI}
stemcell = { cid = "sc-1" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
power_on = ["/usr/bin/perl", "@POWER@", "on", "@DIR@"]
power_off = ["/usr/bin/perl", "@POWER@", "off", "@DIR@"]
boot_grace_seconds = 20
idle_power_off_seconds = 2
"#;
    let s = Setup::new("", pools);
    let power = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/launcher/fake_power.pl");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("@POWER@", &power.display().to_string())
        .replace("@DIR@", &s.cpi_dir().display().to_string());
    std::fs::write(&s.config, text).unwrap();
    s.script(json!({"power": {"boot_ms": 1500}}));
    let cpi2 = s.dir.path().join("cpi2");
    let power_log = || std::fs::read_to_string(s.cpi_dir().join("power.log")).unwrap_or_default();
    let _a1 = s.agents(1500);
    let _a2 = s.agents_in(cpi2.clone(), 4000);
    let mut tl = Timeline::new();
    let mut l = s.spawn();
    wait_for(20, "the sleepy host to be seen asleep", &|| s.log(), || {
        s.log().contains("pool=sleepy host is off (asleep) at start")
    });
    tl.at("launcher started: host of pool sleepy is off (its CPI does not answer); pool always is on");
    let a = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    wait_for(20, "job A to run on pool always", &|| s.log(), || s.bk.job(&a).state == "running");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(power_log(), "", "no wake for a job an awake pool took");
    assert_eq!(creates_in(&cpi2).get(&a), Some(&1));
    tl.at("job A runs on pool always (its only slot): no demand elsewhere, sleepy stays off");
    let b = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    tl.at("job B scheduled: pool always is full");
    wait_for(20, "power_on", &|| s.log(), || power_log().starts_with("on "));
    tl.at("power_on ran for sleepy (demand that no awake pool can meet)");
    wait_for(20, "the host's CPI to answer", &|| s.log(), || {
        s.log().contains("pool=sleepy host power on: its CPI answers info")
    });
    tl.at("sleepy's CPI answers info: host on");
    wait_for(20, "job B to run on sleepy", &|| s.log(), || s.bk.job(&b).state == "running");
    assert_eq!(creates_in(&s.cpi_dir()).get(&b), Some(&1), "B's VM is on sleepy");
    tl.at("job B's VM made on sleepy; B runs");
    wait_for(20, "job B to pass and its VM to go", &|| s.log(), || {
        s.bk.job(&b).state == "passed" && s.vms().is_empty()
    });
    tl.at("job B passed; its VM deleted: sleepy is idle");
    wait_for(20, "power_off", &|| s.log(), || power_log().contains("\noff "));
    let log = power_log();
    let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!((lines[0][0], lines[1][0]), ("on", "off"));
    assert_eq!(lines[1][2], "0", "powered off with no VM on the host: {log}");
    let idle_ms: i64 = lines[1][1].parse::<i64>().unwrap() - lines[0][1].parse::<i64>().unwrap();
    assert!(idle_ms >= 1500 + 2000, "on for boot + idle at least: {idle_ms} ms");
    tl.at(&format!("power_off ran after 2 s idle (no VM on the host); host was on for {idle_ms} ms"));
    // the launcher never called create_vm while the host was asleep or booting
    let calls = std::fs::read_to_string(s.cpi_dir().join("calls.log")).unwrap_or_default();
    assert!(!calls.contains("create_vm_asleep"), "{calls}");
    wait_for(10, "status to show sleepy off", &|| s.log(), || {
        status(&s).contains("pool      sleepy breaker=closed power=off")
    });
    assert_eq!(metric(&s, "launcher_pool_power{pool=\"sleepy\",state=\"off\"}"), Some(1.0));
    tl.at("`status` and /metrics show sleepy power=off");
    wait_for(20, "job A to pass", &|| s.log(), || s.bk.job(&a).state == "passed");
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    for line in s.log().lines().filter(|l| l.contains("host power") || l.contains("power_on")) {
        tl.lines.push(format!("    log: {line}"));
    }
    tl.print("demand → host woken → VM → idle → host off");
}
