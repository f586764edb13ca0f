//! The SOAP envelope: one writer for every request ([`Xml`], [`envelope`]) and one decoder for every
//! response ([`decode`]), which yields the body element or a typed VIM fault. Both are pure functions over
//! bytes, so every message is golden-tested without a server.
//!
//! Responses are read into a small element tree ([`Node`]) with namespaces resolved: `xsi:type` is found by
//! its namespace, whatever prefix the server declared (vcsim writes `XMLSchema-instance:type`).
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

pub const XSI_NS: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

/// A managed-object reference: `<x type="VirtualMachine">vm-42</x>`. Values are opaque (datastore ids
/// are file-system paths on some servers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MoRef {
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: &str, value: &str) -> MoRef {
        MoRef { kind: kind.to_string(), value: value.to_string() }
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Writes request bodies. Every text and attribute value goes through [`escape`], so names and metadata
/// with `&`, `<`, `>`, `"` or `'` cannot break the document.
#[derive(Debug, Default)]
pub struct Xml {
    buf: String,
}

impl Xml {
    pub fn new() -> Xml {
        Xml::default()
    }
    /// `<name>`
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }
    /// `<name xsi:type="kind">`: the polymorphic objects (device specs, backings, specs).
    pub fn open_typed(&mut self, name: &str, kind: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str(" xsi:type=\"");
        self.buf.push_str(&escape(kind));
        self.buf.push_str("\">");
        self
    }
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }
    /// `<name>value</name>`, escaped.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.open(name);
        self.buf.push_str(&escape(value));
        self.close(name)
    }
    /// `<name xsi:type="kind">value</name>` (e.g. `xsd:string` option values).
    pub fn typed_text(&mut self, name: &str, kind: &str, value: &str) -> &mut Self {
        self.open_typed(name, kind);
        self.buf.push_str(&escape(value));
        self.close(name)
    }
    pub fn opt_text(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.text(name, v);
        }
        self
    }
    pub fn num(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.text(name, &value.to_string())
    }
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.text(name, if value { "true" } else { "false" })
    }
    /// `<name type="Kind">value</name>`.
    pub fn moref(&mut self, name: &str, m: &MoRef) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str(" type=\"");
        self.buf.push_str(&escape(&m.kind));
        self.buf.push_str("\">");
        self.buf.push_str(&escape(&m.value));
        self.close(name)
    }
    /// Writes a received element back (an import spec, a device to remove), with its `xsi:type`.
    pub fn node(&mut self, name: &str, n: &Node) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        if let Some(t) = &n.xsi_type {
            self.buf.push_str(" xsi:type=\"");
            self.buf.push_str(&escape(t.as_str()));
            self.buf.push('"');
        }
        for (k, v) in &n.attrs {
            self.buf.push(' ');
            self.buf.push_str(k);
            self.buf.push_str("=\"");
            self.buf.push_str(&escape(v.as_str()));
            self.buf.push('"');
        }
        self.buf.push('>');
        if n.children.is_empty() {
            self.buf.push_str(&escape(n.text.as_str()));
        }
        for c in &n.children {
            self.node(&c.name, c);
        }
        self.close(name)
    }
    pub fn into_string(self) -> String {
        self.buf
    }
}

/// The one envelope writer: `method` in the `urn:vim25` namespace with the body `write` produces.
pub fn envelope(method: &str, write: impl FnOnce(&mut Xml)) -> Vec<u8> {
    let mut x = Xml::new();
    x.buf.push_str(concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/""#,
        r#" xmlns:xsd="http://www.w3.org/2001/XMLSchema""#,
        r#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#
    ));
    x.buf.push('<');
    x.buf.push_str(method);
    x.buf.push_str(r#" xmlns="urn:vim25">"#);
    write(&mut x);
    x.close(method);
    x.buf.push_str("</soapenv:Body></soapenv:Envelope>");
    x.buf.into_bytes()
}

/// One element of a response: local name, `xsi:type` (prefix dropped), attributes by local name, text
/// and children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub xsi_type: Option<String>,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// The element at a `/`-separated path of child names.
    pub fn at(&self, path: &str) -> Option<&Node> {
        path.split('/').try_fold(self, |n, p| n.child(p))
    }
    /// Text at a path.
    pub fn str_at(&self, path: &str) -> Option<&str> {
        self.at(path).map(|n| n.text.as_str())
    }
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// This element read as a managed-object reference.
    pub fn as_moref(&self) -> Option<MoRef> {
        Some(MoRef { kind: self.attr("type")?.to_string(), value: self.text.clone() })
    }
    pub fn moref_at(&self, path: &str) -> Option<MoRef> {
        self.at(path).and_then(Node::as_moref)
    }
    /// The type of this element: its `xsi:type` or else its name.
    pub fn kind(&self) -> &str {
        let t = self.xsi_type.as_deref().unwrap_or(&self.name);
        t.strip_prefix("xsd:").unwrap_or(t)
    }
}

/// Responses nested deeper than this are refused: VIM's deepest (a device backing, a snapshot tree of
/// vSphere's 32 levels) stay far below, and a tree this shallow is built, cloned and dropped without any risk
/// to the stack.
pub const MAX_DEPTH: usize = 256;
/// Responses with more elements are refused: the driver reads a handful of objects at a time (a page of
/// thousands of networks stays far below), and each element costs memory (about 150 bytes).
pub const MAX_ELEMENTS: usize = 250_000;
/// Responses longer than this are refused ([`Capped`]), read no further than that: the driver's largest
/// replies are well under a MiB. (A text of this length is buffered whole by the XML reader before it is
/// seen, so the peak memory of a hostile reply is about twice this.)
pub const MAX_BYTES: u64 = 32 << 20;

/// Why a response could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SoapError {
    #[error("response is not well-formed XML: {0}")]
    Xml(String),
    #[error("response nests elements deeper than {limit} (refused: no VIM answer does)")]
    TooDeep { limit: usize },
    #[error("response has more than {limit} elements (refused: no answer to this CPI's requests is that large)")]
    TooManyElements { limit: usize },
    #[error("response is larger than {} (refused, and not read further)", size(*limit))]
    TooLarge { limit: u64 },
    /// Reading the response failed (the connection, a timeout): for the HTTP layer to explain.
    #[error("reading the response failed: {0}")]
    Io(std::io::Error),
    #[error("response has no SOAP body")]
    NoBody,
    #[error("{0}")]
    Fault(#[from] Fault),
    #[error("unexpected response to {method}: {what}")]
    Unexpected { method: String, what: String },
}

/// The VIM faults the driver tells apart; any other keeps its type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    NotAuthenticated,
    InvalidLogin,
    ManagedObjectNotFound,
    InvalidState,
    InvalidPowerState,
    FileNotFound,
    FileAlreadyExists,
    DuplicateName,
    InvalidArgument,
    NotSupported,
    MethodNotFound,
    NoPermission,
    ToolsUnavailable,
    InvalidGuestLogin,
    Other(String),
}

impl FaultKind {
    pub fn from_type(t: &str) -> FaultKind {
        let t = t.rsplit(':').next().unwrap_or(t);
        let t = t.strip_suffix("Fault").filter(|s| !s.is_empty()).unwrap_or(t);
        match t {
            "NotAuthenticated" => FaultKind::NotAuthenticated,
            "InvalidLogin" => FaultKind::InvalidLogin,
            "ManagedObjectNotFound" => FaultKind::ManagedObjectNotFound,
            "InvalidState" => FaultKind::InvalidState,
            "InvalidPowerState" => FaultKind::InvalidPowerState,
            "FileNotFound" => FaultKind::FileNotFound,
            "FileAlreadyExists" => FaultKind::FileAlreadyExists,
            "DuplicateName" => FaultKind::DuplicateName,
            "InvalidArgument" => FaultKind::InvalidArgument,
            "NotSupported" => FaultKind::NotSupported,
            "MethodNotFound" => FaultKind::MethodNotFound,
            "NoPermission" => FaultKind::NoPermission,
            "ToolsUnavailable" => FaultKind::ToolsUnavailable,
            "InvalidGuestLogin" => FaultKind::InvalidGuestLogin,
            other => FaultKind::Other(other.to_string()),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            FaultKind::NotAuthenticated => "NotAuthenticated",
            FaultKind::InvalidLogin => "InvalidLogin",
            FaultKind::ManagedObjectNotFound => "ManagedObjectNotFound",
            FaultKind::InvalidState => "InvalidState",
            FaultKind::InvalidPowerState => "InvalidPowerState",
            FaultKind::FileNotFound => "FileNotFound",
            FaultKind::FileAlreadyExists => "FileAlreadyExists",
            FaultKind::DuplicateName => "DuplicateName",
            FaultKind::InvalidArgument => "InvalidArgument",
            FaultKind::NotSupported => "NotSupported",
            FaultKind::MethodNotFound => "MethodNotFound",
            FaultKind::NoPermission => "NoPermission",
            FaultKind::ToolsUnavailable => "ToolsUnavailable",
            FaultKind::InvalidGuestLogin => "InvalidGuestLogin",
            FaultKind::Other(s) => s,
        }
    }
}

/// A SOAP fault (or a task's `LocalizedMethodFault`): the VIM type and the server's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vSphere fault {}: {message}", kind.name())]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

impl Fault {
    /// From a `<soapenv:Fault>` element.
    fn from_soap(n: &Node) -> Fault {
        let message = n.str_at("faultstring").unwrap_or_default().to_string();
        let kind = match n.child("detail").and_then(|d| d.children.first()) {
            Some(d) => FaultKind::from_type(d.xsi_type.as_deref().unwrap_or(&d.name)),
            None => FaultKind::Other(n.str_at("faultcode").unwrap_or("unknown").to_string()),
        };
        Fault { kind, message }
    }
    /// From a `LocalizedMethodFault` (`<error><fault xsi:type="…"/><localizedMessage/></error>`).
    pub fn from_localized(n: &Node) -> Fault {
        let kind =
            n.child("fault").map(|f| FaultKind::from_type(f.kind())).unwrap_or(FaultKind::Other("unknown".into()));
        let message = n.str_at("localizedMessage").unwrap_or_default().to_string();
        Fault { kind, message }
    }
}

/// `1 KiB`, `64 MiB`, or bytes.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A reader of at most `limit` bytes: one byte more is an error ([`SoapError::TooLarge`] once parsed), and
/// nothing beyond it is read. The HTTP client puts each response body through one.
pub struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

/// The error a [`Capped`] reader returns past its limit.
#[derive(Debug, thiserror::Error)]
#[error("more than {limit} bytes")]
struct OverLimit {
    limit: u64,
}

impl<R: std::io::Read> Capped<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Capped { inner, left: limit, limit }
    }
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // at the limit: fine if the document ends here, an error if there is more
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, OverLimit { limit: self.limit })),
            };
        }
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A quick-xml error as a [`SoapError`]: a failed read stays an I/O error (a timeout while the body came),
/// unless it was the [`Capped`] limit.
fn xml_error(e: quick_xml::Error) -> SoapError {
    match e {
        quick_xml::Error::Io(io) => {
            let io = std::sync::Arc::try_unwrap(io).unwrap_or_else(|io| std::io::Error::new(io.kind(), io.to_string()));
            match io.get_ref().and_then(|i| i.downcast_ref::<OverLimit>()) {
                Some(o) => SoapError::TooLarge { limit: o.limit },
                None => SoapError::Io(io),
            }
        }
        e => SoapError::Xml(e.to_string()),
    }
}

/// Parses a whole document into a tree.
pub fn parse(bytes: &[u8]) -> Result<Node, SoapError> {
    parse_from(bytes)
}

/// Parses a document as it is read, within [`MAX_DEPTH`] and [`MAX_ELEMENTS`] (and whatever byte limit the
/// reader has: [`Capped`]); nothing but the tree is kept.
pub fn parse_from<R: std::io::BufRead>(input: R) -> Result<Node, SoapError> {
    let mut reader = NsReader::from_reader(input);
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut buf = Vec::new();
    let mut elements = 0usize;
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(xml_error)?;
        if let Event::Start(_) | Event::Empty(_) = ev {
            elements += 1;
            if elements > MAX_ELEMENTS {
                return Err(SoapError::TooManyElements { limit: MAX_ELEMENTS });
            }
        }
        match ev {
            Event::Start(e) => {
                // the root pseudo-node is not a level of the document
                if stack.len() > MAX_DEPTH {
                    return Err(SoapError::TooDeep { limit: MAX_DEPTH });
                }
                let node = start_node(&reader, &e)?;
                stack.push(node);
            }
            Event::Empty(e) => {
                let node = start_node(&reader, &e)?;
                if let Some(top) = stack.last_mut() {
                    top.children.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| SoapError::Xml("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(top) => top.children.push(node),
                    None => return Err(SoapError::Xml("unbalanced end tag".into())),
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| SoapError::Xml(e.to_string()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return Err(SoapError::Xml("document ends inside an element".into()));
    }
    stack.pop().and_then(|root| root.children.into_iter().next()).ok_or_else(|| SoapError::Xml("empty document".into()))
}

fn start_node<R>(reader: &NsReader<R>, e: &quick_xml::events::BytesStart<'_>) -> Result<Node, SoapError> {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    let mut node = Node { name, ..Node::default() };
    for a in e.attributes() {
        let a = a.map_err(|e| SoapError::Xml(e.to_string()))?;
        let value = a.unescape_value().map_err(|e| SoapError::Xml(e.to_string()))?.into_owned();
        let (ns, local) = reader.resolve_attribute(a.key);
        let local = String::from_utf8_lossy(local.as_ref()).into_owned();
        match ns {
            ResolveResult::Bound(ns) if ns.as_ref() == XSI_NS && local == "type" => {
                node.xsi_type = Some(normalize_type(&value));
            }
            _ if a.key.as_ref().starts_with(b"xmlns") => {}
            _ => node.attrs.push((local, value)),
        }
    }
    Ok(node)
}

/// `xsd:string` stays `xsd:string` (written back as it came, e.g. in an import spec); `vim25:Foo` and
/// `Foo` become `Foo`.
fn normalize_type(v: &str) -> String {
    const XSD: &[&str] = &[
        "string",
        "int",
        "long",
        "short",
        "byte",
        "boolean",
        "dateTime",
        "base64Binary",
        "float",
        "double",
        "anyType",
    ];
    match v.rsplit_once(':') {
        Some((_, local)) if XSD.contains(&local) => format!("xsd:{local}"),
        Some((_, local)) => local.to_string(),
        None => v.to_string(),
    }
}

/// Body-or-fault: the first element of the SOAP body, or the fault it carries. `status` is the HTTP
/// status (faults arrive as 500 with a body).
pub fn decode(status: u16, bytes: &[u8]) -> Result<Node, SoapError> {
    decode_from(status, bytes)
}

/// [`decode`] as the document is read (the HTTP client's way: the body is never held whole).
pub fn decode_from<R: std::io::BufRead>(status: u16, input: R) -> Result<Node, SoapError> {
    let env = parse_from(input).map_err(|e| match e {
        SoapError::Xml(m) if status != 200 => SoapError::Xml(format!("HTTP {status}: {m}")),
        other => other,
    })?;
    let body = env.child("Body").ok_or(SoapError::NoBody)?;
    let first = body.children.first().ok_or(SoapError::NoBody)?;
    if first.name == "Fault" {
        return Err(SoapError::Fault(Fault::from_soap(first)));
    }
    Ok(first.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials() {
        let b = envelope("X", |x| {
            x.text("name", "a&b<c>\"d'");
        });
        let s = String::from_utf8(b).unwrap();
        assert!(s.contains("<name>a&amp;b&lt;c&gt;&quot;d&apos;</name>"), "{s}");
        let n = decode(200, s.as_bytes()).unwrap();
        assert_eq!(n.str_at("name"), Some("a&b<c>\"d'"));
    }

    #[test]
    fn xsi_type_by_namespace_not_prefix() {
        let doc = br#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><R xmlns="urn:vim25"><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="xsd:string">v</val><o type="Datastore">/tmp/a@b</o></R></e:Body></e:Envelope>"#;
        let n = decode(200, doc).unwrap();
        // XSD types keep their prefix (they are written back as received); kind() drops it
        assert_eq!(n.at("val").unwrap().xsi_type.as_deref(), Some("xsd:string"));
        assert_eq!(n.at("val").unwrap().kind(), "string");
        assert_eq!(n.moref_at("o"), Some(MoRef::new("Datastore", "/tmp/a@b")));
    }

    #[test]
    fn faults_are_typed() {
        let doc = br#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        match decode(500, doc) {
            Err(SoapError::Fault(f)) => {
                assert_eq!((f.kind, f.message.as_str()), (FaultKind::InvalidLogin, "Login failure"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(500, b"<html>oops"), Err(SoapError::Xml(_))));
        assert!(matches!(decode(200, b"<a></b>"), Err(SoapError::Xml(_))));
        assert_eq!(FaultKind::from_type("vim25:ManagedObjectNotFoundFault"), FaultKind::ManagedObjectNotFound);
    }

    /// A million nested elements, parsed (and the result dropped) on a thread with the default 2 MiB stack:
    /// a clear error, no stack overflow.
    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        const DEPTH: usize = 1_000_000;
        let doc = format!(
            r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><R xmlns="urn:vim25">{}{}</R></e:Body></e:Envelope>"#,
            "<a>".repeat(DEPTH),
            "</a>".repeat(DEPTH)
        );
        let r = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || decode(200, doc.as_bytes()).map(|_| ()).map_err(|e| e.to_string()))
            .unwrap()
            .join()
            .expect("the parser thread died");
        let e = r.expect_err("a million levels must be refused");
        assert!(e.contains(&format!("deeper than {MAX_DEPTH}")), "{e}");
        // as deep as the limit is fine
        let ok = format!("<r>{}{}</r>", "<a>".repeat(MAX_DEPTH - 1), "</a>".repeat(MAX_DEPTH - 1));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn element_count_and_size_are_capped() {
        let many = format!("<r>{}</r>", "<a/>".repeat(MAX_ELEMENTS));
        let e = parse(many.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(&format!("more than {MAX_ELEMENTS} elements")), "{e}");
        // a reader capped at 1 KiB: 1 KiB passes, one byte more is refused as such
        let doc = format!("<r>{}</r>", "x".repeat(1024 - 7));
        assert!(parse_from(std::io::BufReader::new(Capped::new(doc.as_bytes(), 1024))).is_ok());
        let doc = format!("<r>{}</r>", "x".repeat(1024 - 6));
        let e = parse_from(std::io::BufReader::new(Capped::new(doc.as_bytes(), 1024))).unwrap_err();
        assert!(matches!(e, SoapError::TooLarge { limit: 1024 }), "{e:?}");
        assert!(e.to_string().contains("larger than 1 KiB"), "{e}");
    }
}
