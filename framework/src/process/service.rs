//! The fork server's service thread: it launches the fork server (and a new
//! one when the last died or hung), reaps it, reaps children whose handle
//! was dropped, and finds the children of spawns whose reply was lost.
//! It is the only place that waits on another process, and it is no
//! runtime's thread.

use super::launcher::{fork_server, Connection, ForkServer, Job};
use super::orphans;
use super::reap::{pidfd_open, waitid_pidfd, Signaller};
use super::server::MARKER;
use super::spare;
use super::wire::{self, Hello};
use crate::error::{Error, Result};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a new fork server may take to say hello.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A fork server process, as the service thread knows it.
struct ServerProc {
    pidfd: OwnedFd,
    generation: u64,
    /// Our end of the generation's spare socket (see `spare.rs`), until no
    /// process holds the other end.
    spares: Option<OwnedFd>,
    /// What the spare socket told of the generation's spares.
    ledger: spare::Ledger,
}

impl ServerProc {
    /// Whether the fork server is reaped and no spare of it is left.
    fn gone(&self) -> bool {
        self.spares.is_none() && exited(&self.pidfd)
    }
}

/// Whether the process has exited (and is reaped now if it had).
fn exited(pidfd: &OwnedFd) -> bool {
    matches!(
        waitid_pidfd(pidfd.as_raw_fd(), libc::WNOHANG),
        Ok(Some(_)) | Err(_)
    )
}

/// Spares of `p`'s generation that left (or were found dead), to reap;
/// forgets the spare socket once no spare of it can be left.
fn collect_spares(p: &mut ServerProc) -> Vec<(i32, OwnedFd)> {
    let Some(spares) = &p.spares else {
        return Vec::new();
    };
    match p.ledger.drain(spares) {
        Ok(found) => found,
        Err(found) => {
            p.spares = None;
            found
        }
    }
}

struct Orphan {
    inode: u64,
    channel: OwnedFd,
    until: Instant,
}

pub(super) struct Service {
    wake: OwnedFd,
    current: Option<ServerProc>,
    /// Killed or replaced fork servers not yet reaped.
    dying: Vec<ServerProc>,
    /// Children to reap.
    reaping: Vec<(i32, OwnedFd)>,
    orphans: Vec<Orphan>,
}

impl Service {
    pub(super) fn new(wake: OwnedFd) -> Self {
        Self {
            wake,
            current: None,
            dying: Vec::new(),
            reaping: Vec::new(),
            orphans: Vec::new(),
        }
    }

    pub(super) fn run(mut self) -> ! {
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
            if let Some(spares) = &p.spares {
                fds.push(PollFd::new(spares.as_fd(), PollFlags::POLLIN));
            }
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
            Job::Stop { done, until } => {
                if let Some(p) = self.current.take() {
                    kill(&p.pidfd);
                    // Blocking here is the point: the caller is about to exec
                    // (or drop privileges), and neither the fork server nor
                    // its spare may outlive that.
                    let _ = super::reap::wait_pidfd_blocking(&p.pidfd);
                    self.stop_spares(p, until);
                }
                let _ = done.send(());
            }
        }
    }

    /// Waits (until `until`) for the spares of a killed generation to leave,
    /// and reaps them.
    fn stop_spares(&mut self, mut p: ServerProc, until: Instant) {
        while let Some(spares) = &p.spares {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || wait_readable(spares, left).is_err() {
                break;
            }
            for (pid, pidfd) in collect_spares(&mut p) {
                kill(&pidfd);
                let _ = super::reap::wait_pidfd_blocking(&pidfd);
                crate::log::forget_child(pid);
            }
        }
        if !p.gone() {
            // Not gone in time: watched (and reaped) as any dying generation.
            self.dying.push(p);
        }
    }

    fn reap(&mut self, server: &ForkServer) {
        if let Some(mut p) = self.current.take() {
            let found = collect_spares(&mut p);
            self.reaping.extend(found);
            if exited(&p.pidfd) {
                server.server_exited(p.generation);
                // Its spare, if any, is leaving: watched until it has.
                self.dying.push(p);
            } else {
                self.current = Some(p);
            }
        }
        let mut dying = std::mem::take(&mut self.dying);
        for p in &mut dying {
            let found = collect_spares(p);
            self.reaping.extend(found);
        }
        dying.retain(|p| !p.gone());
        self.dying = dying;
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
    let (host, server) =
        spare::seqpacket_pair().map_err(|e| (spawn_error("socketpair", e), None))?;
    // The generation's spare socket: ours non-blocking, theirs inherited
    // by the fork server (and by each spare it forks).
    let spare_pair = if fork_server().prefork() {
        let (ours, theirs) =
            spare::seqpacket_pair().map_err(|e| (spawn_error("socketpair", e), None))?;
        nix::fcntl::fcntl(
            &ours,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| (spawn_error("spare socket", e), None))?;
        Some((ours, theirs))
    } else {
        None
    };
    let spares_fd = spare_pair.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    let cookie = random_cookie().map_err(|e| (spawn_error("getrandom", e), None))?;
    let host_pid = std::process::id();
    let server_fd = server.as_raw_fd();
    let name = crate::log::child_log_settings().daemon.clone();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(format!("{name}: fork-server"))
        // Room in the argv area for children's titles (`<daemon>: worker:<name>`).
        .arg(" ".repeat(40))
        .env(
            MARKER,
            format!(
                "{server_fd}:{cookie:x}:{host_pid}:{}",
                spares_fd.map_or("-".to_string(), |fd| fd.to_string())
            ),
        )
        .envs(super::lean::tunables_for_fork_server())
        .stdin(Stdio::null());
    // SAFETY: only fcntl between fork and exec (async-signal-safe). Clearing
    // close-on-exec here, not in the host, keeps the socket out of commands
    // other threads spawn at the same moment.
    unsafe {
        command.pre_exec(move || {
            for fd in std::iter::once(server_fd).chain(spares_fd) {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| (spawn_error("cannot exec /proc/self/exe", e), None))?;
    drop(server);
    // Only the fork server and its spares hold the other end now: its end of
    // stream means none of them is left.
    let spares = spare_pair.map(|(ours, _theirs)| ours);
    let pid = child.id() as i32;
    // Our own unreaped child: its pid cannot be reused before we reap it.
    let pidfd = pidfd_open(pid).map_err(|e| (spawn_error("pidfd_open", e), None))?;
    drop(child); // reaped through the pidfd, never through std's handle
    let proc_ = ServerProc {
        pidfd,
        generation,
        spares,
        ledger: spare::Ledger::default(),
    };
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
