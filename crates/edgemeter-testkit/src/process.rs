//! Processes the tests start: each a child killed (SIGKILL) and reaped
//! when its handle drops, its output in a log file that is printed when a
//! test fails while it runs; and the one way tests wait for a condition.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Polls `condition` every 100 ms until it holds; panics with `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (SIGKILL) and reaped on drop, with its output in
/// a log file that is printed when a test fails while it runs.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, program: &Path, args: &[&str], log_dir: &Path) -> Process {
        Process::spawn_with(name, program, args, log_dir, |_| {})
    }

    /// As [`Process::spawn`], with `customize` applied to the command before
    /// it starts (to set up the child's signals or limits, say).
    pub fn spawn_with(
        name: &str,
        program: &Path,
        args: &[&str],
        log_dir: &Path,
        customize: impl FnOnce(&mut Command),
    ) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the process log");
        // The log directory is the working directory too: tansu resolves its
        // SQLite path relative to it.
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(log_dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the log handle"))
            .stderr(output)
            .env("EDGEMETER_LOG", "info");
        customize(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Process {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("poll the child"))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- {} log (last lines) ----\n{}",
                self.name,
                self.log_tail()
            );
        }
        self.kill();
    }
}
