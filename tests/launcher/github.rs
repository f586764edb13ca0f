//! The GitHub source end to end: the built `agent-launcher` against the fake GitHub ([`super::fake_gh`]) and
//! the fake CPI, with a simulation of the VMs' runners that fetches each VM's JIT config through the launcher's
//! assignment endpoint (with the VM's secret from its create_vm env) and runs as a runner against the fake.
//! Each test prints its figures (`github figures: …`).
use super::fake_gh::{self, FakeGh, GH_TOKEN, REPO};
use super::fake_http::Fault;
use super::*;
use base64::Engine;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

pub const LABELS: [&str; 3] = ["self-hosted", "linux", "x64"];

/// A test setup for the GitHub source: a temp dir (fake CPI state, ledger, config) and the fake GitHub.
pub struct GhSetup {
    pub dir: tempfile::TempDir,
    pub gh: FakeGh,
    pub port: u16,
    pub config: PathBuf,
}

impl GhSetup {
    /// `github` is TOML added to the `[github]` section; `pool` replaces the default pool's limits line.
    pub fn new(globals: &str, github: &str, limits: &str) -> GhSetup {
        let perl_ok = Command::new("/usr/bin/perl").args(["-MJSON::PP", "-e", "1"]).status().is_ok_and(|s| s.success());
        assert!(perl_ok, "the launcher tests need /usr/bin/perl with JSON::PP for the fake CPI");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cpi")).unwrap();
        let gh = FakeGh::start();
        let port = free_port();
        let token = if github.contains("app_id") { "" } else { "token_env = \"GH_TOKEN\"" };
        let poll = if github.contains("poll_interval_ms") { "" } else { "poll_interval_ms = 200" };
        let text = format!(
            r#"launcher_id = "gh-test"
ledger_dir = "{ledger}"
listen = "127.0.0.1:{port}"
poll_interval_ms = 100
{globals}
[github]
repository = "{REPO}"
api_url = "{url}"
{poll}
min_write_interval_ms = 20
timeout_ms = 2000
{token}
{github}
[[pool]]
name = "linux"
labels = ["self-hosted", "linux", "x64"]
cpi = {cpi}
stemcell = {{ cid = "sc-fake" }}
networks.default = {{ type = "dynamic" }}
flavors.small = {{ cpu = 1, ram = 512 }}
flavors.large = {{ cpu = 2, ram = 1024 }}
{limits}
boot_timeout_seconds = 60
"#,
            ledger = dir.path().join("ledger").display(),
            url = gh.url,
            cpi = fake_cpi_argv(&dir.path().join("cpi")),
        );
        let config = dir.path().join("launcher.toml");
        std::fs::write(&config, text).unwrap();
        GhSetup { dir, gh, port, config }
    }

    pub fn spawn(&self) -> Launcher {
        let log = self.dir.path().join("launcher.log");
        let err = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(launcher_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("GH_TOKEN", GH_TOKEN)
            .env("GH_HOOK_SECRET", HOOK_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        Launcher { child }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("launcher.log")).unwrap_or_default()
    }

    pub fn cpi_dir(&self) -> PathBuf {
        self.dir.path().join("cpi")
    }

    /// The fake CPI's VMs: (cid, create_vm arguments).
    pub fn vms(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.cpi_dir().join("vms")).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(cid) = name.strip_suffix(".json").filter(|n| !n.ends_with(".meta")) {
                let args = std::fs::read_to_string(e.path()).ok().and_then(|t| serde_json::from_str(&t).ok());
                if let Some(args) = args {
                    out.push((cid.to_string(), args));
                }
            }
        }
        out
    }

    pub fn creates(&self) -> usize {
        std::fs::read_to_string(self.cpi_dir().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("create_vm "))
            .count()
    }

    /// Plays the part of the VMs' runners (see [`Runners`]).
    pub fn runners(&self, run_ms: u64) -> Runners {
        Runners::start(self.cpi_dir(), self.port, run_ms)
    }

    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, m) = http_get(self.port, "/metrics", None);
        m.lines().find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse().ok()))
    }
}

pub const HOOK_SECRET: &str = "whsec-0123456789abcdef-test";

/// The VMs' runners, simulated: for every VM of the fake CPI, its assignment is fetched from the launcher with
/// the VM's secret (204 while the launcher has no JIT config for it yet); the JIT config is decoded and the
/// runner comes online at the fake GitHub, asks for a job until it gets one (or its registration is deleted),
/// runs it for `run_ms`, and reports it completed. A VM deleted by the launcher stops its runner.
pub struct Runners {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
enum Sim {
    Assignment,
    Acquiring(Value),
    Running(Value, Instant),
    Done,
}

impl Runners {
    fn start(cpi: PathBuf, port: u16, run_ms: u64) -> Runners {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut vms: HashMap<String, (String, Sim)> = HashMap::new();
            while !s2.load(Ordering::SeqCst) {
                let mut present = std::collections::HashSet::new();
                for e in std::fs::read_dir(cpi.join("vms")).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let Some(cid) = name.strip_suffix(".json").filter(|n| !n.ends_with(".meta")) else { continue };
                    present.insert(cid.to_string());
                    if vms.contains_key(cid) {
                        continue;
                    }
                    let args: Value = std::fs::read_to_string(e.path())
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(Value::Null);
                    let secret = args[5]["agent_launcher"]["secret"].as_str().unwrap_or("").to_string();
                    if !secret.is_empty() {
                        vms.insert(cid.to_string(), (secret, Sim::Assignment));
                    }
                }
                vms.retain(|cid, _| present.contains(cid));
                for (secret, sim) in vms.values_mut() {
                    *sim = match std::mem::replace(sim, Sim::Done) {
                        Sim::Assignment => match http_get(port, "/v1/assignment", Some(secret)) {
                            (200, body) => {
                                let a: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                                match a["jitconfig"].as_str() {
                                    Some(c) => {
                                        let raw =
                                            base64::engine::general_purpose::STANDARD.decode(c).unwrap_or_default();
                                        let cfg: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                                        let (st, _) = fake_gh::post(
                                            &format!(
                                                "{}/_fake/runner/session",
                                                cfg["fake_github"].as_str().unwrap_or("")
                                            ),
                                            &[],
                                            &cfg.to_string(),
                                        );
                                        if st == 200 {
                                            Sim::Acquiring(cfg)
                                        } else {
                                            Sim::Done
                                        }
                                    }
                                    // a runner already running from before a restart: nothing to do
                                    None => Sim::Done,
                                }
                            }
                            (401, _) => Sim::Done,
                            _ => Sim::Assignment,
                        },
                        Sim::Acquiring(cfg) => {
                            let url = format!("{}/_fake/runner/acquire", cfg["fake_github"].as_str().unwrap_or(""));
                            match fake_gh::post(&url, &[], &cfg.to_string()).0 {
                                200 => Sim::Running(cfg, Instant::now()),
                                404 => Sim::Done,
                                _ => Sim::Acquiring(cfg),
                            }
                        }
                        Sim::Running(cfg, t) if t.elapsed() >= Duration::from_millis(run_ms) => {
                            let mut body = cfg.clone();
                            body["conclusion"] = json!("success");
                            body["log"] = json!("ran on a simulated runner");
                            let url = format!("{}/_fake/runner/complete", cfg["fake_github"].as_str().unwrap_or(""));
                            fake_gh::post(&url, &[], &body.to_string());
                            Sim::Done
                        }
                        other => other,
                    };
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        Runners { stop, handle: Some(handle) }
    }
}

impl Drop for Runners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Samples the fake CPI's VM count every 10 ms; returns the highest.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Sampler {
    fn start(cpi: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            while !s2.load(Ordering::SeqCst) {
                let n = std::fs::read_dir(cpi.join("vms"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().to_string();
                        n.ends_with(".json") && !n.ends_with(".meta.json")
                    })
                    .count();
                max = max.max(n);
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        });
        Sampler { stop, handle: Some(handle) }
    }

    fn max(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().map(|h| h.join().unwrap_or(0)).unwrap_or(0)
    }
}

/// Requests to the REST API by kind, for the figures.
fn traffic(gh: &FakeGh) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for c in gh.st().calls.iter().filter(|c| !c.path.starts_with("/_fake/")) {
        let k = match (c.method.as_str(), c.status) {
            ("GET", 304) => "GET 304",
            ("GET", 200) => "GET 200",
            ("GET", _) => "GET other",
            ("POST", _) if c.path.ends_with("generate-jitconfig") => "POST jitconfig",
            ("POST", _) => "POST other",
            ("DELETE", _) => "DELETE runner",
            _ => "other",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn all_done(gh: &FakeGh, jobs: &[u64]) -> bool {
    let s = gh.st();
    jobs.iter().all(|j| s.jobs[j].status == "completed")
}

/// 20 queued jobs (a matrix of 12 and a run of 8), a pool of 5 VMs: never more than 5 VMs, every job run by
/// one of the launcher's runners, every VM deleted, no runner left registered.
#[test]
fn github_twenty_queued_jobs_on_a_pool_of_five() {
    let s = GhSetup::new("", "", "limits = { max_vms = 5, max_concurrent_creates = 5 }");
    let mut jobs = s.gh.add_run(12, &["self-hosted", "linux"]);
    jobs.extend(s.gh.add_run(8, &LABELS));
    // a job for GitHub's own runners is not the launcher's
    let hosted = s.gh.add_run(1, &["ubuntu-latest"]);
    let sampler = Sampler::start(s.cpi_dir());
    let _runners = s.runners(300);
    let t0 = Instant::now();
    let _l = s.spawn();
    wait_for(120, "every job to complete", &|| s.log(), || all_done(&s.gh, &jobs));
    let served = t0.elapsed();
    wait_for(30, "every VM to be deleted and no runner left", &|| s.log(), || {
        s.vms().is_empty() && s.gh.runner_names().is_empty()
    });
    let max = sampler.max();
    let st = s.gh.st();
    for j in &jobs {
        let job = &st.jobs[j];
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{job:?}");
        assert!(job.runner_name.as_deref().is_some_and(|n| n.starts_with("gh-test-linux-")), "{job:?}");
    }
    let runners_used: std::collections::HashSet<_> = jobs.iter().map(|j| st.jobs[j].runner_name.clone()).collect();
    assert_eq!(runners_used.len(), 20, "one runner per job");
    assert_eq!(st.jobs[&hosted[0]].status, "queued", "the GitHub-hosted job is left alone");
    assert!(max <= 5, "at most 5 VMs at once, saw {max}");
    let removed_by_launcher = st.removed.iter().filter(|(_, how)| *how == "deleted").count();
    let ephemeral = st.removed.iter().filter(|(_, how)| *how == "ephemeral").count();
    let registered = st.registered.len();
    drop(st);
    let creates = s.creates();
    let t = traffic(&s.gh);
    eprintln!(
        "github figures: capacity: 20 jobs, pool of 5: all served in {:.1} s; max {max} VMs at once; {creates} VMs made; \
         {registered} runners registered ({ephemeral} removed by GitHub after their job, {removed_by_launcher} by the launcher); \
         REST requests {t:?}",
        served.as_secs_f64()
    );
    assert!(creates >= 20 && registered >= 20);
    assert!(t.get("GET 304").copied().unwrap_or(0) > 0, "conditional requests are used: {t:?}");
    let calls = s.gh.st().calls.clone();
    let api: Vec<_> = calls.iter().filter(|c| !c.path.starts_with("/_fake/")).collect();
    assert!(
        api.iter().all(|c| c.auth == format!("Bearer {GH_TOKEN}")),
        "every request carries the token in its header"
    );
    let conditional = api.iter().filter(|c| c.conditional).count();
    eprintln!(
        "github figures: capacity: {conditional} of {} GETs were conditional (If-None-Match)",
        api.iter().filter(|c| c.method == "GET").count()
    );
    assert!(!s.log().contains(GH_TOKEN), "the token leaked into the log");
}

/// Jobs cancelled before a runner picked them up: a VM that was booting is deleted and its runner
/// registration removed; a VM still being made is deleted once made. Nothing is left.
#[test]
fn github_jobs_cancelled_before_pickup_leave_nothing() {
    let s = GhSetup::new("", "", "limits = { max_vms = 4, max_concurrent_creates = 4 }");
    let booting = s.gh.add_run(1, &LABELS)[0];
    let l = s.spawn();
    // no runner comes online (the simulated VMs are still booting)
    wait_for(30, "the booting VM and its runner", &|| s.log(), || s.vms().len() == 1 && s.gh.runner_names().len() == 1);
    let runner = s.gh.runner_names()[0].clone();
    let t = Instant::now();
    s.gh.cancel(booting);
    wait_for(30, "the cancelled job's VM to be deleted", &|| s.log(), || s.vms().is_empty());
    wait_for(30, "its runner registration to be removed", &|| s.log(), || s.gh.runner_names().is_empty());
    let first = t.elapsed();
    assert!(
        s.gh.st().removed.iter().any(|(n, how)| *n == runner && *how == "deleted"),
        "the launcher deleted {runner}"
    );
    // a job cancelled while its create_vm still runs
    std::fs::write(s.cpi_dir().join("script.json"), json!({"create_vm": {"delay_ms": 1500}}).to_string()).unwrap();
    let creating = s.gh.add_run(1, &LABELS)[0];
    wait_for(30, "its runner to be registered", &|| s.log(), || s.gh.runner_names().len() == 1);
    let t = Instant::now();
    s.gh.cancel(creating);
    wait_for(30, "the VM made after the cancel to be deleted", &|| s.log(), || {
        s.creates() == 2 && s.vms().is_empty() && s.gh.runner_names().is_empty()
    });
    let second = t.elapsed();
    drop(l);
    eprintln!(
        "github figures: cancel before pickup: booting VM and runner gone {:.1} s after the cancel; VM in create_vm gone {:.1} s after",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
}

/// `kill -9` with VMs booting and running, jobs ending and one cancelled while the launcher is away, a GitHub
/// App for auth: after the restart every job is served, no VM and no runner registration is left.
#[test]
fn github_kill9_and_restart_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = app_key(dir.path());
    let s = GhSetup::new(
        "",
        &format!("app_id = \"424242\"\ninstallation_id = 77\nprivate_key_file = \"{}\"", key.display()),
        "limits = { max_vms = 4, max_concurrent_creates = 4 }",
    );
    s.gh.st().app = Some(("424242".into(), 77, public_der(&key)));
    std::fs::write(s.cpi_dir().join("script.json"), json!({"create_vm": {"delay_ms": 300}}).to_string()).unwrap();
    let jobs = s.gh.add_run(8, &LABELS);
    let runners = s.runners(1500);
    let mut l = s.spawn();
    wait_for(60, "4 VMs with runners running jobs", &|| s.log(), || {
        s.vms().len() == 4 && s.gh.st().jobs.values().filter(|j| j.status == "in_progress").count() >= 2
    });
    l.kill9();
    let (vms_at_kill, runners_at_kill) = (s.vms().len(), s.gh.runner_names().len());
    let t = Instant::now();
    // while it is away: a queued job is cancelled, running jobs end (their runners go)
    let queued: Vec<u64> = jobs.iter().copied().filter(|j| s.gh.job(*j).status == "queued").collect();
    s.gh.cancel(queued[0]);
    std::thread::sleep(Duration::from_millis(2000));
    let _l2 = s.spawn();
    wait_for(90, "every job to be over", &|| s.log(), || all_done(&s.gh, &jobs));
    wait_for(30, "no VM and no runner left", &|| s.log(), || s.vms().is_empty() && s.gh.runner_names().is_empty());
    let recovered = t.elapsed();
    if std::env::var_os("GH_TEST_LOG").is_some() {
        eprintln!("{}", s.log());
    }
    drop(runners);
    let st = s.gh.st();
    let ok = jobs.iter().filter(|j| st.jobs[*j].conclusion.as_deref() == Some("success")).count();
    assert_eq!(ok, 7, "every job but the cancelled one ran: {:?}", st.jobs.values().collect::<Vec<_>>());
    assert!(st.installation_tokens.len() >= 2, "each launcher run made its installation token");
    assert_eq!(st.jwt_refused, 0);
    let registered = st.registered.len();
    drop(st);
    assert!(s.log().contains("recovering"), "{}", s.log());
    eprintln!(
        "github figures: kill -9: {vms_at_kill} VMs and {runners_at_kill} runners at the kill; all 8 jobs settled and \
         0 VMs, 0 runners left {:.1} s after the kill (restart after 2 s); {registered} runners registered in all, {} VMs made",
        recovered.as_secs_f64(),
        s.creates()
    );
}

/// A rate-limited API: the primary limit runs out (403, remaining 0, reset in 4 s) and a secondary limit
/// answers 429 with `Retry-After: 3`: no request reaches GitHub until then, and work goes on after. A 502 on
/// a jobs list is tried again; a server that stalls past the timeout fails the poll, and the next one works.
#[test]
fn github_rate_limits_5xx_and_a_slow_server_cause_no_storm() {
    let s =
        GhSetup::new("unhealthy_after_failed_polls = 100", "", "limits = { max_vms = 4, max_concurrent_creates = 4 }");
    let _runners = s.runners(200);
    let _l = s.spawn();
    let first = s.gh.add_run(1, &LABELS);
    wait_for(30, "the first job", &|| s.log(), || all_done(&s.gh, &first));
    // the primary limit runs out: 403 with x-ratelimit-remaining 0 until the reset
    let reset = {
        let mut st = s.gh.st();
        st.remaining = 0;
        st.reset_at = fake_gh_now() + 4;
        st.reset_at
    };
    let t_primary = Instant::now();
    let second = s.gh.add_run(1, &LABELS);
    wait_for(30, "the second job after the reset", &|| s.log(), || all_done(&s.gh, &second));
    let calls = s.gh.st().calls.clone();
    let refused: Vec<&fake_gh::Call> = calls.iter().filter(|c| c.status == 403 && c.at >= t_primary).collect();
    let first_refusal = refused.first().map(|c| c.at).expect("GitHub refused a request");
    let during: usize = calls
        .iter()
        .filter(|c| c.at > first_refusal && fake_gh_unix(c.at) < reset && !c.path.starts_with("/_fake/"))
        .count();
    assert_eq!(refused.len(), 1, "one request met the exhausted limit, no storm: {refused:?}");
    assert_eq!(during, 0, "no request until the reset");
    // a secondary limit: 429 with Retry-After 3 on the runs list
    let t_secondary = Instant::now();
    s.gh.fault(Fault { path: "/actions/runs".into(), status: 429, retry_after: Some(3), ..Default::default() });
    let third = s.gh.add_run(1, &LABELS);
    wait_for(30, "the third job after the Retry-After", &|| s.log(), || all_done(&s.gh, &third));
    let calls = s.gh.st().calls.clone();
    let limited = calls.iter().find(|c| c.status == 429 && c.at >= t_secondary).map(|c| c.at).expect("a 429");
    let next = calls.iter().find(|c| c.at > limited && !c.path.starts_with("/_fake/")).map(|c| c.at).unwrap();
    let gap = next - limited;
    assert!(gap >= Duration::from_millis(2900), "the next request waited for Retry-After: {gap:?}");
    // a 502 on a jobs list is tried again at once; a stall past the timeout fails one poll, the next works
    s.gh.fault(Fault { path: "/jobs".into(), status: 502, ..Default::default() });
    s.gh.fault(Fault { path: "/actions/runners".into(), stall_ms: 2500, ..Default::default() });
    let fourth = s.gh.add_run(1, &LABELS);
    wait_for(40, "the fourth job after a 502 and a stall", &|| s.log(), || all_done(&s.gh, &fourth));
    assert!(s.log().contains("HTTP 502") && s.log().contains("trying again"), "{}", s.log());
    assert!(s.log().contains("timed out"), "{}", s.log());
    let primary = s.metric("launcher_github_rate_limited_total{limit=\"primary\"}").unwrap_or(0.0);
    let secondary = s.metric("launcher_github_rate_limited_total{limit=\"secondary\"}").unwrap_or(0.0);
    assert!(primary >= 1.0 && secondary >= 1.0, "primary {primary} secondary {secondary}");
    eprintln!(
        "github figures: rate limits: primary exhausted → {} request refused, {during} requests before the reset \
         ({:.1} s); secondary 429 Retry-After 3 → next request after {:.2} s; traffic {:?}",
        refused.len(),
        Duration::from_secs(reset).saturating_sub(Duration::from_secs(fake_gh_unix(first_refusal))).as_secs_f64(),
        gap.as_secs_f64(),
        traffic(&s.gh)
    );
}

fn fake_gh_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The Unix second of an `Instant` (close enough for the tests' windows).
fn fake_gh_unix(t: Instant) -> u64 {
    let now = Instant::now();
    let sys = std::time::SystemTime::now();
    let at = if t <= now { sys - (now - t) } else { sys + (t - now) };
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The webhook: a signed `workflow_job` delivery gets a job its VM long before the next REST poll (60 s);
/// deliveries with a wrong or missing signature are refused (401) and do nothing; too big is 413.
#[test]
fn github_webhook_lowers_latency_and_refuses_bad_signatures() {
    let s = GhSetup::new(
        "",
        "webhook_secret_env = \"GH_HOOK_SECRET\"\npoll_interval_ms = 60000",
        "limits = { max_vms = 4, max_concurrent_creates = 4 }",
    );
    let _runners = s.runners(200);
    let _l = s.spawn();
    wait_for(30, "the launcher's first poll", &|| s.log(), || s.gh.calls_to("/actions/runs").len() >= 2);
    let hook = format!("http://127.0.0.1:{}/v1/github/webhook", s.port);
    // forged deliveries: a job that only they announce never gets a VM
    let forged = json!({"action": "queued", "repository": {"full_name": REPO},
                        "workflow_job": {"id": 777, "run_id": 1, "status": "queued", "labels": LABELS, "created_at": "2026-01-05T10:00:00Z"}});
    let body = forged.to_string();
    let wrong = vmcpi::launcher::github::webhook::sign(b"not the secret", body.as_bytes());
    assert_eq!(
        fake_gh::post(&hook, &[("X-GitHub-Event", "workflow_job"), ("X-Hub-Signature-256", &wrong)], &body).0,
        401
    );
    assert_eq!(fake_gh::post(&hook, &[("X-GitHub-Event", "workflow_job")], &body).0, 401);
    // a delivery that declares 2 MiB is refused before its body is read
    let big = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        write!(c, "POST /v1/github/webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: workflow_job\r\nContent-Length: 2097152\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    let other_repo = body.replace(REPO, "elsewhere/repo");
    let sig = vmcpi::launcher::github::webhook::sign(HOOK_SECRET.as_bytes(), other_repo.as_bytes());
    assert_eq!(
        fake_gh::post(&hook, &[("X-GitHub-Event", "workflow_job"), ("X-Hub-Signature-256", &sig)], &other_repo).0,
        202
    );
    let ping = "{\"zen\":\"Design for failure.\"}";
    let sig = vmcpi::launcher::github::webhook::sign(HOOK_SECRET.as_bytes(), ping.as_bytes());
    assert_eq!(fake_gh::post(&hook, &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)], ping).0, 200);
    // the fake GitHub delivers, signed, as GitHub does
    s.gh.st().webhook = Some((hook.clone(), HOOK_SECRET.into()));
    let t = Instant::now();
    let jobs = s.gh.add_run(2, &LABELS);
    wait_for(20, "VMs for the webhook's jobs", &|| s.log(), || s.creates() >= 2);
    let latency = t.elapsed();
    wait_for(20, "the jobs to complete", &|| s.log(), || all_done(&s.gh, &jobs));
    wait_for(20, "their VMs deleted (the completed deliveries)", &|| s.log(), || s.vms().is_empty());
    let settled = t.elapsed();
    assert!(latency < Duration::from_secs(10), "the webhook, not the 60 s poll, brought the VMs: {latency:?}");
    assert!(!s.log().contains("job=777"), "a forged delivery made work: {}", s.log());
    assert_eq!(s.creates(), 2, "only the two real jobs got VMs");
    let bad = s.metric("launcher_github_webhook_deliveries_total{outcome=\"bad_signature\"}").unwrap_or(0.0);
    assert_eq!(
        bad, 2.0,
        "the wrong and the missing signature (the oversized delivery is refused before it is read: 413)"
    );
    let accepted = s.metric("launcher_github_webhook_deliveries_total{outcome=\"accepted\"}").unwrap_or(0.0);
    assert!(accepted >= 4.0, "queued, in_progress and completed deliveries: {accepted}");
    let delivered = s.gh.st().deliveries.clone();
    assert!(delivered.iter().all(|(_, st)| *st == 202), "{delivered:?}");
    eprintln!(
        "github figures: webhook: VMs for 2 queued jobs {:.2} s after the deliveries (REST poll every 60 s); jobs done \
         and VMs deleted after {:.1} s; bad signatures refused: {bad}; deliveries accepted: {accepted}",
        latency.as_secs_f64(),
        settled.as_secs_f64()
    );
}

/// A GitHub App key made by openssl for the test (PKCS#1, as GitHub hands it out).
fn app_key(dir: &Path) -> PathBuf {
    let path = dir.join("app.pem");
    let out = Command::new("openssl").args(["genrsa", "-traditional", "-out"]).arg(&path).arg("2048").output().unwrap();
    assert!(out.status.success(), "openssl genrsa: {}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn public_der(key: &Path) -> Vec<u8> {
    vmcpi::launcher::github::auth::AppKey::read(key).unwrap().public_der()
}

/// `check-config` validates a github source; `--online` checks the token, or makes an App's installation
/// token (the fake verifies the JWT), and says what permission is missing when GitHub refuses.
#[test]
fn github_check_config_offline_and_online() {
    let check = |s: &GhSetup, online: bool, token: &str| {
        let mut c = Command::new(launcher_bin());
        c.args(["check-config", "--config"]).arg(&s.config).env("GH_TOKEN", token);
        if online {
            c.arg("--online");
        }
        let o = c.output().unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let s = GhSetup::new("", "", "limits = { max_vms = 1 }");
    let (ok, out) = check(&s, false, GH_TOKEN);
    assert!(ok && out.contains("ok (1 pools: linux)"), "{out}");
    assert!(s.gh.st().calls.is_empty(), "offline checks send nothing");
    let (ok, out) = check(&s, true, GH_TOKEN);
    assert!(ok && out.contains("the GitHub API accepts the credentials"), "{out}");
    let (ok, out) = check(&s, true, "github_pat_wrong");
    assert!(!ok && out.contains("401") && out.contains("Administration"), "{out}");
    assert!(!out.contains("github_pat_wrong"), "the token is not printed: {out}");
    // an App: the online check makes an installation token
    let dir = tempfile::tempdir().unwrap();
    let key = app_key(dir.path());
    let s = GhSetup::new(
        "",
        &format!("app_id = \"Iv1.fake0123\"\ninstallation_id = 5\nprivate_key_file = \"{}\"", key.display()),
        "limits = { max_vms = 1 }",
    );
    s.gh.st().app = Some(("Iv1.fake0123".into(), 5, public_der(&key)));
    let (ok, out) = check(&s, true, "");
    assert!(ok, "{out}");
    assert_eq!(s.gh.st().installation_tokens.len(), 1);
    // the App's key is not the one GitHub knows: the JWT is refused, with a hint
    let dir2 = tempfile::tempdir().unwrap();
    s.gh.st().app = Some(("Iv1.fake0123".into(), 5, public_der(&app_key(dir2.path()))));
    let (ok, out) = check(&s, true, "");
    assert!(!ok && out.contains("app_id") && out.contains("401"), "{out}");
    // an open key file is refused before anything is sent
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check(&s, false, "");
    assert!(!ok && out.contains("chmod 600"), "{out}");
}

/// An organisation scope with a GitHub App: the repositories are those of the installation, the runners are
/// organisation runners in the configured runner group; `/metrics` passes promtool with the GitHub families.
#[test]
fn github_organisation_scope_with_an_app_serves_the_installations_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let key = app_key(dir.path());
    let s = GhSetup::new(
        "",
        &format!(
            "app_id = \"Iv1.orgapp\"\ninstallation_id = 9\nprivate_key_file = \"{}\"\nrunner_group_id = 3",
            key.display()
        ),
        "limits = { max_vms = 2, max_concurrent_creates = 2 }",
    );
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&format!("repository = \"{REPO}\""), "organization = \"acme\"");
    std::fs::write(&s.config, text).unwrap();
    {
        let mut st = s.gh.st();
        st.app = Some(("Iv1.orgapp".into(), 9, public_der(&key)));
        st.groups = vec![1, 3];
    }
    let jobs = s.gh.add_run(3, &LABELS);
    let _runners = s.runners(200);
    let _l = s.spawn();
    wait_for(60, "the organisation's jobs", &|| s.log(), || all_done(&s.gh, &jobs));
    wait_for(30, "no VM and no runner left", &|| s.log(), || s.vms().is_empty() && s.gh.runner_names().is_empty());
    let calls = s.gh.st().calls.clone();
    assert!(
        calls.iter().any(|c| c.path == "/installation/repositories"),
        "repositories discovered from the installation"
    );
    let jit: Vec<_> = calls.iter().filter(|c| c.path.ends_with("generate-jitconfig")).collect();
    assert!(jit.len() >= 3 && jit.iter().all(|c| c.path == "/orgs/acme/actions/runners/generate-jitconfig"), "{jit:?}");
    assert!(s.log().contains("GitHub organisation acme (runner group 3"), "{}", s.log());
    let (_, metrics) = http_get(s.port, "/metrics", None);
    assert!(metrics.contains("launcher_github_requests_total{kind=\"write\",outcome=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("launcher_source_consecutive_failed_polls{source=\"github\"} 0"), "{metrics}");
    assert!(!metrics.lines().any(|l| l.starts_with("launcher_buildkite_")), "no Buildkite samples for a GitHub source");
    super::flow::promtool(&metrics);
}

/// The jobs lists lag the runners list (the launcher reads the runners on every poll, the jobs of the runs only
/// within its request budget; GitHub's own lists lag each other too): the launcher's runner is seen busy, then
/// gone, while the last jobs list read still shows its job queued. That job already has its VM and runner: it
/// must not get a second VM and runner registration (`job=<id>.2`).
#[test]
fn github_a_job_its_runner_took_is_no_new_demand_while_the_jobs_list_lags() {
    // 12 requests a minute: the first scans spend them, then only the runners list is read
    let s = GhSetup::new(
        "",
        "poll_interval_ms = 100\nmax_requests_per_minute = 12",
        "limits = { max_vms = 4, max_concurrent_creates = 4 }",
    );
    let job = s.gh.add_run(1, &LABELS)[0];
    let _l = s.spawn();
    wait_for(30, "its VM and its runner", &|| s.log(), || s.vms().len() == 1 && s.gh.runner_names().len() == 1);
    let last_scan =
        || s.gh.calls_to("/actions/runs").iter().map(|c| c.at).max().map(|t| t.elapsed()).unwrap_or_default();
    wait_for(30, "the jobs scans to stop (budget spent)", &|| s.log(), || last_scan() > Duration::from_secs(1));
    let runners_read = s.gh.calls_to("/actions/runners").len();
    // the VM's runner comes online and takes the job; it runs it for 3 s
    let _runners = s.runners(3000);
    wait_for(30, "the runner to take the job", &|| s.log(), || s.gh.job(job).status == "in_progress");
    wait_for(10, "the launcher to read the runners again", &|| s.log(), || {
        s.gh.calls_to("/actions/runners").len() >= runners_read + 5
    });
    assert!(last_scan() > Duration::from_secs(1), "the jobs list was read again: the test proves nothing");
    std::thread::sleep(Duration::from_millis(500));
    let log = s.log();
    assert!(!log.contains(&format!("job={job}.2")), "a second VM for the job its runner took:\n{log}");
    assert_eq!(s.creates(), 1, "one create_vm for one job:\n{log}");
    assert_eq!(s.gh.st().registered.len(), 1, "one runner registration for one job:\n{log}");
    // the job ends and GitHub removes the runner; the jobs list still says queued
    wait_for(30, "the job to complete", &|| s.log(), || s.gh.job(job).status == "completed");
    wait_for(30, "its VM to be deleted", &|| s.log(), || s.vms().is_empty());
    std::thread::sleep(Duration::from_millis(1000));
    assert!(last_scan() > Duration::from_secs(1), "the jobs list was read again: the test proves nothing");
    let log = s.log();
    assert!(!log.contains(&format!("job={job}.2")), "a second VM for the job its runner ran:\n{log}");
    assert_eq!((s.creates(), s.gh.st().registered.len()), (1, 1), "{log}");
    assert!(s.vms().is_empty() && s.gh.runner_names().is_empty(), "{log}");
}
