//! Per-pool circuit breakers: a pool whose CPI keeps failing (host down, CPI missing, every create failing)
//! is *opened*: it gets no new VMs and its waiting jobs go to another pool that serves them. After a pause
//! the breaker lets one probe through (the CPI's `info`, and the stemcell upload when the pool has none
//! yet); when the CPI answers, the pool is *half-open* and one create_vm decides: success closes it, a
//! failure opens it again for twice as long (up to a maximum).
//!
//! The state machine is pure (times are passed in) so it is unit-tested without a clock.
use std::time::{Duration, Instant};

/// What the breaker lets a pool do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Healthy: creates as its limits allow.
    Closed,
    /// On probation: one create at a time, whose outcome closes or opens the breaker.
    HalfOpen,
    /// Failing: no creates; jobs go elsewhere or wait.
    Open,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Closed => "closed",
            Gate::HalfOpen => "half_open",
            Gate::Open => "open",
        }
    }
}

/// One pool's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    base: Duration,
    max: Duration,
    gate: Gate,
    /// Failures in a row while closed.
    failures: u32,
    /// How often it opened in a row without closing in between (the open time doubles each time).
    opened: u32,
    /// When an open breaker lets the next probe through.
    until: Option<Instant>,
    /// A probe (an `info` call, or the half-open create) is in flight.
    probing: bool,
    /// Why it last opened.
    pub reason: String,
    /// Times it has opened since the start.
    pub opened_total: u64,
}

impl Breaker {
    /// `threshold` failures in a row open it for `base`, doubling on every reopening up to `max`.
    pub fn new(threshold: u32, base: Duration, max: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            base,
            max: max.max(base),
            gate: Gate::Closed,
            failures: 0,
            opened: 0,
            until: None,
            probing: false,
            reason: String::new(),
            opened_total: 0,
        }
    }

    pub fn gate(&self) -> Gate {
        self.gate
    }

    /// Whether a create_vm may start now (half-open: only when no probe create is in flight).
    pub fn allows_create(&self) -> bool {
        match self.gate {
            Gate::Closed => true,
            Gate::HalfOpen => !self.probing,
            Gate::Open => false,
        }
    }

    /// A create_vm starts; in the half-open state it is the probe.
    pub fn create_started(&mut self) {
        if self.gate == Gate::HalfOpen {
            self.probing = true;
        }
    }

    /// Seconds until the next probe of an open breaker (0 when due).
    pub fn retry_in(&self, now: Instant) -> u64 {
        self.until.map(|u| u.saturating_duration_since(now).as_secs_f64().ceil() as u64).unwrap_or(0)
    }

    /// Opens the breaker at once (a pool that cannot even get its stemcell at start).
    pub fn open_now(&mut self, now: Instant, reason: &str) {
        let pause = self.base.saturating_mul(1u32 << self.opened.min(16)).min(self.max);
        self.opened += 1;
        self.opened_total += 1;
        self.gate = Gate::Open;
        self.failures = 0;
        self.probing = false;
        self.until = Some(now + pause);
        self.reason = reason.to_string();
    }

    /// A call of this pool succeeded: the breaker closes. Returns whether that changed the gate.
    pub fn success(&mut self) -> bool {
        let changed = self.gate != Gate::Closed;
        self.gate = Gate::Closed;
        self.failures = 0;
        self.opened = 0;
        self.probing = false;
        self.until = None;
        changed
    }

    /// A create_vm of this pool failed. Returns whether the breaker opened because of it.
    pub fn failure(&mut self, now: Instant, reason: &str) -> bool {
        match self.gate {
            Gate::Closed => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.open_now(now, reason);
                    return true;
                }
                false
            }
            Gate::HalfOpen => {
                self.open_now(now, reason);
                true
            }
            Gate::Open => false,
        }
    }

    /// Whether an open breaker's pause is over and no probe runs: the caller starts one now.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.gate == Gate::Open && !self.probing && self.until.is_none_or(|u| now >= u)
    }

    pub fn probe_started(&mut self) {
        self.probing = true;
    }

    /// The probe's outcome: the CPI answered (half-open: one create decides), or it failed (open again).
    pub fn probe_done(&mut self, now: Instant, res: Result<(), String>) {
        self.probing = false;
        match res {
            Ok(()) => self.gate = Gate::HalfOpen,
            Err(reason) => self.open_now(now, &reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_then_closes_or_reopens_longer() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut b = Breaker::new(3, s(10), s(25));
        assert!(b.allows_create());
        assert!(!b.failure(t0, "x"));
        b.success();
        assert!(!b.failure(t0, "a"));
        assert!(!b.failure(t0, "b"));
        assert!(b.failure(t0, "host down"), "the third failure in a row opens it");
        assert_eq!(b.gate(), Gate::Open);
        assert!(!b.allows_create());
        assert!(!b.probe_due(t0 + s(9)));
        assert_eq!(b.retry_in(t0 + s(4)), 6);
        assert!(b.probe_due(t0 + s(10)));
        b.probe_started();
        assert!(!b.probe_due(t0 + s(11)), "one probe at a time");
        b.probe_done(t0 + s(11), Ok(()));
        assert_eq!(b.gate(), Gate::HalfOpen);
        assert!(b.allows_create());
        b.create_started();
        assert!(!b.allows_create(), "half-open: one create at a time");
        // the probe create fails: open again, for twice as long
        assert!(b.failure(t0 + s(12), "still down"));
        assert!(!b.probe_due(t0 + s(31)));
        assert!(b.probe_due(t0 + s(32)));
        b.probe_started();
        b.probe_done(t0 + s(32), Err("no answer".into()));
        assert_eq!(b.reason, "no answer");
        // capped at the maximum
        assert!(!b.probe_due(t0 + s(56)));
        assert!(b.probe_due(t0 + s(57)));
        b.probe_started();
        b.probe_done(t0 + s(57), Ok(()));
        b.create_started();
        assert!(b.success(), "the probe create succeeded: closed");
        assert_eq!(b.gate(), Gate::Closed);
        assert_eq!(b.opened_total, 3);
        // closed again: the count starts over
        assert!(!b.failure(t0, "a"));
        assert!(!b.failure(t0, "a"));
        assert!(b.failure(t0, "a"));
        assert!(b.probe_due(t0 + s(10)), "a new series starts at the base pause");
    }
}
