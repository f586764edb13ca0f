//! The live connection: a `ureq` agent, the `vmware_soap_session` cookie, one [`Session::call`] for every
//! typed request, property reads, task waiting through `WaitForUpdatesEx`, and datastore file transfer
//! over `/folder`. The CPI's session is kept between processes ([`super::session`]); an expired one is
//! replaced by a new login inside [`Session::call`].
use super::config::VsphereConfig;
use super::methods::*;
use super::session::SessionStore;
use super::soap::{self, Fault, FaultKind, MoRef, Node, SoapError};
use crate::{debug, info, warn};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

mod files;
pub use files::{encode_path, encode_query, lease_url};

/// What went wrong talking to vSphere.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach vSphere at {url}: {source}")]
    Http { url: String, source: Box<ureq::Error> },
    /// A request that did not end within `http_timeout_seconds` (or, for an upload, made no progress for that
    /// long). Not retried: the next try would wait as long again.
    #[error("vSphere at {url} did not answer within {secs} s (driver.http_timeout_seconds): {source}")]
    Timeout { url: String, secs: u64, source: Box<ureq::Error> },
    #[error("{method} failed: {source}")]
    Soap { method: String, source: SoapError },
    #[error("login to {url} as {user} failed: wrong user name or password")]
    InvalidLogin { url: String, user: String },
    #[error("task {task} ({what}) failed: {fault}")]
    Task { task: String, what: String, fault: Fault },
    #[error("task {task} ({what}) did not finish within {secs} s")]
    TaskTimeout { task: String, what: String, secs: u64 },
    #[error("datastore file {path}: HTTP {status}")]
    FileHttp { path: String, status: u16 },
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The VIM fault behind this error, if there is one.
    pub fn fault(&self) -> Option<&FaultKind> {
        match self {
            ClientError::Soap { source: SoapError::Fault(f), .. } => Some(&f.kind),
            ClientError::Task { fault, .. } => Some(&fault.kind),
            _ => None,
        }
    }
    pub fn is_fault(&self, k: &FaultKind) -> bool {
        self.fault() == Some(k)
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The parts of `ServiceContent` the driver uses (kept in the session file: it never changes while the
/// server runs).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub session_manager: MoRef,
    pub search_index: MoRef,
    pub file_manager: Option<MoRef>,
    pub virtual_disk_manager: Option<MoRef>,
    pub ovf_manager: Option<MoRef>,
    pub custom_fields_manager: Option<MoRef>,
    pub guest_operations_manager: Option<MoRef>,
    /// `VirtualCenter` or `HostAgent` (a standalone ESXi).
    pub api_type: String,
}

impl ServiceContent {
    /// From `RetrieveServiceContentResponse/returnval`.
    pub fn from_node(n: &Node) -> Option<ServiceContent> {
        Some(ServiceContent {
            root_folder: n.moref_at("rootFolder")?,
            property_collector: n.moref_at("propertyCollector")?,
            session_manager: n.moref_at("sessionManager")?,
            search_index: n.moref_at("searchIndex")?,
            file_manager: n.moref_at("fileManager"),
            virtual_disk_manager: n.moref_at("virtualDiskManager"),
            ovf_manager: n.moref_at("ovfManager"),
            custom_fields_manager: n.moref_at("customFieldsManager"),
            guest_operations_manager: n.moref_at("guestOperationsManager"),
            api_type: n.str_at("about/apiType").unwrap_or("VirtualCenter").to_string(),
        })
    }
    pub fn is_vcenter(&self) -> bool {
        self.api_type == "VirtualCenter"
    }
}

/// A property read follows at most this many pages of a paged result (ContinueRetrievePropertiesEx)...
pub const MAX_PAGES: usize = 1000;
/// ...and reads at most this many objects (all pages are held until the last): the driver reads a handful
/// of objects at a time, at most a datacenter's datastores or networks, and a server that keeps handing out
/// page tokens must not keep it reading, or filling memory, for ever.
pub const MAX_OBJECTS: usize = 20_000;

/// One object's properties from RetrievePropertiesEx.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    pub obj: MoRef,
    pub props: Vec<(String, Node)>,
}

impl ObjectContent {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }
    pub fn str(&self, path: &str) -> Option<&str> {
        self.get(path).map(|n| n.text.as_str())
    }
}

/// A logged-in session. Counts its HTTP round trips. A session from [`Session::connect`] logs out when
/// dropped; the CPI's own, from [`Session::open`], is kept in the state directory for the next process.
pub struct Session {
    agent: ureq::Agent,
    sdk_url: String,
    base_url: String,
    cookie: RefCell<Option<String>>,
    round_trips: Cell<u32>,
    /// Each request's name and round trip, for the debug log.
    wire: RefCell<Vec<(&'static str, Duration)>>,
    pub sc: ServiceContent,
    user: String,
    password: String,
    logged_in: Cell<bool>,
    /// Where the session is kept between CPI processes; `None`: log out at the end.
    store: Option<SessionStore>,
    /// Inventory objects the session file remembers by path (see [`SessionStore::remember`]).
    pub remembered: std::collections::BTreeMap<String, MoRef>,
    /// Log out at the end after all (the session could not be saved).
    logout_at_end: Cell<bool>,
    /// Logins after an expired session in this process (at most two).
    relogins: Cell<u32>,
    task_timeout: Duration,
    http_timeout: u64,
    /// The config pins the certificate (`driver.thumbprint`).
    pinned: bool,
}

impl Session {
    fn unconnected(cfg: &VsphereConfig, store: Option<SessionStore>) -> ClientResult<Session> {
        let agent = super::tls::agent(cfg).map_err(ClientError::Other)?;
        Ok(Session {
            agent,
            sdk_url: cfg.sdk_url(),
            base_url: cfg.base_url(),
            cookie: RefCell::new(None),
            round_trips: Cell::new(0),
            wire: RefCell::new(Vec::new()),
            sc: ServiceContent {
                root_folder: MoRef::new("Folder", "group-d1"),
                property_collector: MoRef::new("PropertyCollector", "propertyCollector"),
                session_manager: MoRef::new("SessionManager", "SessionManager"),
                search_index: MoRef::new("SearchIndex", "SearchIndex"),
                file_manager: None,
                virtual_disk_manager: None,
                ovf_manager: None,
                custom_fields_manager: None,
                guest_operations_manager: None,
                api_type: String::new(),
            },
            user: cfg.user.clone(),
            password: cfg.password.expose().to_string(),
            logged_in: Cell::new(false),
            logout_at_end: Cell::new(store.is_none()),
            store,
            remembered: Default::default(),
            relogins: Cell::new(0),
            task_timeout: Duration::from_secs(cfg.task_timeout_seconds),
            http_timeout: cfg.http_timeout_seconds,
            pinned: cfg.thumbprint.is_some(),
        })
    }

    /// Connects, reads the service content and logs in; logs out when dropped.
    pub fn connect(cfg: &VsphereConfig) -> ClientResult<Session> {
        let mut s = Session::unconnected(cfg, None)?;
        s.sc = s.service_content()?;
        s.login()?;
        Ok(s)
    }

    /// The CPI's session: the one kept in `driver.state_dir` by an earlier CPI process when there is one
    /// (no request: the first request of the call is its check, see [`Session::call`]), else a new login,
    /// saved for the next process. It is not logged out at the end.
    pub fn open(cfg: &VsphereConfig) -> ClientResult<Session> {
        let store = SessionStore::new(&cfg.state_dir, &cfg.sdk_url(), &cfg.user);
        let saved = store.load();
        let mut s = Session::unconnected(cfg, Some(store.clone()))?;
        if let Some(saved) = saved {
            s.sc = saved.sc;
            s.remembered = saved.inventory;
            *s.cookie.borrow_mut() = Some(saved.cookie);
            s.logged_in.set(true);
            debug!("using the saved vSphere session for {} as {}", s.sdk_url, s.user);
            return Ok(s);
        }
        // no session yet: one process logs in, the others that started with it wait and take its session
        store
            .locked(|| -> ClientResult<()> {
                if let Some(saved) = store.load() {
                    s.sc = saved.sc;
                    *s.cookie.borrow_mut() = Some(saved.cookie);
                    s.logged_in.set(true);
                    debug!("another CPI process logged in meanwhile; using its session");
                    return Ok(());
                }
                s.sc = s.service_content()?;
                s.login()?;
                s.save();
                Ok(())
            })
            .map_err(|e| ClientError::Other(format!("cannot log in to vSphere one process at a time: {e}")))??;
        Ok(s)
    }

    fn service_content(&self) -> ClientResult<ServiceContent> {
        let n = self.call_once(&RetrieveServiceContent { this: MoRef::new("ServiceInstance", "ServiceInstance") })?;
        n.child("returnval").and_then(ServiceContent::from_node).ok_or_else(|| ClientError::Soap {
            method: "RetrieveServiceContent".into(),
            source: SoapError::Unexpected {
                method: "RetrieveServiceContent".into(),
                what: "no service content".into(),
            },
        })
    }

    /// Logs in with a fresh session (no old cookie sent).
    fn login(&self) -> ClientResult<()> {
        *self.cookie.borrow_mut() = None;
        let login =
            Login { this: self.sc.session_manager.clone(), user: self.user.clone(), password: self.password.clone() };
        match self.call_once(&login) {
            Ok(_) => {}
            Err(e) if e.is_fault(&FaultKind::InvalidLogin) => {
                if let Some(store) = &self.store {
                    store.forget();
                }
                return Err(ClientError::InvalidLogin { url: self.sdk_url.clone(), user: self.user.clone() });
            }
            Err(e) => return Err(e),
        }
        if let Some(c) = self.cookie.borrow().as_deref() {
            crate::common::logger::add_secret(c);
        }
        self.logged_in.set(true);
        debug!("logged in to {} ({}) as {}", self.sdk_url, self.sc.api_type, self.user);
        Ok(())
    }

    /// Keeps the session for the next CPI process; when that is impossible, this one logs out at the end.
    fn save(&self) {
        let Some(store) = &self.store else { return };
        let Some(cookie) = self.cookie.borrow().clone() else {
            self.logout_at_end.set(true);
            return;
        };
        if let Err(e) = store.save(&cookie, &self.sc) {
            warn!("cannot keep the vSphere session in {} ({e}); logging out at the end", store.path().display());
            self.logout_at_end.set(true);
        }
    }

    /// After a `NotAuthenticated` answer: the session expired (or the server restarted). Takes the session
    /// another CPI process saved meanwhile, or logs in again and saves it. At most twice per process.
    fn relogin(&self) -> ClientResult<()> {
        let n = self.relogins.get();
        if n >= 2 {
            return Err(ClientError::Other(format!(
                "{} keeps refusing fresh sessions (NotAuthenticated)",
                self.sdk_url
            )));
        }
        self.relogins.set(n + 1);
        let stale = self.cookie.borrow().clone();
        let Some(store) = &self.store else {
            info!("the vSphere session expired; logging in again");
            return self.login();
        };
        store
            .locked(|| {
                if let Some(saved) = store.load().filter(|s| Some(&s.cookie) != stale.as_ref()) {
                    debug!("another CPI process logged in again meanwhile; using its session");
                    *self.cookie.borrow_mut() = Some(saved.cookie);
                    return Ok(());
                }
                info!("the saved vSphere session is no longer valid; logging in again");
                self.login()?;
                self.save();
                Ok(())
            })
            .map_err(|e| ClientError::Other(format!("cannot log in to vSphere again one process at a time: {e}")))?
    }

    /// A failed HTTP exchange with `url`: a timeout says which limit it hit.
    fn http_error(&self, url: &str, e: ureq::Error) -> ClientError {
        let timed_out = match &e {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(io) => matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock),
            _ => false,
        };
        if timed_out {
            ClientError::Timeout { url: url.to_string(), secs: self.http_timeout, source: Box::new(e) }
        } else {
            ClientError::Http { url: url.to_string(), source: Box::new(e) }
        }
    }

    /// Where the session is kept between CPI processes, if it is.
    pub fn store(&self) -> Option<&SessionStore> {
        self.store.as_ref()
    }

    pub fn round_trips(&self) -> u32 {
        self.round_trips.get()
    }

    fn count(&self) {
        self.round_trips.set(self.round_trips.get() + 1);
    }

    /// Records one request's round trip (`started`: when it was sent).
    fn took(&self, what: &'static str, started: Instant) {
        let d = started.elapsed();
        crate::cpi::timing::add_request(d);
        self.wire.borrow_mut().push((what, d));
    }

    /// Sends one request, returns the operation's response element or its fault. A `NotAuthenticated`
    /// fault (the server did nothing) means the session expired: log in again and send it once more.
    pub fn call<R: Request>(&self, req: &R) -> ClientResult<Node> {
        match self.call_once(req) {
            Err(e) if e.is_fault(&FaultKind::NotAuthenticated) && R::NAME != "Logout" => {
                self.relogin()?;
                self.call_once(req)
            }
            other => other,
        }
    }

    /// One request, without the new login. A read-only request whose connection fails is tried again,
    /// three times in all, 0.5 s and 1 s apart; nothing else is retried, a timeout neither (the server took
    /// the request and kept the answer: the next try would wait as long again).
    fn call_once<R: Request>(&self, req: &R) -> ClientResult<Node> {
        let body = req.encode();
        let attempts = if R::READ_ONLY { 3 } else { 1 };
        let mut attempt = 1;
        loop {
            match self.send::<R>(&body) {
                Err(e @ ClientError::Http { .. }) if attempt < attempts => {
                    warn!("{} failed ({e}); trying again ({}/{attempts})", R::NAME, attempt + 1);
                    std::thread::sleep(Duration::from_millis(500 * attempt as u64));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn send<R: Request>(&self, body: &[u8]) -> ClientResult<Node> {
        self.count();
        let mut builder = self
            .agent
            .post(&self.sdk_url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "urn:vim25/6.5");
        if let Some(c) = self.cookie.borrow().as_ref() {
            builder = builder.header("Cookie", format!("vmware_soap_session={c}"));
        }
        let started = Instant::now();
        let mut resp = builder.send(body).map_err(|e| self.http_error(&self.sdk_url, e))?;
        for v in resp.headers().get_all("set-cookie") {
            if let Some(c) = v.to_str().ok().and_then(session_cookie) {
                *self.cookie.borrow_mut() = Some(c);
            }
        }
        let status = resp.status().as_u16();
        if status != 200 && status != 500 {
            debug!("{} -> HTTP {status} in {} ms", R::NAME, started.elapsed().as_millis());
            return Err(ClientError::Soap {
                method: R::NAME.into(),
                source: SoapError::Unexpected { method: R::NAME.into(), what: format!("HTTP status {status}") },
            });
        }
        // parsed as it arrives, within soap::MAX_BYTES (read no further), MAX_DEPTH and MAX_ELEMENTS: a
        // hostile reply of gigabytes is never held in memory
        let body = std::io::BufReader::new(soap::Capped::new(resp.body_mut().as_reader(), soap::MAX_BYTES));
        let decoded = soap::decode_from(status, body);
        self.took(R::NAME, started);
        debug!("{} -> HTTP {status} in {} ms", R::NAME, started.elapsed().as_millis());
        decoded.map_err(|source| match source {
            // the connection failed or timed out while the body came
            SoapError::Io(e) => self.http_error(&self.sdk_url, ureq::Error::from(e)),
            source => ClientError::Soap { method: R::NAME.into(), source },
        })
    }

    /// `FindByInventoryPath`: `None` when nothing is at `path`.
    pub fn find(&self, path: &str) -> ClientResult<Option<MoRef>> {
        let n = self.call(&FindByInventoryPath { this: self.sc.search_index.clone(), path: path.to_string() })?;
        Ok(n.child("returnval").and_then(Node::as_moref))
    }

    /// Reads `paths` of each object in one round trip. Objects that are gone are left out.
    pub fn properties(&self, objects: &[(MoRef, &[&str])]) -> ClientResult<Vec<ObjectContent>> {
        self.properties_with(objects, &[])
    }

    /// [`Session::properties`] plus the objects `follow` leads to, in the same round trip.
    pub fn properties_with(&self, objects: &[(MoRef, &[&str])], follow: &[Follow]) -> ClientResult<Vec<ObjectContent>> {
        match self.properties_once(objects, follow) {
            Err(e) if e.is_fault(&FaultKind::NotAuthenticated) => {
                self.relogin()?;
                self.properties_once(objects, follow)
            }
            other => other,
        }
    }

    fn properties_once(&self, objects: &[(MoRef, &[&str])], follow: &[Follow]) -> ClientResult<Vec<ObjectContent>> {
        let req = RetrievePropertiesEx {
            this: self.sc.property_collector.clone(),
            objects: objects.iter().map(|(o, p)| (o.clone(), p.iter().map(|s| s.to_string()).collect())).collect(),
            follow: follow.to_vec(),
        };
        let n = match self.call(&req) {
            Ok(n) => n,
            // one missing object makes the whole call fault: ask again one by one, leaving out the missing
            Err(e) if e.is_fault(&FaultKind::ManagedObjectNotFound) => {
                if objects.len() + follow.len() == 1 {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for o in objects {
                    out.extend(self.properties_with(std::slice::from_ref(o), &[])?);
                }
                for f in follow {
                    out.extend(self.properties_with(&[], std::slice::from_ref(f))?);
                }
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut page = n.child("returnval").cloned();
        let mut pages: Vec<Node> = Vec::new();
        let mut objects = 0;
        // a server may page large results: follow the token, but not for ever
        while let Some(p) = page.take() {
            let token = p.str_at("token").map(str::to_string);
            objects += p.children_named("objects").count();
            pages.push(p);
            if token.is_some() && (pages.len() >= MAX_PAGES || objects >= MAX_OBJECTS) {
                return Err(ClientError::Soap {
                    method: "RetrievePropertiesEx".into(),
                    source: SoapError::Unexpected {
                        method: "RetrievePropertiesEx".into(),
                        what: format!(
                            "the server is still paging after {} pages and {objects} objects (at most {MAX_PAGES} pages and {MAX_OBJECTS} objects are read): this CPI never reads that much at once",
                            pages.len()
                        ),
                    },
                });
            }
            if let Some(token) = token {
                let next =
                    self.call(&ContinueRetrievePropertiesEx { this: self.sc.property_collector.clone(), token })?;
                page = next.child("returnval").cloned();
            }
        }
        for oc in pages.iter().flat_map(|r| r.children_named("objects")) {
            let Some(obj) = oc.moref_at("obj") else { continue };
            // a session problem can come back as missingSet entries with a 200 (vcsim does this)
            if let Some(f) = oc.children_named("missingSet").find_map(|m| m.child("fault")) {
                let fault = Fault::from_localized(f);
                if fault.kind == FaultKind::NotAuthenticated {
                    return Err(ClientError::Soap {
                        method: "RetrievePropertiesEx".into(),
                        source: SoapError::Fault(fault),
                    });
                }
            }
            let props = oc
                .children_named("propSet")
                .filter_map(|p| Some((p.str_at("name")?.to_string(), p.child("val")?.clone())))
                .collect();
            out.push(ObjectContent { obj, props });
        }
        Ok(out)
    }

    /// Properties of one object; `None` when it does not exist.
    pub fn object(&self, obj: &MoRef, paths: &[&str]) -> ClientResult<Option<ObjectContent>> {
        Ok(self.properties(&[(obj.clone(), paths)])?.into_iter().next())
    }

    /// Waits until `task` finishes, through `CreateFilter` + `WaitForUpdatesEx` (the server answers when
    /// the state changes), and returns `info.result`.
    pub fn wait_task(&self, task: &MoRef, what: &str) -> ClientResult<Option<Node>> {
        const PATHS: &[&str] = &["info.state", "info.error", "info.result"];
        let finished = |props: &[(String, Node)]| {
            matches!(
                props.iter().find(|(p, _)| p == "info.state").map(|(_, v)| v.text.as_str()),
                Some("success") | Some("error")
            )
        };
        let state = self.wait_for(task, PATHS, what, finished)?;
        let get = |p: &str| state.iter().find(|(n, _)| n == p).map(|(_, v)| v.clone());
        match get("info.state").map(|n| n.text) {
            Some(s) if s == "success" => Ok(get("info.result")),
            _ => {
                let fault = get("info.error")
                    .map(|e| Fault::from_localized(&e))
                    .unwrap_or(Fault { kind: FaultKind::Other("unknown".into()), message: "no error given".into() });
                Err(ClientError::Task { task: task.value.clone(), what: what.to_string(), fault })
            }
        }
    }

    /// Calls a `*_Task` method and waits for it.
    pub fn run_task<R: Request>(&self, req: &R, what: &str) -> ClientResult<Option<Node>> {
        let n = self.call(req)?;
        let task = n.moref_at("returnval").ok_or_else(|| ClientError::Soap {
            method: R::NAME.into(),
            source: SoapError::Unexpected { method: R::NAME.into(), what: "no task returned".into() },
        })?;
        self.wait_task(&task, what)
    }

    /// Watches `paths` of `obj` until `done` says so; returns the latest values.
    pub fn wait_for(
        &self,
        obj: &MoRef,
        paths: &[&str],
        what: &str,
        done: impl Fn(&[(String, Node)]) -> bool,
    ) -> ClientResult<Vec<(String, Node)>> {
        // a short task is often done by the time its call returns, a lease often ready: one read costs one
        // request, a filter at least three (CreateFilter, WaitForUpdatesEx, DestroyPropertyFilter)
        let now = self.object(obj, paths)?.map(|oc| oc.props).unwrap_or_default();
        if done(&now) {
            return Ok(now);
        }
        let filter = self.call(&CreateFilter {
            this: self.sc.property_collector.clone(),
            obj: obj.clone(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
        })?;
        let filter = filter.moref_at("returnval");
        let started = Instant::now();
        let mut version = String::new();
        let mut values: Vec<(String, Node)> = Vec::new();
        let result = loop {
            let left = self.task_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break Err(ClientError::TaskTimeout {
                    task: obj.value.clone(),
                    what: what.to_string(),
                    secs: self.task_timeout.as_secs(),
                });
            }
            // the server holds the answer up to `wait` seconds: well inside the request's own time limit
            let wait = left.as_secs().min(self.http_timeout / 2).clamp(1, 60) as u32;
            let n = match self.call(&WaitForUpdatesEx {
                this: self.sc.property_collector.clone(),
                version: version.clone(),
                max_wait_seconds: wait,
            }) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let Some(set) = n.child("returnval") else { continue };
            if let Some(v) = set.str_at("version") {
                version = v.to_string();
            }
            for fs in set.children_named("filterSet") {
                for os in fs.children_named("objectSet").filter(|o| o.moref_at("obj").as_ref() == Some(obj)) {
                    for c in os.children_named("changeSet") {
                        let Some(name) = c.str_at("name") else { continue };
                        values.retain(|(p, _)| p != name);
                        if let Some(v) = c.child("val") {
                            values.push((name.to_string(), v.clone()));
                        }
                    }
                }
            }
            if done(&values) {
                break Ok(values);
            }
        };
        if let Some(f) = filter {
            // destroyed at once: a filter outliving its object (a finished lease, an expired task) makes every
            // later WaitForUpdatesEx of this session fail with ManagedObjectNotFound
            let _ = self.call(&DestroyPropertyFilter { this: f });
        }
        result
    }

    /// Logs out (and forgets a kept session).
    pub fn logout(&self) {
        if self.logged_in.replace(false) {
            if let Err(e) = self.call_once(&Logout { this: self.sc.session_manager.clone() }) {
                warn!("logout from {} failed: {e}", self.sdk_url);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.logout_at_end.get() {
            self.logout();
        }
        crate::info!("vSphere: {} HTTP round trips", self.round_trips.get());
        let wire = self.wire.borrow();
        if !wire.is_empty() {
            let each: Vec<String> = wire.iter().map(|(w, d)| format!("{w} {:.2}", d.as_secs_f64() * 1000.0)).collect();
            debug!("wire: {} (ms; the first includes connecting)", each.join(", "));
        }
    }
}

fn session_cookie(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    let (k, v) = first.split_once('=')?;
    (k.trim() == "vmware_soap_session").then(|| v.trim().trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_and_encoding() {
        assert_eq!(session_cookie("vmware_soap_session=\"abc\"; Path=/; HttpOnly").as_deref(), Some("abc"));
        assert_eq!(session_cookie("other=1"), None);
    }
}
