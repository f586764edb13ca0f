//! Hostile vSphere servers on loopback, over HTTP and HTTPS: a server that sends its headers and then stalls,
//! one that drips a byte every half second, one that accepts and never answers (not even the TLS handshake),
//! either as the whole server or in front of the simulator for one kind of request only (a SOAP operation, a
//! datastore transfer, the NFC upload); and replies no server should send: a page token that never ends, a
//! document nested a million deep, a reply of gigabytes. Each must end in a BOSH error within
//! `http_timeout_seconds` plus a small margin per request (the elapsed time is measured), never in a hang, a
//! crash or unbounded memory.
use crate::util::cpi_bin;
use crate::vsphere::vcsim;
use crate::vsphere_sim::{stemcell_ovf, vmdk, Vcsim};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmcpi::driver::vsphere::client::Session;
use vmcpi::driver::vsphere::soap::MoRef;
use vmcpi::driver::vsphere::VsphereConfig;

/// `http_timeout_seconds` in these tests.
const HTTP_TIMEOUT: u64 = 2;
/// What a call may take beyond `HTTP_TIMEOUT` for its one misbehaving request: process start, the requests
/// before it (loopback, milliseconds) and a loaded CI machine.
const MARGIN: Duration = Duration::from_millis(2500);
/// A call still running after this is taken for hung and killed.
const HUNG: Duration = Duration::from_secs(20);

/// A reply of the test's own: `(operation, nth time, stream)` writes a whole response.
type Replier = Arc<dyn Fn(&str, usize, &mut dyn Write) -> std::io::Result<()> + Send + Sync>;

/// What the server does with a request it picks.
#[derive(Clone)]
enum Act {
    /// Complete headers announcing a body, then nothing.
    Stall,
    /// Complete headers, then one byte of body every 0.5 s, for ever.
    Drip,
    /// Nothing: the request's body is not read and no answer comes (with `When::Always`, not even the
    /// TLS handshake).
    Silent,
    /// A reply of the test's own.
    Reply(Replier),
}

/// Which requests the server picks; the others go to the simulator behind it.
#[derive(Clone)]
enum When {
    Always,
    /// The request line starts with this (`PUT /nfc/`).
    Line(&'static str),
    /// The SOAP operation is one of these.
    Ops(&'static [&'static str]),
}

/// A misbehaving server (or proxy in front of the simulator) on loopback.
struct Hostile {
    /// Base URL, `http://127.0.0.1:port` or `https://…`.
    url: String,
    /// The server's certificate (PEM) and its SHA-256 thumbprint, over HTTPS.
    cert: Option<(String, String)>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

impl Hostile {
    fn start(tls: bool, upstream: Option<&str>, when: When, act: Act) -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // a small, fixed receive buffer (accepted sockets inherit it): a server that does not read stops an
        // upload after a few hundred KiB, not after the tens of MiB that loopback's autotuning would take in
        {
            use std::os::fd::AsRawFd;
            let size: libc::c_int = 64 << 10;
            // SAFETY: setsockopt on a socket we own, with a c_int option value of the right size
            let rc = unsafe {
                libc::setsockopt(
                    listener.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        }
        // a small, fixed receive buffer (accepted sockets inherit it): a server that does not read stops an
        // upload after a few hundred KiB, not after the tens of MiB that loopback's autotuning would take in
        {
            use std::os::fd::AsRawFd;
            let size: libc::c_int = 64 << 10;
            // SAFETY: setsockopt on a socket we own, with a c_int option value of the right size
            let rc = unsafe {
                libc::setsockopt(
                    listener.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        }
        let (config, cert) = if tls {
            let (config, pem, thumb) = tls_config(dir.path());
            (Some(config), Some((pem, thumb)))
        } else {
            (None, None)
        };
        let url = format!("{}://{addr}", if tls { "https" } else { "http" });
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.map(|u| u.trim_start_matches("http://").split('/').next().unwrap().to_string());
        let counts = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new()));
        let stop2 = stop.clone();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                // replies are written in pieces: no Nagle delay between them
                stream.set_nodelay(true).unwrap();
                let (config, upstream, when, act, stop, counts) =
                    (config.clone(), upstream.clone(), when.clone(), act.clone(), stop2.clone(), counts.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, config, upstream, when, act, stop, counts);
                });
            }
        });
        Hostile { url, cert, stop, _dir: dir }
    }

    /// The CPI config for this server, as a vCenter at `<url>/sdk`, over HTTPS with `trust` ("ca" or "pin").
    fn config(&self, state: &Path, trust: &str) -> Value {
        let mut driver = json!({
            "kind": "vsphere", "host": format!("{}/sdk", self.url), "user": "user", "password": "pass",
            "datacenter": "DC0", "state_dir": state, "http_timeout_seconds": HTTP_TIMEOUT,
        });
        if let Some((pem, thumb)) = &self.cert {
            match trust {
                "pin" => driver["thumbprint"] = json!(thumb),
                _ => driver["ca_cert"] = json!(pem),
            }
        }
        json!({"driver": driver, "agent": {"mbus": "nats://nats:nats-pw@10.0.0.6:4222", "ntp": []}})
    }

    /// A library session to this server.
    fn session(&self, state: &Path) -> Session {
        let mut d = self.config(state, "ca")["driver"].clone();
        d.as_object_mut().unwrap().remove("kind");
        let cfg: VsphereConfig = serde_json::from_value(d).unwrap();
        Session::connect(&cfg).unwrap()
    }
}

/// A self-signed certificate for 127.0.0.1 (openssl, as the launcher's TLS test makes one) and a rustls
/// server config with it; also its PEM and SHA-256 thumbprint.
fn tls_config(dir: &Path) -> (Arc<rustls::ServerConfig>, String, String) {
    let (cert, key, conf) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("openssl.cnf"));
    // a leaf, not a CA (webpki refuses a CA certificate as the server's own)
    std::fs::write(
        &conf,
        "[req]\ndistinguished_name = dn\nx509_extensions = leaf\nprompt = no\n[dn]\nCN = 127.0.0.1\n[leaf]\nbasicConstraints = critical,CA:FALSE\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let st = Command::new("/usr/bin/openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .arg("-config")
        .arg(&conf)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req failed");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let der = match ureq::tls::parse_pem(pem.as_bytes()).next().unwrap().unwrap() {
        ureq::tls::PemItem::Certificate(c) => c.der().to_vec(),
        _ => panic!("no certificate"),
    };
    let key_pem = std::fs::read(&key).unwrap();
    let key = ureq::tls::parse_pem(&key_pem)
        .find_map(|i| match i {
            Ok(ureq::tls::PemItem::PrivateKey(k)) => Some(k.der().to_vec()),
            _ => None,
        })
        .expect("a PKCS#8 key");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![rustls::pki_types::CertificateDer::from(der.clone())], key)
        .unwrap();
    (Arc::new(config), pem, vmcpi::driver::vsphere::tls::sha256_hex(&der))
}

/// Keeps a connection open, doing nothing, until the server stops.
fn hold(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The request head (request line and headers), read byte by byte up to the empty line.
fn read_head(c: &mut dyn Conn) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b)? == 0 {
            return Ok(None);
        }
        head.push(b[0]);
        if head.len() > 1 << 16 {
            return Err(std::io::Error::other("head too long"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

/// The SOAP operation in a request body: the first element inside `Body`.
fn soap_op(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let Some(i) = text.find("Body>") else { return String::new() };
    let rest = &text[i + 5..];
    let rest = rest.trim_start().trim_start_matches('<');
    rest.split(|c: char| c.is_whitespace() || c == '>' || c == '/').next().unwrap_or_default().to_string()
}

fn serve(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    upstream: Option<String>,
    when: When,
    act: Act,
    stop: Arc<AtomicBool>,
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) -> std::io::Result<()> {
    if matches!((&when, &act), (When::Always, Act::Silent)) {
        // accepts, and that is all: no handshake, no reading, no answer
        hold(&stop);
        return Ok(());
    }
    let mut conn: Box<dyn Conn> = match tls {
        Some(cfg) => Box::new(rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), stream)),
        None => Box::new(stream),
    };
    loop {
        let Some(head) = read_head(conn.as_mut())? else { return Ok(()) };
        let line_hit = match &when {
            When::Always => true,
            When::Line(p) => head.starts_with(p),
            When::Ops(_) => false,
        };
        if line_hit && matches!(act, Act::Silent) {
            hold(&stop);
            return Ok(());
        }
        let mut body = vec![0u8; content_length(&head)];
        conn.read_exact(&mut body)?;
        let op = soap_op(&body);
        let hit = line_hit || matches!(&when, When::Ops(ops) if ops.contains(&op.as_str()));
        if !hit {
            let Some(up) = &upstream else {
                conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            };
            return forward(conn.as_mut(), up, &head, &body);
        }
        let nth = {
            let mut c = counts.lock().unwrap();
            let n = c.entry(op.clone()).or_default();
            *n += 1;
            *n
        };
        let headers = "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: 100000000\r\n\r\n";
        match &act {
            Act::Stall => {
                conn.write_all(headers.as_bytes())?;
                conn.flush()?;
                hold(&stop);
                return Ok(());
            }
            Act::Drip => {
                conn.write_all(headers.as_bytes())?;
                conn.write_all(b"<")?;
                conn.flush()?;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(500));
                    conn.write_all(b" ")?;
                    conn.flush()?;
                }
                return Ok(());
            }
            Act::Silent => {
                hold(&stop);
                return Ok(());
            }
            Act::Reply(f) => {
                f(&op, nth, conn.as_mut())?;
                conn.flush()?;
            }
        }
    }
}

/// Passes one request to the simulator (closing after it, so that each request is looked at) and its
/// answer back.
fn forward(conn: &mut dyn Conn, upstream: &str, head: &str, body: &[u8]) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream)?;
    let mut h: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    h.push_str("\r\nConnection: close\r\n\r\n");
    up.write_all(h.as_bytes())?;
    up.write_all(body)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        conn.write_all(&buf[..n])?;
    }
    conn.flush()
}

/// A SOAP response with `body` inside the Body element.
fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

fn respond(w: &mut dyn Write, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One CPI call as the director makes it, killed if it runs past [`HUNG`]: (response, stderr, elapsed, peak
/// RSS in KiB of the CPI process, or 0).
fn call(config: &Value, method: &str, args: Value) -> (Option<Value>, String, Duration, i64) {
    call_measured(config, method, args, false)
}

/// [`call`], with the CPI's peak RSS when `rss` is set: GNU time starts it and reports it. (A child's own
/// `ru_maxrss` includes the peak of the process it was spawned from, here this test binary, which may be
/// large while other tests run; time's child is forked from time, which is small.)
fn call_measured(config: &Value, method: &str, args: Value, rss: bool) -> (Option<Value>, String, Duration, i64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpi.json");
    let rss_file = dir.path().join("rss");
    std::fs::write(&path, config.to_string()).unwrap();
    let req = json!({"method": method, "arguments": args, "context": {}, "api_version": 2}).to_string();
    let started = Instant::now();
    let mut cmd = if rss {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"]).arg(&rss_file).arg(cpi_bin());
        c
    } else {
        Command::new(cpi_bin())
    };
    let mut child = cmd
        .arg("--config")
        .arg(&path)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HUNG {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let kib = match rss {
        true => {
            let text = std::fs::read_to_string(&rss_file).unwrap_or_default();
            // (time prints a note first when the command failed)
            text.lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or_else(|| panic!("time said {text:?} ({status})"))
        }
        false => 0,
    };
    (serde_json::from_str(&out).ok(), err, elapsed, kib)
}

/// The call ended with a BOSH error within the bound: `HTTP_TIMEOUT` plus [`MARGIN`] for its one misbehaving
/// request, after `work` (what the call takes when nothing misbehaves, beyond the margin's milliseconds).
fn assert_bounded_error(what: &str, r: &(Option<Value>, String, Duration, i64), work: Duration) -> String {
    let (response, stderr, elapsed, _) = r;
    let bound = Duration::from_secs(HTTP_TIMEOUT) + MARGIN + work;
    let Some(response) = response else {
        panic!("{what}: no response after {elapsed:?} (hung, killed after {HUNG:?}, or crashed); stderr:\n{stderr}")
    };
    let e = &response["error"];
    assert!(e["type"].is_string() && e["message"].is_string(), "{what}: not a BOSH error: {response}");
    assert!(*elapsed <= bound, "{what}: answered after {elapsed:?}, more than {bound:?}: {e}\nstderr:\n{stderr}");
    e["message"].as_str().unwrap().to_string()
}

/// Runs `cases` at once (each takes seconds of waiting, not of work) and returns their panics' messages.
fn parallel(cases: Vec<(String, Box<dyn FnOnce() + Send>)>) {
    let handles: Vec<_> = cases.into_iter().map(|(name, f)| (name, std::thread::spawn(f))).collect();
    let failed: Vec<String> = handles.into_iter().filter_map(|(n, h)| h.join().err().map(|_| n)).collect();
    assert!(failed.is_empty(), "failed: {failed:?} (their panics are printed above)");
}

type Mode = (&'static str, fn() -> Act);
const MODES: &[Mode] = &[("stall", || Act::Stall), ("drip", || Act::Drip), ("silent", || Act::Silent)];

/// The whole server misbehaves; has_vm's first request (RetrieveServiceContent, or the TLS handshake) meets
/// it, over HTTP, HTTPS with a CA bundle (ureq's TLS) and HTTPS with a thumbprint pin (the CPI's own TLS
/// transport).
#[test]
fn vsphere_has_vm_ends_within_the_http_timeout_whatever_the_server_does() {
    let mut cases: Vec<(String, Box<dyn FnOnce() + Send>)> = Vec::new();
    for (mode, act) in MODES {
        for (tls, trust) in [(false, "-"), (true, "ca"), (true, "pin")] {
            let name = format!("has_vm {mode} tls={tls} {trust}");
            let act = act();
            cases.push((
                name.clone(),
                Box::new(move || {
                    let server = Hostile::start(tls, None, When::Always, act);
                    let state = tempfile::tempdir().unwrap();
                    let r = call(&server.config(state.path(), trust), "has_vm", json!(["vm-00000000000000000000"]));
                    let msg = assert_bounded_error(&name, &r, Duration::ZERO);
                    assert!(msg.contains("time") || msg.contains("imeout"), "{name}: {msg}");
                    eprintln!("{name}: error after {:?}: {msg}", r.2);
                }),
            ));
        }
    }
    parallel(cases);
}

/// In front of the simulator: the session's requests pass, then one later request misbehaves: a SOAP read
/// in the middle of delete_vm and create_disk; and the NFC upload of create_stemcell, to a server that never
/// reads the 16 MiB disk (more than the socket buffers hold). An upload may take as long as it takes
/// while it moves: its stall is bounded, not its length, so its bound is the time the same create_stemcell
/// takes when nothing misbehaves (measured here) plus the timeout and the margin. (Headers then a stall or a
/// drip answer an upload: it is done, and its body is never read.)
#[test]
fn vsphere_calls_end_within_the_http_timeout_when_one_request_misbehaves() {
    let Some(bin) = vcsim() else { return };
    let sim = Arc::new(Vcsim::start(&bin, "vpx", false));
    let img = tempfile::tempdir().unwrap();
    let image = big_stemcell(img.path(), 16 << 20);
    let mut cases: Vec<(String, Box<dyn FnOnce() + Send>)> = Vec::new();
    for (mode, act) in MODES {
        for (method, args, when) in [
            ("delete_vm", json!(["vm-00000000000000000000"]), When::Ops(&["FindByInventoryPath"])),
            ("create_disk", json!([256, {}, null]), When::Ops(&["RetrievePropertiesEx", "CreateVirtualDisk_Task"])),
        ] {
            let name = format!("{method} {mode}");
            let (act, sim) = (act(), sim.clone());
            cases.push((
                name.clone(),
                Box::new(move || {
                    let server = Hostile::start(false, Some(&sim.url), when, act);
                    let state = tempfile::tempdir().unwrap();
                    let r = call(&server.config(state.path(), "-"), method, args);
                    let msg = assert_bounded_error(&name, &r, Duration::ZERO);
                    eprintln!("{name}: error after {:?}: {msg}", r.2);
                }),
            ));
        }
    }
    let sim2 = sim.clone();
    cases.push((
        "create_stemcell silent".into(),
        Box::new(move || {
            let state = tempfile::tempdir().unwrap();
            // untouched: through the same kind of proxy, which this time passes everything on
            let server = Hostile::start(false, Some(&sim2.url), When::Line("NEVER"), Act::Silent);
            let r = call(&server.config(state.path(), "-"), "create_stemcell", json!([image, {}]));
            let untouched = r.2;
            let sc = r.0.as_ref().map(|v| v["result"].clone()).unwrap_or_default();
            assert!(sc.as_str().is_some_and(|s| s.starts_with("sc-")), "untouched create_stemcell: {:?}\n{}", r.0, r.1);
            let server = Hostile::start(false, Some(&sim2.url), When::Line("PUT /nfc/"), Act::Silent);
            let r = call(&server.config(state.path(), "-"), "create_stemcell", json!([image, {}]));
            let msg = assert_bounded_error("create_stemcell silent", &r, untouched + Duration::from_secs(HTTP_TIMEOUT));
            eprintln!("create_stemcell silent: error after {:?} (untouched: {untouched:?}): {msg}", r.2);
        }),
    ));
    parallel(cases);
}

/// A stemcell image whose disk is `bytes` long (more than loopback's socket buffers hold).
fn big_stemcell(dir: &Path, bytes: usize) -> PathBuf {
    let disk = vmdk(bytes);
    let ovf = stemcell_ovf(false, disk.len() as u64);
    let path = dir.join("big-image");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, data) in [("image.ovf", ovf.as_bytes()), ("image-disk1.vmdk", &disk[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, name, data).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
    path
}

/// Datastore files (`/folder`): a download that stalls or drips, an upload of 64 MiB that the server never
/// reads, a HEAD that never answers.
#[test]
fn vsphere_datastore_transfers_end_within_the_http_timeout() {
    let Some(bin) = vcsim() else { return };
    let sim = Arc::new(Vcsim::start(&bin, "vpx", false));
    let mut cases: Vec<(String, Box<dyn FnOnce() + Send>)> = Vec::new();
    // a PUT or HEAD answered with headers has its answer: a body that stalls after them is never read
    let combos: Vec<(&str, &str, Act)> = vec![
        ("get", "stall", Act::Stall),
        ("get", "drip", Act::Drip),
        ("get", "silent", Act::Silent),
        ("put", "silent", Act::Silent),
        ("head", "silent", Act::Silent),
    ];
    for (op, mode, act) in combos {
        {
            let name = format!("{op} {mode}");
            let sim = sim.clone();
            cases.push((
                name.clone(),
                Box::new(move || {
                    let line = match op {
                        "get" => "GET /folder/",
                        "put" => "PUT /folder/",
                        _ => "HEAD /folder/",
                    };
                    let server = Hostile::start(false, Some(&sim.url), When::Line(line), act);
                    let state = tempfile::tempdir().unwrap();
                    let s = server.session(state.path());
                    let started = Instant::now();
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let r = match op {
                            "get" => s.get_file("DC0", "LocalDS_0", "x/env.json").map(|_| ()),
                            "put" => s.put_file("DC0", "LocalDS_0", "x/big", &vec![7u8; 64 << 20]),
                            _ => s.file_exists("DC0", "LocalDS_0", "x/y").map(|_| ()),
                        };
                        let _ = tx.send(r.map_err(|e| e.to_string()));
                    });
                    let r = rx.recv_timeout(HUNG).unwrap_or_else(|_| panic!("{name}: still waiting after {HUNG:?}"));
                    let elapsed = started.elapsed();
                    let bound = Duration::from_secs(HTTP_TIMEOUT) + MARGIN;
                    let e = r.expect_err(&name);
                    assert!(elapsed <= bound, "{name}: failed after {elapsed:?}, more than {bound:?}: {e}");
                    eprintln!("{name}: error after {elapsed:?}: {e}");
                }),
            ));
        }
    }
    parallel(cases);
}

/// A page token that never ends (RetrievePropertiesEx and every ContinueRetrievePropertiesEx answer one more
/// page and a token), with one object a page and with 2000: the read stops with a clear error (after at most
/// `MAX_PAGES` pages or `MAX_OBJECTS` objects) instead of looping for ever.
#[test]
fn vsphere_endless_property_pages_are_refused() {
    use vmcpi::driver::vsphere::client::{MAX_OBJECTS, MAX_PAGES};
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", false);
    for (per_page, limit) in [(1, format!("after {MAX_PAGES} pages")), (2000, format!("{MAX_OBJECTS} objects"))] {
        let objects: String = (0..per_page)
            .map(|i| format!(r#"<objects><obj type="VirtualMachine">vm-{i}</obj><propSet><name>name</name><val xsi:type="xsd:string">n</val></propSet></objects>"#))
            .collect();
        let page = move |op: &str, nth: usize, w: &mut dyn Write| {
            respond(
                w,
                &envelope(&format!(
                    r#"<{op}Response xmlns="urn:vim25"><returnval><token>t{nth}</token>{objects}</returnval></{op}Response>"#
                )),
            )
        };
        let server = Hostile::start(
            false,
            Some(&sim.url),
            When::Ops(&["RetrievePropertiesEx", "ContinueRetrievePropertiesEx"]),
            Act::Reply(Arc::new(page)),
        );
        let state = tempfile::tempdir().unwrap();
        let s = server.session(state.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let r = s.properties(&[(MoRef::new("VirtualMachine", "vm-1"), &["name"])]).map(|v| v.len());
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        let r = rx.recv_timeout(Duration::from_secs(60)).expect("still paging after 60 s");
        let e = r.expect_err("an endless page token must be an error");
        assert!(e.contains("still paging") && e.contains(&limit), "{e}");
        eprintln!("endless pages of {per_page}: error after {:?}: {e}", started.elapsed());
    }
}

/// A reply nested a million elements deep: the CPI answers a clear error (no stack overflow while the tree is
/// built or dropped).
#[test]
fn vsphere_deeply_nested_reply_is_refused() {
    const DEPTH: usize = 1_000_000;
    let deep = |_: &str, _: usize, w: &mut dyn Write| {
        let body = envelope(&format!(
            r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>{}{}</returnval></RetrieveServiceContentResponse>"#,
            "<a>".repeat(DEPTH),
            "</a>".repeat(DEPTH)
        ));
        respond(w, &body)
    };
    let server = Hostile::start(false, None, When::Always, Act::Reply(Arc::new(deep)));
    let state = tempfile::tempdir().unwrap();
    let r = call(&server.config(state.path(), "-"), "has_vm", json!(["vm-00000000000000000000"]));
    let msg = assert_bounded_error("deep reply", &r, Duration::ZERO);
    assert!(msg.contains("deep") || msg.contains("nest"), "{msg}");
}

/// A 2 GiB reply (an element of endless text, and endless empty elements): not read into memory; the CPI
/// stops at its cap with a clear error and its peak memory stays small.
#[test]
fn vsphere_huge_reply_is_refused_without_reading_it_all() {
    const LEN: u64 = 2 << 30;
    for (name, unit) in [("text", &b"AAAAAAAA"[..]), ("elements", &b"<a/><a/>"[..])] {
        let huge = move |_: &str, _: usize, w: &mut dyn Write| {
            let start = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>"#;
            write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {LEN}\r\n\r\n{start}")?;
            let chunk = unit.repeat(8 << 10);
            let mut sent = start.len() as u64;
            while sent < LEN {
                w.write_all(&chunk)?;
                sent += chunk.len() as u64;
            }
            Ok(())
        };
        let server = Hostile::start(false, None, When::Always, Act::Reply(Arc::new(huge)));
        let state = tempfile::tempdir().unwrap();
        let mut config = server.config(state.path(), "-");
        config["driver"]["http_timeout_seconds"] = json!(60);
        let r = call_measured(&config, "has_vm", json!(["vm-00000000000000000000"]), true);
        let (response, stderr, elapsed, rss_kib) = &r;
        let response = response.as_ref().unwrap_or_else(|| panic!("{name}: no response after {elapsed:?}:\n{stderr}"));
        let msg = response["error"]["message"].as_str().unwrap_or_else(|| panic!("{name}: {response}"));
        assert!(msg.contains("larger than") || msg.contains("elements"), "{name}: {msg}");
        assert!(*rss_kib < 128 << 10, "{name}: the CPI's peak RSS was {} MiB: {msg}\n{stderr}", rss_kib >> 10);
        eprintln!("huge reply ({name}): error after {elapsed:?}, peak RSS {} MiB: {msg}", rss_kib >> 10);
    }
}
