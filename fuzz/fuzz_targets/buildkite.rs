//! The Buildkite response decoders (Stacks scheduled-jobs page, batch-reserve, get-states, REST builds list,
//! error bodies) and header parsers (Retry-After, RateLimit-*, Link): arbitrary bytes never panic, and decoded
//! jobs come out launchable-looking, each once, priority first, then oldest `scheduled_at` first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use vmcpi::launcher::buildkite as bk;
use vmcpi::launcher::source::{sort_jobs, ScheduledJob};

/// The order rules, checked on their own terms (not with `sort_jobs`' comparator).
fn check_order(what: &str, jobs: &[ScheduledJob]) {
    let mut seen = HashSet::new();
    for j in jobs {
        assert!(!j.id.is_empty() && j.id.len() <= 64 && j.id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{what}: id {:?}", j.id);
        assert!(seen.insert(&j.id), "{what}: {} listed twice", j.id);
    }
    for w in jobs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(a.priority >= b.priority, "{what}: priority {} before {}", a.priority, b.priority);
        if a.priority == b.priority {
            if let (Some(ta), Some(tb)) = (vmcpi::rfc3339::parse(&a.scheduled_at), vmcpi::rfc3339::parse(&b.scheduled_at)) {
                assert!(ta <= tb, "{what}: {:?} before {:?}", a.scheduled_at, b.scheduled_at);
            }
        }
    }
    // the order is total: sorting any arrangement of the same jobs gives the same list
    let mut again: Vec<ScheduledJob> = jobs.iter().rev().cloned().collect();
    sort_jobs(&mut again);
    assert!(again == jobs, "{what}: sort_jobs depends on the input order");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(page) = bk::decode_scheduled_jobs(&text) {
        check_order("scheduled-jobs", &page.listing.jobs);
    }
    let _ = bk::decode_reserve(&text);
    let _ = bk::decode_states(&text);
    if let Ok(builds) = bk::decode_builds(&text) {
        let listing = bk::scheduled_in(&builds);
        check_order("builds", &listing.jobs);
        assert!(listing.jobs.iter().all(|j| builds.iter().flat_map(|b| &b.jobs).any(|b| b.id == j.id && b.kind == "script" && b.state.as_deref() == Some("scheduled"))));
    }
    let _ = bk::error_message(&text);

    // headers: one value a line (Retry-After, RateLimit-Remaining, RateLimit-Reset, Link)
    let mut lines = text.lines();
    let (retry, remaining, reset, link) = (lines.next(), lines.next(), lines.next(), lines.next());
    let limits = bk::Limits::parse(retry, remaining, reset);
    let _ = (limits.exhausted(), limits.after_429());
    assert!(limits.after_429() <= std::time::Duration::from_secs(3600));
    let _ = bk::parse_retry_after(&text);
    let _ = bk::link_next(link.unwrap_or(&text));
});
