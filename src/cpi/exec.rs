//! Running external programs (virsh, qemu-img, vmrun, …) as an argv, never through a shell.
//!
//! A failure keeps the command line, exit status and output, so the operator sees what the tool said.
//! Every command line is logged at debug level; the program path always comes from the config. A command
//! line is shown with every argument that is a registered secret as `<redacted>`, and the tool's output
//! (outside text) is scrubbed of secrets when it is shown ([`ExecError`]'s text, [`ExecError::said`]).
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One external command: a program path and its arguments.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
}

/// Why an external command failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{cmdline}` exited with {status}: {}", crate::common::logger::redact(.stderr))]
    Failed { cmdline: String, status: String, stderr: String, stdout: String },
    #[error("cannot feed `{cmdline}` its input: {source}")]
    Input { cmdline: String, source: std::io::Error },
}

impl ExecError {
    /// [`ExecError::output`] scrubbed of secrets, for a message.
    pub fn said(&self) -> String {
        crate::common::logger::redact(self.output().trim())
    }

    /// The tool's own error text (stderr, or stdout when stderr is empty), as it is: for matching, never
    /// for a message (use [`ExecError::said`]).
    pub fn output(&self) -> &str {
        match self {
            ExecError::Spawn { .. } | ExecError::Input { .. } => "",
            ExecError::Failed { stderr, stdout, .. } => {
                if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                }
            }
        }
    }
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Self {
        Cmd { program: program.as_ref().to_path_buf(), args: Vec::new(), stdin: None }
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(it.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }
    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    /// The command line for messages and logs (arguments quoted when they contain spaces; an argument that
    /// is a registered secret, however short, as `<redacted>`).
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            let a = crate::common::logger::redact_arg(&a.to_string_lossy());
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
            } else {
                s.push(' ');
                s.push_str(&a);
            }
        }
        s
    }

    fn command(&self, stdin: bool) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // the director runs us with a bare environment: give child tools a sane locale and PATH
        cmd.env("LC_ALL", "C");
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        }
        cmd
    }

    fn spawn_err(&self) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
        |source| ExecError::Spawn { program: self.program.display().to_string(), source }
    }

    /// Runs the command to completion; Ok(stdout) when it exits 0.
    pub fn run(&self) -> Result<String, ExecError> {
        self.run_capturing().map(|(stdout, _)| stdout)
    }

    /// Runs the command to completion; Ok((stdout, stderr)) when it exits 0, for tools that report some
    /// failures on stderr with status 0 (virsh running several commands).
    pub fn run_capturing(&self) -> Result<(String, String), ExecError> {
        let started = std::time::Instant::now();
        crate::debug!("exec: {}", self.display());
        let mut child = self.command(self.stdin.is_some()).spawn().map_err(self.spawn_err())?;
        if let Some(data) = &self.stdin {
            if let Some(mut pipe) = child.stdin.take() {
                // a child that exits early closes the pipe: its exit status tells the story
                let _ = pipe.write_all(data);
            }
        }
        let out = child.wait_with_output().map_err(self.spawn_err())?;
        self.finish(started, out)
    }

    /// Runs the command with `input` streamed to its stdin (any size: memory stays flat); Ok(stdout) when it
    /// exits 0. A child that stops reading ends the copy and its exit status tells why; a failure to *read*
    /// `input` kills the child (it must not take a truncated input for a whole one) and is an
    /// [`ExecError::Input`].
    pub fn run_with_input(&self, input: &mut dyn Read) -> Result<String, ExecError> {
        let started = std::time::Instant::now();
        crate::debug!("exec: {} (input streamed)", self.display());
        let mut child = self.command(true).spawn().map_err(self.spawn_err())?;
        let mut pipe = child.stdin.take();
        // stdout and stderr are read by wait_with_output's threads only after the copy: read stderr and
        // stdout on threads now, so a chatty child never blocks on a full pipe while we feed it
        let out_reader = child.stdout.take().map(drain_thread);
        let err_reader = child.stderr.take().map(drain_thread);
        let mut buf = vec![0u8; 1 << 20];
        let mut read_failed = None;
        let mut unread = false;
        if let Some(p) = pipe.as_mut() {
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        read_failed = Some(e);
                        break;
                    }
                };
                // the child stopped reading (it failed, or takes no more): its status says which
                if p.write_all(&buf[..n]).is_err() {
                    unread = true;
                    break;
                }
            }
        }
        if read_failed.is_some() {
            let _ = child.kill();
        }
        drop(pipe);
        let status = child.wait().map_err(self.spawn_err())?;
        let stdout = out_reader.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let stderr = err_reader.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        if let Some(source) = read_failed {
            return Err(ExecError::Input { cmdline: self.display(), source });
        }
        let (result, _) = self.finish(started, std::process::Output { status, stdout, stderr })?;
        if unread {
            // it exited 0 without taking all of its input: whatever it made of it is incomplete
            let source = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "it exited before reading all of it");
            return Err(ExecError::Input { cmdline: self.display(), source });
        }
        Ok(result)
    }

    fn finish(&self, started: std::time::Instant, out: std::process::Output) -> Result<(String, String), ExecError> {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        crate::debug!("exec: done in {} ms, {}", started.elapsed().as_millis(), out.status);
        if out.status.success() {
            Ok((stdout, stderr))
        } else {
            let status = match out.status.code() {
                Some(c) => format!("status {c}"),
                None => "a signal".to_string(),
            };
            Err(ExecError::Failed { cmdline: self.display(), status, stderr, stdout: stdout.trim().to_string() })
        }
    }
}

/// Reads a child's pipe to its end on a thread.
fn drain_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure_keep_output() {
        let _serial = crate::cpi::inflight::tests::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(Cmd::new("/bin/echo").arg("a b").run().unwrap(), "a b\n");
        let err = Cmd::new("/bin/sh").args(["-c", "echo oops >&2; exit 3"]).run().unwrap_err();
        assert!(err.to_string().contains("status 3"), "{err}");
        assert_eq!(err.output(), "oops");
        let err = Cmd::new("/nonexistent/tool").run().unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }

    #[test]
    fn arguments_are_not_shell_interpreted() {
        let _serial = crate::cpi::inflight::tests::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let out = Cmd::new("/bin/echo").arg("$(touch /tmp/vmcpi-pwned); `x`").run().unwrap();
        assert_eq!(out, "$(touch /tmp/vmcpi-pwned); `x`\n");
        assert!(Cmd::new("/bin/cat").stdin(b"in".to_vec()).run().unwrap() == "in");
    }

    #[test]
    fn streamed_input() {
        let _serial = crate::cpi::inflight::tests::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        // 3 MiB through `wc -c`: every byte arrives
        let data = vec![7u8; 3 << 20];
        let out = Cmd::new("/usr/bin/wc").arg("-c").run_with_input(&mut &data[..]).unwrap();
        assert_eq!(out.trim(), (3 << 20).to_string());
        // a child that stops reading: its status is the error
        let err = Cmd::new("/bin/sh").args(["-c", "head -c 10 >/dev/null; echo gave up >&2; exit 4"]);
        let err = err.run_with_input(&mut &data[..]).unwrap_err();
        assert!(err.to_string().contains("status 4") && err.output() == "gave up", "{err}");
        // an input that fails half-way kills the child, which must not take it for a whole one
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt archive"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let err = Cmd::new("/bin/cat").run_with_input(&mut Broken(5)).unwrap_err();
        assert!(matches!(err, ExecError::Input { .. }) && err.to_string().contains("corrupt archive"), "{err}");
        // one that exits 0 without reading it all made something incomplete
        let err = Cmd::new("/usr/bin/head").args(["-c", "10"]).run_with_input(&mut &data[..]).unwrap_err();
        assert!(matches!(err, ExecError::Input { .. }), "{err}");
    }
}
