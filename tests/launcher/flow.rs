//! One job, one VM: the whole lifecycle through the built binary, the fake Buildkite and the fake CPI.
use super::*;
use serde_json::json;

#[test]
fn launcher_check_config_and_status() {
    let s = Setup::new("", POOL);
    let out = Command::new(launcher_bin())
        .args(["check-config", "--config"])
        .arg(&s.config)
        .env("BK_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 pools: linux)"));
    // no token: a clear message naming the source, and a failure status
    let out = Command::new(launcher_bin())
        .args(["check-config", "--config"])
        .arg(&s.config)
        .env_remove("BK_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("$BK_TOKEN"), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&s.config).unwrap().replace("flavors.small", "flavors.small.x"))
        .unwrap();
    let out = Command::new(launcher_bin())
        .args(["check-config", "--config"])
        .arg(&bad)
        .env("BK_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no open records"));
}

#[test]
fn launcher_runs_each_job_on_its_own_vm_and_deletes_it() {
    let s = Setup::new("", POOL);
    let j1 = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let j2 = s.bk.add_job(&["queue=vm", "os=linux", "flavor=large"], 5);
    let odd = s.bk.add_job(&["queue=vm", "flavor=huge"], 0);
    let other = s.bk.add_job(&["queue=vm", "os=windows"], 0);
    // dry run: says what it would do and does none of it
    let out = Command::new(launcher_bin())
        .args(["run", "--dry-run", "--config"])
        .arg(&s.config)
        .env("BK_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("would create_vm job={j2} pool=linux flavor=large")), "{text}");
    assert!(text.contains(&format!("would create_vm job={j1} pool=linux flavor=small")), "{text}");
    assert!(text.contains(&format!("would reserve job={odd} pool=linux and finish it with -1")), "{text}");
    assert!(!text.contains(&other));
    // the higher-priority job comes first
    assert!(text.find(&j2).unwrap() < text.find(&j1).unwrap());
    assert!(s.calls().is_empty() && s.bk.job(&j1).reservations == 0, "dry run must not act");

    let mut l = s.spawn();
    wait_for(20, "two VMs", &|| s.log(), || s.vms().len() == 2);
    let vms = s.vms();
    let (cid1, _) = vms.iter().find(|(_, j)| *j == j1).expect("a VM for j1").clone();
    // the create_vm arguments: flavor sizes, networks, and an env that points at the assignment endpoint
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid1}.json"))).unwrap()).unwrap();
    assert_eq!(args[1], "sc-fake");
    assert_eq!(args[2], json!({"cpu": 1, "ram": 512}));
    assert_eq!(args[3]["default"]["type"], "dynamic");
    let env = &args[5]["agent_launcher"];
    assert_eq!(env["agent_tags"], "queue=vm,os=linux");
    assert_eq!(env["assignment_url"], format!("http://127.0.0.1:{}/v1/assignment", s.port));
    let secret = env["secret"].as_str().unwrap().to_string();
    // the VM fetches its job and token with its secret; nobody else can
    wait_for(5, "metadata", &|| s.log(), || s.cpi_dir().join(format!("vms/{cid1}.meta.json")).exists());
    let md: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid1}.meta.json"))).unwrap())
            .unwrap();
    assert_eq!(
        (md["job"].as_str(), md["pool"].as_str(), md["agent-launcher"].as_str()),
        (Some(j1.as_str()), Some("linux"), Some("test-launcher"))
    );
    let (code, body) = s.http_get("/v1/assignment", Some(&secret));
    assert_eq!(code, 200, "{body}");
    let a: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (a["job_id"].as_str(), a["token"].as_str(), a["endpoint"].as_str()),
        (Some(j1.as_str()), Some(TOKEN), Some(s.bk.url.as_str()))
    );
    assert_eq!(s.http_get("/v1/assignment", Some("wrong")).0, 401);
    assert_eq!(s.http_get("/v1/assignment", None).0, 401);
    assert_eq!(s.http_get("/healthz", None).0, 200);
    // the unknown flavor is refused on the build page
    wait_for(5, "the refusal", &|| s.log(), || s.bk.job(&odd).finish.is_some());
    let (code, detail) = s.bk.job(&odd).finish.unwrap();
    assert_eq!(code, -1);
    assert!(detail.contains("unknown flavor \"huge\"") && detail.contains("large, small"), "{detail}");
    assert_eq!(s.bk.job(&other).reservations, 0);

    // the jobs run and pass; their VMs go away
    let _agents = s.agents(200);
    wait_for(20, "VMs deleted", &|| s.log(), || {
        s.vms().is_empty() && s.bk.job(&j1).state == "passed" && s.bk.job(&j2).state == "passed"
    });
    wait_for(5, "ledger empty", &|| s.log(), || {
        let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("no open records")
    });
    assert_eq!(s.creates_by_job(), [(j1.clone(), 1), (j2.clone(), 1)].into_iter().collect());
    // a deleted VM's secret is worthless
    assert_eq!(s.http_get("/v1/assignment", Some(&secret)).0, 401);

    // metrics: the numbers and promtool's approval
    let (code, metrics) = s.http_get("/metrics", None);
    assert_eq!(code, 200);
    assert!(metrics.contains("launcher_jobs_launched_total{pool=\"linux\"} 2"), "{metrics}");
    assert!(metrics.contains("launcher_jobs_failed_total{pool=\"linux\"} 1"), "{metrics}");
    assert!(metrics.contains("launcher_cpi_call_duration_seconds_count{method=\"create_vm\"} 2"), "{metrics}");
    assert!(metrics.contains("launcher_queue_to_running_seconds_count{pool=\"linux\"} 2"), "{metrics}");
    promtool(&metrics);

    // SIGTERM: deregisters and exits 0
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    // once after the dry run (the stack was not registered then), once now
    assert_eq!(s.bk.st().deregistered, 2);
    assert!(s.bk.st().stacks.is_empty());
    // the token never shows up in the log or anything the CPI saw
    let log = s.log();
    assert!(!log.contains(TOKEN), "token in the log:\n{log}");
    for e in walk(&s.dir.path().join("cpi")) {
        assert!(!std::fs::read_to_string(&e).unwrap_or_default().contains(TOKEN), "token in {}", e.display());
    }
    assert!(log.contains(&format!("job={j1}")) && log.contains(&format!("vm={cid1}")), "{log}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

pub fn promtool(metrics: &str) {
    let have = Path::new("/usr/bin/promtool").exists();
    if !crate::util::require_peer("promtool (Debian package prometheus)", have) {
        return;
    }
    use std::io::Write;
    let mut c = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn launcher_retries_failed_and_crashed_creates_then_fails_the_job() {
    let s = Setup::new("", POOL);
    // the first create fails, the second crashes the CPI (no response); create_attempts = 2, so no third
    s.script(json!({"create_vm": {"fail": 1, "crash": 1}}));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(20, "the job to be failed", &|| s.log(), || s.bk.job(&j).finish.is_some());
    let (code, detail) = s.bk.job(&j).finish.unwrap();
    assert_eq!(code, -1);
    assert!(detail.contains("after 2 attempts") && detail.contains("no valid response"), "{detail}");
    assert!(s.vms().is_empty());
    let calls: Vec<String> = s.calls().into_iter().map(|c| c[0].clone()).collect();
    assert_eq!(calls, ["create_vm_fail", "create_vm_crash"]);
    assert!(s.log().contains("a VM may have been left behind"), "{}", s.log());
}

#[test]
fn launcher_deletes_the_vm_of_a_cancelled_job_and_honours_pause_and_rate_limits() {
    let s = Setup::new("", POOL);
    s.bk.st().paused = true;
    // 429 with Retry-After, then a 5xx, then a stall past the 1 s client timeout
    s.bk.fault("scheduled-jobs", 429, Some(1), 0);
    s.bk.fault("scheduled-jobs", 503, None, 0);
    s.bk.fault("scheduled-jobs", 0, None, 1500);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the paused queue in the metrics", &|| s.log(), || {
        let (_, m) = s.http_get("/metrics", None);
        m.contains("launcher_queue_paused 1") && m.contains("launcher_jobs_waiting{pool=\"linux\",reason=\"paused\"} 1")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.calls().is_empty(), "a paused queue starts nothing: {:?}", s.calls());
    assert_eq!(s.bk.job(&j).reservations, 0);
    assert!(s.log().contains("rate limited"), "{}", s.log());
    // after the 429 with Retry-After: 1 the launcher waited a second before its next request
    {
        let st = s.bk.st();
        assert!(st.faults.is_empty(), "all faults were hit");
        let first = st.calls.iter().position(|(_, p)| p.contains("scheduled-jobs")).unwrap();
        let gap = st.call_times[first + 1] - st.call_times[first];
        assert!(gap >= Duration::from_millis(950), "next request {gap:?} after a 429 with Retry-After: 1");
    }
    s.bk.st().paused = false;
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    s.bk.set_state(&j, "canceled");
    wait_for(10, "the VM of the cancelled job to go", &|| s.log(), || s.vms().is_empty());
    assert!(s.log().contains("job canceled: deleting the VM"), "{}", s.log());
}

#[test]
fn launcher_static_ips_wait_when_exhausted_and_are_reused() {
    let pools = POOL.replace(
        r#"networks.default = { type = "dynamic", cloud_properties = { type = "user" } }"#,
        r#"networks.default = { type = "manual", static_ips = ["10.9.0.5"], netmask = "255.255.255.0", gateway = "10.9.0.1", dns = ["10.9.0.2"], cloud_properties = { type = "user" } }"#,
    );
    let s = Setup::new("", &pools);
    let j1 = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let j2 = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "one VM", &|| s.log(), || s.vms().len() == 1);
    wait_for(10, "the waiting notice", &|| s.log(), || {
        s.bk.st().notifications.iter().any(|(j, d)| *j == j2 && d.contains("free IP"))
    });
    let (_, m) = s.http_get("/metrics", None);
    assert!(m.contains("launcher_ip_addresses{pool=\"linux\",state=\"free\"} 0"), "{m}");
    assert!(m.contains("launcher_jobs_waiting{pool=\"linux\",reason=\"ip\"} 1"), "{m}");
    let (cid, job) = s.vms()[0].clone();
    assert_eq!(job, j1);
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid}.json"))).unwrap()).unwrap();
    assert_eq!(args[3]["default"]["ip"], "10.9.0.5");
    assert_eq!(args[3]["default"]["gateway"], "10.9.0.1");
    // the lease survives a restart (it is in the ledger): the second job still waits
    l.kill9();
    let _l = s.spawn();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(s.creates_by_job().get(&j2), None);
    s.bk.set_state(&j1, "passed");
    wait_for(15, "the second job's VM", &|| s.log(), || s.vms().iter().any(|(_, j)| *j == j2));
    let (cid2, _) = s.vms()[0].clone();
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid2}.json"))).unwrap()).unwrap();
    assert_eq!(args[3]["default"]["ip"], "10.9.0.5");
}

#[test]
fn launcher_deletes_and_retries_when_has_vm_says_the_vm_is_gone() {
    let s = Setup::new("", POOL);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    let (old, _) = s.vms()[0].clone();
    l.kill9();
    // the CPI now claims the VM does not exist (it does): the launcher must not leak it
    s.script(json!({"has_vm": "lie_false"}));
    let _l = s.spawn();
    wait_for(10, "a new VM", &|| s.log(), || s.vms().iter().any(|(c, _)| *c != old));
    assert!(s.vms().iter().all(|(c, _)| *c != old), "the old VM was deleted anyway: {:?}\n{}", s.calls(), s.log());
    assert_eq!(s.vms().len(), 1);
    assert_eq!(s.vms()[0].1, j);
}

#[test]
fn launcher_keeps_a_warm_vm_and_hands_it_exactly_one_job() {
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 2\nwarm = 1");
    let s = Setup::new("", &pools);
    let _l = s.spawn();
    wait_for(10, "the warm VM", &|| s.log(), || s.vms().len() == 1);
    let (warm_cid, job) = s.vms()[0].clone();
    assert_eq!(job, "", "a warm VM has no job yet");
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{warm_cid}.json"))).unwrap())
            .unwrap();
    let secret = args[5]["agent_launcher"]["secret"].as_str().unwrap().to_string();
    // the warm VM asks for its job: nothing yet
    assert_eq!(s.http_get("/v1/assignment", Some(&secret)).0, 204);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.vms().len(), 1, "exactly `warm` VMs are kept");
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    wait_for(10, "the assignment", &|| s.log(), || s.http_get("/v1/assignment", Some(&secret)).0 == 200);
    let (_, body) = s.http_get("/v1/assignment", Some(&secret));
    let a: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(a["job_id"], j);
    assert_eq!(a["agent_tags"], "queue=vm,os=linux");
    // the job did not cost a create; a new warm VM replaces the one that was taken
    wait_for(10, "a new warm VM", &|| s.log(), || s.vms().len() == 2);
    assert_eq!(s.creates_by_job().get(&j), None);
    assert_eq!(s.bk.job(&j).reservations, 1);
    wait_for(5, "the metadata of the assigned VM", &|| s.log(), || {
        std::fs::read_to_string(s.cpi_dir().join(format!("vms/{warm_cid}.meta.json"))).unwrap_or_default().contains(&j)
    });
    let (_, m) = s.http_get("/metrics", None);
    assert!(
        m.contains("launcher_vms{pool=\"linux\",state=\"warm\"} 1")
            || m.contains("launcher_vms{pool=\"linux\",state=\"creating\"} 1"),
        "{m}"
    );
    s.bk.set_state(&j, "passed");
    wait_for(10, "the used VM to go", &|| s.log(), || !s.vms().iter().any(|(c, _)| *c == warm_cid));
    assert_eq!(s.vms().len(), 1);
    wait_for(5, "the used VM's secret to be revoked", &|| s.log(), || {
        s.http_get("/v1/assignment", Some(&secret)).0 == 401
    });
}

/// The in-guest bootstrap (examples/launcher/bootstrap.sh) against the real launcher: it reads the settings
/// the CPI got, waits for a warm VM's assignment, and runs buildkite-agent with the job, tags and a token file.
#[test]
fn launcher_bootstrap_script_acquires_the_assigned_job() {
    let have = ["/usr/bin/curl", "/usr/bin/jq"].iter().all(|p| Path::new(p).exists());
    if !crate::util::require_peer("curl and jq (for the in-guest bootstrap script)", have) {
        return;
    }
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 2\nwarm = 1");
    let s = Setup::new("", &pools);
    let _l = s.spawn();
    wait_for(10, "the warm VM", &|| s.log(), || s.vms().len() == 1);
    let (cid, _) = s.vms()[0].clone();
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid}.json"))).unwrap()).unwrap();
    // the guest's view: the agent settings document, whose `env` is create_vm's env
    let guest = s.dir.path().join("guest");
    let bin = guest.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(guest.join("settings.json"), json!({"agent_id": args[0], "env": args[5]}).to_string()).unwrap();
    let fake = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    let rec = guest.join("agent-args");
    fake("buildkite-agent", &format!("printf '%s\\n' \"$@\" > {r}; tok=$(echo \"$@\" | sed -n 's|.*file://\\([^ ]*\\).*|\\1|p'); cat \"$tok\" > {r}.token; exit 0", r = rec.display()));
    fake("poweroff", &format!("touch {}", guest.join("powered-off").display()));
    fake("logger", "exit 0");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/launcher/bootstrap.sh");
    let child = Command::new("/bin/sh")
        .arg(&script)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("AGENT_LAUNCHER_SETTINGS", guest.join("settings.json"))
        .env("AGENT_LAUNCHER_RUN_DIR", guest.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = child;
    // the warm VM waits for a job
    std::thread::sleep(Duration::from_millis(700));
    assert!(!rec.exists(), "no job yet, so no agent");
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut child = child;
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the bootstrap script did not finish\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let agent_args = std::fs::read_to_string(&rec).unwrap();
    let lines: Vec<&str> = agent_args.lines().collect();
    let arg = |flag: &str| {
        lines.iter().position(|l| *l == flag).map(|i| lines[i + 1]).unwrap_or_else(|| panic!("no {flag} in {lines:?}"))
    };
    assert_eq!(lines[0], "start");
    assert_eq!(arg("--acquire-job"), j);
    assert_eq!(arg("--tags"), "queue=vm,os=linux");
    assert_eq!(arg("--endpoint"), s.bk.url);
    assert!(arg("--token").starts_with("file://"), "the token is passed as a file");
    assert!(!agent_args.contains(TOKEN), "the token is not on the command line");
    assert_eq!(std::fs::read_to_string(format!("{}.token", rec.display())).unwrap().trim(), TOKEN);
    assert!(guest.join("powered-off").exists(), "the VM powers off after the job");
    assert!(!guest.join("run/token").exists(), "the token file is removed");
}

#[test]
fn launcher_rest_source_pages_through_builds_and_annotates_refusals() {
    let s = Setup::new("", POOL);
    // switch the config to the REST source
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "token_env = \"BK_TOKEN\"",
        &format!("token_env = \"BK_TOKEN\"\nsource = \"rest\"\nmax_pages = 5\nrest = {{ endpoint = \"{}\", organization = \"acme\", token_env = \"BK_REST_TOKEN\" }}", s.bk.url.trim_end_matches("/v3")),
    );
    std::fs::write(&s.config, text).unwrap();
    // two matching jobs behind 150 builds of another queue: only pagination finds them (newest first)
    let mine = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let odd = s.bk.add_job(&["queue=vm", "flavor=huge"], 0);
    for _ in 0..150 {
        s.bk.add_job(&["queue=elsewhere"], 0);
    }
    let child = Command::new(launcher_bin())
        .args(["run", "--config"])
        .arg(&s.config)
        .env("BK_TOKEN", TOKEN)
        .env("BK_REST_TOKEN", fake_bk::REST_TOKEN)
        .stderr(Stdio::from(std::fs::File::create(s.dir.path().join("launcher.log")).unwrap()))
        .spawn()
        .unwrap();
    let mut l = Launcher { child };
    wait_for(20, "the VM of the job on page 2", &|| s.log(), || s.vms().iter().any(|(_, j)| *j == mine));
    wait_for(10, "the refusal annotation", &|| s.log(), || {
        s.bk.st().annotations.iter().any(|(_, b)| b.contains(&odd) && b.contains("unknown flavor"))
    });
    s.bk.set_state(&mine, "passed");
    wait_for(20, "the VM to go", &|| s.log(), || s.vms().is_empty());
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(s.creates_by_job(), [(mine.clone(), 1)].into_iter().collect(), "the refused job is not retried");
    let st = s.bk.st();
    assert_eq!(st.rest_unfiltered, 0, "every builds query is narrowed with created_from");
    assert!(
        st.calls.iter().any(|(_, p)| p.starts_with("/v2/")) && !st.calls.iter().any(|(_, p)| p.contains("/stacks/"))
    );
    drop(st);
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0));
    let log = s.log();
    assert!(!log.contains(fake_bk::REST_TOKEN) && !log.contains(TOKEN), "{log}");
}

#[test]
fn launcher_deletes_vms_that_never_start_their_job_or_outlive_their_deadline() {
    // boot timeout: nobody runs the job, so each VM is deleted after 1 s; after 2 attempts the job fails
    let pools = POOL.replace("boot_timeout_seconds = 30", "boot_timeout_seconds = 1");
    let s = Setup::new("", &pools);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(20, "the job to be failed", &|| s.log(), || s.bk.job(&j).finish.is_some());
    let (code, detail) = s.bk.job(&j).finish.unwrap();
    assert_eq!(code, -1);
    assert!(detail.contains("did not start the job within 1 s"), "{detail}");
    wait_for(5, "no VMs", &|| s.log(), || s.vms().is_empty());
    let creates: Vec<_> = s.calls().into_iter().filter(|c| c[0] == "create_vm").collect();
    assert_eq!(creates.len(), 2, "{creates:?}");

    // lifetime: a running job's VM is deleted at its deadline, with a note on the build
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 2\nmax_lifetime_minutes = 0.025");
    let s = Setup::new("", &pools);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    s.bk.set_state(&j, "running");
    wait_for(10, "the VM past its lifetime to go", &|| s.log(), || s.vms().is_empty());
    assert!(s.log().contains("passed its lifetime"), "{}", s.log());
    assert!(s.bk.st().notifications.iter().any(|(jj, d)| *jj == j && d.contains("lifetime")));
    // and the job is finished: its agent is gone with the VM, the build must not wait for it
    wait_for(10, "the job to be finished", &|| s.log(), || s.bk.job(&j).finish.is_some());
    let (code, detail) = s.bk.job(&j).finish.unwrap();
    assert_eq!(code, -1);
    assert!(detail.contains("lifetime") && detail.contains("deleted"), "{detail}");
}

#[test]
fn launcher_drains_on_sigterm_when_configured() {
    let s = Setup::new("on_shutdown = \"drain\"", POOL);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    s.bk.set_state(&j, "running");
    l.signal("TERM");
    wait_for(5, "the launcher to see SIGTERM", &|| s.log(), || s.log().contains("SIGTERM: taking no new work"));
    // draining: no new work, the running job keeps its VM, the launcher keeps going
    let late = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    std::thread::sleep(Duration::from_millis(800));
    assert!(l.child.try_wait().unwrap().is_none(), "still draining");
    assert_eq!(s.vms().len(), 1);
    assert_eq!(s.bk.job(&late).reservations, 0);
    s.bk.set_state(&j, "passed");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    assert!(s.vms().is_empty());
    assert_eq!(s.bk.st().deregistered, 1);

    // leave (the default): SIGTERM exits at once and the VM stays for the next start
    let s = Setup::new("", POOL);
    s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(5)), Some(0), "{}", s.log());
    assert_eq!(s.vms().len(), 1);
    let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("vm={}", s.vms()[0].0)), "{text}");
}

#[test]
fn launcher_extends_the_reservation_while_a_vm_boots_slowly() {
    // reservations last 2 s in these tests; this create takes 3 s and the job then waits for its agent
    let s = Setup::new("", POOL);
    s.script(json!({"create_vm": {"delay_ms": 3000}}));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    std::thread::sleep(Duration::from_millis(1500));
    let job = s.bk.job(&j);
    assert!(job.reservations >= 3, "reserved {} times", job.reservations);
    assert_eq!(job.lapses, 0, "the reservation never ran out");
    assert_eq!(s.creates_by_job().get(&j), Some(&1));
}

#[test]
fn launcher_waits_out_an_exhausted_rate_limit() {
    let s = Setup::new("", POOL);
    let _l = s.spawn();
    wait_for(5, "a first poll", &|| s.log(), || {
        s.bk.st().calls.iter().filter(|(_, p)| p.contains("scheduled-jobs")).count() >= 2
    });
    s.bk.headers("scheduled-jobs", "RateLimit-Scope: list-scheduled-jobs\r\nRateLimit-Limit: 10\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 2\r\n");
    wait_for(5, "the limited answer", &|| s.log(), || s.bk.st().faults.is_empty());
    let mark = s.bk.st().calls.len();
    wait_for(10, "the next request", &|| s.log(), || s.bk.st().calls.len() > mark);
    let st = s.bk.st();
    let limited =
        st.calls.iter().rposition(|(_, p)| p.contains("scheduled-jobs")).filter(|i| *i < mark).unwrap_or(mark - 1);
    let gap = st.call_times[mark] - st.call_times[limited];
    assert!(
        gap >= Duration::from_millis(1900),
        "the next request came {gap:?} after RateLimit-Remaining: 0 with Reset: 2"
    );
}

#[test]
fn launcher_spreads_over_two_hosts_within_the_global_limit() {
    let two = format!("{POOL}{}", POOL.replace("name = \"linux\"", "name = \"linux2\"").replace("{CPI}", "{CPI2}"));
    let s = Setup::new("[limits]\nmax_vms = 3", &two);
    let jobs: Vec<String> = (0..4).map(|_| s.bk.add_job(&["queue=vm", "os=linux"], 0)).collect();
    let _l = s.spawn();
    let cpi2 = s.dir.path().join("cpi2");
    wait_for(10, "three VMs", &|| s.log(), || s.vms().len() + s.vms_in(&cpi2).len() == 3);
    std::thread::sleep(Duration::from_millis(500));
    let (a, b) = (s.vms().len(), s.vms_in(&cpi2).len());
    assert_eq!(a + b, 3, "the global max_vms holds");
    assert!(a >= 1 && b >= 1, "spread over both hosts: {a} + {b}");
    let (_, m) = s.http_get("/metrics", None);
    assert!(m.contains("reason=\"capacity\"} 1"), "{m}");
    // one job finishes: the waiting one starts
    let done = s.vms()[0].1.clone();
    s.bk.set_state(&done, "passed");
    wait_for(10, "the fourth job's VM", &|| s.log(), || {
        let all: Vec<String> = s.vms().into_iter().chain(s.vms_in(&cpi2)).map(|(_, j)| j).collect();
        all.len() == 3 && jobs.iter().filter(|j| **j != done).all(|j| all.contains(j))
    });
}

#[test]
fn launcher_pages_through_the_stacks_list() {
    let s = Setup::new("", POOL);
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("stack_key = \"test-stack\"", "stack_key = \"test-stack\"\npage_size = 2\nmax_pages = 3");
    std::fs::write(&s.config, text).unwrap();
    // oldest first: four jobs of another kind fill pages 1 and 2, ours is on page 3
    for _ in 0..4 {
        s.bk.add_job(&["queue=vm", "os=windows"], 0);
    }
    let mine = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the VM of the job on page 3", &|| s.log(), || s.vms().iter().any(|(_, j)| *j == mine));
    let st = s.bk.st();
    // cursors as the server gave them, the page size as configured
    assert!(
        st.queries.iter().any(|q| q.contains("after=4") && q.contains("limit=2") && q.contains("queue_key=vm")),
        "{:?}",
        st.queries
    );
    assert_eq!(st.registered, 1);
    assert_eq!(st.unauthorized, 0);
}
