//! Datastore file transfer over `/folder` (GET, PUT, HEAD, with the session's cookie and the same timeout
//! as every request), uploads into an import lease, and the URLs a lease hands out.
use super::{ClientError, ClientResult, Session};
use std::io::Read;
use std::time::{Duration, Instant};

impl Session {
    fn file_url(&self, dc_path: &str, ds: &str, path: &str) -> String {
        format!(
            "{}/folder/{}?dcPath={}&dsName={}",
            self.base_url,
            encode_path(path),
            encode_query(dc_path),
            encode_query(ds)
        )
    }

    fn with_cookie<B>(&self, b: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.cookie.borrow().as_ref() {
            Some(c) => b.header("Cookie", format!("vmware_soap_session={c}")),
            None => b,
        }
    }

    /// A datastore file request; a 401 (the session expired) logs in again and tries once more.
    fn file_op<T>(&self, f: impl Fn() -> ClientResult<T>) -> ClientResult<T> {
        match f() {
            Err(ClientError::FileHttp { status: 401, .. }) => {
                self.relogin()?;
                f()
            }
            other => other,
        }
    }

    /// Uploads a datastore file (`PUT /folder/<path>`).
    pub fn put_file(&self, dc_path: &str, ds: &str, path: &str, data: &[u8]) -> ClientResult<()> {
        self.file_op(|| self.put_file_once(dc_path, ds, path, data))
    }

    fn put_file_once(&self, dc_path: &str, ds: &str, path: &str, data: &[u8]) -> ClientResult<()> {
        let url = self.file_url(dc_path, ds, path);
        self.count();
        let started = Instant::now();
        let resp = self
            .with_cookie(self.agent.put(&url))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .map_err(|e| self.http_error(&url, e))?;
        self.took("PUT", started);
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            status => Err(ClientError::FileHttp { path: format!("[{ds}] {path}"), status }),
        }
    }

    /// Downloads a datastore file; `None` when it does not exist.
    pub fn get_file(&self, dc_path: &str, ds: &str, path: &str) -> ClientResult<Option<Vec<u8>>> {
        self.file_op(|| self.get_file_once(dc_path, ds, path))
    }

    fn get_file_once(&self, dc_path: &str, ds: &str, path: &str) -> ClientResult<Option<Vec<u8>>> {
        let url = self.file_url(dc_path, ds, path);
        self.count();
        let started = Instant::now();
        let mut resp = self.with_cookie(self.agent.get(&url)).call().map_err(|e| self.http_error(&url, e))?;
        self.took("GET", started);
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.body_mut().with_config().limit(64 << 20).read_to_vec().map_err(|e| self.http_error(&url, e))?,
            )),
            404 => Ok(None),
            status => Err(ClientError::FileHttp { path: format!("[{ds}] {path}"), status }),
        }
    }

    /// Whether a datastore file exists (`HEAD /folder/<path>`).
    pub fn file_exists(&self, dc_path: &str, ds: &str, path: &str) -> ClientResult<bool> {
        self.file_op(|| self.file_exists_once(dc_path, ds, path))
    }

    fn file_exists_once(&self, dc_path: &str, ds: &str, path: &str) -> ClientResult<bool> {
        let url = self.file_url(dc_path, ds, path);
        self.count();
        let started = Instant::now();
        let resp = self.with_cookie(self.agent.head(&url)).call().map_err(|e| self.http_error(&url, e))?;
        self.took("HEAD", started);
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(ClientError::FileHttp { path: format!("[{ds}] {path}"), status }),
        }
    }

    /// Streams `len` bytes from `body` to an NFC lease device URL. A URL whose host is `*` means "the host
    /// you talk to" (its scheme is not to be trusted either: the simulator writes https on plain HTTP).
    /// A URL naming another host (vCenter hands out the ESXi host's NFC address) gets no session cookie;
    /// with a thumbprint pin, that host's own `sslThumbprint` from the lease is pinned instead.
    pub fn put_stream(
        &self,
        url: &str,
        ssl_thumbprint: Option<&str>,
        len: u64,
        body: &mut dyn Read,
    ) -> ClientResult<()> {
        let (url, ours) = self.fix_lease_url(url);
        self.count();
        let other;
        let agent = match (ours, self.pinned) {
            (false, true) => {
                let pin = ssl_thumbprint.ok_or_else(|| ClientError::Other(format!("the NFC lease names another host ({url}) without its thumbprint; driver.thumbprint cannot vouch for it")))?;
                other = super::super::tls::pinned_agent(pin, self.http_timeout).map_err(ClientError::Other)?;
                &other
            }
            _ => &self.agent,
        };
        // a disk of any size may take as long as it takes: no global limit for this request, but no read or
        // write may stall longer than http_timeout_seconds, nor the answer once the last byte is sent. The
        // kernel keeps taking bytes into growing socket buffers for a while after a server stopped reading,
        // and each such write restarts the per-write timeout: a chunk that took longer than the timeout to
        // go out ends the upload too (a stall fails it within twice the timeout)
        let mut body = Paced { inner: body, last: None, limit: Duration::from_secs(self.http_timeout) };
        let mut req = agent
            .put(&url)
            .config()
            .timeout_global(None)
            .build()
            .header("Content-Type", "application/x-vnd.vmware-streamVmdk")
            .header("Content-Length", len.to_string());
        if ours {
            req = self.with_cookie(req);
        }
        let started = Instant::now();
        let resp = req.send(ureq::SendBody::from_reader(&mut body)).map_err(|e| self.http_error(&url, e))?;
        self.took("PUT (NFC)", started);
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            status => Err(ClientError::FileHttp { path: url, status }),
        }
    }

    pub fn fix_lease_url(&self, url: &str) -> (String, bool) {
        lease_url(&self.base_url, url)
    }
}

/// An upload's body that fails once the server has taken nothing for `limit`: the time between two reads
/// (while the HTTP client sends what the last one gave) may not exceed it. The time spent in `inner` (reading
/// the image, reporting progress) is the CPI's own and does not count.
struct Paced<'a> {
    inner: &'a mut dyn Read,
    last: Option<Instant>,
    limit: Duration,
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(last) = self.last {
            if last.elapsed() > self.limit {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the server took less than one chunk of the upload in {} s", self.limit.as_secs()),
                ));
            }
        }
        let n = self.inner.read(buf)?;
        self.last = Some(Instant::now());
        Ok(n)
    }
}

/// `https://*/nfc/…` → (`<base>/nfc/…`, true), and so a URL naming exactly the base's host and port (a
/// simulator names the address its client used, with `https` even on plain HTTP: one host and port speak
/// one scheme); a URL on the base's host is ours too; any other is left
/// as it is (an ESXi host's NFC address behind vCenter). Hosts are compared whole, as parsed: an IPv6
/// literal in brackets is one host (`[fd00::1]` and `[fd00::2]` differ), user info is not the host, case
/// does not matter, the port does not either (a cookie is the host's, whatever its port).
pub fn lease_url(base_url: &str, url: &str) -> (String, bool) {
    let Some(host_start) = url.find("://").map(|i| i + 3) else { return (url.to_string(), false) };
    let path_start = url[host_start..].find(['/', '?', '#']).map(|j| host_start + j).unwrap_or(url.len());
    let authority = &url[host_start..path_start];
    if authority == "*" || authority.starts_with("*:") {
        return (format!("{base_url}{}", &url[path_start..]), true);
    }
    let our_authority = base_url
        .find("://")
        .map(|i| &base_url[i + 3..])
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    if authority.contains(':') && authority.eq_ignore_ascii_case(our_authority) && url_host(authority).is_some() {
        return (format!("{base_url}{}", &url[path_start..]), true);
    }
    let ours = match (url_host(authority), url_host(our_authority)) {
        (Some(h), Some(o)) => h.eq_ignore_ascii_case(o),
        _ => false,
    };
    (url.to_string(), ours)
}

/// The host of a URL authority (`user@host:port`): a bracketed IPv6 literal with its brackets, or the name
/// or IPv4 address before the port; `None` when it is not one (empty, an unbracketed `::1`, junk after `]`).
fn url_host(authority: &str) -> Option<&str> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, rest) = if hostport.starts_with('[') {
        let end = hostport.find(']')? + 1;
        hostport.split_at(end)
    } else {
        match hostport.find(':') {
            Some(i) => hostport.split_at(i),
            None => (hostport, ""),
        }
    };
    let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    (!host.is_empty() && port_ok).then_some(host)
}

/// Percent-encodes a datastore path, keeping `/`.
pub fn encode_path(p: &str) -> String {
    p.split('/').map(encode_query).collect::<Vec<_>>().join("/")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn encode_query(s: &str) -> String {
    crate::common::encoding::percent_encode(s, b"-._~")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_urls() {
        let base = "http://127.0.0.1:8989";
        assert_eq!(
            lease_url(base, "https://*/nfc/52a/disk-0.vmdk"),
            ("http://127.0.0.1:8989/nfc/52a/disk-0.vmdk".into(), true)
        );
        assert_eq!(
            lease_url("https://vc.lab", "https://esx01.lab/nfc/52a/disk-0.vmdk"),
            ("https://esx01.lab/nfc/52a/disk-0.vmdk".into(), false)
        );
        assert_eq!(lease_url("https://vc.lab", "https://VC.lab:443/nfc/x"), ("https://VC.lab:443/nfc/x".into(), true));
    }

    #[test]
    fn lease_urls_compare_whole_hosts() {
        // two IPv6 hosts share everything before their first ':': they are still two hosts
        for (base, url) in [
            ("https://[fd00::1]", "https://[fd00::2]/nfc/x"),
            ("https://[fd00::1]:443", "https://[fd00::2]:443/nfc/x"),
            ("https://[fd00:1::5]", "https://[fd00:1::50]/nfc/x"),
            ("https://vc.lab", "https://vc.lab.evil/nfc/x"),
            ("https://vc.lab", "https://[::1]/nfc/x"),
            ("https://[::1]", "https://::1/nfc/x"),
            ("https://vc.lab:8443", "https://vc.la/nfc/x"),
            ("https://user@vc.lab", "https://vc.lab@evil/nfc/x"),
        ] {
            assert_eq!(lease_url(base, url), (url.to_string(), false), "{base} vs {url}");
        }
        // the same host, whatever the port or case, and an IPv6 literal in any spelling of its case
        for (base, url) in [
            ("https://[fd00::1]", "https://[fd00::1]/nfc/x"),
            ("https://[FD00::1]:443", "https://[fd00::1]:8443/nfc/x"),
            ("https://vc.lab:443", "https://VC.LAB/nfc/x"),
        ] {
            assert_eq!(lease_url(base, url), (url.to_string(), true), "{base} vs {url}");
        }
        // the very host and port we talk to: our scheme too (the simulator writes https on plain HTTP)
        assert_eq!(
            lease_url("http://127.0.0.1:8989", "https://127.0.0.1:8989/nfc/x"),
            ("http://127.0.0.1:8989/nfc/x".into(), true)
        );
        // `*` is the host we talk to, with or without a port
        assert_eq!(lease_url("https://[fd00::1]", "https://*:443/nfc/x"), ("https://[fd00::1]/nfc/x".into(), true));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_path("BOSH Disks/a&b.vmdk"), "BOSH%20Disks/a%26b.vmdk");
        assert_eq!(encode_query("DC0/sub"), "DC0%2Fsub");
    }
}
