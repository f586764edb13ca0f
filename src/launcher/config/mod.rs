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
        assert_eq!(c.buildkite.endpoint, "https://agent.buildkite.com/v3");
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

    #[test]
    fn token_comes_from_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "bkct_secret\n").unwrap();
        let mut c = parse(GOOD).unwrap();
        c.buildkite.token_env = None;
        c.buildkite.token_file = Some(f.clone());
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
