//! What makes a launcher config usable: the checks of the file itself ([`Config::validate`], at every load),
//! what `check-config` checks on this machine ([`Config::check_local`]), and the clear-text endpoints that
//! need an opt-in ([`Config::cleartext_endpoints`]). Messages name the field that is wrong.
use super::types::{invalid, Config, ConfigError, GitHub, Pool, SourceChoice, SourceKind};
use crate::launcher::log;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// 1 to 80 characters of `[A-Za-z0-9_-]`: launcher ids, stack keys, pool names.
fn key_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 80 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !key_ok(&self.launcher_id) {
            return Err(invalid("launcher_id must be 1 to 80 characters of [A-Za-z0-9_-]"));
        }
        if self.buildkite.is_some() == self.github.is_some() {
            return Err(invalid("name exactly one CI source: a [buildkite] or a [github] section"));
        }
        self.validate_loop()?;
        if self.pools.is_empty() {
            return Err(invalid("no [[pool]] is configured"));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.pools {
            if !key_ok(&p.name) || !names.insert(p.name.as_str()) {
                return Err(invalid(format!("pool name {:?} is empty, not [A-Za-z0-9_-] or used twice", p.name)));
            }
            p.validate(self.source()).map_err(|m| invalid(format!("pool {}: {m}", p.name)))?;
        }
        if self.source() == SourceChoice::GitHub {
            return self.validate_github();
        }
        self.validate_buildkite()?;
        self.validate_endpoints()?;
        self.validate_polling()
    }

    /// `[buildkite]`: the token source, the queues and their stacks, sizes.
    fn validate_buildkite(&self) -> Result<(), ConfigError> {
        let b = self.bk();
        if !key_ok(&b.stack_key) {
            return Err(invalid("buildkite.stack_key must be 1 to 80 characters of [A-Za-z0-9_-]"));
        }
        if b.token_file.is_some() == b.token_env.is_some() {
            return Err(invalid("buildkite: set exactly one of token_file and token_env"));
        }
        if b.queue.is_empty() == b.queues.is_empty() {
            return Err(invalid(
                "buildkite: set exactly one of queue and queues (use _default for the cluster's default queue)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (q, key) in self.queue_stacks() {
            if q.is_empty() || !seen.insert(q.clone()) {
                return Err(invalid(format!("buildkite.queues: {q:?} is empty or listed twice")));
            }
            if !key_ok(&key) {
                return Err(invalid(format!("buildkite.queues: the stack key {key:?} of queue {q:?} must be 1 to 80 characters of [A-Za-z0-9_-]")));
            }
        }
        if b.queues.len() > 1 && b.source == SourceKind::Rest {
            return Err(invalid("buildkite.queues: several queues need source = \"stacks\""));
        }
        Ok(())
    }

    /// Every queue is served by a pool; the polling of Buildkite.
    fn validate_polling(&self) -> Result<(), ConfigError> {
        for (q, _) in self.queue_stacks() {
            let served = format!("queue={q}");
            if !self.pools.iter().any(|p| p.tags.iter().any(|t| *t == served || t == "queue=*")) {
                return Err(invalid(format!(
                    "no pool has the tag {served}: the launcher would serve no job of queue {q:?}"
                )));
            }
        }
        let b = self.bk();
        if self.unhealthy_after_failed_polls == 0 {
            return Err(invalid("unhealthy_after_failed_polls must be at least 1"));
        }
        if !(1..=1000).contains(&b.page_size) {
            return Err(invalid("buildkite.page_size must be 1 to 1000"));
        }
        if !(1..=3600).contains(&b.reservation_expiry_seconds) {
            return Err(invalid("buildkite.reservation_expiry_seconds must be 1 to 3600"));
        }
        if b.source == SourceKind::Rest {
            match &b.rest {
                None => return Err(invalid("buildkite.source = \"rest\" needs a [buildkite.rest] section")),
                Some(r) if r.token_file.is_some() == r.token_env.is_some() => {
                    return Err(invalid("buildkite.rest: set exactly one of token_file and token_env"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The Buildkite URLs: http(s), the agent API's ending in `/v3`, clear text only with an opt-in.
    fn validate_endpoints(&self) -> Result<(), ConfigError> {
        if let Some((key, url)) = self.cleartext_endpoints().into_iter().next() {
            if !self.bk().allow_http {
                return Err(invalid(format!(
                    "{key} {url:?} would send a token in clear text: use https://, or set allow_http = true in \
                     [buildkite] to accept that (http:// needs no opt-in only on this machine's loopback: \
                     127.0.0.1, [::1], localhost)"
                )));
            }
        }
        let agent_apis =
            [("endpoint", Some(&self.bk().endpoint)), ("agent_endpoint", self.bk().agent_endpoint.as_ref())];
        for (key, v) in agent_apis {
            let Some(v) = v else { continue };
            let ep = v.trim_end_matches('/');
            if !is_http_url(ep) || !ep.ends_with("/v3") {
                return Err(invalid(format!(
                    "buildkite.{key} {v:?} must be an http(s) URL ending in /v3, like https://agent.buildkite.com/v3"
                )));
            }
        }
        if let Some(r) = self.bk().rest.as_ref().filter(|r| !is_http_url(&r.endpoint)) {
            return Err(invalid(format!(
                "buildkite.rest.endpoint {:?} must be an http(s) URL, like https://api.buildkite.com",
                r.endpoint
            )));
        }
        Ok(())
    }

    /// The listener, the breakers and the loop's pace.
    fn validate_loop(&self) -> Result<(), ConfigError> {
        if !(1..=65536).contains(&self.listener.max_connections) || !(1..=3600).contains(&self.listener.timeout_seconds)
        {
            return Err(invalid("listener: max_connections must be 1 to 65536 and timeout_seconds 1 to 3600"));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(format!("listen: {:?} is not host:port with a numeric host", self.listen)));
        }
        let b = &self.breaker;
        if b.failures == 0 || b.open_seconds == 0 || b.max_open_seconds < b.open_seconds {
            return Err(invalid(
                "breaker: failures and open_seconds must be positive, max_open_seconds at least open_seconds",
            ));
        }
        if self.poll_interval_ms < 100 {
            return Err(invalid("poll_interval_ms must be at least 100"));
        }
        Ok(())
    }

    /// The Buildkite endpoints (`buildkite.endpoint`, `buildkite.agent_endpoint`, `buildkite.rest.endpoint`)
    /// that are plain `http://` to a host other than this machine's loopback.
    pub fn cleartext_endpoints(&self) -> Vec<(&'static str, &str)> {
        let endpoints = match (&self.buildkite, &self.github) {
            (Some(b), _) => vec![
                ("buildkite.endpoint", Some(b.endpoint.as_str())),
                ("buildkite.agent_endpoint", b.agent_endpoint.as_deref()),
                ("buildkite.rest.endpoint", b.rest.as_ref().map(|r| r.endpoint.as_str())),
            ],
            (None, Some(g)) => vec![("github.api_url", Some(g.api_url.as_str()))],
            (None, None) => vec![],
        };
        endpoints
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .filter(|(_, v)| v.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://")) && !loopback_url(v))
            .collect()
    }

    /// `[github]`: one scope, one kind of credentials, the API URL, the pace, and names that fit GitHub's
    /// 64-character runner names.
    fn validate_github(&self) -> Result<(), ConfigError> {
        let Some(g) = &self.github else { return Ok(()) };
        github_scope(g)?;
        github_auth(g)?;
        let api = g.api_url.trim_end_matches('/');
        if !is_http_url(api) || api.contains('?') || api.contains('#') {
            return Err(invalid(format!(
                "github.api_url {:?} must be an http(s) URL: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server",
                g.api_url
            )));
        }
        if let Some((key, url)) = self.cleartext_endpoints().into_iter().next() {
            if !g.allow_http {
                return Err(invalid(format!(
                    "{key} {url:?} would send a token in clear text: use https://, or set allow_http = true in \
                     [github] to accept that (http:// needs no opt-in only on this machine's loopback: \
                     127.0.0.1, [::1], localhost)"
                )));
            }
        }
        if g.runner_group_id == 0 {
            return Err(invalid("github.runner_group_id must be a runner group's id (the default group is 1)"));
        }
        if g.work_folder.is_empty() || g.work_folder.starts_with('/') || g.work_folder.split('/').any(|c| c == "..") {
            return Err(invalid(
                "github.work_folder must be a relative path inside the runner's directory (default _work)",
            ));
        }
        if g.poll_interval_ms < 100 || g.timeout_ms == 0 || g.max_requests_per_minute == 0 {
            return Err(invalid(
                "github: poll_interval_ms must be at least 100, timeout_ms and max_requests_per_minute positive",
            ));
        }
        if self.unhealthy_after_failed_polls == 0 {
            return Err(invalid("unhealthy_after_failed_polls must be at least 1"));
        }
        // runner names are `<launcher_id>-<pool>-<record>` (the record is at most 17 characters); GitHub takes
        // at most 64
        for p in &self.pools {
            if self.launcher_id.len() + p.name.len() + 2 + 17 > 64 {
                return Err(invalid(format!(
                    "launcher_id {:?} and pool name {:?} together are too long for GitHub's 64-character runner names: \
                     keep them within 45 characters",
                    self.launcher_id, p.name
                )));
            }
        }
        Ok(())
    }

    /// What an operator should know about a config that is accepted: `http://` endpoints allowed by
    /// `allow_http`.
    pub fn warnings(&self) -> Vec<String> {
        self.cleartext_endpoints()
            .into_iter()
            .map(|(k, v)| {
                format!("{k} {v:?} is plain http: the token crosses the network in clear text (allow_http = true)")
            })
            .collect()
    }

    /// What `check-config` checks beyond the file itself: every CPI is an executable file, every stemcell
    /// file exists (a tarball has an `image` and a readable `stemcell.MF`), the TLS certificate and key load,
    /// and the listen address is free.
    pub fn check_local(&self) -> Result<(), ConfigError> {
        for p in &self.pools {
            p.check_local().map_err(|m| invalid(format!("pool {}: {m}", p.name)))?;
        }
        if let Some(t) = &self.tls {
            crate::launcher::server::tls_config(&t.cert_file, &t.key_file)
                .map_err(|e| invalid(format!("tls: {}", log::chain(&e))))?;
        }
        std::net::TcpListener::bind(&self.listen)
            .map_err(|e| invalid(format!("listen: cannot bind {}: {e} (is another launcher running?)", self.listen)))?;
        Ok(())
    }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `[github]`: exactly one of a repository (`owner/repo`) and an organisation (with its repositories' names).
fn github_scope(g: &GitHub) -> Result<(), ConfigError> {
    let repo_ok = |r: &str| {
        let mut parts = r.split('/');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        };
        ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
    };
    let name_ok = |n: &str| {
        !n.is_empty() && n.len() <= 100 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match (&g.repository, &g.organization) {
        (Some(r), None) => {
            if !repo_ok(r) {
                return Err(invalid(format!("github.repository {r:?} must be owner/repo")));
            }
            if !g.repositories.is_empty() {
                return Err(invalid(
                    "github.repositories goes with organization (a repository scope serves its own repository)",
                ));
            }
        }
        (None, Some(o)) => {
            if !name_ok(o) {
                return Err(invalid(format!("github.organization {o:?} is not an organisation name")));
            }
            if let Some(r) = g.repositories.iter().find(|r| !name_ok(r)) {
                return Err(invalid(format!(
                    "github.repositories: {r:?} is not a repository name (names, without the owner)"
                )));
            }
        }
        _ => return Err(invalid("github: set exactly one of repository (owner/repo) and organization")),
    }
    Ok(())
}

/// `[github]`: a token (from a file or the environment) or a GitHub App, and at most one webhook secret.
fn github_auth(g: &GitHub) -> Result<(), ConfigError> {
    let token = g.token_file.is_some() || g.token_env.is_some();
    let app = g.app_id.is_some() || g.installation_id.is_some() || g.private_key_file.is_some();
    if token == app {
        return Err(invalid(
            "github: authenticate either with a token (token_file or token_env) or as a GitHub App (app_id, installation_id, private_key_file)",
        ));
    }
    if token && g.token_file.is_some() == g.token_env.is_some() {
        return Err(invalid("github: set exactly one of token_file and token_env"));
    }
    if app
        && (g.app_id.as_deref().is_none_or(str::is_empty)
            || g.installation_id.is_none()
            || g.private_key_file.is_none())
    {
        return Err(invalid(
            "github: a GitHub App needs app_id (its client ID or app ID), installation_id and private_key_file",
        ));
    }
    if g.webhook_secret_file.is_some() && g.webhook_secret_env.is_some() {
        return Err(invalid("github: set at most one of webhook_secret_file and webhook_secret_env"));
    }
    Ok(())
}

impl Pool {
    /// The pool's own fields; the message does not name the pool.
    fn validate(&self, source: SourceChoice) -> Result<(), String> {
        if self.cpi.is_empty() || !Path::new(&self.cpi[0]).is_absolute() {
            return Err("cpi must start with the absolute path of the CPI executable".into());
        }
        match source {
            SourceChoice::Buildkite => self.validate_tags()?,
            SourceChoice::GitHub => self.validate_labels()?,
        }
        let s = &self.stemcell;
        if [s.cid.is_some(), s.image.is_some(), s.tarball.is_some()].iter().filter(|x| **x).count() != 1 {
            return Err("stemcell needs exactly one of cid, tarball and image".into());
        }
        self.validate_flavors()?;
        self.validate_networks()?;
        self.validate_power()?;
        if self.cpi_timeout_seconds == 0 {
            return Err("cpi_timeout_seconds must be positive".into());
        }
        if self.limits.max_concurrent_creates == 0 {
            return Err("limits.max_concurrent_creates must be at least 1".into());
        }
        if self.create_attempts == 0 || !(self.max_lifetime_minutes > 0.0 && self.max_lifetime_minutes < 1e7) {
            return Err("create_attempts and max_lifetime_minutes must be positive".into());
        }
        Ok(())
    }

    /// Buildkite agent tags: `key=value`, with a `queue=` tag.
    fn validate_tags(&self) -> Result<(), String> {
        if !self.labels.is_empty() {
            return Err("labels are for a [github] source: a Buildkite pool has tags".into());
        }
        if let Some(t) = self.tags.iter().find(|t| crate::launcher::rules::Rule::parse(t).is_none()) {
            return Err(format!("tag {t:?} is not key=value"));
        }
        if !self.tags.iter().any(|t| t.starts_with("queue=")) {
            return Err("tags need a queue=… tag (clustered agents can only acquire jobs of their queue)".into());
        }
        Ok(())
    }

    /// GitHub runner labels: 1 to 100 of them, no commas, no wildcards but a whole `key=*` value.
    fn validate_labels(&self) -> Result<(), String> {
        if !self.tags.is_empty() {
            return Err("tags are for a [buildkite] source: a GitHub pool has labels (its runners' labels)".into());
        }
        if self.labels.is_empty() || self.labels.len() > 100 {
            return Err("labels: a GitHub pool needs 1 to 100 runner labels (e.g. [\"self-hosted\", \"linux\"])".into());
        }
        for l in &self.labels {
            if let Err(why) = crate::launcher::rules::check_pool_label(l) {
                return Err(format!("label {l:?}: {why}"));
            }
        }
        if self
            .labels
            .iter()
            .any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(&self.flavor_tag)))
        {
            return Err(format!(
                "label {}=…: the flavor is the job's to choose (a {}=NAME label in runs-on)",
                self.flavor_tag, self.flavor_tag
            ));
        }
        Ok(())
    }

    fn validate_flavors(&self) -> Result<(), String> {
        if self.flavors.is_empty() {
            return Err("needs at least one [pool.flavors.NAME]".into());
        }
        if let Some((n, _)) = self.flavors.iter().find(|(_, f)| f.cpu == 0 || f.ram == 0) {
            return Err(format!("flavor {n}: cpu and ram must be positive"));
        }
        match &self.default_flavor {
            Some(d) if !self.flavors.contains_key(d) => Err(format!("default_flavor {d:?} is not one of the flavors")),
            _ => Ok(()),
        }
    }

    fn validate_networks(&self) -> Result<(), String> {
        if self.networks.is_empty() {
            return Err("needs at least one network".into());
        }
        for (n, net) in &self.networks {
            if !matches!(net.kind.as_str(), "manual" | "dynamic") {
                return Err(format!("network {n}: type must be manual or dynamic"));
            }
            let addrs = net.addresses().map_err(|e| format!("network {n}: {e}"))?;
            if !addrs.is_empty() && (net.kind != "manual" || net.netmask.is_none()) {
                return Err(format!("network {n}: static_ips need type = \"manual\" and a netmask"));
            }
        }
        if self.networks.values().filter(|n| !n.static_ips.is_empty()).count() > 1 {
            return Err("only one network per pool can have static_ips".into());
        }
        Ok(())
    }

    fn validate_power(&self) -> Result<(), String> {
        for (what, argv) in [("power_on", &self.power_on), ("power_off", &self.power_off)] {
            if !argv.is_empty() && !Path::new(&argv[0]).is_absolute() {
                return Err(format!(
                    "{what} must start with the absolute path of the command (it runs as argv, not through a shell)"
                ));
            }
        }
        if !self.power_off.is_empty() && self.power_on.is_empty() {
            return Err("power_off needs power_on (a host powered off must be woken again)".into());
        }
        if self.boot_grace_seconds == 0 || self.idle_power_off_seconds == 0 {
            return Err("boot_grace_seconds and idle_power_off_seconds must be positive".into());
        }
        Ok(())
    }

    /// [`Config::check_local`] for one pool; the message does not name the pool.
    fn check_local(&self) -> Result<(), String> {
        let cpi = Path::new(&self.cpi[0]);
        let meta = std::fs::metadata(cpi).map_err(|e| format!("cpi {}: {e}", cpi.display()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("cpi {} is not executable", cpi.display()));
        }
        for (what, argv) in [("power_on", &self.power_on), ("power_off", &self.power_off)] {
            match argv.first() {
                Some(cmd) if !is_executable_file(Path::new(cmd)) => {
                    return Err(format!("{what} command {cmd} is not an executable file"))
                }
                _ => {}
            }
        }
        if let Some(t) = &self.stemcell.tarball {
            crate::launcher::stemcell::check(t).map_err(|e| log::chain(&e))?;
        }
        if let Some(i) = &self.stemcell.image {
            std::fs::File::open(i).map_err(|e| format!("stemcell image {}: {e}", i.display()))?;
        }
        Ok(())
    }
}

/// Whether a URL's host is this machine's loopback (127.0.0.0/8, ::1, `localhost`): what is sent there does
/// not leave the machine.
pub fn loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, GOOD};
    use super::*;

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (GOOD.replace("stack_key = \"s1\"", "stack_key = \"s 1\""), "stack_key"),
            (
                GOOD.replace("token_env = \"BK\"", "token_env = \"BK\"\ntoken_file = \"/x\""),
                "exactly one of token_file",
            ),
            (GOOD.replace("\"/bin/cpi\"", "\"cpi\""), "absolute path"),
            (GOOD.replace("\"queue=vm\", ", ""), "queue="),
            (GOOD.replace("10.0.0.12\"", "10.0.0.9\""), "reversed"),
            (GOOD.replace("stemcell = { cid = \"sc-1\" }", "stemcell = { }"), "exactly one of cid, tarball and image"),
            (GOOD.replace("ram = 512", "ram = 0"), "positive"),
            (GOOD.replace("listen = \"127.0.0.1:0\"", "listen = \"localhost\""), "listen"),
            (GOOD.replace("launcher_id", "launcher_idx"), "unknown field"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            let msg = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
            assert!(msg.contains(want), "want {want:?} in {msg:?}");
        }
    }

    #[test]
    fn power_commands_are_checked() {
        let with = |extra: &str| {
            parse(&GOOD.replace(
                "flavors.small = { cpu = 1, ram = 512 }",
                &format!("flavors.small = {{ cpu = 1, ram = 512 }}\n{extra}"),
            ))
        };
        let e = with("power_off = [\"/usr/bin/true\"]").unwrap_err().to_string();
        assert!(e.contains("power_off needs power_on"), "{e}");
        let e = with("power_on = [\"wakeonlan\", \"aa:bb\"]").unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let e = with("power_on = [\"/usr/bin/true\"]\nidle_power_off_seconds = 0").unwrap_err().to_string();
        assert!(e.contains("must be positive"), "{e}");
        let mut c = with("power_on = [\"/no/such/wakeonlan\"]").unwrap();
        assert_eq!(c.pools[0].boot_grace_seconds, 300);
        assert_eq!(c.pools[0].idle_power_off_seconds, 1800);
        c.pools[0].cpi = vec!["/bin/true".into()];
        let e = c.check_local().unwrap_err().to_string();
        assert!(e.contains("power_on command /no/such/wakeonlan"), "{e}");
    }

    #[test]
    fn plain_http_endpoints_need_loopback_or_allow_http() {
        for url in ["http://127.0.0.1:8080/v3", "http://127.9.9.9/v3", "http://[::1]:80/v3", "HTTP://LocalHost/v3"] {
            assert!(loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.2.2:8080/v3",
            "http://127.0.0.1@evil.example/v3",
            "http://localhost.example/v3",
            "http://[::2]/v3",
            "http://128.0.0.1/v3",
        ] {
            assert!(!loopback_url(url), "{url}");
        }
        let with = |line: &str| parse(&GOOD.replace("stack_key = \"s1\"", &format!("stack_key = \"s1\"\n{line}")));
        assert!(with("endpoint = \"http://127.0.0.1:9/v3\"").unwrap().warnings().is_empty());
        assert!(with("endpoint = \"https://agent.example/v3\"").unwrap().warnings().is_empty());
        for line in [
            "endpoint = \"http://agent.example/v3\"",
            "agent_endpoint = \"http://10.0.2.2:8080/v3\"",
            "source = \"rest\"\nrest = { organization = \"o\", token_env = \"R\", endpoint = \"http://api.example\" }",
        ] {
            let e = with(line).unwrap_err().to_string();
            assert!(e.contains("clear text") && e.contains("allow_http = true"), "{line}: {e}");
            let c = with(&format!("allow_http = true\n{line}")).unwrap();
            assert_eq!(c.warnings().len(), 1, "{line}");
            assert!(c.warnings()[0].contains("clear text"), "{:?}", c.warnings());
        }
    }
}
