//! "A create that dies leaves nothing", the in-process half: every driver records what a create made, as it
//! makes it, in one [`Undo`] list. A create that fails (an error or a panic) undoes those steps in reverse
//! order, each logged; a create that succeeds disarms the list. The other half, a process killed with
//! SIGKILL before it could undo anything, is covered by the in-flight markers ([`crate::cpi::inflight`]) and each
//! driver's reaper, which remove what such a create left.
use crate::cpi::error::DriverResult;
use crate::cpi::inflight::Marker;
use crate::warn;

/// One create, the same in every driver that keeps in-flight markers: `make` makes the thing, recording in
/// the undo list how to remove each part as it appears; on success the list is disarmed, on failure it runs
/// at once. The outcome then settles the create's marker ([`Outcome::settle`]).
pub fn create<'a, T>(what: impl Into<String>, make: impl FnOnce(&mut Undo<'a>) -> DriverResult<T>) -> Outcome<T> {
    let mut undo = Undo::new(what);
    let result = make(&mut undo);
    let settled = match &result {
        Ok(_) => {
            undo.disarm();
            true
        }
        Err(_) => undo.run(),
    };
    Outcome { result, settled }
}

/// What a create came to: its result, and whether nothing of a failed create is left (every undo step
/// succeeded; always true on success).
#[must_use = "a create's outcome settles its in-flight marker"]
pub struct Outcome<T> {
    pub result: DriverResult<T>,
    pub settled: bool,
}

impl<T> Outcome<T> {
    /// The in-flight marker of `cid` goes when the create succeeded (with the response its only record) or
    /// failed leaving nothing; a failure that left something keeps it, so that the next create's reaper
    /// removes what is left.
    pub fn settle(self, marker: Marker, cid: &str) -> DriverResult<T> {
        match &self.result {
            Ok(_) => marker.created(cid),
            Err(_) if self.settled => marker.commit(),
            Err(_) => {}
        }
        self.result
    }
}

/// One recorded step: what it removes (for the log) and how.
struct Step<'a> {
    label: String,
    undo: Box<dyn FnOnce() -> DriverResult<()> + 'a>,
}

/// The undo list of one create. Dropping it while armed (the create returned early with an error, or
/// panicked) runs the steps in reverse; [`Undo::disarm`] keeps what was made; [`Undo::run`] undoes now and
/// says whether everything went.
#[must_use = "an undo list that is dropped at once undoes nothing that comes after it"]
pub struct Undo<'a> {
    what: String,
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    /// An empty list for the create described by `what` (e.g. `create_vm vm-…`).
    pub fn new(what: impl Into<String>) -> Self {
        Undo { what: what.into(), steps: Vec::new() }
    }

    /// Records that `label` was made and how to remove it. Push right after the thing exists (or right
    /// before a call that may make it half-way), so that a failure at any later point removes it.
    pub fn push(&mut self, label: impl Into<String>, undo: impl FnOnce() -> DriverResult<()> + 'a) {
        self.steps.push(Step { label: label.into(), undo: Box::new(undo) });
    }

    /// The create succeeded: keeps everything it made.
    pub fn disarm(mut self) {
        self.steps.clear();
    }

    /// Undoes every step now, newest first; `true` when all of them succeeded.
    pub fn run(mut self) -> bool {
        self.undo_all()
    }

    fn undo_all(&mut self) -> bool {
        let mut all = true;
        while let Some(step) = self.steps.pop() {
            warn!("{} failed: removing {}", self.what, step.label);
            if let Err(e) = (step.undo)() {
                warn!("{}: could not remove {} ({e})", self.what, step.label);
                all = false;
            }
        }
        all
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        self.undo_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::DriverError;
    use std::cell::RefCell;

    /// An undo step that records `name` in `log`.
    fn note<'a>(log: &'a RefCell<Vec<&'static str>>, name: &'static str) -> impl FnOnce() -> DriverResult<()> + 'a {
        move || {
            log.borrow_mut().push(name);
            Ok(())
        }
    }

    #[test]
    fn steps_run_in_reverse_on_drop_and_not_after_disarm() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new("create_vm vm-1");
            u.push("volume a", note(&log, "a"));
            u.push("domain", note(&log, "domain"));
        }
        assert_eq!(*log.borrow(), ["domain", "a"]);
        log.borrow_mut().clear();
        let mut u = Undo::new("create_vm vm-2");
        u.push("volume a", note(&log, "a"));
        u.disarm();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn run_reports_a_failed_step_and_still_runs_the_rest() {
        let log = RefCell::new(Vec::new());
        let mut u = Undo::new("create_stemcell sc-1");
        u.push("volume a", note(&log, "a"));
        u.push("volume b", || Err(DriverError::transient("busy")));
        assert!(!u.run());
        assert_eq!(*log.borrow(), ["a"]);
        let mut u = Undo::new("create_stemcell sc-2");
        u.push("volume c", note(&log, "c"));
        assert!(u.run());
        assert_eq!(*log.borrow(), ["a", "c"]);
    }

    #[test]
    fn a_panic_undoes_too() {
        let undone = std::sync::atomic::AtomicBool::new(false);
        let r = std::panic::catch_unwind(|| {
            let mut u = Undo::new("create_vm vm-3");
            u.push("volume a", || {
                undone.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            });
            panic!("bug");
        });
        assert!(r.is_err());
        assert!(undone.load(std::sync::atomic::Ordering::SeqCst));
    }
}
