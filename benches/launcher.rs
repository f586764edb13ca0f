//! agent-launcher figures (`cargo bench --bench launcher`), printed, not asserted:
//! 1. CPU time of one poll with 10 000 scheduled jobs across 20 pools: listing 10 pages of 1 000 jobs from
//!    the fake Stacks server over HTTP, decoding, sorting, and planning (matching, flavors, capacity, IPs).
//! 2. Time from a job appearing in the queue to its create_vm call, with the built `agent-launcher` and a
//!    CPI that records the moment it is started.
#[path = "../tests/launcher/fake_bk.rs"]
#[allow(dead_code)]
mod fake_bk;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vmcpi::launcher::buildkite::{Queue, Stacks};
use vmcpi::launcher::config::Config;
use vmcpi::launcher::ledger::State;
use vmcpi::launcher::plan::{plan, Decision, PoolInfo};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn config(endpoint: &str, pools: usize, extra_pool: &str, poll_ms: u64, ledger: &Path, cpi: &str) -> String {
    let mut t = format!(
        "launcher_id = \"bench\"\nledger_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\npoll_interval_ms = {poll_ms}\n[buildkite]\nendpoint = \"{endpoint}\"\ntoken_env = \"BK_TOKEN\"\nqueue = \"vm\"\nstack_key = \"bench\"\nmax_pages = 10\n",
        ledger.display(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    for p in 0..pools {
        t.push_str(&format!(
            "[[pool]]\nname = \"p{p}\"\ntags = [\"queue=vm\", \"pool=p{p}\", \"os=*\"]\ncpi = {cpi}\nstemcell = {{ cid = \"sc\" }}\nnetworks.n = {{ type = \"manual\", static_ips = [\"10.{p}.0.1-10.{p}.0.200\"], netmask = \"255.255.0.0\" }}\nflavors.small = {{ cpu = 1, ram = 1024 }}\nflavors.large = {{ cpu = 4, ram = 8192 }}\nlimits = {{ max_vms = 100, cpu = 200, ram_mb = 400000, max_concurrent_creates = 100, reserve_smallest = true }}\n{extra_pool}\n"
        ));
    }
    t
}

fn poll_cpu() {
    let bk = fake_bk::FakeBk::start("bench-token");
    for i in 0..10_000u32 {
        let pool = i % 20;
        let flavor = if i % 7 == 0 { "large" } else { "small" };
        bk.add_job(
            &["queue=vm", &format!("pool=p{pool}"), &format!("os=linux-{}", i % 3), &format!("flavor={flavor}")],
            (i % 5) as i64,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config(&bk.url, 20, "", 1000, &dir.path().join("l"), "[\"/bin/true\"]");
    let cfg = Config::parse(&text, Path::new("bench.toml")).unwrap();
    let infos: Vec<PoolInfo> = cfg.pools.iter().map(PoolInfo::new).collect();
    let mut src = Stacks::new(&cfg, "bench-token");
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    let mut starts = 0;
    for _ in 0..5 {
        let (c0, w0) = (thread_cpu(), Instant::now());
        let listing = src.list().unwrap();
        assert_eq!(listing.jobs.len(), 10_000);
        let d = plan(&cfg, &infos, &State::default(), &HashSet::new(), &listing, &HashSet::new());
        starts = d.iter().filter(|d| matches!(d, Decision::Start { .. })).count();
        cpu.push(thread_cpu() - c0);
        wall.push(w0.elapsed());
    }
    // planning alone (no HTTP, no JSON)
    let listing = src.list().unwrap();
    let c0 = thread_cpu();
    for _ in 0..5 {
        plan(&cfg, &infos, &State::default(), &HashSet::new(), &listing, &HashSet::new());
    }
    let plan_cpu = (thread_cpu() - c0) / 5;
    cpu.sort();
    wall.sort();
    println!("poll of 10000 scheduled jobs across 20 pools (10 pages x 1000, HTTP + JSON + sort + plan), 5 runs:");
    println!(
        "  launcher thread CPU time: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(cpu[2]),
        ms(cpu[0]),
        ms(cpu[4])
    );
    println!("  wall time (incl. the fake server on the same 2 cores): median {:.1} ms", ms(wall[2]));
    println!(
        "  of which plan() alone: {:.1} ms CPU; jobs started by the plan: {starts} (capacity-limited)",
        ms(plan_cpu)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn latency(poll_ms: u64, samples: usize) {
    let bk = fake_bk::FakeBk::start("bench-token");
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("stamps");
    let cpi = dir.path().join("cpi.sh");
    // records when create_vm starts, then answers like a CPI
    std::fs::write(
        &cpi,
        format!(
            "#!/bin/sh\nreq=$(cat)\ncase \"$req\" in *'\"create_vm\"'*) date +%s.%N >> {s};; esac\necho '{{\"result\":[\"vm-'$$'\",{{}}],\"error\":null,\"log\":\"\"}}'\n",
            s = stamp.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cpi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = config(&bk.url, 1, "", poll_ms, &dir.path().join("l"), &format!("[\"{}\"]", cpi.display()));
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-launcher"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("BK_TOKEN", "bench-token")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::new();
    for i in 0..samples {
        let before = std::fs::read_to_string(&stamp).unwrap_or_default().lines().count();
        // spread the arrivals over the poll interval
        std::thread::sleep(Duration::from_millis(50 + (i as u64 * 7919) % poll_ms));
        let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        bk.add_job(&["queue=vm", "pool=p0", "os=linux"], 0);
        let t = Instant::now();
        loop {
            let s = std::fs::read_to_string(&stamp).unwrap_or_default();
            if s.lines().count() > before {
                let at: f64 = s.lines().last().unwrap().parse().unwrap();
                lat.push((at - t0) * 1000.0);
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no create_vm");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!("job appears → create_vm starts (poll_interval_ms = {poll_ms}, {samples} jobs): median {:.0} ms, p90 {:.0} ms, max {:.0} ms", p(0.5), p(0.9), p(1.0));
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench launcher` for the figures");
        return;
    }
    poll_cpu();
    latency(100, 20);
    latency(1000, 10);
}
