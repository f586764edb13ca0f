//! Demand without reservations: which open record's runner is still needed, for which queued job.
//!
//! GitHub cannot reserve a job for a launcher: a just-in-time runner takes whichever queued job its labels
//! satisfy, not necessarily the one its VM was made for. So a record's job is a *claim on demand*, not a
//! binding, and every poll the claims are made again ([`decide`]):
//!
//! 1. A record whose runner took a job follows that job: `in_progress` → started, `completed` → finished.
//!    A runner that is busy is started; a runner GitHub removed after it was registered (ephemeral runners go
//!    when their job ends) is finished.
//! 2. A runner seen busy (or removed by GitHub) that the jobs lists do not show on a job has taken one all the
//!    same when those lists were read before it was seen so: the runners list is read on every poll, the jobs
//!    of the runs only within the request budget. Such a record still claims one queued job its labels satisfy
//!    (its own first) among those read before its runner was seen busy or gone; else that job would count as
//!    new demand and get a second VM and runner while the first runs it. The claim outlives the record
//!    ([`Spent`]: its VM is deleted once GitHub removed its runner) and lapses as soon as the jobs are read
//!    again. (Should GitHub's jobs list lag its runners list, a runner made meanwhile finds no job and is
//!    surplus at the next read: 4.)
//! 3. Every other record (its runner offline while its VM boots, or online and idle) claims one queued job
//!    its labels satisfy: its own job first, else the oldest unclaimed one (records with the fewest labels
//!    choose first, so a general runner does not take the one job a narrow runner could have run).
//! 4. A record left without a claim is surplus: its runner is removed and its VM deleted. So the idle runners
//!    never outnumber the queued jobs (warm VMs have no runner until they get a job).
//!
//! The queued jobs no record claimed are the listing the planner starts VMs for.
use std::collections::HashSet;
use std::time::Instant;

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
    /// When the list (or webhook delivery) that says it is queued was read.
    pub read_at: Option<Instant>,
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
    /// When its runner was first seen busy, or found removed by GitHub (not by the launcher).
    pub spent_at: Option<Instant>,
}

/// A closed record whose runner took a job that the jobs lists did not show it taking: it still holds a
/// queued job read before [`Spent::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    /// The record's job key.
    pub key: String,
    /// Its runner's labels, lower case.
    pub labels: Vec<String>,
    /// When its runner was first seen busy or removed by GitHub.
    pub at: Instant,
}

impl Spent {
    /// Whether one of `queued` may be the job its runner took (then it is kept).
    pub fn may_hold(&self, queued: &[Queued]) -> bool {
        queued.iter().any(|q| read_before(q, self.at) && fits(&q.labels, &self.labels))
    }

    /// It as the matcher sees it: a runner gone before the lists showed its job.
    pub fn rec(&self) -> Rec<'_> {
        Rec { key: &self.key, labels: self.labels.clone(), taken: None, runner: Seen::Gone, spent_at: Some(self.at) }
    }
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

/// Whether the list that says a job is queued was read before `at` (then a runner seen busy or gone at `at`
/// may have taken it).
fn read_before(q: &Queued, at: Instant) -> bool {
    q.read_at.is_some_and(|t| t < at)
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
    // runners that took a job the jobs lists do not show yet
    let mut spent = Vec::new();
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
        let unseen_job = r.taken.is_none() && matches!(r.runner, Seen::Busy | Seen::Gone);
        if let (true, Some(at)) = (unseen_job, r.spent_at) {
            spent.push((i, at));
        }
        match v {
            Some(v) => out[i] = Some(v),
            None => candidates.push(i),
        }
    }
    let mut claimed: HashSet<u64> = HashSet::new();
    spent.sort_by_key(|&(i, _)| (recs[i].labels.len(), i));
    for (i, at) in spent {
        let r = &recs[i];
        let could = |q: &&Queued| !claimed.contains(&q.id) && fits(&q.labels, &r.labels) && read_before(q, at);
        let own = job_id(r.key).and_then(|id| queued.iter().filter(could).find(|q| q.id == id));
        if let Some(q) = own.or_else(|| queued.iter().find(could)) {
            claimed.insert(q.id);
        }
    }
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
    use std::time::Duration;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn q(id: u64, labels: &[&str]) -> Queued {
        Queued { id, run_id: 1, repo: "o/r".into(), labels: s(labels), created_at: String::new(), read_at: None }
    }

    fn rec<'a>(key: &'a str, labels: &[&str], runner: Seen, taken: Option<&'a Taken>) -> Rec<'a> {
        Rec { key, labels: s(labels), taken, runner, spent_at: None }
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
    fn runners_that_took_a_job_not_shown_yet_still_hold_one() {
        let lx = ["self-hosted", "linux"];
        let t0 = Instant::now();
        let read = |id, at| Queued { read_at: Some(at), ..q(id, &lx) };
        // the jobs were read at t0; runner A was seen busy 1 s later, runner C gone 2 s later: the lists do not
        // show yet which jobs they took, so jobs 1 and 3 are no new demand; B still waits for its own job 2
        let queued = vec![read(1, t0), read(2, t0), read(3, t0), read(4, t0)];
        let recs = vec![
            Rec { spent_at: Some(t0 + Duration::from_secs(1)), ..rec("1", &lx, Seen::Busy, None) },
            rec("2", &lx, Seen::Idle, None),
            Rec { spent_at: Some(t0 + Duration::from_secs(2)), ..rec("3.2", &lx, Seen::Gone, None) },
        ];
        let (v, unclaimed) = decide(&queued, &recs);
        assert_eq!(v[0], Verdict::Started("runner busy".into()));
        assert_eq!(v[1], Verdict::Waiting(2));
        assert!(matches!(&v[2], Verdict::Finished(w) if w.contains("gone")));
        assert_eq!(unclaimed, vec![read(4, t0)]);
        // a job read as queued after the runner went busy is not the one it took
        let late = t0 + Duration::from_secs(2);
        let (_, unclaimed) = decide(&[read(1, late)], &recs[..1]);
        assert_eq!(unclaimed, vec![read(1, late)]);
        // a runner the launcher removed itself (no spent_at) took nothing; nor does a busy runner hold a job
        // its labels do not fit
        let (_, unclaimed) = decide(&[read(1, t0)], &[rec("1", &lx, Seen::Gone, None)]);
        assert_eq!(unclaimed.len(), 1);
        let gpu = Queued { read_at: Some(t0), ..q(5, &["gpu"]) };
        let (_, unclaimed) = decide(std::slice::from_ref(&gpu), &recs[..1]);
        assert_eq!(unclaimed, vec![gpu.clone()]);
        // a closed record's claim: kept while a job read before its runner was seen spent may be its own
        let closed = Spent { key: "1".into(), labels: s(&lx), at: t0 + Duration::from_secs(1) };
        assert!(closed.may_hold(&[read(1, t0)]) && !closed.may_hold(&[read(1, late)]) && !closed.may_hold(&[gpu]));
        let (v, unclaimed) = decide(&[read(1, t0), read(2, t0)], &[closed.rec()]);
        assert!(matches!(v[0], Verdict::Finished(_)));
        assert_eq!(unclaimed, vec![read(2, t0)]);
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
