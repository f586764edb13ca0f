//! Demand without reservations: which open record's runner is still needed, for which queued job.
//!
//! GitHub cannot reserve a job for a launcher: a just-in-time runner takes whichever queued job its labels
//! satisfy, not necessarily the one its VM was made for. So a record's job is a *claim on demand*, not a
//! binding, and every poll the claims are made again ([`decide`]):
//!
//! 1. A record whose runner took a job follows that job: `in_progress` → started, `completed` → finished.
//!    A runner that is busy is started; a runner GitHub removed after it was registered (ephemeral runners go
//!    when their job ends) is finished.
//! 2. Every other record (its runner offline while its VM boots, or online and idle) claims one queued job
//!    its labels satisfy: its own job first, else the oldest unclaimed one (records with the fewest labels
//!    choose first, so a general runner does not take the one job a narrow runner could have run).
//! 3. A record left without a claim is surplus: its runner is removed and its VM deleted. So the idle runners
//!    never outnumber the queued jobs (warm VMs have no runner until they get a job).
//!
//! The queued jobs no record claimed are the listing the planner starts VMs for.
use std::collections::HashSet;

/// A queued workflow job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: u64,
    pub run_id: u64,
    /// `owner/repo`.
    pub repo: String,
    /// Its `runs-on` labels, lower case.
    pub labels: Vec<String>,
    pub created_at: String,
}

/// A job that a runner of this launcher took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub job: u64,
    /// `in_progress` or `completed`.
    pub status: String,
    pub conclusion: Option<String>,
}

/// What the runners list says about a record's runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Registered and running a job.
    Busy,
    /// Registered, not running a job (offline while its VM boots, or online and idle).
    Idle,
    /// Registered once, and GitHub no longer lists it.
    Gone,
    /// Not registered yet (its grant is pending) or not known.
    None,
}

/// One open record as the matcher sees it.
#[derive(Debug, Clone)]
pub struct Rec<'a> {
    /// The daemon's job key of the record (the GitHub job id, `.N` for the N-th claim on it).
    pub key: &'a str,
    /// Its runner's labels, lower case.
    pub labels: Vec<String>,
    pub taken: Option<&'a Taken>,
    pub runner: Seen,
}

/// What becomes of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Started(String),
    Finished(String),
    /// Its runner waits for this queued job (or one like it).
    Waiting(u64),
    /// No queued job is left for its runner.
    Surplus(String),
}

/// The GitHub job id of a daemon job key (`123` or `123.2`).
pub fn job_id(key: &str) -> Option<u64> {
    key.split('.').next()?.parse().ok()
}

/// The daemon's key for queued job `id`: the id itself, or `id.N` when an open record already holds `id` (its
/// runner took another job, so `id` needs a VM of its own).
pub fn listing_key(id: u64, held: &HashSet<String>) -> String {
    let plain = id.to_string();
    if !held.contains(&plain) {
        return plain;
    }
    (2..).map(|n| format!("{id}.{n}")).find(|k| !held.contains(k)).unwrap_or(plain)
}

/// Whether a runner with `runner` labels can take a job with `job` labels (all lower case).
pub fn fits(job: &[String], runner: &[String]) -> bool {
    job.iter().all(|l| runner.contains(l))
}

/// The verdict of every record (in `recs` order) and the queued jobs no record claimed (in `queued` order,
/// which is oldest first).
pub fn decide(queued: &[Queued], recs: &[Rec<'_>]) -> (Vec<Verdict>, Vec<Queued>) {
    let mut out: Vec<Option<Verdict>> = vec![None; recs.len()];
    let mut candidates = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let v = match (r.taken, r.runner) {
            (Some(t), _) if t.status == "completed" => Some(Verdict::Finished(format!(
                "completed ({}): job {} ran on its runner",
                t.conclusion.as_deref().unwrap_or("no conclusion"),
                t.job
            ))),
            (_, Seen::Gone) => {
                Some(Verdict::Finished("runner gone (it ran its job, or was removed from GitHub)".into()))
            }
            (Some(t), _) => Some(Verdict::Started(format!("in_progress: job {} on its runner", t.job))),
            (None, Seen::Busy) => Some(Verdict::Started("runner busy".into())),
            _ => None,
        };
        match v {
            Some(v) => out[i] = Some(v),
            None => candidates.push(i),
        }
    }
    let mut claimed: HashSet<u64> = HashSet::new();
    let mut rest = Vec::new();
    for i in candidates {
        let own = job_id(recs[i].key).and_then(|id| queued.iter().find(|q| q.id == id));
        match own {
            Some(q) if fits(&q.labels, &recs[i].labels) && claimed.insert(q.id) => {
                out[i] = Some(Verdict::Waiting(q.id))
            }
            _ => rest.push(i),
        }
    }
    rest.sort_by_key(|&i| (recs[i].labels.len(), i));
    for i in rest {
        let pick = queued.iter().find(|q| !claimed.contains(&q.id) && fits(&q.labels, &recs[i].labels));
        out[i] = Some(match pick {
            Some(q) => {
                claimed.insert(q.id);
                Verdict::Waiting(q.id)
            }
            None => Verdict::Surplus(format!(
                "no queued job left for its runner (job {} was taken by another runner or cancelled)",
                job_id(recs[i].key).map(|j| j.to_string()).unwrap_or_else(|| recs[i].key.to_string())
            )),
        });
    }
    let unclaimed = queued.iter().filter(|q| !claimed.contains(&q.id)).cloned().collect();
    (out.into_iter().map(|v| v.unwrap_or(Verdict::Surplus(String::new()))).collect(), unclaimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn q(id: u64, labels: &[&str]) -> Queued {
        Queued { id, run_id: 1, repo: "o/r".into(), labels: s(labels), created_at: String::new() }
    }

    fn rec<'a>(key: &'a str, labels: &[&str], runner: Seen, taken: Option<&'a Taken>) -> Rec<'a> {
        Rec { key, labels: s(labels), taken, runner }
    }

    #[test]
    fn own_jobs_first_then_swaps_then_surplus() {
        let lx = ["self-hosted", "linux"];
        let queued = vec![q(1, &lx), q(2, &lx), q(3, &lx)];
        // A holds 1 (queued), B holds 9 (taken elsewhere: it claims the oldest unclaimed, 2), C holds 8 (nothing
        // left after 3 goes to D... D holds 3)
        let recs = vec![
            rec("1", &lx, Seen::Idle, None),
            rec("9", &lx, Seen::None, None),
            rec("3", &lx, Seen::Idle, None),
            rec("8", &lx, Seen::Idle, None),
        ];
        let (v, unclaimed) = decide(&queued, &recs);
        assert_eq!(v[0], Verdict::Waiting(1));
        assert_eq!(v[1], Verdict::Waiting(2));
        assert_eq!(v[2], Verdict::Waiting(3));
        assert!(matches!(&v[3], Verdict::Surplus(why) if why.contains("job 8")), "{:?}", v[3]);
        assert!(unclaimed.is_empty());
        // never more idle runners than queued jobs
        let idle = v.iter().filter(|x| matches!(x, Verdict::Waiting(_))).count();
        assert!(idle <= queued.len());
    }

    #[test]
    fn runners_that_took_a_job_follow_it() {
        let lx = ["self-hosted", "linux"];
        let done = Taken { job: 7, status: "completed".into(), conclusion: Some("success".into()) };
        let running = Taken { job: 5, status: "in_progress".into(), conclusion: None };
        let queued = vec![q(1, &lx)];
        let recs = vec![
            rec("1", &lx, Seen::Busy, Some(&running)),
            rec("2", &lx, Seen::Gone, Some(&done)),
            rec("3", &lx, Seen::Busy, None),
            rec("4", &lx, Seen::Gone, None),
            // the in_progress sighting is older than the runner's removal: gone wins
            rec("6", &lx, Seen::Gone, Some(&running)),
        ];
        let (v, unclaimed) = decide(&queued, &recs);
        assert!(matches!(&v[0], Verdict::Started(w) if w.contains("job 5")));
        assert!(matches!(&v[1], Verdict::Finished(w) if w.contains("success") && w.contains("job 7")));
        assert_eq!(v[2], Verdict::Started("runner busy".into()));
        assert!(matches!(&v[3], Verdict::Finished(w) if w.contains("gone")));
        assert!(matches!(&v[4], Verdict::Finished(_)));
        // job 1 is still queued although record "1" holds it: its runner took job 5, so 1 needs another VM
        assert_eq!(unclaimed, vec![q(1, &lx)]);
        let held: HashSet<String> = ["1".to_string(), "1.2".to_string()].into();
        assert_eq!(listing_key(1, &held), "1.3");
        assert_eq!(listing_key(4, &held), "4");
        assert_eq!(job_id("1.3"), Some(1));
        assert_eq!(job_id("x"), None);
    }

    #[test]
    fn labels_decide_who_can_claim() {
        let gpu = q(1, &["self-hosted", "gpu"]);
        let plain = q(2, &["self-hosted"]);
        // the narrow runner (no gpu) chooses first and takes 2; the gpu runner then takes 1
        let recs = vec![
            rec("9", &["self-hosted", "gpu", "linux"], Seen::Idle, None),
            rec("8", &["self-hosted"], Seen::Idle, None),
        ];
        let (v, _) = decide(&[gpu.clone(), plain.clone()], &recs);
        assert_eq!(v, vec![Verdict::Waiting(1), Verdict::Waiting(2)]);
        // a runner without the gpu label cannot claim the gpu job, even its own
        let recs = vec![rec("1", &["self-hosted"], Seen::Idle, None)];
        let (v, unclaimed) = decide(std::slice::from_ref(&gpu), &recs);
        assert!(matches!(v[0], Verdict::Surplus(_)));
        assert_eq!(unclaimed, vec![gpu]);
        assert!(fits(&s(&["a"]), &s(&["a", "b"])) && !fits(&s(&["a", "c"]), &s(&["a", "b"])));
    }
}
