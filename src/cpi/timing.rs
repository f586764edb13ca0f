//! Where one CPI call's time goes, for the debug log: named marks (the first one is taken when `vmcpi`
//! starts), and the time spent waiting for the hypervisor's answers (a driver adds each request's round
//! trip). [`summary`] turns them into one line: each step since the previous mark, the wire, and the rest,
//! which is the CPI's own work. Costs two clock reads per mark or request; nothing is logged unless asked.
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Marks {
    /// (label, when, requests and wire time until then)
    marks: Vec<(&'static str, Instant, u32, Duration)>,
    requests: u32,
    wire: Duration,
}

static STATE: Mutex<Marks> = Mutex::new(Marks { marks: Vec::new(), requests: 0, wire: Duration::ZERO });

fn state() -> std::sync::MutexGuard<'static, Marks> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks the end of a step called `label`.
pub fn mark(label: &'static str) {
    let mut st = state();
    // one call has a handful; a process that is not one CPI call (a test, a library user) keeps no more
    if st.marks.len() >= 64 {
        return;
    }
    let (n, wire) = (st.requests, st.wire);
    st.marks.push((label, Instant::now(), n, wire));
}

/// Counts one request to the hypervisor that took `d` (from sending it to the last byte of the answer).
pub fn add_request(d: Duration) {
    let mut st = state();
    st.requests += 1;
    st.wire += d;
}

fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `a 0.12, b 3.40 (2 requests 2.90), …; N requests W on the wire; ours O; in process T` (milliseconds):
/// each step since the previous mark, with the requests made in it, from the first mark to now.
pub fn summary() -> String {
    let st = state();
    let now = Instant::now();
    let Some(&(_, first, _, _)) = st.marks.first() else { return String::new() };
    let mut parts = Vec::new();
    let (mut prev, mut prev_n, mut prev_wire) = (first, 0, Duration::ZERO);
    for (label, at, n, wire) in st.marks.iter().skip(1) {
        let mut part = format!("{label} {}", millis(at.saturating_duration_since(prev)));
        if *n > prev_n {
            part += &format!(" ({} requests {})", n - prev_n, millis(wire.saturating_sub(prev_wire)));
        }
        parts.push(part);
        (prev, prev_n, prev_wire) = (*at, *n, *wire);
    }
    let total = now.saturating_duration_since(first);
    format!(
        "{}; {} requests {} on the wire; ours {}; in process {} (ms)",
        parts.join(", "),
        st.requests,
        millis(st.wire),
        millis(total.saturating_sub(st.wire)),
        millis(total)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_adds_up() {
        super::mark("start");
        super::mark("config");
        super::add_request(std::time::Duration::from_millis(2));
        let s = super::summary();
        assert!(s.starts_with("config "), "{s}");
        assert!(!s.contains("config 0.00 ("), "{s}");
        assert!(s.contains("1 requests 2.00 on the wire"), "{s}");
    }
}
