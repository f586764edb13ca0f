//! The durable ledger: what the launcher has asked a CPI to create, so that no VM is ever forgotten.
//!
//! A BOSH CPI cannot list VMs, so this file is the launcher's only inventory. It is an append-only log of
//! JSON lines in `<ledger_dir>/ledger.jsonl`; every append is `fsync`ed before the action it announces
//! (an `intent` before create_vm, an `attempt` before each try). Replaying the log gives the open records.
//! On start the log is compacted: only open records, stemcells and IP leases are rewritten (to a temporary
//! file, fsync, rename, fsync of the directory). A torn last line (a kill mid-write) is ignored.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ledger {path} line {line} is not a ledger event")]
    Corrupt { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("ledger {0} is locked by another agent-launcher")]
    Locked(PathBuf),
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Written (fsync'd) before anything is created for a job.
    Intent(Intent),
    /// Written before create_vm attempt `n` of record `id` (its spool files are `<id>-<n>.create_vm.*`).
    Attempt { id: String, n: u32 },
    /// create_vm returned this CID.
    Created { id: String, cid: String, at: u64 },
    /// An attempt failed without leaving a VM.
    AttemptFailed { id: String, n: u32, reason: String },
    /// The VM is gone (deleted, or never made); the record is closed and its IP is free.
    Closed { id: String, reason: String },
    /// A warm VM got its job, and a whole lifetime for it (`deadline`; absent in ledgers of older versions).
    Assigned {
        id: String,
        job: String,
        agent_tags: Vec<String>,
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<u64>,
    },
    /// Written before create_stemcell for `pool` runs (its spool files are `<tag>.*`), so that a restart
    /// settles that call instead of uploading a second stemcell.
    StemcellAttempt { pool: String, key: String, tag: String },
    /// A pool's stemcell, uploaded once.
    Stemcell { pool: String, key: String, cid: String },
}

/// What the launcher intends to run: one job on one VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    pub id: String,
    /// Empty for a warm VM until it is assigned.
    pub job: String,
    pub pool: String,
    pub flavor: String,
    pub cpu: u32,
    pub ram: u64,
    /// The static IP leased to this VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Unix seconds after which the VM is deleted whatever it is doing.
    pub deadline: u64,
    /// The secret the VM authenticates with at the assignment endpoint.
    pub secret: String,
    pub agent_tags: Vec<String>,
    pub at: u64,
}

/// An open record, rebuilt by replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub intent: Intent,
    pub attempts: u32,
    pub failures: u32,
    pub cid: Option<String>,
    pub created_at: Option<u64>,
    pub last_failure: Option<String>,
}

/// The replayed state.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub open: BTreeMap<String, Record>,
    /// `pool` → (`key`, CID).
    pub stemcells: BTreeMap<String, (String, String)>,
    /// `pool` → (`key`, spool tag) of a create_stemcell whose outcome is not in the ledger yet.
    pub stemcell_attempts: BTreeMap<String, (String, String)>,
}

impl State {
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::Intent(i) => {
                self.open.insert(
                    i.id.clone(),
                    Record {
                        intent: i.clone(),
                        attempts: 0,
                        failures: 0,
                        cid: None,
                        created_at: None,
                        last_failure: None,
                    },
                );
            }
            Event::Attempt { id, n } => {
                if let Some(r) = self.open.get_mut(id) {
                    r.attempts = *n;
                }
            }
            Event::Created { id, cid, at } => {
                if let Some(r) = self.open.get_mut(id) {
                    r.cid = Some(cid.clone());
                    r.created_at = Some(*at);
                }
            }
            Event::AttemptFailed { id, reason, .. } => {
                if let Some(r) = self.open.get_mut(id) {
                    r.failures += 1;
                    r.cid = None;
                    r.last_failure = Some(reason.clone());
                }
            }
            Event::Assigned { id, job, agent_tags, at, deadline } => {
                if let Some(r) = self.open.get_mut(id) {
                    r.intent.job = job.clone();
                    r.intent.agent_tags = agent_tags.clone();
                    if let Some(d) = deadline {
                        r.intent.deadline = *d;
                    }
                    // the boot timeout counts from the assignment
                    r.created_at = Some(*at);
                }
            }
            Event::Closed { id, .. } => {
                self.open.remove(id);
            }
            Event::StemcellAttempt { pool, key, tag } => {
                self.stemcell_attempts.insert(pool.clone(), (key.clone(), tag.clone()));
            }
            Event::Stemcell { pool, key, cid } => {
                self.stemcell_attempts.remove(pool);
                self.stemcells.insert(pool.clone(), (key.clone(), cid.clone()));
            }
        }
    }

    /// The events that recreate this state.
    fn snapshot(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for (pool, (key, cid)) in &self.stemcells {
            out.push(Event::Stemcell { pool: pool.clone(), key: key.clone(), cid: cid.clone() });
        }
        for (pool, (key, tag)) in &self.stemcell_attempts {
            out.push(Event::StemcellAttempt { pool: pool.clone(), key: key.clone(), tag: tag.clone() });
        }
        for r in self.open.values() {
            out.push(Event::Intent(r.intent.clone()));
            for n in 1..=r.attempts {
                out.push(Event::Attempt { id: r.intent.id.clone(), n });
            }
            for n in 0..r.failures {
                let reason = r.last_failure.clone().unwrap_or_default();
                out.push(Event::AttemptFailed { id: r.intent.id.clone(), n: n + 1, reason });
            }
            if let Some(cid) = &r.cid {
                out.push(Event::Created { id: r.intent.id.clone(), cid: cid.clone(), at: r.created_at.unwrap_or(0) });
            }
        }
        out
    }

    /// Job UUIDs that have an open record.
    pub fn has_job(&self, job: &str) -> bool {
        !job.is_empty() && self.open.values().any(|r| r.intent.job == job)
    }
}

/// The open ledger: the log file (held under an exclusive lock) and its replayed state.
pub struct Ledger {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    _lock: File,
    pub state: State,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.to_path_buf(), source }
}

/// Reads the events of a ledger file (for `status`, without locking).
pub fn read(dir: &Path) -> Result<State, LedgerError> {
    let path = dir.join("ledger.jsonl");
    let mut state = State::default();
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
        Err(e) => return Err(io(&path)(e)),
    };
    let lines: Vec<String> = BufReader::new(f).lines().collect::<Result<_, _>>().map_err(io(&path))?;
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(ev) => state.apply(&ev),
            // only the last line can be torn by a kill in the middle of a write
            Err(_) if i + 1 == n => {}
            Err(source) => return Err(LedgerError::Corrupt { path: path.clone(), line: i + 1, source }),
        }
    }
    Ok(state)
}

impl Ledger {
    /// Opens (creating) the ledger in `dir`, takes its lock, replays and compacts it.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        // owner-only: the spool holds create_vm requests, whose env carries each VM's assignment secret
        for d in [dir.to_path_buf(), dir.join("spool")] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(io(&d))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io(&d))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LedgerError::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let state = read(dir)?;
        let path = dir.join("ledger.jsonl");
        let tmp = dir.join("ledger.jsonl.tmp");
        {
            let mut f =
                OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
            let mut buf = Vec::new();
            for ev in state.snapshot() {
                serde_json::to_writer(&mut buf, &ev).map_err(|e| io(&tmp)(e.into()))?;
                buf.push(b'\n');
            }
            f.write_all(&buf).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        Ok(Ledger { path, dir: dir.to_path_buf(), file, _lock: lock, state })
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// Appends one event, fsyncs it, and applies it to the state.
    pub fn append(&mut self, ev: Event) -> Result<(), LedgerError> {
        let mut line = serde_json::to_vec(&ev).map_err(|e| io(&self.path)(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).and_then(|_| self.file.sync_data()).map_err(io(&self.path))?;
        self.state.apply(&ev);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str, job: &str) -> Intent {
        Intent {
            id: id.into(),
            job: job.into(),
            pool: "p".into(),
            flavor: "small".into(),
            cpu: 1,
            ram: 512,
            ip: Some("10.0.0.5".into()),
            deadline: 99,
            secret: "s".into(),
            agent_tags: vec!["queue=q".into()],
            at: 1,
        }
    }

    #[test]
    fn replay_compaction_and_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(d.path()).unwrap();
            assert!(matches!(Ledger::open(d.path()), Err(LedgerError::Locked(_))));
            l.append(Event::Stemcell { pool: "p".into(), key: "k".into(), cid: "sc".into() }).unwrap();
            l.append(Event::StemcellAttempt { pool: "q".into(), key: "k2".into(), tag: "stemcell-q-1".into() })
                .unwrap();
            l.append(Event::Intent(intent("r1", "j1"))).unwrap();
            l.append(Event::Attempt { id: "r1".into(), n: 1 }).unwrap();
            l.append(Event::AttemptFailed { id: "r1".into(), n: 1, reason: "boom".into() }).unwrap();
            l.append(Event::Attempt { id: "r1".into(), n: 2 }).unwrap();
            l.append(Event::Created { id: "r1".into(), cid: "vm-1".into(), at: 5 }).unwrap();
            l.append(Event::Intent(intent("r2", "j2"))).unwrap();
            l.append(Event::Closed { id: "r2".into(), reason: "done".into() }).unwrap();
        }
        // a torn last line, as a SIGKILL in the middle of a write would leave
        let mut f = OpenOptions::new().append(true).open(d.path().join("ledger.jsonl")).unwrap();
        f.write_all(br#"{"ev":"closed","id":"r1""#).unwrap();
        drop(f);
        let l = Ledger::open(d.path()).unwrap();
        assert_eq!(l.state.open.len(), 1);
        let r = &l.state.open["r1"].clone();
        assert_eq!((r.attempts, r.failures, r.cid.as_deref()), (2, 1, Some("vm-1")));
        assert!(l.state.has_job("j1") && !l.state.has_job("j2"));
        assert_eq!(l.state.stemcells["p"], ("k".to_string(), "sc".to_string()));
        assert_eq!(
            l.state.stemcell_attempts["q"],
            ("k2".to_string(), "stemcell-q-1".to_string()),
            "a pending create_stemcell survives compaction"
        );
        let text = std::fs::read_to_string(d.path().join("ledger.jsonl")).unwrap();
        assert!(!text.contains("r2"), "closed records are compacted away: {text}");
        drop(l);
        // compaction is a fixed point
        let again = read(d.path()).unwrap();
        assert_eq!(again.open["r1"], *r);
    }

    #[test]
    fn ledger_and_spool_are_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("l");
        let mut l = Ledger::open(&dir).unwrap();
        l.append(Event::Intent(intent("r1", "j1"))).unwrap();
        for p in [dir.clone(), dir.join("spool"), dir.join("ledger.jsonl")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert!(mode & 0o077 == 0, "{} has mode {mode:o}", p.display());
        }
    }

    #[test]
    fn corrupt_middle_line_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ledger.jsonl"), "garbage\n{\"ev\":\"closed\",\"id\":\"x\",\"reason\":\"\"}\n")
            .unwrap();
        assert!(matches!(Ledger::open(d.path()), Err(LedgerError::Corrupt { line: 1, .. })));
    }
}
