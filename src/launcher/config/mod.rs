//! The launcher's TOML config: read once, validated once, then used as typed values.
//!
//! TOML (not JSON like `cpi.json`) because operators edit this file by hand and want comments; the format is
//! documented with a complete example in `examples/launcher/agent-launcher.toml` and `docs/launcher.md`.
//! The Buildkite token is never part of this file: it names a file or an environment variable that holds it.
//! The types and their defaults are in [`types`]; what makes a config valid is in [`validate`].
mod types;
mod validate;

pub use types::*;
pub use validate::loopback_url;

use std::path::Path;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), source: Box::new(e) })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Configs for unit tests: the keys every config needs (a ledger directory that does not exist), `globals`,
/// the `[buildkite]` table, then `pools` (`[[pool]]` tables).
#[cfg(test)]
pub mod testing {
    use super::Config;

    pub fn config(globals: &str, pools: &str) -> Config {
        let text = format!(
            "launcher_id = \"t\"\nledger_dir = \"/nonexistent/agent-launcher-test\"\nlisten = \"127.0.0.1:0\"\n{globals}\n\
             [buildkite]\ntoken_env = \"BK\"\nqueue = \"vm\"\nstack_key = \"s\"\n{pools}"
        );
        Config::parse(&text, std::path::Path::new("t.toml")).unwrap()
    }

    /// A `[[pool]]` table serving `queue=vm` with the stemcell `sc` and a CPI that is never run, then `rest`
    /// (its networks and flavors, at least).
    pub fn pool(name: &str, rest: &str) -> String {
        format!("[[pool]]\nname = \"{name}\"\ntags = [\"queue=vm\"]\ncpi = [\"/bin/true\"]\nstemcell = {{ cid = \"sc\" }}\n{rest}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const GOOD: &str = r#"
launcher_id = "t1"
ledger_dir = "/tmp/l"
listen = "127.0.0.1:0"
[buildkite]
token_env = "BK"
queue = "vm"
stack_key = "s1"
[[pool]]
name = "linux"
tags = ["queue=vm", "os=linux"]
cpi = ["/bin/cpi", "--config", "/etc/cpi.json"]
stemcell = { cid = "sc-1" }
networks.default = { type = "manual", static_ips = ["10.0.0.10-10.0.0.12", "10.0.0.20"], netmask = "255.255.255.0", gateway = "10.0.0.1" }
flavors.small = { cpu = 1, ram = 512 }
flavors.large = { cpu = 4, ram = 4096, disk = 10240 }
"#;

    pub(super) fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("x.toml"))
    }

    #[test]
    fn agent_endpoint_defaults_to_endpoint_and_must_be_an_agent_api_url() {
        assert_eq!(parse(GOOD).unwrap().agent_endpoint(), "https://agent.buildkite.com/v3");
        let with =
            GOOD.replace("stack_key = \"s1\"", "stack_key = \"s1\"\nagent_endpoint = \"https://10.0.2.2:8443/v3\"");
        assert_eq!(parse(&with).unwrap().agent_endpoint(), "https://10.0.2.2:8443/v3");
        let bad = GOOD.replace("stack_key = \"s1\"", "stack_key = \"s1\"\nagent_endpoint = \"10.0.2.2:8080\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("buildkite.agent_endpoint"), "{e}");
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.bk().endpoint, "https://agent.buildkite.com/v3");
        assert_eq!(c.pools[0].limits.max_concurrent_creates, 2);
        assert_eq!(c.pools[0].smallest_flavor().unwrap().0, "small");
        assert_eq!(c.pools[0].flavor_for(None).unwrap().0, "small");
        assert_eq!(c.pools[0].flavor_for(Some("large")).unwrap().1.cpu, 4);
        let e = c.pools[0].flavor_for(Some("huge")).unwrap_err();
        assert!(e.contains("\"huge\"") && e.contains("large, small"), "{e}");
        let ips = c.pools[0].networks["default"].addresses().unwrap();
        assert_eq!(
            ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.20"]
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = parse(include_str!("../../../examples/launcher/agent-launcher.toml")).unwrap();
        assert_eq!(c.pools.len(), 2);
        assert_eq!(c.pools[0].networks["default"].addresses().unwrap().len(), 50);
        assert_eq!(c.pools[0].flavor_for(None).unwrap().0, "small");
    }

    /// The example says it shows every key: it does, and the docs say what new users trip over.
    #[test]
    fn the_example_and_the_docs_show_every_key() {
        let example = include_str!("../../../examples/launcher/agent-launcher.toml");
        let keys = [
            "launcher_id",
            "ledger_dir",
            "listen",
            "public_url",
            "poll_interval_ms",
            "on_shutdown",
            "placement",
            "unhealthy_after_failed_polls",
            "tls",
            "cert_file",
            "key_file",
            "[listener]",
            "max_connections",
            "timeout_seconds",
            "allow_http",
            "[limits]",
            "[buildkite]",
            "source",
            "endpoint",
            "agent_endpoint",
            "token_file",
            "token_env",
            "queue",
            "queues",
            "stack_key",
            "reservation_expiry_seconds",
            "page_size",
            "max_pages",
            "timeout_ms",
            "[buildkite.rest]",
            "organization",
            "lookback_hours",
            "[[pool]]",
            "name",
            "tags",
            "cpi",
            "stemcell",
            "tarball",
            "image",
            "api_version",
            "cloud_properties",
            "networks",
            "static_ips",
            "flavors",
            "default_flavor",
            "flavor_tag",
            "limits",
            "max_concurrent_creates",
            "reserve_smallest",
            "warm",
            "max_lifetime_minutes",
            "boot_timeout_seconds",
            "create_attempts",
            "cpi_timeout_seconds",
            "[breaker]",
            "power_on",
            "power_off",
            "boot_grace_seconds",
            "idle_power_off_seconds",
            "failures",
            "open_seconds",
            "max_open_seconds",
        ];
        for k in keys {
            assert!(example.contains(k), "the example config does not show {k}");
        }
        let docs = include_str!("../../../docs/launcher.md");
        for want in [
            "must end in `/v3`",
            "cleared environment",
            "stack_key",
            "drain",
            "warm VMs",
            "unhealthy_after_failed_polls",
            "--online",
        ] {
            assert!(docs.contains(want), "docs/launcher.md does not say {want:?}");
        }
    }

    /// The GitHub example is valid and shows every `[github]` key; the docs say what matters.
    #[test]
    fn the_github_example_is_valid_and_shows_every_key() {
        let example = include_str!("../../../examples/launcher/agent-launcher-github.toml");
        let c = parse(example).unwrap();
        assert_eq!(c.source(), SourceChoice::GitHub);
        assert_eq!(c.pools[0].labels.len(), 4);
        for k in [
            "repository",
            "organization",
            "repositories",
            "runner_group_id",
            "api_url",
            "allow_http",
            "app_id",
            "installation_id",
            "private_key_file",
            "token_file",
            "token_env",
            "webhook_secret_file",
            "webhook_secret_env",
            "work_folder",
            "poll_interval_ms",
            "min_write_interval_ms",
            "max_requests_per_minute",
            "timeout_ms",
            "labels",
        ] {
            assert!(example.contains(&format!("{k} =")), "the GitHub example does not show {k}");
        }
        let docs = include_str!("../../../docs/launcher.md");
        for want in [
            "generate-jitconfig",
            "Administration: read and write",
            "Self-hosted runners: read and write",
            "Actions: read",
            "X-Hub-Signature-256",
            "no reservations",
            "If-None-Match",
            "actions-runner-controller",
            "garm",
        ] {
            assert!(docs.contains(want), "docs/launcher.md does not say {want:?}");
        }
    }

    #[test]
    fn several_queues_get_a_stack_each() {
        let two = GOOD
            .replace("queue = \"vm\"", "queues = [\"vm\", \"gpu\"]")
            .replace("\"queue=vm\", \"os=linux\"", "\"queue=*\", \"os=linux\"");
        let c = parse(&two).unwrap();
        assert_eq!(
            c.queue_stacks(),
            [("vm".to_string(), "s1-vm".to_string()), ("gpu".to_string(), "s1-gpu".to_string())]
        );
        assert_eq!(parse(GOOD).unwrap().queue_stacks(), [("vm".to_string(), "s1".to_string())]);
        for (text, want) in [
            (GOOD.replace("queue = \"vm\"", "queue = \"vm\"\nqueues = [\"a\"]"), "exactly one of queue and queues"),
            (GOOD.replace("queue = \"vm\"", "queues = [\"vm\", \"gpu\"]"), "queue=gpu"),
            (GOOD.replace("queue = \"vm\"", "queues = [\"vm\", \"vm\"]"), "listed twice"),
            (GOOD.replace("queue = \"vm\"", "queues = [\"vm\", \"a b\"]"), "stack key"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    pub(super) const GITHUB: &str = r#"
launcher_id = "gh1"
ledger_dir = "/tmp/l"
listen = "127.0.0.1:0"
[github]
repository = "acme/app"
token_env = "GH_TOKEN"
[[pool]]
name = "linux"
labels = ["self-hosted", "linux", "x64"]
cpi = ["/bin/cpi"]
stemcell = { cid = "sc-1" }
networks.default = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 512 }
flavors.large = { cpu = 4, ram = 4096 }
"#;

    #[test]
    fn a_github_source_with_its_defaults_and_its_mistakes() {
        let c = parse(GITHUB).unwrap();
        assert_eq!(c.source(), SourceChoice::GitHub);
        let g = c.github.as_ref().unwrap();
        assert_eq!(
            (g.api_url.as_str(), g.runner_group_id, g.work_folder.as_str()),
            ("https://api.github.com", 1, "_work")
        );
        assert_eq!((g.poll_interval_ms, g.min_write_interval_ms, g.max_requests_per_minute), (5000, 1000, 300));
        let org = GITHUB.replace("repository = \"acme/app\"", "organization = \"acme\"\nrepositories = [\"app\", \"lib\"]\nrunner_group_id = 7\napi_url = \"https://ghe.example.com/api/v3\"");
        let c = parse(&org).unwrap();
        assert_eq!(c.github.as_ref().unwrap().runner_group_id, 7);
        let app = GITHUB.replace(
            "token_env = \"GH_TOKEN\"",
            "app_id = \"Iv1.0123456789abcdef\"\ninstallation_id = 42\nprivate_key_file = \"/etc/app.pem\"\nwebhook_secret_file = \"/etc/hook\"",
        );
        assert!(parse(&app).is_ok());
        let cases = [
            (GITHUB.replace("[github]", "[github]\norganization = \"acme\""), "exactly one of repository"),
            (GITHUB.replace("\"acme/app\"", "\"acme\""), "owner/repo"),
            (GITHUB.replace("token_env = \"GH_TOKEN\"", ""), "either with a token"),
            (
                GITHUB.replace("token_env = \"GH_TOKEN\"", "token_env = \"GH_TOKEN\"\napp_id = \"1\""),
                "either with a token",
            ),
            (GITHUB.replace("token_env = \"GH_TOKEN\"", "app_id = \"1\"\ninstallation_id = 2"), "private_key_file"),
            (GITHUB.replace("[github]", "[github]\napi_url = \"http://ghe.example.com/api/v3\""), "clear text"),
            (GITHUB.replace("[github]", "[github]\napi_url = \"ghe.example.com\""), "http(s) URL"),
            (GITHUB.replace("[github]", "[github]\nrunner_group_id = 0"), "runner group"),
            (GITHUB.replace("[github]", "[github]\nwork_folder = \"../x\""), "relative path"),
            (
                GITHUB.replace("labels = [\"self-hosted\", \"linux\", \"x64\"]", "tags = [\"queue=vm\"]"),
                "tags are for a [buildkite]",
            ),
            (GITHUB.replace("\"x64\"]", "\"x6*\"]"), "has a *"),
            (GITHUB.replace("\"x64\"]", "\"flavor=big\"]"), "the flavor is the job's"),
            (GITHUB.replace("labels = [\"self-hosted\", \"linux\", \"x64\"]", "labels = []"), "1 to 100 runner labels"),
            (
                GITHUB.replace("launcher_id = \"gh1\"", &format!("launcher_id = \"{}\"", "x".repeat(44))),
                "64-character runner names",
            ),
            (
                GITHUB.replacen(
                    "[[pool]]",
                    "[buildkite]\ntoken_env = \"BK\"\nqueue = \"vm\"\nstack_key = \"s\"\n[[pool]]",
                    1,
                ),
                "exactly one CI source",
            ),
            (
                GITHUB.replace("[github]\nrepository = \"acme/app\"\ntoken_env = \"GH_TOKEN\"", ""),
                "exactly one CI source",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).map(|_| ()).unwrap_err();
            let msg = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
            assert!(msg.contains(want), "want {want:?} in {msg:?}");
        }
        // a Buildkite pool may not have labels
        let e = parse(&GOOD.replace("tags = [\"queue=vm\", \"os=linux\"]", "tags = [\"queue=vm\"]\nlabels = [\"x\"]"))
            .unwrap_err();
        assert!(e.to_string().contains("labels are for a [github] source"), "{e}");
        // plain http to this machine's loopback needs no opt-in (the tests' fake GitHub)
        let c = parse(&GITHUB.replace("[github]", "[github]\napi_url = \"http://127.0.0.1:9/api/v3\"")).unwrap();
        assert!(c.warnings().is_empty());
        let c =
            parse(&GITHUB.replace("[github]", "[github]\nallow_http = true\napi_url = \"http://10.0.2.2:9\"")).unwrap();
        assert_eq!(c.warnings().len(), 1);
    }

    #[test]
    fn token_comes_from_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "bkct_secret\n").unwrap();
        let mut c = parse(GOOD).unwrap();
        c.buildkite.as_mut().unwrap().token_env = None;
        c.buildkite.as_mut().unwrap().token_file = Some(f.clone());
        // written with the umask's 0644: others may read it
        let e = c.token().unwrap_err();
        assert!(matches!(e, ConfigError::OpenTokenFile { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains(&format!("chmod 600 {}", f.display())), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.token().unwrap(), "bkct_secret");
        std::fs::write(&f, "  \n").unwrap();
        assert!(matches!(c.token(), Err(ConfigError::EmptyToken(_))));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(c.token(), Err(ConfigError::OpenTokenFile { .. })));
    }
}
