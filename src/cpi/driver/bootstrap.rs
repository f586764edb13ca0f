//! The optional `bootstrap` block of VM cloud_properties, the same in every driver: a script run in the guest
//! after boot, once the guest is ready (its tools answer, and `ready_process` runs). Each driver reaches the
//! guest its own way (QEMU guest agent, vmrun guest operations, vSphere guest operations); the block, its
//! defaults and the bounded wait loop are written once here.
use crate::cpi::error::{DriverError, DriverResult};
use serde::Deserialize;
use std::time::{Duration, Instant};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// The script's text.
    pub script: String,
    /// Absolute path of the interpreter in the guest.
    #[serde(default = "default_interpreter")]
    pub interpreter: String,
    /// Guest user and password: the VMware drivers log in to the guest with them (the QEMU guest agent runs
    /// as root and takes none).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<crate::common::secret::Secret>,
    /// A process that must run in the guest before the script starts (e.g. `bosh-agent`).
    #[serde(default)]
    pub ready_process: Option<String>,
    #[serde(default)]
    pub min_wait_seconds: u64,
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
    /// Where the script is copied in the guest (bosh-vmrun-cpi's `script_path`; the vmrun driver, which copies
    /// the script, only); default a fresh /tmp name.
    #[serde(default)]
    pub script_path: Option<String>,
}

/// Every stemcell has bash; one default for every driver.
pub fn default_interpreter() -> String {
    "/bin/bash".into()
}

fn default_max_wait() -> u64 {
    600
}

/// Debug without the guest password (the script is shown: it is the operator's own text).
impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("script", &self.script)
            .field("interpreter", &self.interpreter)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("ready_process", &self.ready_process)
            .field("min_wait_seconds", &self.min_wait_seconds)
            .field("max_wait_seconds", &self.max_wait_seconds)
            .field("script_path", &self.script_path)
            .finish()
    }
}

impl Bootstrap {
    /// The guest login, for drivers that need one: both fields, or an error that says so.
    pub fn login(&self) -> DriverResult<(&str, &str)> {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Ok((u, p.expose())),
            _ => Err(DriverError::invalid("VM cloud_properties.bootstrap", "username and password are required")),
        }
    }

    /// Refuses a login and a script path, for drivers that use neither (the QEMU guest agent).
    pub fn no_login(&self) -> DriverResult<()> {
        if self.username.is_some() || self.password.is_some() {
            return Err(DriverError::invalid(
                "VM cloud_properties.bootstrap",
                "username and password are not used by this driver (the QEMU guest agent runs the script as root)",
            ));
        }
        if self.script_path.is_some() {
            return Err(DriverError::invalid(
                "VM cloud_properties.bootstrap",
                "script_path is not used by this driver (the script goes to the interpreter's stdin)",
            ));
        }
        Ok(())
    }

    /// Checks `script_path`, for the driver that copies the script into the guest.
    pub fn check_script_path(&self) -> DriverResult<()> {
        if let Some(p) = self.script_path.as_deref() {
            if !p.starts_with('/') || p.ends_with('/') || p.contains(['\0', '\n', '\r']) {
                return Err(DriverError::invalid(
                    "VM cloud_properties",
                    format!("bootstrap.script_path must be an absolute file path in the guest, got {p:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Sleeps `min_wait_seconds`, then returns the deadline every later wait of this bootstrap shares.
    pub fn start(&self) -> Wait {
        let deadline = Instant::now() + Duration::from_secs(self.max_wait_seconds.max(self.min_wait_seconds));
        std::thread::sleep(Duration::from_secs(self.min_wait_seconds));
        Wait { deadline, started: Instant::now() }
    }
}

/// The one deadline of a bootstrap.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    deadline: Instant,
    started: Instant,
}

impl Wait {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Polls `probe` every `every` (less near the deadline) until it answers `Ok(Ok(value))`. `Ok(Err(why))`
    /// means "not yet"; an `Err` ends the wait at once (nothing gets better by waiting). At the deadline the
    /// error is a retryable one with the text `timeout(last why)`.
    pub fn until<T>(
        &self,
        every: Duration,
        mut probe: impl FnMut() -> DriverResult<Result<T, String>>,
        timeout: impl FnOnce(&str) -> String,
    ) -> DriverResult<T> {
        loop {
            let why = match probe()? {
                Ok(v) => return Ok(v),
                Err(why) => why,
            };
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::transient(timeout(&why)));
            }
            std::thread::sleep(left.min(every));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::ErrorKind;

    fn parse(v: serde_json::Value) -> Bootstrap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn one_set_of_defaults() {
        let b = parse(serde_json::json!({"script": "echo hi"}));
        assert_eq!((b.interpreter.as_str(), b.min_wait_seconds, b.max_wait_seconds), ("/bin/bash", 0, 600));
        assert_eq!(b.login().unwrap_err().kind(), ErrorKind::Invalid);
        b.no_login().unwrap();
        let b = parse(serde_json::json!({"script": "x", "username": "vcap", "password": "hunter22"}));
        assert_eq!(b.login().unwrap(), ("vcap", "hunter22"));
        assert!(!format!("{b:?}").contains("hunter22"));
        assert!(b.no_login().is_err());
        assert!(serde_json::from_value::<Bootstrap>(serde_json::json!({"script": "x", "bogus": 1})).is_err());
    }

    #[test]
    fn the_wait_ends_on_success_on_a_fatal_error_or_at_the_deadline() {
        let b = parse(serde_json::json!({"script": "x", "max_wait_seconds": 1}));
        let w = b.start();
        let mut n = 0;
        let v = w.until(
            Duration::from_millis(10),
            || {
                n += 1;
                Ok(if n < 3 { Err(format!("try {n}")) } else { Ok(n) })
            },
            |_| unreachable!(),
        );
        assert_eq!(v.unwrap(), 3);
        let e = w.until::<()>(Duration::from_millis(10), || Err(DriverError::other("refused")), |_| String::new());
        assert!(!e.unwrap_err().retryable());
        let e = w.until::<()>(
            Duration::from_millis(50),
            || Ok(Err("tools not up".into())),
            |last| format!("not ready: {last}"),
        );
        let e = e.unwrap_err();
        assert!(e.retryable() && e.to_string() == "not ready: tools not up", "{e}");
    }
}
