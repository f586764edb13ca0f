//! An in-process [`Transport`] for unit tests of command logic: it expects a sequence of commands (argv, in
//! order) and answers each with a canned [`Output`]; files live in memory. A command that was not expected, or
//! one left unrun when the fake is checked, fails the test with the whole transcript. Ordinary code (not
//! `cfg(test)`), so integration tests and benches can use it too.
use super::{LockGuard, Output, Transport, TransportError, TransportResult};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One expected command and its answer.
#[derive(Debug, Clone)]
pub struct Expect {
    pub argv: Vec<String>,
    pub output: Output,
}

#[derive(Debug, Default)]
struct State {
    expected: VecDeque<Expect>,
    ran: Vec<Vec<String>>,
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
}

/// The fake. Build it with [`FakeTransport::new`], add expectations with [`FakeTransport::expect`] and files with
/// [`FakeTransport::file`], hand a clone to the code under test (clones share one state), then call
/// [`FakeTransport::done`].
#[derive(Debug, Default, Clone)]
pub struct FakeTransport {
    state: Arc<Mutex<State>>,
}

struct NoLock;
impl LockGuard for NoLock {}

/// An `Output` with status 0 and this stdout.
pub fn ok(stdout: &str) -> Output {
    Output { status: 0, stdout: stdout.into(), ..Default::default() }
}

/// An `Output` with this status and stdout (vmrun prints its errors there).
pub fn fail(status: i32, stdout: &str) -> Output {
    Output { status, stdout: stdout.into(), ..Default::default() }
}

impl FakeTransport {
    pub fn new() -> Self {
        Self::default()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Expects `argv` next and answers it with `output`.
    pub fn expect(self, argv: &[&str], output: Output) -> Self {
        self.st().expected.push_back(Expect { argv: argv.iter().map(|s| s.to_string()).collect(), output });
        self
    }

    /// A file that exists before the test.
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.st().files.insert(path.to_string(), data.to_vec());
        self
    }

    /// The commands run so far.
    pub fn ran(&self) -> Vec<Vec<String>> {
        self.st().ran.clone()
    }

    /// The contents of a file, if it exists.
    pub fn contents(&self, path: &str) -> Option<Vec<u8>> {
        self.st().files.get(path).cloned()
    }

    /// Panics unless every expected command ran.
    pub fn done(&self) {
        let st = self.st();
        assert!(st.expected.is_empty(), "expected commands did not run: {:?}\nran: {:?}", st.expected, st.ran);
    }
}

impl Transport for FakeTransport {
    fn target(&self) -> String {
        "fake".into()
    }

    fn run_timeout(&self, argv: &[String], _limit: Option<Duration>) -> TransportResult<Output> {
        let mut st = self.st();
        st.ran.push(argv.to_vec());
        match st.expected.pop_front() {
            Some(e) if e.argv == argv => Ok(e.output),
            Some(e) => panic!("unexpected command {argv:?}, expected {:?}; ran before: {:?}", e.argv, st.ran),
            None => panic!("unexpected command {argv:?} after the expected sequence; ran: {:?}", st.ran),
        }
    }

    fn read(&self, path: &str) -> TransportResult<Vec<u8>> {
        self.st()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| TransportError::NotFound { target: "fake".into(), path: path.into() })
    }

    fn write(&self, path: &str, data: &[u8]) -> TransportResult<()> {
        self.st().files.insert(path.to_string(), data.to_vec());
        Ok(())
    }

    fn upload(&self, local: &Path, remote: &str) -> TransportResult<()> {
        let data = std::fs::read(local).map_err(|e| TransportError::Io {
            target: "fake".into(),
            op: "read",
            path: local.display().to_string(),
            reason: e.to_string(),
        })?;
        self.write(remote, &data)
    }

    fn upload_stream(&self, src: &mut dyn std::io::Read, what: &str, remote: &str) -> TransportResult<()> {
        let mut data = Vec::new();
        src.read_to_end(&mut data).map_err(|e| TransportError::Io {
            target: "fake".into(),
            op: "read",
            path: what.to_string(),
            reason: e.to_string(),
        })?;
        self.write(remote, &data)
    }

    fn exists(&self, path: &str) -> TransportResult<bool> {
        let st = self.st();
        let dir = format!("{}/", path.trim_end_matches('/'));
        Ok(st.files.contains_key(path)
            || st.dirs.iter().any(|d| d == path)
            || st.files.keys().any(|f| f.starts_with(&dir)))
    }

    fn mkdir_all(&self, path: &str) -> TransportResult<()> {
        self.st().dirs.push(path.to_string());
        Ok(())
    }

    fn remove_file(&self, path: &str) -> TransportResult<bool> {
        Ok(self.st().files.remove(path).is_some())
    }

    fn remove_dir_all(&self, path: &str) -> TransportResult<bool> {
        let mut st = self.st();
        let dir = format!("{}/", path.trim_end_matches('/'));
        let before = st.files.len() + st.dirs.len();
        st.files.retain(|f, _| !f.starts_with(&dir));
        st.dirs.retain(|d| d != path && !d.starts_with(&dir));
        Ok(st.files.len() + st.dirs.len() < before)
    }

    fn list_dir(&self, path: &str) -> TransportResult<Vec<String>> {
        let st = self.st();
        let dir = format!("{}/", path.trim_end_matches('/'));
        let mut names: Vec<String> = st
            .files
            .keys()
            .chain(st.dirs.iter())
            .filter_map(|f| f.strip_prefix(&dir))
            .filter_map(|rest| rest.split('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn lock(&self, _path: &str, _timeout: Duration) -> TransportResult<Box<dyn LockGuard + '_>> {
        Ok(Box::new(NoLock))
    }

    fn held(&self, paths: &[String]) -> TransportResult<Vec<bool>> {
        Ok(vec![false; paths.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_order_and_keeps_files() {
        let f = FakeTransport::new().expect(&["vmrun", "list"], ok("Total running VMs: 0\n")).file("/s/a/b", b"x");
        assert_eq!(f.run(&["vmrun".into(), "list".into()]).unwrap().stdout, "Total running VMs: 0\n");
        assert!(f.exists("/s/a").unwrap() && f.exists("/s/a/b").unwrap() && !f.exists("/s/c").unwrap());
        assert_eq!(f.list_dir("/s").unwrap(), ["a"]);
        assert!(f.remove_dir_all("/s/a").unwrap());
        assert!(!f.exists("/s/a/b").unwrap());
        f.done();
    }

    #[test]
    #[should_panic(expected = "unexpected command")]
    fn an_unexpected_command_fails_the_test() {
        let f = FakeTransport::new().expect(&["vmrun", "list"], ok(""));
        let _ = f.run(&["vmrun".into(), "start".into()]);
    }
}
