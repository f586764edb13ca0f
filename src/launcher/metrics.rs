//! Prometheus metrics, kept in memory and rendered in the text exposition format (version 0.0.4).
//!
//! Every family is declared once in [`FAMILIES`] with its type and help, so the output always has `# HELP` and
//! `# TYPE` lines and names that `promtool check metrics` accepts.
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, type, help.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    ("launcher_jobs_seen_total", Kind::Counter, "Scheduled jobs that matched a pool, counted once per job."),
    ("launcher_jobs_reserved_total", Kind::Counter, "Jobs reserved on the Buildkite stack."),
    ("launcher_jobs_launched_total", Kind::Counter, "Jobs whose VM was created."),
    ("launcher_jobs_failed_total", Kind::Counter, "Jobs the launcher finished with -1 (create failed, VM did not boot, unknown flavor)."),
    ("launcher_jobs_waiting", Kind::Gauge, "Matching jobs not started in the last poll, by reason."),
    ("launcher_vms", Kind::Gauge, "VMs the ledger holds, by state."),
    ("launcher_capacity_used", Kind::Gauge, "Capacity in use per pool (vms, cpu, ram_mb)."),
    ("launcher_capacity_limit", Kind::Gauge, "Configured capacity per pool (0 = unlimited)."),
    ("launcher_ip_addresses", Kind::Gauge, "Static IP addresses per pool, by state (used, free)."),
    ("launcher_cpi_call_duration_seconds", Kind::Histogram, "CPI call latency by method."),
    ("launcher_cpi_errors_total", Kind::Counter, "CPI calls that failed, by method."),
    ("launcher_queue_to_running_seconds", Kind::Histogram, "Time from a job being scheduled to the launcher seeing it started."),
    ("launcher_buildkite_errors_total", Kind::Counter, "Buildkite API calls that failed, by call."),
    ("launcher_queue_paused", Kind::Gauge, "1 when the cluster queue is paused (no new VMs are started)."),
    ("launcher_buildkite_consecutive_failed_polls", Kind::Gauge, "Polls of the Buildkite API that failed in a row (0 after a good one); /healthz fails at unhealthy_after_failed_polls."),
    ("launcher_poll_duration_seconds", Kind::Histogram, "Wall time of one poll of the queue."),
    ("launcher_pool_breaker", Kind::Gauge, "1 for the state (closed, half_open, open) of each pool's circuit breaker."),
    ("launcher_pool_breaker_opened_total", Kind::Counter, "Times a pool's circuit breaker opened."),
    ("launcher_pool_power", Kind::Gauge, "1 for the power state (on, off, waking, stopping) of each power-managed pool's host."),
    ("launcher_jobs_failed_over_total", Kind::Counter, "Jobs moved from a failing pool (pool) to another (to)."),
    ("launcher_listener_failures_total", Kind::Counter, "Times the HTTP listener stopped accepting connections and was started again."),
];

const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// All metric values.
#[derive(Debug, Default)]
pub struct Metrics {
    values: BTreeMap<(&'static str, Labels), f64>,
    hists: BTreeMap<(&'static str, Labels), Hist>,
}

fn family(name: &str) -> &'static str {
    FAMILIES.iter().find(|f| f.0 == name).map(|f| f.0).unwrap_or("launcher_unknown_metric")
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_labels(l: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Metrics {
    pub fn inc(&mut self, name: &str, l: &[(&str, &str)], by: f64) {
        *self.values.entry((family(name), labels(l))).or_insert(0.0) += by;
    }

    pub fn set(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.values.insert((family(name), labels(l)), v);
    }

    /// Drops every sample of a gauge family (before setting the current ones).
    pub fn clear(&mut self, name: &str) {
        self.values.retain(|(n, _), _| *n != name);
    }

    pub fn observe(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let h = self.hists.entry((family(name), labels(l))).or_insert_with(|| Hist {
            counts: vec![0; BUCKETS.len()],
            sum: 0.0,
            count: 0,
        });
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += v;
        h.count += 1;
    }

    /// A value, for tests and `status`.
    pub fn get(&self, name: &str, l: &[(&str, &str)]) -> f64 {
        self.values.get(&(family(name), labels(l))).copied().unwrap_or(0.0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let samples: Vec<_> = self.values.iter().filter(|((n, _), _)| n == name).collect();
            let hists: Vec<_> = self.hists.iter().filter(|((n, _), _)| n == name).collect();
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {t}");
            for ((_, l), v) in samples {
                let _ = writeln!(out, "{name}{} {}", fmt_labels(l, None), num(*v));
            }
            for ((_, l), h) in hists {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(out, "{name}_bucket{} {}", fmt_labels(l, Some(("le", num(*b)))), h.counts[i]);
                }
                let _ = writeln!(out, "{name}_bucket{} {}", fmt_labels(l, Some(("le", "+Inf".into()))), h.count);
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), num(h.sum));
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_samples_and_histograms() {
        let mut m = Metrics::default();
        m.inc("launcher_jobs_seen_total", &[("pool", "a\"b")], 2.0);
        m.observe("launcher_cpi_call_duration_seconds", &[("method", "create_vm")], 0.3);
        m.observe("launcher_cpi_call_duration_seconds", &[("method", "create_vm")], 700.0);
        let t = m.render();
        assert!(
            t.contains("# TYPE launcher_jobs_seen_total counter\nlauncher_jobs_seen_total{pool=\"a\\\"b\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("launcher_cpi_call_duration_seconds_bucket{method=\"create_vm\",le=\"0.5\"} 1\n"), "{t}");
        assert!(t.contains("launcher_cpi_call_duration_seconds_bucket{method=\"create_vm\",le=\"+Inf\"} 2\n"), "{t}");
        assert!(t.contains("launcher_cpi_call_duration_seconds_count{method=\"create_vm\"} 2\n"), "{t}");
        assert_eq!(m.get("launcher_jobs_seen_total", &[("pool", "a\"b")]), 2.0);
        m.set("launcher_vms", &[("state", "running")], 3.0);
        m.clear("launcher_vms");
        assert_eq!(m.get("launcher_vms", &[("state", "running")]), 0.0);
    }
}
