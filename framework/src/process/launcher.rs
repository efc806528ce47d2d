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

use super::orphans;
use super::reap::{pidfd_open, waitid_pidfd, Signaller};
use super::server::MARKER;
use super::wire::{self, Hello};
use crate::error::{Error, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a new fork server may take to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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
enum Job {
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
    jobs: Mutex<VecDeque<Job>>,
    wake: OnceLock<std::result::Result<OwnedFd, String>>,
    generation: AtomicU64,
    pub(crate) counters: Counters,
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
        if self.push(Job::Stop { done: tx }).is_ok() {
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

    fn launched(&self, result: Result<Connection>) {
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

    fn server_exited(&self, generation: u64) {
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

/// A fork server process, as the service thread knows it.
struct ServerProc {
    pidfd: OwnedFd,
    generation: u64,
}

struct Orphan {
    inode: u64,
    channel: OwnedFd,
    until: Instant,
}

struct Service {
    wake: OwnedFd,
    current: Option<ServerProc>,
    /// Killed or replaced fork servers not yet reaped.
    dying: Vec<ServerProc>,
    /// Children to reap.
    reaping: Vec<(i32, OwnedFd)>,
    orphans: Vec<Orphan>,
}

impl Service {
    fn new(wake: OwnedFd) -> Self {
        Self {
            wake,
            current: None,
            dying: Vec::new(),
            reaping: Vec::new(),
            orphans: Vec::new(),
        }
    }

    fn run(mut self) -> ! {
        let server = fork_server();
        loop {
            self.wait();
            let mut drained = [0u8; 8];
            // SAFETY: reading our own non-blocking eventfd.
            unsafe { libc::read(self.wake.as_raw_fd(), drained.as_mut_ptr().cast(), 8) };
            loop {
                let job = server.jobs.lock().pop_front();
                let Some(job) = job else { break };
                self.handle(server, job);
            }
            self.reap(server);
            self.search_orphans(server);
        }
    }

    /// Sleeps until a job arrives, a process we watch exits, or an orphan
    /// search is due.
    fn wait(&self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        for p in self.current.iter().chain(&self.dying) {
            fds.push(PollFd::new(p.pidfd.as_fd(), PollFlags::POLLIN));
        }
        for (_, pidfd) in &self.reaping {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if self.orphans.is_empty() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(50u16)
        };
        let _ = poll(&mut fds, timeout);
    }

    fn handle(&mut self, server: &ForkServer, job: Job) {
        match job {
            Job::Launch => {
                let generation = server.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let result = match launch(generation) {
                    Ok((conn, proc_)) => {
                        if let Some(old) = self.current.replace(proc_) {
                            self.dying.push(old);
                        }
                        server.counters.launched.fetch_add(1, Ordering::Relaxed);
                        Ok(conn)
                    }
                    Err((e, failed)) => {
                        self.dying.extend(failed);
                        Err(e)
                    }
                };
                server.launched(result);
            }
            Job::Kill { generation } => {
                if self
                    .current
                    .as_ref()
                    .is_some_and(|p| p.generation == generation)
                {
                    if let Some(p) = self.current.take() {
                        kill(&p.pidfd);
                        self.dying.push(p);
                    }
                }
            }
            Job::Reap { pid, pidfd } => self.reaping.push((pid, pidfd)),
            Job::Orphan {
                inode,
                channel,
                until,
            } => self.orphans.push(Orphan {
                inode,
                channel,
                until,
            }),
            Job::Stop { done } => {
                if let Some(p) = self.current.take() {
                    kill(&p.pidfd);
                    // Blocking here is the point: the caller is about to exec.
                    let _ = super::reap::wait_pidfd_blocking(&p.pidfd);
                }
                let _ = done.send(());
            }
        }
    }

    fn reap(&mut self, server: &ForkServer) {
        if let Some(p) = &self.current {
            if matches!(
                waitid_pidfd(p.pidfd.as_raw_fd(), libc::WNOHANG),
                Ok(Some(_)) | Err(_)
            ) {
                server.server_exited(p.generation);
                self.current = None;
            }
        }
        self.dying.retain(|p| {
            !matches!(
                waitid_pidfd(p.pidfd.as_raw_fd(), libc::WNOHANG),
                Ok(Some(_)) | Err(_)
            )
        });
        self.reaping.retain(|(pid, pidfd)| {
            let done = matches!(
                waitid_pidfd(pidfd.as_raw_fd(), libc::WNOHANG),
                Ok(Some(_)) | Err(_)
            );
            if done {
                crate::log::forget_child(*pid);
            }
            !done
        });
    }

    fn search_orphans(&mut self, server: &ForkServer) {
        if self.orphans.is_empty() {
            return;
        }
        let now = Instant::now();
        let inodes: Vec<u64> = self.orphans.iter().map(|o| o.inode).collect();
        let found = orphans::children_holding(&inodes);
        let mut kept = Vec::new();
        for orphan in self.orphans.drain(..) {
            if let Some(&(_, pid)) = found.iter().find(|(inode, _)| *inode == orphan.inode) {
                if let Ok(pidfd) = pidfd_open(pid) {
                    kill(&pidfd);
                    self.reaping.push((pid, pidfd));
                    server
                        .counters
                        .orphans_reaped
                        .fetch_add(1, Ordering::Relaxed);
                }
                // Dropping the channel lets it see EOF even if the kill failed.
                drop(orphan.channel);
            } else if now < orphan.until {
                kept.push(orphan);
            }
            // Never found within the window: no child was created (the fork
            // server died or was stopped before its clone).
        }
        self.orphans = kept;
    }
}

fn kill(pidfd: &OwnedFd) {
    Signaller::borrowed(pidfd).signal(libc::SIGKILL);
}

/// Children forked by the fork server are this process's children
/// (CLONE_PARENT) with SIGCHLD as their exit signal: with CLONE_PARENT the
/// kernel gives them the fork server's exit signal, and `exec` reset that to
/// SIGCHLD. If SIGCHLD is ignored here (a disposition inherited through
/// `exec` from whoever started us) or has SA_NOCLDWAIT, the kernel reaps them
/// itself and their exit statuses are lost (`waitid` fails with ECHILD).
fn keep_children_waitable() {
    // SAFETY: sigaction with a zeroed, then filled, struct we own; changing
    // SIGCHLD's disposition is process-wide and thread-safe.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut current) != 0 {
            return;
        }
        if current.sa_sigaction == libc::SIG_IGN {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut default.sa_mask);
            libc::sigaction(libc::SIGCHLD, &default, std::ptr::null_mut());
        } else if current.sa_flags & libc::SA_NOCLDWAIT != 0 {
            current.sa_flags &= !libc::SA_NOCLDWAIT;
            libc::sigaction(libc::SIGCHLD, &current, std::ptr::null_mut());
        }
    }
}

fn random_cookie() -> io::Result<u128> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 16 {
        return Err(io::Error::last_os_error());
    }
    Ok(u128::from_le_bytes(bytes))
}

fn spawn_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::ForkServer(format!("{context}: {e}"))
}

/// Starts a fork server (on the service thread) and checks its handshake.
/// On failure the process, if one was started, is returned to be reaped.
fn launch(
    generation: u64,
) -> std::result::Result<(Connection, ServerProc), (Error, Option<ServerProc>)> {
    keep_children_waitable();
    if std::env::var_os(MARKER).is_some() {
        return Err((
            Error::ForkServer(format!(
                "{MARKER} is set in this process's environment: the fork-server constructor did not run \
                 (is daemonic linked into a shared library?)"
            )),
            None,
        ));
    }
    let (host, server) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| (spawn_error("socketpair", e), None))?;
    let cookie = random_cookie().map_err(|e| (spawn_error("getrandom", e), None))?;
    let host_pid = std::process::id();
    let server_fd = server.as_raw_fd();
    let name = crate::log::child_log_settings().daemon.clone();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(format!("{name}: fork-server"))
        // Room in the argv area for children's titles (`<daemon>: worker:<name>`).
        .arg(" ".repeat(40))
        .env(MARKER, format!("{server_fd}:{cookie:x}:{host_pid}"))
        .stdin(Stdio::null());
    // SAFETY: only fcntl between fork and exec (async-signal-safe). Clearing
    // close-on-exec here, not in the host, keeps the socket out of commands
    // other threads spawn at the same moment.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(server_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| (spawn_error("cannot exec /proc/self/exe", e), None))?;
    drop(server);
    let pid = child.id() as i32;
    // Our own unreaped child: its pid cannot be reused before we reap it.
    let pidfd = pidfd_open(pid).map_err(|e| (spawn_error("pidfd_open", e), None))?;
    drop(child); // reaped through the pidfd, never through std's handle
    let proc_ = ServerProc { pidfd, generation };
    match handshake(&host, cookie, pid) {
        Ok(()) => {}
        Err(e) => {
            // A fork server that fails its handshake is not ours to trust.
            kill(&proc_.pidfd);
            return Err((e, Some(proc_)));
        }
    }
    if let Err(e) = nix::fcntl::fcntl(
        &host,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        kill(&proc_.pidfd);
        return Err((spawn_error("fork-server socket", e), Some(proc_)));
    }
    Ok((
        Connection {
            sock: host,
            pid,
            generation,
        },
        proc_,
    ))
}

fn handshake(host: &OwnedFd, cookie: u128, pid: i32) -> Result<()> {
    wait_readable(host, HANDSHAKE_TIMEOUT).map_err(|e| spawn_error("fork-server handshake", e))?;
    let hello = wire::recv_message(host.as_fd())
        .map_err(|e| spawn_error("fork-server handshake", e))?
        .ok_or_else(|| Error::ForkServer("the fork server exited during its handshake".into()))
        .and_then(|(bytes, _)| {
            wire::decode::<Hello>(&bytes).map_err(|e| spawn_error("fork-server handshake", e))
        })?;
    if hello.cookie != cookie || hello.pid != pid {
        return Err(Error::ForkServer(
            "fork-server handshake: wrong cookie or pid".into(),
        ));
    }
    Ok(())
}

pub(crate) fn wait_readable(sock: &OwnedFd, timeout: Duration) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the fork server did not answer",
                ))
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
