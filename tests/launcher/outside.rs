//! What testing from outside found (issue 11): each test pins one behaviour that an independent Buildkite
//! stand-in and fake CPI showed to be wrong.
use super::*;
use serde_json::json;

fn count(s: &Setup, name: &str) -> u32 {
    std::fs::read_to_string(s.cpi_dir().join(format!("count.{name}")))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn set_config(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&s.config, text.replacen(from, to, 1)).unwrap();
}

fn run_cmd(s: &Setup, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(launcher_bin())
        .args(args)
        .arg("--config")
        .arg(&s.config)
        .env("BK_TOKEN", TOKEN)
        .env("BK_REST_TOKEN", fake_bk::REST_TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Item 1: `dispatch_paused` and `paused` in one reply used to be a serde "duplicate field" error on every poll.
#[test]
fn launcher_reads_a_queue_reply_with_both_paused_spellings() {
    let s = Setup::new("", POOL);
    s.bk.st().both_paused_fields = true;
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the job's VM", &|| s.log(), || s.vms().iter().any(|(_, jj)| *jj == j));
    assert!(!s.log().contains("duplicate field"), "{}", s.log());
}

/// Item 1: `/healthz` stops answering 200 after consecutive failed polls, with a metric, and recovers.
#[test]
fn launcher_healthz_turns_unhealthy_after_consecutive_failed_polls() {
    let s = Setup::new("", POOL);
    let _l = s.spawn();
    wait_for(10, "a healthy launcher", &|| s.log(), || s.http_get("/healthz", None).0 == 200);
    s.bk.st().list_override = Some((200, r#"{"message":"not a page"}"#.into()));
    wait_for(20, "/healthz to fail", &|| s.log(), || s.http_get("/healthz", None).0 == 503);
    let (_, body) = s.http_get("/healthz", None);
    assert!(body.contains("consecutive failed polls"), "{body}");
    let (_, m) = s.http_get("/metrics", None);
    let n: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("launcher_buildkite_consecutive_failed_polls "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no gauge in {m}"));
    assert!(n >= 3.0, "{m}");
    s.bk.st().list_override = None;
    wait_for(30, "/healthz to recover", &|| s.log(), || s.http_get("/healthz", None).0 == 200);
    let (_, m) = s.http_get("/metrics", None);
    assert!(m.contains("launcher_buildkite_consecutive_failed_polls 0"), "{m}");
}

/// Item 2: a reserve whose reply is lost (headers came, the body timed out) is reconciled at once, and the
/// log says it timed out (it used to read the body as empty: "EOF while parsing", the jobs stranded).
#[test]
fn launcher_reconciles_a_reserve_whose_reply_was_lost() {
    let s = Setup::new("", POOL);
    // a long reservation: a stranded job would stay hidden for the whole test
    set_config(&s, "reservation_expiry_seconds = 2", "reservation_expiry_seconds = 120");
    s.bk.stall_body("batch-reserve", 1500);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the job's VM", &|| s.log(), || s.vms().iter().any(|(_, jj)| *jj == j));
    let log = s.log();
    assert!(log.contains("reserve jobs: timed out"), "{log}");
    assert!(!log.contains("EOF while parsing"), "{log}");
    let job = s.bk.job(&j);
    assert!(job.reservations >= 2 && job.lapses == 0, "{job:?}");
    assert_eq!(s.creates_by_job().get(&j), Some(&1));

    // every attempt of one reserve loses its answer: the next poll reserves the (hidden) job again
    let k = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    for _ in 0..3 {
        s.bk.stall_body("batch-reserve", 1500);
    }
    wait_for(20, "the second job's VM", &|| s.log(), || s.vms().iter().any(|(_, jj)| *jj == k));
    assert!(s.bk.st().faults.is_empty(), "all three answers were lost");
    let job = s.bk.job(&k);
    assert!(job.reservations >= 4 && job.lapses == 0, "{job:?}");
    assert_eq!(s.creates_by_job().get(&k), Some(&1));
}

/// Item 3: `--dry-run` on a fresh setup and after a clean stop (stack deregistered): no 404, no reservation,
/// no CPI call, and the stack is left as it was found.
#[test]
fn launcher_dry_run_works_without_a_running_launcher() {
    let s = Setup::new("", POOL);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let (ok, out, err) = run_cmd(&s, &["run", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("would create_vm job={j} pool=linux")), "{out}");
    assert!(s.bk.st().stacks.is_empty(), "the stack is left unregistered");
    assert_eq!(s.bk.job(&j).reservations, 0);
    assert!(s.calls().is_empty());

    let mut l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(s.bk.st().stacks.is_empty(), "deregistered");
    let k = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let calls = s.calls().len();
    let (ok, out, err) = run_cmd(&s, &["run", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("would create_vm job={k} pool=linux")), "{out}");
    assert_eq!((s.bk.job(&k).reservations, s.calls().len()), (0, calls));
    assert!(s.bk.st().stacks.is_empty());
}

/// Item 4: a VM recovered from an interrupted create_vm gets its metadata.
#[test]
fn launcher_tags_a_vm_recovered_from_an_interrupted_create_vm() {
    let s = Setup::new("", POOL);
    s.script(json!({"create_vm": {"delay_ms": 1500}}));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "create_vm to start", &|| s.log(), || count(&s, "create_vm") == 1);
    l.kill9();
    let _l = s.spawn();
    wait_for(10, "the recovered VM", &|| s.log(), || s.vms().len() == 1);
    let (cid, job) = s.vms()[0].clone();
    assert_eq!(job, j);
    wait_for(10, "its metadata", &|| s.log(), || s.cpi_dir().join(format!("vms/{cid}.meta.json")).exists());
    let md: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid}.meta.json"))).unwrap())
            .unwrap();
    assert_eq!((md["job"].as_str(), md["agent-launcher"].as_str()), (Some(j.as_str()), Some("test-launcher")));
    assert_eq!(count(&s, "create_vm"), 1);
}

/// Item 5: `on_shutdown = "drain"` with warm VMs exits once the jobs are done (the warm VMs are deleted).
#[test]
fn launcher_drains_warm_vms_on_sigterm() {
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 2\nwarm = 1");
    let s = Setup::new("on_shutdown = \"drain\"", &pools);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "the job's VM and a warm VM", &|| s.log(), || {
        s.vms().len() == 2 && s.vms().iter().any(|(_, jj)| *jj == j)
    });
    s.bk.set_state(&j, "running");
    l.signal("TERM");
    std::thread::sleep(Duration::from_millis(600));
    assert!(l.child.try_wait().unwrap().is_none(), "still draining the running job");
    assert!(s.vms().iter().any(|(_, jj)| *jj == j));
    s.bk.set_state(&j, "passed");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    assert!(s.vms().is_empty(), "{:?}", s.vms());
}

/// Item 6: kill -9 during the first create_stemcell: the restart settles that call instead of uploading
/// again (one stemcell), and the spool is empty afterwards (no extracted image left behind).
#[test]
fn launcher_settles_a_create_stemcell_interrupted_by_sigkill() {
    let s = Setup::new("", POOL);
    let tgz = s.dir.path().join("stemcell.tgz");
    {
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tgz).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, data) in [
            ("stemcell.MF", b"name: fake\nversion: '1'\napi_version: 2\ncloud_properties:\n  disk: 1024\n".as_slice()),
            ("image", &[7u8; 100_000][..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
    }
    set_config(&s, "stemcell = { cid = \"sc-fake\" }", &format!("stemcell = {{ tarball = \"{}\" }}", tgz.display()));
    s.script(json!({"create_stemcell": {"delay_ms": 1500}}));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "create_stemcell to start", &|| s.log(), || count(&s, "create_stemcell") == 1);
    l.kill9();
    let _l = s.spawn();
    wait_for(15, "the job's VM", &|| s.log(), || s.vms().iter().any(|(_, jj)| *jj == j));
    assert_eq!(count(&s, "create_stemcell"), 1, "uploaded again:\n{}", s.log());
    assert_eq!(s.calls().iter().filter(|c| c[0] == "create_stemcell").count(), 1);
    let spool = s.dir.path().join("ledger/spool");
    wait_for(10, "an empty spool", &|| s.log(), || {
        std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .all(|e| !e.file_type().unwrap().is_dir() && !e.file_name().to_string_lossy().starts_with("stemcell-"))
    });
    // create_vm's context carries the api_version of the tarball's stemcell.MF (item 10)
    let ctx = std::fs::read_to_string(s.cpi_dir().join("contexts.log")).unwrap();
    assert!(ctx.lines().any(|l| l.starts_with("create_vm ") && l.ends_with(" 2")), "{ctx}");
}

/// Item 8: a warm VM gets a whole lifetime for its job, counted from the assignment.
#[test]
fn launcher_resets_the_deadline_of_a_warm_vm_when_it_gets_a_job() {
    // 6 s lifetime
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 2\nwarm = 1\nmax_lifetime_minutes = 0.1");
    let s = Setup::new("", &pools);
    let _l = s.spawn();
    wait_for(10, "the warm VM", &|| s.log(), || s.vms().len() == 1);
    let t0 = Instant::now();
    let (warm, _) = s.vms()[0].clone();
    std::thread::sleep(Duration::from_millis(3500));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    wait_for(5, "the assignment", &|| s.log(), || s.bk.job(&j).reservations >= 1);
    s.bk.set_state(&j, "running");
    // past the warm VM's first deadline (6 s after it was made), well before the new one (~9.5 s)
    std::thread::sleep(Duration::from_millis(7800u64.saturating_sub(t0.elapsed().as_millis() as u64)));
    assert!(s.vms().iter().any(|(c, _)| *c == warm), "the warm VM was cut short:\n{}", s.log());
    assert!(s.bk.job(&j).finish.is_none());
}

/// Item 9: `check-config` finds what used to fail only at run time, and `--online` checks the token.
#[test]
fn launcher_check_config_finds_what_would_fail_at_run_time() {
    let s = Setup::new("", POOL);
    let good = std::fs::read_to_string(&s.config).unwrap();
    let (ok, out, err) = run_cmd(&s, &["check-config"]);
    assert!(ok && out.contains("ok"), "{out}{err}");
    let (ok, out, err) = run_cmd(&s, &["check-config", "--online"]);
    assert!(ok && out.contains("ok"), "{out}{err}");
    assert!(s.bk.st().metrics_queue >= 1, "the online check asked the API");
    assert!(s.bk.st().stacks.is_empty(), "the online check registers nothing");

    let not_exec = s.dir.path().join("not-exec");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let junk = s.dir.path().join("junk.tgz");
    std::fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let cpi_line = good.lines().find(|l| l.starts_with("cpi = ")).unwrap().to_string();
    let url = s.bk.url.clone();
    let cases: Vec<(String, &str)> = vec![
        (good.replace(&cpi_line, "cpi = [\"/nonexistent/cpi\"]"), "/nonexistent/cpi"),
        (good.replace(&cpi_line, &format!("cpi = [\"{}\"]", not_exec.display())), "not executable"),
        (
            good.replace("stemcell = { cid = \"sc-fake\" }", "stemcell = { tarball = \"/nonexistent/stemcell.tgz\" }"),
            "/nonexistent/stemcell.tgz",
        ),
        (
            good.replace(
                "stemcell = { cid = \"sc-fake\" }",
                &format!("stemcell = {{ tarball = \"{}\" }}", junk.display()),
            ),
            "junk.tgz",
        ),
        (good.replace(&url, url.trim_start_matches("http://")), "endpoint"),
        (good.replace(&url, url.trim_end_matches("/v3")), "/v3"),
        (
            good.replace(&format!("listen = \"127.0.0.1:{}\"", s.port), &format!("listen = \"127.0.0.1:{busy_port}\"")),
            "listen",
        ),
        (good.replace("queue = \"vm\"", "queue = \"other\""), "queue=other"),
    ];
    for (text, want) in cases {
        std::fs::write(&s.config, &text).unwrap();
        let (ok, out, err) = run_cmd(&s, &["check-config"]);
        assert!(!ok, "check-config passed, wanted an error with {want:?}: {out}");
        assert!(err.contains(want), "want {want:?} in: {err}");
        assert!(!err.contains("panic"), "{err}");
    }
    std::fs::write(&s.config, &good).unwrap();
    let out = Command::new(launcher_bin())
        .args(["check-config", "--online", "--config"])
        .arg(&s.config)
        .env("BK_TOKEN", "bkct_wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    drop(busy);
}

/// Item 10: one request id per CPI call, `vm.stemcell.api_version` in the create_vm context, and the binary
/// names itself.
#[test]
fn launcher_cpi_context_ids_are_unique_and_create_vm_has_the_stemcell_api_version() {
    let s = Setup::new("", POOL);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    wait_for(10, "the VM", &|| s.log(), || s.vms().len() == 1);
    s.bk.set_state(&j, "passed");
    wait_for(10, "the VM to go", &|| s.log(), || s.vms().is_empty());
    l.signal("TERM");
    l.wait_exit(Duration::from_secs(10));
    let text = std::fs::read_to_string(s.cpi_dir().join("contexts.log")).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert!(lines.len() >= 3, "{text}");
    let ids: std::collections::HashSet<&str> = lines.iter().map(|l| l[1]).collect();
    assert_eq!(ids.len(), lines.len(), "request ids reused: {text}");
    let create = lines.iter().find(|l| l[0] == "create_vm").unwrap();
    assert_eq!(create[2], "3", "{text}");

    let out = Command::new(launcher_bin()).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("agent-launcher "), "{v}");
    let out = Command::new(launcher_bin()).arg("--help").output().unwrap();
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.lines().next().unwrap_or("").contains("Buildkite"), "{h}");
    assert!(!h.contains("self-run hypervisors"), "{h}");
}

/// Item 10: a failed create is retried after a pause, and polls that fail back off.
#[test]
fn launcher_backs_off_between_create_attempts_and_after_failed_polls() {
    let s = Setup::new("", POOL);
    s.script(json!({"create_vm": {"fail": 1}}));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(10, "the failed create", &|| s.log(), || s.calls().iter().any(|c| c[0] == "create_vm_fail"));
    let t = Instant::now();
    wait_for(10, "the retry", &|| s.log(), || s.vms().iter().any(|(_, jj)| *jj == j));
    assert!(t.elapsed() >= Duration::from_millis(800), "retried after {:?}", t.elapsed());

    // every list answers 500: the launcher must not keep hammering at its 100 ms poll interval
    s.bk.st().list_override = Some((500, r#"{"message":"boom"}"#.into()));
    let mark = s.bk.st().calls.len();
    std::thread::sleep(Duration::from_secs(5));
    let n = s.bk.st().calls[mark..].iter().filter(|(_, p)| p.ends_with("/scheduled-jobs")).count();
    assert!(n <= 10, "{n} list requests in 5 s of 500s");
}

/// Item 10: REST with `max_pages` reads the oldest builds first (newest first, the oldest were never seen).
#[test]
fn launcher_rest_source_reads_the_oldest_builds_first() {
    let s = Setup::new("", POOL);
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "token_env = \"BK_TOKEN\"",
        &format!("token_env = \"BK_TOKEN\"\nsource = \"rest\"\nmax_pages = 1\nrest = {{ endpoint = \"{}\", organization = \"acme\", token_env = \"BK_REST_TOKEN\" }}", s.bk.url.trim_end_matches("/v3")),
    );
    std::fs::write(&s.config, text).unwrap();
    // the oldest job is on page 2 of 2, newest first
    let oldest = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    for _ in 0..150 {
        s.bk.add_job(&["queue=elsewhere"], 0);
    }
    let (ok, out, err) = run_cmd(&s, &["run", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("would create_vm job={oldest}")), "{out}");
}

/// Item 11: the listener is a real HTTP server: malformed requests get an error answer (never a crash), the
/// per-VM secret still decides, wrong methods are refused, and TLS is an option.
#[test]
fn launcher_listener_handles_malformed_requests_and_serves_tls() {
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 2\nwarm = 1");
    let s = Setup::new("", &pools);
    let _l = s.spawn();
    wait_for(10, "the warm VM", &|| s.log(), || s.vms().len() == 1);
    let (cid, _) = s.vms()[0].clone();
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join(format!("vms/{cid}.json"))).unwrap()).unwrap();
    let secret = args[5]["agent_launcher"]["secret"].as_str().unwrap().to_string();
    let raw = |req: &[u8]| -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(req);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    for bad in [
        b"\x00\x01\x02 garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /v1/assignment HTTP/9.9\r\n\r\n".to_vec(),
        format!("GET /v1/assignment HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {secret}\r\n\r\n").into_bytes(),
        format!("GET /v1/assignment HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(200_000)).into_bytes(),
    ] {
        let answer = raw(&bad);
        assert!(!answer.contains("\"token\"") && !answer.contains(TOKEN), "{answer}");
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.0 4")
                || answer.starts_with("HTTP/1.1 5"),
            "{answer:.200}"
        );
    }
    // wrong or odd credentials: 401; a secret in the query string is not a credential
    for auth in ["Bearer wrong".to_string(), format!("Basic {secret}"), format!("Bearer {secret}x"), String::new()] {
        let h = if auth.is_empty() { String::new() } else { format!("Authorization: {auth}\r\n") };
        let a = raw(format!("GET /v1/assignment HTTP/1.1\r\nHost: x\r\n{h}Connection: close\r\n\r\n").as_bytes());
        assert!(a.starts_with("HTTP/1.1 401"), "{auth}: {a}");
    }
    let a =
        raw(format!("GET /v1/assignment?secret={secret} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let a = raw(format!("POST /v1/assignment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
    assert!(a.starts_with("HTTP/1.1 405"), "{a}");
    // still serving, and the right secret still works (a warm VM: 204)
    assert_eq!(s.http_get("/v1/assignment", Some(&secret)).0, 204);
    assert_eq!(s.http_get("/healthz", None).0, 200);
    drop(_l);

    // TLS: a certificate and key in the config; plain HTTP is then refused
    let cert = s.dir.path().join("cert.pem");
    let key = s.dir.path().join("key.pem");
    let st = Command::new("/usr/bin/openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "poll_interval_ms = 100",
        &format!(
            "poll_interval_ms = 100\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    let _l = s.spawn();
    let url = format!("https://127.0.0.1:{}", s.port);
    let curl = |path: &str, auth: Option<&str>| -> String {
        let mut c = Command::new("/usr/bin/curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(&cert);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: Bearer {a}")]);
        }
        String::from_utf8_lossy(&c.arg(format!("{url}{path}")).output().unwrap().stdout).to_string()
    };
    wait_for(10, "the TLS listener", &|| s.log(), || curl("/healthz", None) == "200");
    assert_eq!(curl("/v1/assignment", Some("wrong")), "401");
    assert_eq!(curl("/v1/assignment", Some(&secret)), "204");
    assert_ne!(s.http_get("/healthz", None).0, 200, "plain HTTP on the TLS port");
    assert!(s.log().contains(&format!("listening on https://127.0.0.1:{}", s.port)), "{}", s.log());
}
