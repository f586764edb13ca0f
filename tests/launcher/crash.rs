//! Crash safety: the launcher is SIGKILLed at random points (50 trials) while jobs arrive, VMs are created
//! and deleted; afterwards no VM is left behind and no job ever got a second VM.
use super::*;
use serde_json::json;

#[test]
fn launcher_sigkill_at_random_points_leaks_nothing_and_never_doubles_a_vm() {
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 20");
    let s = Setup::new("", &pools);
    // slow enough that kills land inside create_vm and delete_vm, fast enough for 50 trials
    s.script(json!({"create_vm": {"delay_ms": 150}, "delete_vm": {"delay_ms": 60}}));
    let _agents = s.agents(250);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut jobs = Vec::new();
    for trial in 0..50 {
        if trial % 4 == 0 {
            jobs.push(s.bk.add_job(&["queue=vm", "os=linux"], 0));
        }
        let mut l = s.spawn();
        std::thread::sleep(Duration::from_millis(30 + rand(450)));
        l.kill9();
    }
    let mut l = s.spawn();
    wait_for(60, "every job to finish and every VM to go", &|| s.log(), || {
        let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
        jobs.iter().all(|j| s.bk.job(j).state == "passed")
            && s.vms().is_empty()
            && String::from_utf8_lossy(&out.stdout).contains("no open records")
    });
    // the launcher leaves at its next loop turn, after the poll and the deregistration (each request bounded
    // by timeout_ms, 1 s here); twice under heavy load it took more than 10 s, its log showing nothing wrong
    l.signal("TERM");
    let t = std::time::Instant::now();
    assert_eq!(l.wait_exit(Duration::from_secs(30)), Some(0), "{}", s.log());
    eprintln!("the launcher exited {:?} after SIGTERM", t.elapsed());
    let creates = s.creates_by_job();
    for j in &jobs {
        assert_eq!(creates.get(j), Some(&1), "job {j} got {:?} VMs\n{}", creates.get(j), s.log());
    }
    assert!(s.vms().is_empty(), "leaked: {:?}", s.vms());
    // every VM the CPI made was deleted exactly once by delete_vm (none left to a manual cleanup)
    let deleted = s.calls().iter().filter(|c| c[0] == "delete_vm").count();
    assert_eq!(deleted, jobs.len());
    // the ledger stays clean after the clean stop, and nothing is left in the spool
    let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no open records"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let spool: Vec<_> =
        std::fs::read_dir(s.dir.path().join("ledger/spool")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(spool.is_empty(), "spool files left: {spool:?}");
}

/// The same, with a hostile CPI: creates that fail and crash, and a `has_vm` that always says "gone". Jobs may
/// then get a new VM after a restart, but never while another VM of theirs exists, and none is left behind.
#[test]
fn launcher_sigkill_with_a_failing_crashing_lying_cpi_leaks_nothing() {
    let pools = POOL.replace("create_attempts = 2", "create_attempts = 20");
    let s = Setup::new("", &pools);
    s.script(json!({"create_vm": {"delay_ms": 100, "fail": 2, "crash": 2}, "delete_vm": {"delay_ms": 40}, "has_vm": "lie_false"}));
    let _agents = s.agents(250);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut jobs = Vec::new();
    for trial in 0..25 {
        if trial % 4 == 0 {
            jobs.push(s.bk.add_job(&["queue=vm", "os=linux"], 0));
        }
        let mut l = s.spawn();
        std::thread::sleep(Duration::from_millis(30 + rand(400)));
        l.kill9();
    }
    let mut l = s.spawn();
    wait_for(60, "every job to finish and every VM to go", &|| s.log(), || {
        let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
        jobs.iter().all(|j| s.bk.job(j).state == "passed")
            && s.vms().is_empty()
            && String::from_utf8_lossy(&out.stdout).contains("no open records")
    });
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(s.vms().is_empty(), "leaked: {:?}", s.vms());
    // replay the CPI's call log: at no point did one job have two live VMs
    let mut live: std::collections::HashMap<String, String> = Default::default(); // cid → job
    for c in s.calls() {
        match c[0].as_str() {
            "create_vm" => {
                assert!(
                    !live.values().any(|j| *j == c[2]),
                    "job {} got a second VM {} while {:?} lived\n{}",
                    c[2],
                    c[1],
                    live,
                    s.log()
                );
                live.insert(c[1].clone(), c[2].clone());
            }
            "delete_vm" => {
                live.remove(&c[1]);
            }
            _ => {}
        }
    }
    assert!(live.is_empty(), "never deleted: {live:?}");
    assert!(s.calls().iter().any(|c| c[0] == "create_vm_fail") && s.calls().iter().any(|c| c[0] == "create_vm_crash"));
}
