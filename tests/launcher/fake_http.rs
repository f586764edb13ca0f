//! The skeleton both fake CI servers stand on (the fake Buildkite, the fake GitHub): a plain std TcpListener,
//! one thread per connection, one request per connection (`Connection: close`), the request read whole, the
//! answer written by the fake's handler — and the faults both inject the same way: for the next request whose
//! path contains a string, an injected status (with `Retry-After` and extra headers), a stall before the
//! answer, or an answer whose headers come at once and whose body comes late (a reply lost in transit).
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// One request, read whole.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn auth(&self) -> &str {
        self.header("authorization").unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// An answer.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    pub body: String,
    /// The headers go at once, the body after this long.
    pub body_stall_ms: u64,
}

impl Response {
    pub fn json(status: u16, v: &Value) -> Response {
        Response { status, body: if v.is_null() { String::new() } else { v.to_string() }, ..Default::default() }
    }
}

/// A fault for the next request whose path contains `path`.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub path: String,
    /// 0: the request is carried out (with `headers` added and the body stalled `body_stall_ms`).
    pub status: u16,
    pub retry_after: Option<u32>,
    /// Before the answer.
    pub stall_ms: u64,
    pub headers: String,
    pub body_stall_ms: u64,
}

/// The first fault for this request, taken off the queue.
pub fn take_fault(faults: &mut VecDeque<Fault>, path: &str) -> Option<Fault> {
    let i = faults.iter().position(|f| path.contains(&f.path))?;
    faults.remove(i)
}

/// Carries a fault out: its stall, then (with a status) the injected answer with `body`; `None` when the
/// request goes on (then `extra` gets the fault's headers and body stall).
pub fn inject(f: Fault, body: &Value, extra: &mut Response) -> Option<Response> {
    std::thread::sleep(Duration::from_millis(f.stall_ms));
    if f.status != 0 {
        let ra = f.retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
        return Some(Response {
            status: f.status,
            headers: format!("{ra}{}", f.headers),
            body: body.to_string(),
            body_stall_ms: 0,
        });
    }
    extra.headers.push_str(&f.headers);
    extra.body_stall_ms = f.body_stall_ms;
    None
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Listens on 127.0.0.1 (a free port) and answers every request with `handler`.
pub fn start(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let h = handler.clone();
            std::thread::spawn(move || {
                let _ = serve(s, &h);
            });
        }
    });
    addr
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn serve(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(&stream);
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push((k, v.trim().to_string()));
        }
    }
    let mut body = vec![0; len.min(64 << 20)];
    r.read_exact(&mut body)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let full = parts.next().unwrap_or("").to_string();
    let (path, query) =
        full.split_once('?').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or((full.clone(), String::new()));
    let resp = handler(&Request { method, path, query, headers, body });
    let mut w = &stream;
    write!(
        w,
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        resp.headers
    )?;
    w.flush()?;
    std::thread::sleep(Duration::from_millis(resp.body_stall_ms));
    write!(w, "{}", resp.body)?;
    w.flush()
}
