//! What the simulator cannot show, over real HTTP against a scripted SOAP server (a local listener that
//! answers each operation from a script and records every request): the bootstrap's guest-operations flow
//! (order of calls, readiness wait, exit codes, escaping of the guest password), and NFC uploads to a host
//! other than the SDK's (no session cookie goes there; every byte does).
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use vmcpi::driver::vsphere::bootstrap::{self, Bootstrap};
use vmcpi::driver::vsphere::client::Session;
use vmcpi::driver::vsphere::soap::{self, MoRef};
use vmcpi::driver::vsphere::VsphereConfig;
use vmcpi::error::ErrorKind;

type Script = Arc<dyn Fn(&str, usize) -> (u16, String) + Send + Sync>;

/// A scripted server: `script(operation, nth call of it)` gives status and body.
struct Fake {
    url: String,
    /// (operation or request line, body) of every request.
    log: Arc<Mutex<Vec<(String, String)>>>,
    /// Request heads (request line and headers) in order.
    heads: Arc<Mutex<Vec<String>>>,
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

fn fault(kind: &str, msg: &str) -> (u16, String) {
    (
        500,
        envelope(&format!(
            r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{msg}</faultstring><detail><{kind}Fault xmlns="urn:vim25" xsi:type="{kind}"></{kind}Fault></detail></soapenv:Fault>"#
        )),
    )
}

fn ok(op: &str, inner: &str) -> (u16, String) {
    (200, envelope(&format!(r#"<{op}Response xmlns="urn:vim25">{inner}</{op}Response>"#)))
}

impl Fake {
    fn start(script: Script) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sdk", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let counts: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
        let (log2, counts2, heads2) = (log.clone(), counts.clone(), heads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, counts, script, heads) = (log2.clone(), counts2.clone(), script.clone(), heads2.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut head = line.clone();
                        loop {
                            line.clear();
                            reader.read_line(&mut line).unwrap();
                            if line == "\r\n" {
                                break;
                            }
                            head.push_str(&line);
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        reader.read_exact(&mut body).unwrap();
                        let body = String::from_utf8_lossy(&body).into_owned();
                        let op = soap::decode(200, body.as_bytes())
                            .map(|n| n.name)
                            .unwrap_or_else(|_| head.lines().next().unwrap_or_default().to_string());
                        heads.lock().unwrap().push(head);
                        let nth = {
                            let mut c = counts.lock().unwrap();
                            let e = c.entry(op.clone()).or_default();
                            *e += 1;
                            *e
                        };
                        log.lock().unwrap().push((op.clone(), body));
                        let (status, reply) = script(&op, nth);
                        let head = format!("HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nSet-Cookie: vmware_soap_session=\"fake\"; Path=/\r\nContent-Length: {}\r\n\r\n", reply.len());
                        stream.write_all(head.as_bytes()).unwrap();
                        stream.write_all(reply.as_bytes()).unwrap();
                    }
                });
            }
        });
        Fake { url, log, heads }
    }

    fn ops(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(o, _)| o.clone()).collect()
    }
}

/// Answers the session calls and the process manager lookup; `guest` scripts the guest operations.
fn script(guest: impl Fn(&str, usize) -> Option<(u16, String)> + Send + Sync + 'static) -> Script {
    let sc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vsphere/response_service_content.xml"
    ))
    .unwrap();
    Arc::new(move |op: &str, nth: usize| {
        if let Some(r) = guest(op, nth) {
            return r;
        }
        match op {
            "RetrieveServiceContent" => (200, sc.clone()),
            "Login" => ok("Login", "<returnval><key>k</key><userName>user</userName></returnval>"),
            "Logout" => ok("Logout", ""),
            // an NFC upload to the SDK host
            put if put.starts_with("PUT /nfc/") => (200, String::new()),
            "RetrievePropertiesEx" => ok(
                "RetrievePropertiesEx",
                r#"<returnval><objects><obj type="GuestOperationsManager">guestOperationsManager</obj><propSet><name>processManager</name><val type="GuestProcessManager" xsi:type="ManagedObjectReference">pm</val></propSet></objects></returnval>"#,
            ),
            other => fault("MethodNotFound", &format!("{other} is not scripted")),
        }
    })
}

fn session(f: &Fake) -> Session {
    let cfg: VsphereConfig =
        serde_json::from_value(json!({"host": f.url, "user": "user", "password": "pw", "datacenter": "DC0"})).unwrap();
    Session::connect(&cfg).unwrap()
}

fn plan() -> Bootstrap {
    Bootstrap {
        script: "echo ok".into(),
        interpreter: "/bin/bash".into(),
        username: Some("vcap".into()),
        password: Some("g&<pw>".into()),
        ready_process: Some("bosh-agent".into()),
        min_wait_seconds: 0,
        max_wait_seconds: 30,
        script_path: None,
    }
}

const AGENT: &str = "<returnval><name>bosh-agent</name><pid>7</pid><owner>root</owner><cmdLine>/var/vcap/bosh/bin/bosh-agent</cmdLine><startTime>2026-01-01T00:00:00Z</startTime></returnval>";

fn exited(code: i32) -> String {
    format!("<returnval><name>bash</name><pid>42</pid><owner>vcap</owner><cmdLine>/bin/bash -c x</cmdLine><startTime>2026-01-01T00:00:00Z</startTime><endTime>2026-01-01T00:00:01Z</endTime><exitCode>{code}</exitCode></returnval>")
}

#[test]
fn vsphere_bootstrap_waits_for_the_agent_then_runs_the_script() {
    // the first listing finds no agent yet; the second does; the script runs and exits 0 on the second look
    let f = Fake::start(script(|op, nth| {
        match (op, nth) {
        ("ListProcessesInGuest", 1) => Some(ok(op, "")),
        ("ListProcessesInGuest", 2) => Some(ok(op, AGENT)),
        ("StartProgramInGuest", _) => Some(ok(op, "<returnval>42</returnval>")),
        ("ListProcessesInGuest", 3) => Some(ok(op, "<returnval><name>bash</name><pid>42</pid><owner>vcap</owner><cmdLine>x</cmdLine><startTime>2026-01-01T00:00:00Z</startTime></returnval>")),
        ("ListProcessesInGuest", _) => Some(ok(op, &exited(0))),
        _ => None,
    }
    }));
    let s = session(&f);
    bootstrap::run(&s, &MoRef::new("VirtualMachine", "vm-1"), &plan()).unwrap();
    let ops = f.ops();
    let guest: Vec<&str> = ops.iter().map(String::as_str).filter(|o| o.contains("Guest")).collect();
    assert_eq!(
        guest,
        [
            "ListProcessesInGuest",
            "ListProcessesInGuest",
            "StartProgramInGuest",
            "ListProcessesInGuest",
            "ListProcessesInGuest"
        ]
    );
    let log = f.log.lock().unwrap();
    let start = &log.iter().find(|(o, _)| o == "StartProgramInGuest").unwrap().1;
    assert!(
        start.contains("<password>g&amp;&lt;pw&gt;</password>")
            && start.contains("<arguments>-c &apos;echo ok&apos;</arguments>"),
        "{start}"
    );
    let last = &log.iter().rev().find(|(o, _)| o == "ListProcessesInGuest").unwrap().1;
    assert!(last.contains("<pids>42</pids>"), "{last}");
}

#[test]
fn vsphere_bootstrap_failures() {
    // a non-zero exit fails with the status
    let f = Fake::start(script(|op, _| match op {
        "ListProcessesInGuest" => Some(ok(op, &format!("{AGENT}{}", exited(3)))),
        "StartProgramInGuest" => Some(ok(op, "<returnval>42</returnval>")),
        _ => None,
    }));
    let e = bootstrap::run(&session(&f), &MoRef::new("VirtualMachine", "vm-1"), &plan()).unwrap_err();
    assert!(e.to_string().contains("exited with status 3"), "{e}");

    // wrong guest credentials: not retryable, names the user
    let f = Fake::start(script(|op, _| {
        (op == "ListProcessesInGuest")
            .then(|| fault("InvalidGuestLogin", "Failed to authenticate with the guest operating system"))
    }));
    let e = bootstrap::run(&session(&f), &MoRef::new("VirtualMachine", "vm-1"), &plan()).unwrap_err();
    assert!(e.kind() == ErrorKind::Invalid && e.to_string().contains("vcap"), "{e}");

    // tools not up yet: retried until the deadline, then a clear timeout
    let f = Fake::start(script(|op, _| {
        (op == "ListProcessesInGuest").then(|| fault("GuestOperationsUnavailable", "tools not running"))
    }));
    let mut p = plan();
    p.max_wait_seconds = 1;
    let e = bootstrap::run(&session(&f), &MoRef::new("VirtualMachine", "vm-1"), &p).unwrap_err();
    assert!(e.to_string().contains("not ready within 1 s"), "{e}");
}

#[test]
fn vsphere_nfc_upload_to_another_host_gets_no_session_cookie() {
    let sdk = Fake::start(script(|_, _| None));
    let esx = Fake::start(Arc::new(|_: &str, _| (200, String::new())));
    let s = session(&sdk);
    // the lease names the ESXi host (here: "localhost" for the same machine, a different host name)
    let port = esx.url.rsplit(':').next().unwrap().trim_end_matches("/sdk");
    let data = vec![7u8; 100_000];
    s.put_stream(&format!("http://localhost:{port}/nfc/52a/disk-0.vmdk"), None, data.len() as u64, &mut &data[..])
        .unwrap();
    let head = esx.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("PUT /nfc/52a/disk-0.vmdk"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 100000"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("cookie"), "the vCenter session must not go to another host:\n{head}");
    assert_eq!(esx.log.lock().unwrap()[0].1.len(), 100_000, "every byte arrives");
    // "*" means the SDK host: the cookie goes along there
    s.put_stream("https://*/nfc/52a/disk-1.vmdk", None, 10, &mut &[1u8; 10][..]).unwrap();
    let head = sdk.heads.lock().unwrap().iter().find(|h| h.starts_with("PUT")).cloned().unwrap();
    assert!(head.starts_with("PUT /nfc/52a/disk-1.vmdk") && head.contains("vmware_soap_session=fake"), "{head}");
}
