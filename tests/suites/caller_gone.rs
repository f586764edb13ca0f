//! A caller that goes away mid-call, on every peer: a director worker killed mid-task, a `bosh` CLI interrupted.
//! Every CPI method runs three ways: with the caller's end of stderr closed before the CPI writes a line, with
//! its end of stdout closed, and with the parent process (a small perl parent that owns the pipes, as the
//! director's worker does) SIGKILLed right after it wrote the request. Expected of each call:
//!   - it exits within [`DEADLINE`] (before the fix a closed stderr made the first log line panic while the
//!     logger's lock was held, and the panic hook then waited for that lock for ever: a process asleep in
//!     `futex_do_wait` holding its in-flight marker's lock, so that nothing could reap its create);
//!   - with only stderr gone it still answers on stdout, correctly, and does its work;
//!   - with stdout gone (or the parent) it still does what it was told (a delete deletes, an attach attaches),
//!     and what a create made is undone: nobody will ever hear of its CID, so nobody else would delete it;
//!   - no in-flight marker stays locked, and once the director's clean-up ran nothing is left ([`finish`]).
use crate::peer::{finish, peer_tests, Peer};
use crate::util::{cpi_bin, Cpi};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

peer_tests!(every_method_exits_and_leaves_nothing_when_its_caller_goes);

/// How long any one call may take here (each is a second or two when left alone).
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Gone {
    /// The caller closed its end of stderr before reading anything.
    Stderr,
    /// The caller closed its end of stdout before reading anything.
    Stdout,
    /// The caller (the CPI's parent, holding both pipes) was SIGKILLed after writing the request.
    Parent,
}

/// What a call left: its response when the caller could still read one, its stderr when readable.
struct Outcome {
    response: Option<Value>,
    stderr: String,
}

/// The parent a director's worker stands for: makes the three pipes, runs the CPI on them, writes the request
/// it reads from its own stdin, prints the CPI's PID, then waits to be killed without reading anything.
const PARENT: &str = r#"
use strict; use warnings;
my $req = do { local $/; <STDIN> };
pipe(my $in_r, my $in_w) or die "pipe: $!";
pipe(my $out_r, my $out_w) or die "pipe: $!";
pipe(my $err_r, my $err_w) or die "pipe: $!";
my $pid = fork() // die "fork: $!";
if ($pid == 0) {
  open(STDIN, '<&', $in_r) or die; open(STDOUT, '>&', $out_w) or die; open(STDERR, '>&', $err_w) or die;
  exec(@ARGV) or die "exec: $!";
}
close $in_r; close $out_w; close $err_w;
syswrite($in_w, $req) // die "write: $!"; close $in_w;
$| = 1; print "$pid\n";
sleep 3600;
"#;

fn cpi_command(config: &Path) -> Command {
    let mut cmd = Command::new(cpi_bin());
    cmd.arg("--config").arg(config);
    director_env(&mut cmd);
    cmd
}

/// The environment the director runs a CPI in: PATH (and TMPDIR) only.
fn director_env(cmd: &mut Command) {
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    if let Ok(t) = std::env::var("TMPDIR") {
        cmd.env("TMPDIR", t);
    }
}

/// What the process `pid` is doing (for a hang report): its state, kernel wait channel and threads.
fn where_it_waits(pid: u32) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let threads = read("status").lines().find(|l| l.starts_with("Threads:")).unwrap_or_default().to_string();
    format!("wchan {:?}, {threads}, stack:\n{}", read("wchan"), read("stack"))
}

/// Whether `pid` has exited (gone, or a zombie its new parent has not reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Waits for a child until [`DEADLINE`]; panics with where it waits (and kills it) when it does not exit.
fn wait_child(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > DEADLINE {
            let waits = where_it_waits(child.id());
            let _ = child.kill();
            panic!("{what}: still running after {} s: {waits}", DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drain(r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}

/// One call whose caller goes away as `gone` says.
fn call_gone(config: &Path, method: &str, args: &Value, gone: Gone) -> Outcome {
    let req =
        json!({"method": method, "arguments": args, "context": {"director_uuid": "test-director"}, "api_version": 2})
            .to_string();
    let what = format!("{method} with the caller's {gone:?} gone");
    match gone {
        Gone::Stderr | Gone::Stdout => {
            let mut child = cpi_command(config)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
            // the caller's end of the pipe closes before the CPI writes its first line
            let (out, err) = if gone == Gone::Stderr {
                drop(child.stderr.take());
                (Some(drain(child.stdout.take().unwrap())), None)
            } else {
                drop(child.stdout.take());
                (None, Some(drain(child.stderr.take().unwrap())))
            };
            let status = wait_child(&mut child, &what);
            let stderr = err.map(|t| t.join().unwrap()).unwrap_or_default();
            let response = out.map(|t| {
                let stdout = t.join().unwrap();
                assert!(status.success(), "{what}: exit status {status} with a response to write: {stdout}");
                serde_json::from_str::<Value>(&stdout)
                    .unwrap_or_else(|e| panic!("{what}: stdout is no response ({e}): {stdout}"))
            });
            if gone == Gone::Stdout {
                // the response could not be written: a failure the caller (were it there) would see
                assert!(!status.success(), "{what}: exit status 0 with no response written\nstderr:\n{stderr}");
            }
            Outcome { response, stderr }
        }
        Gone::Parent => {
            let mut cmd = Command::new("/usr/bin/perl");
            director_env(&mut cmd);
            let mut parent = cmd
                .arg("-e")
                .arg(PARENT)
                .arg(cpi_bin())
                .arg("--config")
                .arg(config)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("perl (the test's stand-in for the director's worker)");
            parent.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
            let mut line = String::new();
            BufReader::new(parent.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let pid: u32 = line.trim().parse().unwrap_or_else(|_| panic!("{what}: the parent printed {line:?}"));
            // creates last far longer than this: killed mid-call, never after its response was written
            let alive = !exited(pid);
            parent.kill().unwrap();
            parent.wait().unwrap();
            if method.starts_with("create_") {
                assert!(alive, "{what}: the CPI finished before its parent was killed");
            }
            let started = Instant::now();
            while !exited(pid) {
                if started.elapsed() > DEADLINE {
                    let waits = where_it_waits(pid);
                    // SAFETY: kill(2) on the PID of the orphaned CPI this test started; no memory is involved.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    panic!("{what}: still running after {} s: {waits}", DEADLINE.as_secs());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Outcome { response: None, stderr: String::new() }
        }
    }
}

/// The result of an answered call, asserting that it succeeded.
fn result(o: &Outcome, method: &str) -> Option<Value> {
    let r = o.response.as_ref()?;
    assert!(r["error"].is_null(), "{method}: {}", r["error"]);
    Some(r["result"].clone())
}

fn every_method_exits_and_leaves_nothing_when_its_caller_goes(peer: &dyn Peer) {
    let cpi = Cpi::with_config(&peer.config());
    let config = cpi.config.clone();
    let img = tempfile::tempdir().unwrap();
    let image = peer.stemcell_image(img.path());
    let sc = cpi.ok("create_stemcell", json!([image, {}]));
    let snapshots = {
        // whether this driver makes disk snapshots at all (libvirt does; vSphere and vmrun say NotImplemented)
        let d = cpi.ok("create_disk", json!([peer.disk_mib(), {}, null]));
        let r = cpi.call("snapshot_disk", json!([d, {}]));
        if let Some(s) = r.response["result"].as_str() {
            cpi.ok("delete_snapshot", json!([s]));
        }
        cpi.ok("delete_disk", json!([d]));
        r.response["error"].is_null()
    };
    let started = Instant::now();
    let mut calls = 0;
    for gone in [Gone::Stderr, Gone::Stdout, Gone::Parent] {
        let base = peer.objects();
        let mut call = |method: &str, args: Value| {
            calls += 1;
            let o = call_gone(&config, method, &args, gone);
            let held: Vec<_> = peer.markers().into_iter().filter(|m| m.held()).map(|m| m.lock).collect();
            assert!(held.is_empty(), "{method} ({gone:?} gone) exited and left markers locked: {held:?}");
            o
        };
        let tag = format!("gone-{gone:?}").to_lowercase();

        // creates: answered → the caller deletes what it heard of; unanswered → undone by the CPI itself
        let creates: Vec<(&str, Value, &str)> = vec![
            ("create_stemcell", json!([image, {}]), "delete_stemcell"),
            ("create_vm", peer.create_vm_args(&format!("agent-{tag}"), &sc, peer.vm_props(true)), "delete_vm"),
            ("create_disk", json!([peer.disk_mib(), {}, null]), "delete_disk"),
        ];
        for (method, args, delete) in creates {
            let o = call(method, args);
            match result(&o, method) {
                Some(r) => {
                    let cid = if r.is_array() { r[0].clone() } else { r };
                    assert!(cid.is_string(), "{method}: {cid}");
                    cpi.ok(delete, json!([cid]));
                }
                None => assert_eq!(
                    peer.objects(),
                    base,
                    "{method} ({gone:?} gone): what it made was not undone\nstderr:\n{}",
                    o.stderr
                ),
            }
        }

        // the other methods on objects the caller knows of
        let vm =
            cpi.ok("create_vm", peer.create_vm_args(&format!("agent-{tag}-2"), &sc, peer.vm_props(false)))[0].clone();
        let disk = cpi.ok("create_disk", json!([peer.disk_mib(), {}, vm]));
        if let Some(r) = result(&call("info", json!([])), "info") {
            assert_eq!(r["api_version"], 2);
        }
        if let Some(r) = result(&call("has_vm", json!([vm])), "has_vm") {
            assert_eq!(r, json!(true));
        }
        let o = call("set_vm_metadata", json!([vm, {"deployment": "gone", "purpose": tag}]));
        result(&o, "set_vm_metadata");
        let described = peer.describe_vm(vm.as_str().unwrap());
        assert!(described.contains(&tag), "set_vm_metadata ({gone:?} gone) was not done: {described}\n{}", o.stderr);
        result(&call("reboot_vm", json!([vm])), "reboot_vm");
        if let Some(r) = result(
            &call("calculate_vm_cloud_properties", json!([{"cpu": 1, "ram": 512, "ephemeral_disk_size": 1024}])),
            "calculate_vm_cloud_properties",
        ) {
            assert!(r.is_object(), "{r}");
        }
        if let Some(r) = result(&call("has_disk", json!([disk])), "has_disk") {
            assert_eq!(r, json!(true));
        }
        result(&call("set_disk_metadata", json!([disk, {"purpose": tag}])), "set_disk_metadata");
        let o = call("attach_disk", json!([vm, disk]));
        result(&o, "attach_disk");
        assert_eq!(
            cpi.ok("get_disks", json!([vm])),
            json!([disk]),
            "attach_disk ({gone:?} gone) was not done\n{}",
            o.stderr
        );
        if let Some(r) = result(&call("get_disks", json!([vm])), "get_disks") {
            assert_eq!(r, json!([disk]));
        }
        let o = call("detach_disk", json!([vm, disk]));
        result(&o, "detach_disk");
        assert_eq!(
            cpi.ok("get_disks", json!([vm])),
            json!([]),
            "detach_disk ({gone:?} gone) was not done\n{}",
            o.stderr
        );
        if let Some(r) = call("resize_disk", json!([disk, peer.disk_mib() * 2])).response {
            // the vSphere simulator cannot extend a disk: NotSupported (the director then migrates the disk)
            assert!(r["error"].is_null() || r["error"]["type"] == "Bosh::Clouds::NotSupported", "resize_disk: {r}");
        }
        if let Some(r) = call("update_disk", json!([disk, peer.disk_mib() * 3, {}])).response {
            assert_eq!(r["error"]["type"], "Bosh::Clouds::NotSupported", "{r}");
        }
        let before = peer.objects();
        let o = call("snapshot_disk", json!([disk, {}]));
        match o.response.as_ref() {
            Some(r) if snapshots => {
                cpi.ok("delete_snapshot", json!([r["result"]]));
            }
            Some(r) => assert!(!r["error"].is_null(), "snapshot_disk: {r}"),
            None => assert_eq!(peer.objects(), before, "snapshot_disk ({gone:?} gone) was not undone\n{}", o.stderr),
        }
        if snapshots {
            let snap = cpi.ok("snapshot_disk", json!([disk, {}]));
            let o = call("delete_snapshot", json!([snap]));
            result(&o, "delete_snapshot");
            assert_eq!(peer.objects(), before, "delete_snapshot ({gone:?} gone) was not done\n{}", o.stderr);
        } else if let Some(r) = call("delete_snapshot", json!(["snap-0123456789abcdef"])).response {
            assert!(!r["error"].is_null(), "delete_snapshot: {r}");
        }
        let o = call("delete_disk", json!([disk]));
        result(&o, "delete_disk");
        assert_eq!(
            cpi.ok("has_disk", json!([disk])),
            json!(false),
            "delete_disk ({gone:?} gone) was not done\n{}",
            o.stderr
        );
        let o = call("delete_vm", json!([vm]));
        result(&o, "delete_vm");
        assert_eq!(cpi.ok("has_vm", json!([vm])), json!(false), "delete_vm ({gone:?} gone) was not done\n{}", o.stderr);
        let sc2 = cpi.ok("create_stemcell", json!([image, {}]));
        let o = call("delete_stemcell", json!([sc2]));
        result(&o, "delete_stemcell");
        assert_eq!(peer.objects(), base, "delete_stemcell ({gone:?} gone) was not done\n{}", o.stderr);
    }
    eprintln!(
        "{}: {calls} calls whose caller went away (stderr closed, stdout closed, parent killed), all exited, {} s",
        peer.name(),
        started.elapsed().as_secs()
    );
    finish(peer, &cpi, &sc, &[]);
}
