//! Auto-restart: re-exec the daemon after a configurable runtime, on SIGHUP,
//! and after a fatal error — but not when it fails within a minimum runtime
//! (the restart-loop guard).
//!
//! In the foreground the program execs itself in place: the pid stays, so a
//! terminal or systemd (`Type=notify`) keeps following it. It execs the
//! program's path, not `/proc/self/exe`, so that after a package upgrade
//! replaced the binary the restart runs the new version (the running image
//! is used only when the file is gone). With `--daemon` a
//! fresh daemon is started with the same arguments and working directory
//! (new pid; it writes the pid file and raises a pid-change event) once this
//! one has stopped and released its locks.

use crate::error::{Error, ExitCode, Result};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable carrying the previous pid into a restarted daemon.
pub(crate) const RESTARTED_FROM: &str = "DAEMONIC_RESTARTED_FROM";

/// When the daemon restarts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restart after running this long (`None`: never for this reason).
    pub after: Option<Duration>,
    /// Restart on SIGHUP (otherwise SIGHUP only reopens the log file).
    pub on_sighup: bool,
    /// Restart after a fatal error (a panic in `execute`, say).
    pub on_fatal: bool,
    /// A fatal error within this runtime exits with an error instead of
    /// restarting (no restart loop).
    pub min_runtime: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            after: None,
            on_sighup: true,
            on_fatal: true,
            min_runtime: Duration::from_secs(10),
        }
    }
}

/// How this process was started, captured before it daemonizes.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub daemonized: bool,
    /// The program's file as it was at start (`/proc/self/exe` resolved).
    pub exe: Option<PathBuf>,
}

impl Invocation {
    pub(crate) fn capture(daemonized: bool) -> Self {
        Self {
            args: std::env::args_os().collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            daemonized,
            exe: std::env::current_exe().ok(),
        }
    }

    /// What a restart executes: the program's path when a file is there (after
    /// a package upgrade replaced the binary, that is the new version), else
    /// the running image itself (`/proc/self/exe` still works when the file
    /// was deleted).
    pub(crate) fn program(&self) -> PathBuf {
        match &self.exe {
            Some(path) if path.is_file() => path.clone(),
            _ => PathBuf::from("/proc/self/exe"),
        }
    }
}

/// The previous pid, if this process is a restart (removes the variable so
/// children do not inherit it). Call before any thread exists.
pub(crate) fn take_restarted_from() -> Option<i32> {
    let value = std::env::var(RESTARTED_FROM).ok()?;
    // Still single-threaded: nothing reads the environment concurrently.
    std::env::remove_var(RESTARTED_FROM);
    value.parse().ok()
}

/// Starts the new daemon. Foreground: execs in place (returns only on
/// failure). `--daemon`: runs the new launcher and returns its exit code.
pub(crate) fn restart(invocation: &Invocation) -> Result<ExitCode> {
    let pid = std::process::id().to_string();
    // The fork server would outlive an in-place exec as a zombie; a new one
    // starts when the new image first needs it.
    crate::process::fork_server().shutdown(Duration::from_secs(2));
    let (program, args) = match invocation.args.split_first() {
        Some((arg0, rest)) => (arg0.clone(), rest.to_vec()),
        None => (OsString::from("daemon"), Vec::new()),
    };
    let mut command = std::process::Command::new(invocation.program());
    {
        use std::os::unix::process::CommandExt;
        command.arg0(&program);
    }
    command
        .args(&args)
        .current_dir(&invocation.cwd)
        .env(RESTARTED_FROM, &pid);
    if invocation.daemonized {
        let status = command
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| Error::os("cannot start the restarted daemon", e))?;
        return Ok(match status.code() {
            Some(0) => ExitCode::Ok,
            _ => ExitCode::Software,
        });
    }
    use std::os::unix::process::CommandExt;
    let err = command.exec();
    Err(Error::os("cannot re-exec the daemon", err))
}
