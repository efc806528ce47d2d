//! The host's side of the fork server: a service thread starts it, watches
//! it, replaces it when it dies or stops answering, and reaps what nobody
//! else will (the fork server itself, children whose handle was dropped,
//! children whose spawn reply was lost).
//!
//! Nothing here makes a runtime thread wait on another process: a spawn
//! asks for the current connection (started by the service thread if there
//! is none) and talks to the fork server through its own per-spawn reply
//! socket (see `spawn.rs`). Only the service thread blocks, and only on the
//! fork server's start-up handshake.
//!
//! The service thread lives as long as the process: the parent-death signal
//! of the fork server, and of every child (whose parent is this thread
//! through `CLONE_PARENT`), fires when the *thread* that created the fork
//! server exits.

use super::service::{Service, HANDSHAKE_TIMEOUT};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A live connection to one fork server ("generation").
#[derive(Debug)]
pub(crate) struct Connection {
    /// Requests go here (SOCK_SEQPACKET, non-blocking).
    pub sock: OwnedFd,
    pub pid: i32,
    pub generation: u64,
}

enum Waiter {
    Async(tokio::sync::oneshot::Sender<Result<Arc<Connection>>>),
    Blocking(std::sync::mpsc::Sender<Result<Arc<Connection>>>),
}

impl Waiter {
    fn send(self, result: Result<Arc<Connection>>) {
        match self {
            Waiter::Async(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

enum State {
    Down,
    Starting(Vec<Waiter>),
    Up(Arc<Connection>),
}

/// Work for the service thread.
pub(super) enum Job {
    Launch,
    /// Kill this generation (it stopped answering); the next spawn starts a
    /// new one.
    Kill {
        generation: u64,
    },
    /// Reap a child nobody waits for any more (its handle was dropped).
    Reap {
        pid: i32,
        pidfd: OwnedFd,
    },
    /// A spawn whose reply was lost: find the child that holds the other end
    /// of `channel`, if one was created, kill it and reap it.
    Orphan {
        inode: u64,
        channel: OwnedFd,
        until: Instant,
    },
    /// Kill the fork server and report when it has been reaped.
    Stop {
        done: std::sync::mpsc::Sender<()>,
        until: Instant,
    },
}

/// Counters about the fork server, for stats.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub launched: AtomicU64,
    pub died: AtomicU64,
    pub killed_unresponsive: AtomicU64,
    pub orphans_reaped: AtomicU64,
}

/// The process-wide fork server.
pub struct ForkServer {
    state: Mutex<State>,
    pub(super) jobs: Mutex<VecDeque<Job>>,
    wake: OnceLock<std::result::Result<OwnedFd, String>>,
    pub(super) generation: AtomicU64,
    pub(crate) counters: Counters,
    prefork: AtomicBool,
    /// Set by [`ForkServer::set_prefork`] or once the environment was read.
    prefork_set: AtomicBool,
}

/// The environment variable that turns the warm spare on (`1`) or off (`0`).
pub(crate) const PREFORK_ENV: &str = "DAEMONIC_PREFORK";

/// `0`/`off`/`false`/`no` or `1`/`on`/`true`/`yes`.
fn parse_switch(value: &std::ffi::OsStr) -> Option<bool> {
    match value.to_str()?.trim().to_ascii_lowercase().as_str() {
        "0" | "off" | "false" | "no" => Some(false),
        "1" | "on" | "true" | "yes" => Some(true),
        _ => None,
    }
}

impl std::fmt::Debug for ForkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkServer")
            .field("pid", &self.pid())
            .finish()
    }
}

/// The fork server of this process (started on first spawn).
pub fn fork_server() -> &'static ForkServer {
    static SERVER: OnceLock<ForkServer> = OnceLock::new();
    SERVER.get_or_init(|| ForkServer {
        state: Mutex::new(State::Down),
        jobs: Mutex::new(VecDeque::new()),
        wake: OnceLock::new(),
        generation: AtomicU64::new(0),
        counters: Counters::default(),
        // Off until a daemon asks: see `DaemonBuilder::prefork`.
        prefork: AtomicBool::new(false),
        prefork_set: AtomicBool::new(false),
    })
}

impl ForkServer {
    /// Pid of the running fork server, if one is up.
    pub fn pid(&self) -> Option<i32> {
        match &*self.state.lock() {
            State::Up(conn) => Some(conn.pid),
            _ => None,
        }
    }

    /// Whether fork servers started from now on keep a warm spare: a child
    /// forked ahead of the next spawn request when requests come apart
    /// (0.5 ms or more between two), which that request is handed to, so the fork is off the spawn's
    /// latency (see `spare.rs`). The spare is one more process of the daemon
    /// (`<daemon>: fork-spare` in `ps`), replaced after each spawn it takes.
    /// Off by default; `DAEMONIC_PREFORK=0|1` in the environment decides
    /// when this was never called (read at the first launch). A running
    /// fork server keeps its setting until it is replaced.
    pub fn set_prefork(&self, on: bool) {
        self.prefork.store(on, Ordering::Relaxed);
        self.prefork_set.store(true, Ordering::Relaxed);
    }

    /// Whether the next fork server keeps a warm spare.
    pub(super) fn prefork(&self) -> bool {
        if !self.prefork_set.swap(true, Ordering::Relaxed) {
            if let Some(on) = std::env::var_os(PREFORK_ENV).and_then(|v| parse_switch(&v)) {
                self.prefork.store(on, Ordering::Relaxed);
            }
        }
        self.prefork.load(Ordering::Relaxed)
    }

    /// Starts the fork server now instead of on first spawn (takes ~2 ms),
    /// blocking until it is up.
    // Used by the test hooks (`testing.rs`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn prestart(&self) -> Result<()> {
        self.connection_blocking().map(|_| ())
    }

    /// Kills the fork server and waits up to `timeout` until it has been
    /// reaped. Needed before an in-place `exec`: the new image would never
    /// reap it. A later spawn starts a new one.
    pub fn shutdown(&self, timeout: Duration) {
        let was_up = !matches!(
            std::mem::replace(&mut *self.state.lock(), State::Down),
            State::Down
        );
        if !was_up {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let until = Instant::now() + timeout;
        if self.push(Job::Stop { done: tx, until }).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }

    /// The current connection, starting a fork server if there is none,
    /// without blocking the calling thread.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(ready) = self.connect(Waiter::Async(tx)) {
            return ready;
        }
        rx.await
            .map_err(|_| Error::ForkServer("the fork-server service thread stopped".into()))?
    }

    /// [`connection`](Self::connection), blocking the calling thread (at most
    /// the start-up handshake's timeout).
    pub(crate) fn connection_blocking(&self) -> Result<Arc<Connection>> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(ready) = self.connect(Waiter::Blocking(tx)) {
            return ready;
        }
        rx.recv_timeout(HANDSHAKE_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| {
                Error::ForkServer("no answer from the fork-server service thread".into())
            })?
    }

    /// `Some` if the answer is known now; else `waiter` gets it later.
    fn connect(&self, waiter: Waiter) -> Option<Result<Arc<Connection>>> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Up(conn) => Some(Ok(conn.clone())),
            State::Starting(waiters) => {
                waiters.push(waiter);
                None
            }
            State::Down => {
                *state = State::Starting(vec![waiter]);
                drop(state);
                if let Err(e) = self.push(Job::Launch) {
                    self.launched(Err(e));
                }
                None
            }
        }
    }

    /// Marks generation `generation` as unresponsive: it is killed and the
    /// next spawn starts a new fork server.
    pub(crate) fn kill_generation(&self, generation: u64) {
        let mut state = self.state.lock();
        if matches!(&*state, State::Up(c) if c.generation == generation) {
            *state = State::Down;
            self.counters
                .killed_unresponsive
                .fetch_add(1, Ordering::Relaxed);
        }
        drop(state);
        let _ = self.push(Job::Kill { generation });
    }

    /// Hands a child nobody will wait for to the service thread, which reaps
    /// it (the caller has already signalled it).
    pub(crate) fn reap_later(&self, pid: i32, pidfd: OwnedFd) {
        // Without a service thread nothing could have spawned the child.
        let _ = self.push(Job::Reap { pid, pidfd });
    }

    /// A spawn on `generation` lost its reply: find its child, if any.
    pub(crate) fn recover_orphan(&self, inode: u64, channel: OwnedFd) {
        let _ = self.push(Job::Orphan {
            inode,
            channel,
            until: Instant::now() + Duration::from_secs(3),
        });
    }

    pub(super) fn launched(&self, result: Result<Connection>) {
        let result = result.map(Arc::new);
        let waiters = {
            let mut state = self.state.lock();
            let waiters = match std::mem::replace(&mut *state, State::Down) {
                State::Starting(w) => w,
                _ => Vec::new(),
            };
            if let Ok(conn) = &result {
                *state = State::Up(conn.clone());
            }
            waiters
        };
        for waiter in waiters {
            waiter.send(match &result {
                Ok(conn) => Ok(conn.clone()),
                Err(e) => Err(Error::ForkServer(e.to_string())),
            });
        }
    }

    pub(super) fn server_exited(&self, generation: u64) {
        let mut state = self.state.lock();
        if matches!(&*state, State::Up(c) if c.generation == generation) {
            *state = State::Down;
        }
        self.counters.died.fetch_add(1, Ordering::Relaxed);
    }

    fn push(&self, job: Job) -> Result<()> {
        let wake = self
            .wake
            .get_or_init(start_service)
            .as_ref()
            .map_err(|e| Error::ForkServer(e.clone()))?;
        self.jobs.lock().push_back(job);
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our own eventfd.
        unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        Ok(())
    }
}

fn start_service() -> std::result::Result<OwnedFd, String> {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(format!("eventfd: {}", io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let wake: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    let theirs = wake.try_clone().map_err(|e| format!("dup eventfd: {e}"))?;
    std::thread::Builder::new()
        .name("daemonic-forksrv".into())
        .spawn(move || Service::new(theirs).run())
        .map_err(|e| format!("cannot start the fork-server thread: {e}"))?;
    Ok(wake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefork_switch_reads_common_spellings() {
        for on in ["1", "on", "TRUE", " yes "] {
            assert_eq!(parse_switch(on.as_ref()), Some(true), "{on}");
        }
        for off in ["0", "off", "False", "no"] {
            assert_eq!(parse_switch(off.as_ref()), Some(false), "{off}");
        }
        assert_eq!(parse_switch("maybe".as_ref()), None);
    }
}
