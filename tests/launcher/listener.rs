//! Issue 19, item 1: the listener against careless and hostile clients. Idle TLS connections must not block
//! other clients, running out of file descriptors must not stop the listener for good, a huge header must be
//! refused without reading it, a client dripping its request is cut off, and `/healthz` tells when the
//! listener itself has failed. Each test prints the figure it measures (`figure:` lines, with --nocapture).
use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;

/// A self-signed certificate and key for 127.0.0.1 in `dir` (openssl, as an operator would make one).
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("/usr/bin/openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

/// A setup whose listener serves HTTPS with a fresh certificate; returns the certificate too.
fn tls_setup() -> (Setup, PathBuf) {
    let s = Setup::new("", POOL);
    let (cert, key) = make_cert(s.dir.path());
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "poll_interval_ms = 100",
        &format!(
            "poll_interval_ms = 100\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    (s, cert)
}

/// GET over HTTPS with curl (at most `max` seconds): the status code ("000" when there was no answer).
fn curl_tls(port: u16, cert: &Path, path: &str, max: u64) -> String {
    let out = Command::new("/usr/bin/curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", &max.to_string(), "--cacert"])
        .arg(cert)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
}

/// One kept-alive HTTP/1.1 connection: a request at a time, the answer read by its Content-Length.
struct KeepAlive {
    s: TcpStream,
}

impl KeepAlive {
    fn open(port: u16) -> KeepAlive {
        let s = connect(port).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        KeepAlive { s }
    }

    fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        write!(self.s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if self.s.read(&mut byte)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).to_string()))
    }
}

/// A process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The descriptor number, in process `pid`, of the socket listening on 127.0.0.1:`port`.
fn listening_fd(pid: u32, port: u16) -> Option<i32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok())?;
        (local_port == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|i| i.to_string()))?
    })?;
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten().find_map(|e| {
        let target = std::fs::read_link(e.path()).ok()?;
        (target.to_string_lossy() == want).then(|| e.file_name().to_string_lossy().parse().ok())?
    })
}

/// Breaks a listening socket of another process from outside, as a failing kernel or a stray `shutdown`
/// would: a copy of its descriptor (pidfd_getfd) is shut down, so the owner's `accept` fails from then on.
fn shut_down_socket_of(pid: u32, fd: i32) {
    // SAFETY: plain system calls on descriptors this function owns and closes
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) as libc::c_int;
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as libc::c_int;
        assert!(copy >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        assert_eq!(libc::shutdown(copy, libc::SHUT_RDWR), 0, "shutdown: {}", std::io::Error::last_os_error());
        libc::close(copy);
        libc::close(pidfd);
    }
}

/// With TLS on, idle connections (a handshake that never comes) do not hold up anyone else: with 100 of them
/// open, `/healthz` answers within a second.
#[test]
fn launcher_listener_answers_healthz_with_100_idle_tls_connections_held() {
    let (s, cert) = tls_setup();
    let _l = s.spawn();
    wait_for(10, "the TLS listener", &|| s.log(), || curl_tls(s.port, &cert, "/healthz", 2) == "200");
    let idle: Vec<TcpStream> = (0..100).filter_map(|_| connect(s.port).ok()).collect();
    assert_eq!(idle.len(), 100, "could not open 100 connections");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let code = curl_tls(s.port, &cert, "/healthz", 5);
    let took = t.elapsed();
    eprintln!("figure: /healthz over TLS with 100 idle connections held: {code} in {} ms", took.as_millis());
    assert_eq!(code, "200", "no answer with 100 idle connections held\n{}", s.log());
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    drop(idle);
}

/// Running out of file descriptors (a low RLIMIT_NOFILE and more connections than it allows) does not stop
/// the listener for good: once the connections close, it accepts again.
#[test]
fn launcher_listener_accepts_again_after_running_out_of_file_descriptors() {
    let s = Setup::new("", POOL);
    const LIMIT: u64 = 64;
    let l = s.spawn_with(|c| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec
        unsafe {
            c.pre_exec(|| {
                let r = libc::rlimit { rlim_cur: LIMIT, rlim_max: LIMIT };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pid = l.child.id();
    wait_for(10, "the listener", &|| s.log(), || s.http_get("/metrics", None).0 == 200);
    let held: Vec<TcpStream> = (0..100).filter_map(|_| connect(s.port).ok()).collect();
    let t = Instant::now();
    while open_fds(pid) < LIMIT as usize - 2 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("figure: {} connections held, the launcher has {} descriptors open", held.len(), open_fds(pid));
    assert!(open_fds(pid) >= LIMIT as usize - 2, "the launcher did not run out of descriptors\n{}", s.log());
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    let t = Instant::now();
    wait_for(10, "the listener to accept again", &|| s.log(), || s.http_get("/metrics", None).0 == 200);
    eprintln!("figure: answering again {} ms after the connections closed", t.elapsed().as_millis());
    assert!(s.log().contains("Too many open files"), "the launcher said nothing about it\n{}", s.log());
    assert_eq!(s.http_get("/healthz", None).0, 200, "{}", s.log());
}

/// A 200 MiB header line is refused after a few KiB: the launcher never holds it (peak RSS under 64 MiB),
/// answers 431 or cuts the connection, and keeps serving.
#[test]
fn launcher_listener_refuses_a_200_mib_header_in_little_memory() {
    let s = Setup::new("", POOL);
    let l = s.spawn();
    let pid = l.child.id();
    wait_for(10, "the listener", &|| s.log(), || s.http_get("/healthz", None).0 == 200);
    let before = peak_rss_kib(pid);
    let mut c = connect(s.port).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0;
    while sent < 200 && c.write_all(&chunk).is_ok() {
        sent += 1;
    }
    let _ = c.write_all(b"\r\n\r\n");
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    let peak = peak_rss_kib(pid);
    eprintln!(
        "figure: 200 MiB header: {sent} MiB written before the cut, answer {:?}, peak RSS {} KiB (before: {} KiB)",
        answer.lines().next().unwrap_or(""),
        peak,
        before
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert_eq!(s.http_get("/healthz", None).0, 200, "{}", s.log());
}

/// A client that drips its request a byte at a time is cut off after `listener.timeout_seconds`.
#[test]
fn launcher_listener_cuts_off_a_client_that_drips_its_request() {
    let s = Setup::new("[listener]\ntimeout_seconds = 1\n", POOL);
    let _l = s.spawn();
    wait_for(10, "the listener", &|| s.log(), || s.http_get("/healthz", None).0 == 200);
    let mut c = connect(s.port).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let t = Instant::now();
    let mut cut = None;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in request.iter().cycle().take(request.len() * 4) {
        if c.write_all(&[*b]).is_err() {
            cut = Some(t.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match c.read(&mut buf) {
            Ok(_) => {
                cut = Some(t.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                cut = Some(t.elapsed());
                break;
            }
        }
        if t.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    eprintln!("figure: a dripping client was cut off after {cut:?}");
    let cut = cut.expect("the dripping client was never cut off");
    assert!(cut < Duration::from_secs(4), "cut off only after {cut:?}");
    assert_eq!(s.http_get("/healthz", None).0, 200, "{}", s.log());
}

/// When the listening socket fails (its accept errors from then on), the launcher says so in its log and
/// on `/healthz` (a connection kept alive from before asks), and listens again.
#[test]
fn launcher_healthz_turns_unhealthy_when_its_listener_dies() {
    let s = Setup::new("", POOL);
    let l = s.spawn();
    let pid = l.child.id();
    wait_for(10, "the listener", &|| s.log(), || s.http_get("/healthz", None).0 == 200);
    let mut kept = KeepAlive::open(s.port);
    assert_eq!(kept.get("/healthz").unwrap().0, 200);
    let fd = listening_fd(pid, s.port).expect("no listening socket found in /proc");
    shut_down_socket_of(pid, fd);
    let t = Instant::now();
    let mut unhealthy = None;
    while t.elapsed() < Duration::from_secs(3) {
        let (status, body) =
            kept.get("/healthz").unwrap_or_else(|e| panic!("the kept connection broke: {e}\n{}", s.log()));
        if status == 503 {
            unhealthy = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = unhealthy.unwrap_or_else(|| panic!("/healthz stayed healthy with a dead listener\n{}", s.log()));
    eprintln!("figure: /healthz said {:?} {} ms after the listener died", body.trim(), t.elapsed().as_millis());
    assert!(body.contains("listener"), "{body}");
    assert!(s.log().lines().any(|l| l.contains("ERROR") && l.contains("listener")), "{}", s.log());
    wait_for(10, "the listener to be back", &|| s.log(), || s.http_get("/healthz", None).0 == 200);
}
