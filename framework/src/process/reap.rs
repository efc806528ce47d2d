//! A child process the daemon owns, reaped through its pidfd.
//!
//! Children are created with `CLONE_PARENT`: they are the daemon's own
//! children. We wait with `waitid(P_PIDFD, .., __WALL)` on each child's own
//! pidfd and never call `waitpid(-1)`, so our reaping never steals the exit
//! status of a `std::process::Child` the user spawned.
//!
//! The reverse cannot be fully guaranteed: with `CLONE_PARENT` the kernel
//! gives a child the fork server's exit signal, and `exec` made that SIGCHLD,
//! so a `waitpid(-1)` or `wait()` elsewhere in the daemon could take a
//! worker's or task's status (its call or task would then report a reaping
//! error instead of the exit code). Don't reap with `waitpid(-1)` in a daemonic
//! daemon; reap your own children by pid (as `std::process::Child` does).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How a child process ended.
///
/// ```
/// use daemonic::{ExitStatus, WorkerError};
///
/// let e = WorkerError::Died {
///     pid: 42,
///     exit: ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false },
/// };
/// if let WorkerError::Died { exit, .. } = &e {
///     assert_eq!(exit.signal(), Some(libc::SIGKILL));
///     assert_eq!(exit.to_string(), "killed by SIGKILL");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// Signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            ExitStatus::Signaled { .. } => None,
        }
    }

    /// The signal that killed it, if any.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(*signal),
            ExitStatus::Exited(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {}", crate::signal::signal_name(*signal))?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Sends `signal` through a pidfd (never reaches a recycled pid). `Ok(false)`
/// if the process already exited.
pub(crate) fn signal_pidfd(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<bool> {
    // SAFETY: plain syscall on a descriptor the caller owns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        _ => Err(err),
    }
}

/// A pidfd for `pid`. Race-free only for our own unreaped children (their pid
/// cannot be reused before we reap them).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the kernel hands us a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A duplicate of a child's pidfd, to signal it while a waiter owns the
/// [`ChildProcess`]. Signals never reach a recycled pid.
#[derive(Debug)]
pub(crate) struct Signaller(OwnedFd);

impl Signaller {
    /// Sends `signal`; an already-exited child is not an error.
    pub(crate) fn signal(&self, signal: i32) {
        let _ = signal_pidfd(self.0.as_fd(), signal);
    }

    /// Signals through a pidfd owned elsewhere.
    pub(crate) fn borrowed(pidfd: &OwnedFd) -> BorrowedSignaller<'_> {
        BorrowedSignaller(pidfd.as_fd())
    }
}

/// [`Signaller`] over a borrowed pidfd.
pub(crate) struct BorrowedSignaller<'a>(BorrowedFd<'a>);

impl BorrowedSignaller<'_> {
    pub(crate) fn signal(&self, signal: i32) {
        let _ = signal_pidfd(self.0, signal);
    }
}

/// A descriptor owned elsewhere, to register with the reactor: dropping the
/// registration leaves the descriptor open.
pub(crate) struct Registered(pub(crate) RawFd);

impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A child process of the daemon. Dropping an unreaped child kills and reaps
/// it, so no handle can leave a zombie behind.
#[derive(Debug)]
pub struct ChildProcess {
    pid: i32,
    pidfd: Option<OwnedFd>,
    started: Instant,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    pub(crate) fn new(pid: i32, pidfd: OwnedFd) -> Self {
        Self {
            pid,
            pidfd: Some(pidfd),
            started: Instant::now(),
            status: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Time since the spawn.
    pub fn runtime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The exit status, once reaped.
    // Used by the test hooks (`testing.rs`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn status(&self) -> Option<&ExitStatus> {
        self.status.as_ref()
    }

    /// Sends `signal` through the pidfd (never hits a recycled pid). Returns
    /// `Ok(false)` if the child already exited.
    pub fn signal(&self, signal: i32) -> io::Result<bool> {
        match &self.pidfd {
            Some(fd) => signal_pidfd(fd.as_fd(), signal),
            None => Ok(false),
        }
    }

    /// A duplicate of the pidfd (to signal the child from elsewhere while a
    /// waiter owns this handle). `None` once reaped.
    pub fn pidfd_dup(&self) -> Option<OwnedFd> {
        self.pidfd.as_ref().and_then(|fd| fd.try_clone().ok())
    }

    pub(crate) fn signaller(&self) -> Option<Signaller> {
        self.pidfd_dup().map(Signaller)
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = &self.status {
            return Ok(Some(status.clone()));
        }
        let Some(fd) = &self.pidfd else {
            return Ok(None);
        };
        match waitid_pidfd(fd.as_raw_fd(), libc::WNOHANG)? {
            Some(status) => {
                self.reaped(status.clone());
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    /// Blocks until the child exits.
    pub fn wait_blocking(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = &self.status {
            return Ok(status.clone());
        }
        let Some(fd) = &self.pidfd else {
            return Err(io::Error::other("child has no pidfd"));
        };
        // (No `try_wait` first: this begins with the same `waitid`.)
        let status = wait_pidfd_blocking(fd)?;
        self.reaped(status.clone());
        Ok(status)
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.pidfd = None;
        crate::log::forget_child(self.pid);
    }

    /// Waits for the child to exit without blocking the thread (inside a
    /// tokio runtime, e.g. an actix arbiter). Resolves within microseconds of
    /// the exit: the pidfd becomes readable when the child dies.
    ///
    /// Cancel-safe: dropping the future (a `select!`, a `timeout`) keeps the
    /// pidfd, so the child can still be waited for, and is killed and reaped
    /// when the handle is dropped.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let Some(fd) = &self.pidfd else {
            return Err(io::Error::other("child has no pidfd"));
        };
        let raw = fd.as_raw_fd();
        // The registration borrows the pidfd, which `self` keeps owning: if
        // this future is dropped, only the registration goes.
        // SAFETY: `self` owns the pidfd and outlives the registration, which
        // is dropped before `self.pidfd` can change.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Registered(raw),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| e.into_parts().1)?;
        let status = loop {
            let mut guard = afd.readable().await?;
            match waitid_pidfd(raw, libc::WNOHANG)? {
                Some(status) => break status,
                None => guard.clear_ready(),
            }
        };
        drop(afd);
        self.reaped(status.clone());
        Ok(status)
    }
}

impl Drop for ChildProcess {
    /// Kills the child if it still runs; the fork server's service thread
    /// reaps it, so dropping never waits on another process.
    fn drop(&mut self) {
        if self.status.is_none() {
            if let Some(fd) = self.pidfd.take() {
                let _ = signal_pidfd(fd.as_fd(), libc::SIGKILL);
                super::fork_server().reap_later(self.pid, fd);
            }
        }
    }
}

/// Blocks until the process behind `pidfd` exits, and reaps it.
pub(crate) fn wait_pidfd_blocking(pidfd: &OwnedFd) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = waitid_pidfd(pidfd.as_raw_fd(), libc::WNOHANG)? {
            return Ok(status);
        }
        let mut pfd = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `waitid(P_PIDFD)`; `None` if still running.
pub(crate) fn waitid_pidfd(fd: RawFd, extra: i32) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t we own.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::__WALL | extra,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid succeeded, so the siginfo fields are initialized.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Exited(status),
            libc::CLD_DUMPED => ExitStatus::Signaled {
                signal: status,
                core_dumped: true,
            },
            _ => ExitStatus::Signaled {
                signal: status,
                core_dumped: false,
            },
        }));
    }
}
