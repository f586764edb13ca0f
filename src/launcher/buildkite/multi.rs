//! Several queues served by one launcher: one stack each, seen by the loop as one queue.
use super::error::BkError;
use super::queue::Queue;
use crate::launcher::source::{tidy, Listing};
use std::collections::HashMap;

/// Several queues, one stack (queue source) each, seen by the daemon as one source: the lists are merged, and each
/// job's calls go to the stack that listed it (a job not listed by this run, after a restart, is tried on
/// each stack in turn). A paused queue's jobs are left out of the list; the listing is `paused` only when
/// every queue is. A queue whose list fails is skipped for that poll while the others are listed.
pub struct MultiSource {
    sources: Vec<(String, Box<dyn Queue>)>,
    owner: HashMap<String, usize>,
}

impl MultiSource {
    pub fn new(sources: Vec<(String, Box<dyn Queue>)>) -> MultiSource {
        MultiSource { sources, owner: HashMap::new() }
    }

    /// The source indexes to try for a job: its owner, else every source.
    fn route(&self, id: &str) -> Vec<usize> {
        match self.owner.get(id) {
            Some(i) => vec![*i],
            None => (0..self.sources.len()).collect(),
        }
    }

    /// `call` on the job's stack, else on each stack until one succeeds; the last error otherwise.
    fn on_owner(
        &mut self,
        id: &str,
        mut call: impl FnMut(&mut dyn Queue) -> Result<(), BkError>,
    ) -> Result<(), BkError> {
        let mut res = Ok(());
        for i in self.route(id) {
            res = call(self.sources[i].1.as_mut());
            if res.is_ok() {
                break;
            }
        }
        res
    }
}

impl Queue for MultiSource {
    fn register(&mut self) -> Result<(), BkError> {
        for (_, s) in &mut self.sources {
            s.register()?;
        }
        Ok(())
    }

    fn deregister(&mut self) -> Result<(), BkError> {
        let mut first = Ok(());
        for (_, s) in &mut self.sources {
            if let Err(e) = s.deregister() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn list(&mut self) -> Result<Listing, BkError> {
        let mut out = Listing { jobs: Vec::new(), paused: true };
        let mut last_err = None;
        let mut any = false;
        for (i, (queue, s)) in self.sources.iter_mut().enumerate() {
            match s.list() {
                Ok(l) => {
                    any = true;
                    if l.paused {
                        continue;
                    }
                    out.paused = false;
                    for j in &l.jobs {
                        self.owner.insert(j.id.clone(), i);
                    }
                    out.jobs.extend(l.jobs);
                }
                Err(e) => {
                    crate::launcher::log::warn(&format!(
                        "buildkite list of queue {queue}: {}",
                        crate::launcher::log::chain(&e)
                    ));
                    last_err = Some(e);
                }
            }
        }
        match (any, last_err) {
            (false, Some(e)) => Err(e),
            _ => {
                tidy(&mut out.jobs);
                Ok(out)
            }
        }
    }

    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, BkError> {
        let mut out = Vec::new();
        let mut by: Vec<Vec<String>> = vec![Vec::new(); self.sources.len()];
        let mut unknown = Vec::new();
        for id in ids {
            match self.owner.get(id) {
                Some(i) => by[*i].push(id.clone()),
                None => unknown.push(id.clone()),
            }
        }
        for (i, batch) in by.iter().enumerate() {
            if !batch.is_empty() {
                out.extend(self.sources[i].1.reserve(batch)?);
            }
        }
        for (i, (_, s)) in self.sources.iter_mut().enumerate() {
            if unknown.is_empty() {
                break;
            }
            let got = s.reserve(&unknown)?;
            unknown.retain(|j| !got.contains(j));
            for j in &got {
                self.owner.insert(j.clone(), i);
            }
            out.extend(got);
        }
        Ok(out)
    }

    fn states(&mut self, ids: &[String]) -> Result<HashMap<String, String>, BkError> {
        let mut out = HashMap::new();
        let mut left: Vec<String> = ids.to_vec();
        for (_, s) in &mut self.sources {
            if left.is_empty() {
                break;
            }
            out.extend(s.states(&left)?);
            left.retain(|j| !out.contains_key(j));
        }
        Ok(out)
    }

    fn finish(&mut self, id: &str, exit_status: i32, detail: &str) -> Result<(), BkError> {
        self.on_owner(id, |q| q.finish(id, exit_status, detail))
    }

    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError> {
        self.on_owner(id, |q| q.notify(id, detail))
    }

    fn check(&mut self) -> Result<(), BkError> {
        self.sources.iter_mut().try_for_each(|(_, s)| s.check())
    }
}
