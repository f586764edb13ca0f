//! Running external programs (virsh, qemu-img, xorriso, …) as an argv, never through a shell.
//!
//! A failure keeps the command line, exit status and output, so the operator sees what the tool said.
//! Every command line is logged at debug level (redacted); the program path always comes from the config.
use std::ffi::{OsStr, OsString};
use std::io::Write;
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
    #[error("`{cmdline}` exited with {status}: {stderr}")]
    Failed { cmdline: String, status: String, stderr: String, stdout: String },
}

impl ExecError {
    /// The tool's own error text (stderr, or stdout when stderr is empty).
    pub fn output(&self) -> &str {
        match self {
            ExecError::Spawn { .. } => "",
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

    /// The command line for messages and logs (arguments quoted when they contain spaces).
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
            } else {
                s.push(' ');
                s.push_str(&a);
            }
        }
        s
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
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // the director runs us with a bare environment: give child tools a sane locale and PATH
        cmd.env("LC_ALL", "C");
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        }
        let mut child =
            cmd.spawn().map_err(|source| ExecError::Spawn { program: self.program.display().to_string(), source })?;
        if let Some(data) = &self.stdin {
            if let Some(mut pipe) = child.stdin.take() {
                // a child that exits early closes the pipe: its exit status tells the story
                let _ = pipe.write_all(data);
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ExecError::Spawn { program: self.program.display().to_string(), source })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure_keep_output() {
        assert_eq!(Cmd::new("/bin/echo").arg("a b").run().unwrap(), "a b\n");
        let err = Cmd::new("/bin/sh").args(["-c", "echo oops >&2; exit 3"]).run().unwrap_err();
        assert!(err.to_string().contains("status 3"), "{err}");
        assert_eq!(err.output(), "oops");
        let err = Cmd::new("/nonexistent/tool").run().unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }

    #[test]
    fn arguments_are_not_shell_interpreted() {
        let out = Cmd::new("/bin/echo").arg("$(touch /tmp/vmcpi-pwned); `x`").run().unwrap();
        assert_eq!(out, "$(touch /tmp/vmcpi-pwned); `x`\n");
        assert!(Cmd::new("/bin/cat").stdin(b"in".to_vec()).run().unwrap() == "in");
    }
}
