//! The launcher's HTTP/1.1 server: hyper on a single-threaded tokio runtime of its own thread, with
//! tokio-rustls for HTTPS. What [`crate::launcher::http`] serves is a table of [`Route`]s; this module keeps
//! the listener alive and its clients within bounds:
//!
//! - headers: at most [`Limits::max_header_bytes`] (a longer head gets 431 after that many bytes, never more);
//! - bodies: each route says how many bytes it takes ([`Route::post`]); a longer one gets 413;
//! - time: a TLS handshake, a request's headers, a request's body, a stalled read or write, and the pause
//!   between requests on a kept-alive connection each get [`Limits::timeout`]; a client that drips its
//!   request a byte at a time is cut off when that time is up;
//! - connections: at most [`Limits::max_connections`] at once; more wait in the kernel's backlog;
//! - TLS handshakes run on each connection's own task, never on the accept loop;
//! - accept errors: no descriptors or memory left (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses accepting (up to
//!   1 s) and tries again; an error of one connection is skipped; any other error, or a panic of the accept
//!   loop, means the listening socket is gone: it is reported ([`Event::Down`]) and bound again.
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// For a TLS handshake, a request's headers, its body, a stalled read or write, and an idle kept-alive
    /// connection.
    pub timeout: Duration,
    /// The request line and headers together.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 256, timeout: Duration::from_secs(10), max_header_bytes: 16 * 1024 }
    }
}

/// A request as a route's handler sees it: its body is complete and within the route's limit.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// A header's value, when it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
    pub fn bearer(&self) -> Option<&str> {
        let (scheme, token) = self.header("authorization")?.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply { status, content_type, body: body.into() }
    }
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "text/plain", body)
    }
}

type Handler = Box<dyn Fn(&Request<'_>) -> Reply + Send + Sync>;

/// One path: the methods it answers, the largest body it takes, and its handler (called on the listener's
/// thread: it must answer at once).
pub struct Route {
    path: &'static str,
    methods: Vec<Method>,
    max_body: usize,
    handler: Handler,
}

impl Route {
    /// `GET` and `HEAD`, without a request body.
    pub fn get(path: &'static str, handler: impl Fn(&Request<'_>) -> Reply + Send + Sync + 'static) -> Route {
        Route { path, methods: vec![Method::GET, Method::HEAD], max_body: 0, handler: Box::new(handler) }
    }

    /// `POST` with a body of at most `max_body` bytes: a longer one is answered 413 (a declared
    /// Content-Length at once, without reading it), one that does not arrive within the timeout 408.
    pub fn post(
        path: &'static str,
        max_body: usize,
        handler: impl Fn(&Request<'_>) -> Reply + Send + Sync + 'static,
    ) -> Route {
        Route { path, methods: vec![Method::POST], max_body, handler: Box::new(handler) }
    }
}

/// What the listener reports (the caller logs it and keeps `/healthz` in step).
#[derive(Debug)]
pub enum Event<'a> {
    /// `accept` failed for want of descriptors or memory `count` times since the last report (at most one
    /// report per 10 s); accepting goes on after `pause`.
    AcceptFailing { error: &'a std::io::Error, count: u64, pause: Duration },
    /// The listening socket is gone (`reason`); it is bound again after `pause`.
    Down { reason: &'a str, pause: Duration },
    /// Binding it again failed; the next try is after `pause`.
    BindFailed { error: &'a std::io::Error, pause: Duration },
    /// Listening again after [`Event::Down`].
    Up { addr: SocketAddr },
}

pub type OnEvent = Arc<dyn Fn(Event<'_>) + Send + Sync>;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("the TLS certificate and key cannot be used")]
    Tls(#[source] rustls::Error),
    #[error("cannot listen")]
    Bind(#[source] std::io::Error),
    #[error("cannot start the listener's thread")]
    Thread(#[source] std::io::Error),
}

/// The server config of a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &Path| std::fs::read(p).map_err(|source| ServeError::Read { path: p.to_path_buf(), source });
    let pem = |p: &Path, what: String| ServeError::Pem { path: p.to_path_buf(), what };
    let certs = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert_file, format!("not a PEM certificate chain: {e:?}")))?;
    if certs.is_empty() {
        return Err(pem(cert_file, "holds no CERTIFICATE".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
        .map_err(|e| pem(key_file, format!("holds no PEM private key: {e:?}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServeError::Tls)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The running listener.
pub struct Server {
    pub addr: SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// Whether the listener's thread has ended (it never does on its own: only a bug ends it).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Binds `addr` (HTTPS with `tls`) and serves `routes` on a thread of its own.
pub fn start(
    addr: &str,
    tls: Option<rustls::ServerConfig>,
    limits: Limits,
    routes: Vec<Route>,
    on_event: OnEvent,
) -> Result<Server, ServeError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Thread)?;
    let listener = {
        let _in_rt = rt.enter();
        bind(addr).map_err(ServeError::Bind)?
    };
    let local = listener.local_addr().map_err(ServeError::Bind)?;
    let ctx = Arc::new(Ctx {
        tls: tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c))),
        limits,
        routes,
        on_event,
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
    });
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || rt.block_on(supervise(listener, local, ctx)))
        .map_err(ServeError::Thread)?;
    Ok(Server { addr: local, thread })
}

struct Ctx {
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    routes: Vec<Route>,
    on_event: OnEvent,
    slots: Arc<Semaphore>,
}

fn bind(addr: impl std::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind"))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Runs the accept loop; when it ends (its socket failed, or it panicked), reports it and binds again.
async fn supervise(first: TcpListener, addr: SocketAddr, ctx: Arc<Ctx>) {
    let mut listener = Some(first);
    let mut failures = 0u32;
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => {
                    (ctx.on_event)(Event::Up { addr });
                    l
                }
                Err(error) => {
                    failures += 1;
                    let pause = rebind_pause(failures);
                    (ctx.on_event)(Event::BindFailed { error: &error, pause });
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let reason = match tokio::spawn(accept_loop(l, ctx.clone())).await {
            Ok(error) => format!("accept failed: {error}"),
            Err(e) if e.is_panic() => format!("the accept loop panicked: {}", panic_text(e.into_panic())),
            Err(e) => format!("the accept loop ended: {e}"),
        };
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures += 1;
        let pause = rebind_pause(failures);
        (ctx.on_event)(Event::Down { reason: &reason, pause });
        tokio::time::sleep(pause).await;
    }
}

/// 1 s after the first failure in a row, doubling, at most 30 s.
fn rebind_pause(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// An accept error that concerns one connection only (accept(2): "treat already-pending network errors
/// like EAGAIN").
fn one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EPROTO
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH
                    | libc::ENETDOWN
                    | libc::EPERM
                    | libc::ETIMEDOUT
            )
        )
}

/// An accept error that passes when descriptors or memory are freed.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Accepts connections until the socket fails for good; returns that error.
async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) -> std::io::Error {
    let mut pause = Duration::from_millis(50);
    let (mut failing, mut reported) = (0u64, None::<Instant>);
    loop {
        // the connection cap: no accept without a free slot (more clients wait in the backlog)
        let Ok(slot) = ctx.slots.clone().acquire_owned().await else {
            return std::io::Error::other("the connection slots were closed");
        };
        match listener.accept().await {
            Ok((tcp, _)) => {
                pause = Duration::from_millis(50);
                failing = 0;
                let _ = tcp.set_nodelay(true);
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    connection(tcp, &ctx).await;
                    drop(slot);
                });
            }
            Err(e) if one_connection(&e) => {}
            Err(e) if out_of_resources(&e) => {
                failing += 1;
                if reported.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    (ctx.on_event)(Event::AcceptFailing { error: &e, count: failing, pause });
                    reported = Some(Instant::now());
                    failing = 0;
                }
                drop(slot);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return e,
        }
    }
}

/// One connection: its TLS handshake (bounded), then HTTP/1.1 until the client leaves or a limit cuts it.
async fn connection(tcp: TcpStream, ctx: &Arc<Ctx>) {
    let io = Stalls::new(tcp, ctx.limits.timeout);
    match &ctx.tls {
        None => http1(io, ctx).await,
        Some(acceptor) => {
            if let Ok(Ok(tls)) = tokio::time::timeout(ctx.limits.timeout, acceptor.accept(io)).await {
                http1(tls, ctx).await
            }
        }
    }
}

async fn http1<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: IO, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    let service = hyper::service::service_fn(move |req| {
        let c = c.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, &c).await) }
    });
    let max_header = ctx.limits.max_header_bytes.max(1024);
    // errors are the client's (a bad request has had its 4xx, a timeout closed the connection)
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.timeout)
        // a client that shuts its write side after the request still gets the answer
        .half_close(true)
        .max_header_size(max_header)
        .max_buf_size((2 * max_header).max(8192))
        .serve_connection(TokioIo::new(io), service)
        .await;
}

type Response = hyper::Response<Full<Bytes>>;

fn response(status: u16, content_type: &'static str, body: String) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An answer after which the connection is closed (the request's body was not read).
fn closing(status: u16, body: &str) -> Response {
    let mut r = response(status, "text/plain", body.into());
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn handle(req: hyper::Request<Incoming>, ctx: &Ctx) -> Response {
    let Some(route) = ctx.routes.iter().find(|r| r.path == req.uri().path()) else {
        return response(404, "text/plain", "not found\n".into());
    };
    if !route.methods.contains(req.method()) {
        let mut r = response(405, "text/plain", "method not allowed\n".into());
        let allow = route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
        if let Ok(v) = HeaderValue::from_str(&allow) {
            r.headers_mut().insert(ALLOW, v);
        }
        return r;
    }
    let too_large = || closing(413, &format!("the request body is over {} bytes\n", route.max_body));
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > route.max_body as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(ctx.limits.timeout, Limited::new(body, route.max_body).collect()).await {
        Err(_) => return closing(408, "the request body did not arrive in time\n"),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        // the connection's read stalled for the same time
        Ok(Err(e)) if timed_out(e.as_ref()) => return closing(408, "the request body did not arrive in time\n"),
        Ok(Err(_)) => return closing(400, "the request body could not be read\n"),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let request = Request {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
    };
    let reply = (route.handler)(&request);
    response(reply.status, reply.content_type, reply.body)
}

/// Whether an error or one of its sources is an I/O timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A connection whose reads and writes may each stall for at most `limit` (a client that neither sends nor
/// reads is dropped; hyper's header timeout bounds a client that sends too slowly).
struct Stalls<T> {
    inner: T,
    limit: Duration,
    read: Option<Pin<Box<tokio::time::Sleep>>>,
    write: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Stalls<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Stalls { inner, limit, read: None, write: None }
    }
}

/// `Pending` until `timer` (armed now if it is not) runs out, then a timeout error.
fn stalled(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<std::io::Error> {
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    match t.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stalled")),
        Poll::Pending => Poll::Pending,
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalls<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                me.read = None;
                Poll::Ready(r)
            }
            Poll::Pending => stalled(&mut me.read, me.limit, cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> Stalls<T> {
    fn guard<R>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.write = None;
                Poll::Ready(r)
            }
            Poll::Pending => stalled(&mut self.write, self.limit, cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalls<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;

    /// A server with a GET route and a POST route that takes up to 1 KiB; events are collected.
    fn start_test(limits: Limits) -> (Server, Arc<Mutex<Vec<String>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let routes = vec![
            Route::get("/hello", |r| Reply::text(200, format!("hello {}\n", r.query.unwrap_or("")))),
            Route::post("/hook", 1024, |r| {
                Reply::new(
                    200,
                    "application/json",
                    format!("{{\"bytes\":{},\"sig\":{:?}}}", r.body.len(), r.header("x-sig")),
                )
            }),
        ];
        let on_event: OnEvent = Arc::new(move |e| ev.lock().unwrap().push(format!("{e:?}")));
        (start("127.0.0.1:0", None, limits, routes, on_event).unwrap(), events)
    }

    fn quick() -> Limits {
        Limits { max_connections: 2, timeout: Duration::from_secs(1), ..Default::default() }
    }

    /// Sends `req`, half-closes, and reads the whole answer (at most 5 s).
    fn raw(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(req);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    }

    #[test]
    fn routes_methods_and_bounded_bodies() {
        let (s, _) = start_test(quick());
        let a = raw(s.addr, b"GET /hello?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("hello x=1\n"), "{a}");
        let a = raw(s.addr, b"HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 200") && !a.contains("hello"), "{a}");
        let a = raw(s.addr, b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 404"), "{a}");
        let a = raw(s.addr, b"DELETE /hello HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 405") && a.to_lowercase().contains("allow: get, head"), "{a}");
        // a body within the limit reaches the handler whole, with its headers
        let body = "b".repeat(1024);
        let req = format!("POST /hook HTTP/1.1\r\nHost: h\r\nX-Sig: sha256=ab\r\nContent-Length: 1024\r\n\r\n{body}");
        let a = raw(s.addr, req.as_bytes());
        assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("{\"bytes\":1024,\"sig\":Some(\"sha256=ab\")}"), "{a}");
        // one byte more: 413 at once for a declared length (nothing read), and for a chunked body
        let a = raw(s.addr, b"POST /hook HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 413"), "{a}");
        let a = raw(s.addr, b"POST /hook HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 413"), "{a}");
        let chunked = format!(
            "POST /hook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n{}\r\n0\r\n\r\n",
            "c".repeat(1025)
        );
        let a = raw(s.addr, chunked.as_bytes());
        assert!(a.starts_with("HTTP/1.1 413"), "{a}");
        // a GET route takes no body
        let a = raw(s.addr, b"GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
        assert!(a.starts_with("HTTP/1.1 413"), "{a}");
        // headers over the limit: 431 (the first bytes only are read)
        let a =
            raw(s.addr, format!("GET /hello HTTP/1.1\r\nHost: h\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000)).as_bytes());
        assert!(a.starts_with("HTTP/1.1 431"), "{a:.100}");
        let a = raw(s.addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
        assert!(a.is_empty() || a.starts_with("HTTP/1.1 400"), "{a}");
    }

    /// A body that stops coming is answered 408 after the timeout; a client that holds a connection idle
    /// (before its request or between two) is dropped after it.
    #[test]
    fn slow_bodies_and_idle_connections_are_cut() {
        let (s, _) = start_test(quick());
        let t = Instant::now();
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"POST /hook HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly ten b").unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        for first in [false, true] {
            let t = Instant::now();
            let mut c = TcpStream::connect(s.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut out = Vec::new();
            if first {
                c.write_all(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
                let mut buf = [0u8; 512];
                let n = c.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            }
            let n = c.read_to_end(&mut out);
            assert!(n.is_err() || out.is_empty(), "{out:?}");
            assert!(t.elapsed() < Duration::from_secs(3), "an idle connection lived {:?}", t.elapsed());
        }
    }

    /// At most max_connections at once: a third client waits (in the backlog) until one of two idle
    /// ones is dropped, then is answered.
    #[test]
    fn the_connection_cap_holds_and_frees() {
        let (s, _) = start_test(quick());
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(s.addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let a = raw(s.addr, b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(700) && waited < Duration::from_secs(3), "{waited:?}");
        drop(idle);
    }

    /// A TLS client that never finishes its handshake is dropped after the timeout, and does not hold up
    /// another client's handshake.
    #[test]
    fn tls_handshakes_are_bounded_and_off_the_accept_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let st = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let tls = tls_config(&cert, &key).unwrap();
        let limits = Limits { max_connections: 8, timeout: Duration::from_secs(1), ..Default::default() };
        let on_event: OnEvent = Arc::new(|_| {});
        let s = start("127.0.0.1:0", Some(tls), limits, vec![Route::get("/x", |_| Reply::text(200, "x"))], on_event)
            .unwrap();
        let t = Instant::now();
        let mut idle = TcpStream::connect(s.addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", "--cacert"])
            .arg(&cert)
            .arg(format!("https://127.0.0.1:{}/x", s.addr.port()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
        let mut buf = [0u8; 16];
        assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)));
        assert!(t.elapsed() < Duration::from_secs(3), "the idle TLS client lived {:?}", t.elapsed());
        // a bad key or certificate is a clear error
        std::fs::write(&key, "not a key").unwrap();
        let e = tls_config(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("k.pem") && e.contains("private key"), "{e}");
    }

    #[test]
    fn accept_errors_are_sorted() {
        let os = std::io::Error::from_raw_os_error;
        assert!(out_of_resources(&os(libc::EMFILE)) && out_of_resources(&os(libc::ENFILE)));
        assert!(one_connection(&os(libc::ECONNABORTED)) && one_connection(&os(libc::EPROTO)));
        assert!(!one_connection(&os(libc::EINVAL)) && !out_of_resources(&os(libc::EINVAL)));
        assert!(!one_connection(&os(libc::EBADF)) && !out_of_resources(&os(libc::EBADF)));
        assert_eq!(rebind_pause(1), Duration::from_secs(1));
        assert_eq!(rebind_pause(3), Duration::from_secs(4));
        assert_eq!(rebind_pause(30), Duration::from_secs(30));
    }
}
