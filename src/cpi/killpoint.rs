//! Kill points: named steps at which a test can make the CPI process die with SIGKILL, so that a kill lands
//! at one exact step of a create instead of at a random moment (the sigkill suite's way, which rarely hits a
//! window a few microseconds wide). A test sets `VMCPI_TEST_KILL_AT=<step>` in the CPI's environment; when
//! the process reaches [`kill_point`] with that name it sends itself SIGKILL, as `kill -9` from outside would.
//!
//! Only debug builds (the tests' build) have them: in a release build [`kill_point`] is empty, so no config,
//! request or environment of a deployed CPI can trigger one.

/// The environment variable that names the step to die at.
pub const ENV: &str = "VMCPI_TEST_KILL_AT";

/// Dies with SIGKILL here when `VMCPI_TEST_KILL_AT` names `step` (debug builds only).
#[inline]
pub fn kill_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(ENV).is_some_and(|v| v == step) {
        crate::debug!("kill point {step}: SIGKILL");
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, the process ends here.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}
