//! The host's side of the fork server: start it once, check its handshake,
//! and send it spawn requests.

use super::reap::ChildProcess;
use super::server::MARKER;
use super::wire::{self, Hello, SpawnReply, SpawnRequest};
use crate::error::{Error, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start in a child.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Registered entry point.
    pub entry: String,
    /// Role for logs and the process title.
    pub role: String,
}

/// A started child: its process handle and the host's end of its channel.
#[derive(Debug)]
pub struct Spawned {
    /// The process (reaped through its pidfd).
    pub process: ChildProcess,
    /// The host's end of the child's channel.
    pub channel: UnixStream,
}

struct Connection {
    sock: OwnedFd,
    server_pid: i32,
    /// Set by the launcher thread once it reaped the fork server.
    reaped: std::sync::Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
}

/// The process-wide fork server.
pub struct ForkServer {
    conn: Mutex<Option<Connection>>,
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
        conn: Mutex::new(None),
    })
}

fn spawn_error(context: &str, e: impl Into<io::Error>) -> Error {
    Error::Spawn(format!("{context}: {}", e.into()))
}

impl ForkServer {
    /// Pid of the running fork server, if started.
    pub fn pid(&self) -> Option<i32> {
        self.conn.lock().as_ref().map(|c| c.server_pid)
    }

    /// Stops the fork server (it exits on the hang-up) and waits up to
    /// `timeout` until it has been reaped. Needed before an in-place `exec`:
    /// the new image would never reap it.
    pub fn shutdown(&self, timeout: Duration) {
        let Some(conn) = self.conn.lock().take() else {
            return;
        };
        let reaped = conn.reaped.clone();
        drop(conn);
        let (done, cv) = &*reaped;
        let mut done = done.lock();
        if !*done {
            let _ = cv.wait_for(&mut done, timeout);
        }
    }

    /// Starts the fork server now instead of on first spawn (takes ~2 ms).
    pub fn prestart(&self) -> Result<()> {
        let mut conn = self.conn.lock();
        if conn.is_none() {
            *conn = Some(launch()?);
        }
        Ok(())
    }

    /// Forks a child running `options.entry`. Safe to call from any thread.
    pub fn spawn(&self, options: &SpawnOptions) -> Result<Spawned> {
        let mut conn = self.conn.lock();
        // One retry: a fork server that died (killed by an operator) is
        // replaced transparently.
        for attempt in 0..2 {
            if conn.is_none() {
                *conn = Some(launch()?);
            }
            let Some(c) = conn.as_ref() else { continue };
            match request(c, options) {
                Ok(spawned) => return Ok(spawned),
                Err(RequestError::Refused(msg)) => return Err(Error::Spawn(msg)),
                Err(RequestError::Io(e)) => {
                    *conn = None;
                    if attempt == 1 {
                        return Err(spawn_error("fork server unavailable", e));
                    }
                }
            }
        }
        Err(Error::Spawn("fork server unavailable".into()))
    }
}

enum RequestError {
    Io(io::Error),
    Refused(String),
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        RequestError::Io(e)
    }
}

fn request(
    conn: &Connection,
    options: &SpawnOptions,
) -> std::result::Result<Spawned, RequestError> {
    let (host_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let settings = crate::log::child_log_settings();
    let request = SpawnRequest {
        entry: options.entry.clone(),
        role: options.role.clone(),
        daemon: settings.daemon.clone(),
        daemon_pid: settings.daemon_pid,
        debug_level: settings.debug_level,
        console: settings.console,
        has_log: settings.sink.is_some(),
    };
    let mut fds: Vec<RawFd> = vec![child_end.as_raw_fd()];
    if let Some(sink) = &settings.sink {
        fds.push(sink.as_raw_fd());
    }
    wire::send_message(conn.sock.as_fd(), &wire::encode(&request)?, &fds)?;
    drop(child_end);
    // The socket's receive timeout (set at launch) bounds this wait.
    let (bytes, mut received) = wire::recv_message(conn.sock.as_fd())?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "fork server closed its socket",
        )
    })?;
    match wire::decode::<SpawnReply>(&bytes)? {
        SpawnReply::Started { pid } => {
            let pidfd = received.pop().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "spawn reply without pidfd")
            })?;
            Ok(Spawned {
                process: ChildProcess::new(pid, pidfd),
                channel: UnixStream::from(host_end),
            })
        }
        SpawnReply::Failed { error } => Err(RequestError::Refused(error)),
    }
}

fn wait_readable(sock: &OwnedFd, timeout: Duration) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    loop {
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "fork server did not answer",
                ))
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
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

/// Starts the fork server from a dedicated thread that lives as long as the
/// process: the parent-death signal of the fork server (and of every child,
/// whose parent is this host thread through CLONE_PARENT) fires when the
/// *thread* that created it exits.
fn launch() -> Result<Connection> {
    keep_children_waitable();
    if std::env::var_os(MARKER).is_some() {
        return Err(Error::Spawn(format!(
            "{MARKER} is set in this process's environment: the fork-server constructor did not run \
             (is daemonic linked into a shared library?)"
        )));
    }
    let (host, server) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| spawn_error("socketpair", e))?;
    let cookie = random_cookie().map_err(|e| spawn_error("getrandom", e))?;
    let host_pid = std::process::id();
    let server_fd = server.as_raw_fd();
    let name = crate::log::child_log_settings().daemon.clone();
    let reaped = std::sync::Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
    let reaped_by_thread = reaped.clone();
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<u32>>();
    std::thread::Builder::new()
        .name("daemonic-forksrv".into())
        .spawn(move || {
            let mut command = Command::new("/proc/self/exe");
            command
                .arg0(format!("{name}: fork-server"))
                // Room in the argv area for children's titles (`<daemon>: worker:<name>`).
                .arg(" ".repeat(40))
                .env(MARKER, format!("{server_fd}:{cookie:x}:{host_pid}"))
                .stdin(Stdio::null());
            // SAFETY: only fcntl between fork and exec (async-signal-safe).
            // Clearing close-on-exec here, not in the host, keeps the socket
            // out of commands other threads spawn at the same moment.
            unsafe {
                command.pre_exec(move || {
                    if libc::fcntl(server_fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let spawned = command.spawn();
            drop(server);
            match spawned {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let _ = child.wait();
                    let (done, cv) = &*reaped_by_thread;
                    *done.lock() = true;
                    cv.notify_all();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            // Children's death signal is tied to this thread: keep it alive.
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| spawn_error("cannot start the fork-server thread", e))?;
    let server_pid = rx
        .recv()
        .map_err(|_| Error::Spawn("fork-server thread died".into()))?
        .map_err(|e| spawn_error("cannot exec /proc/self/exe", e))?;
    wait_readable(&host, HANDSHAKE_TIMEOUT).map_err(|e| spawn_error("fork-server handshake", e))?;
    let hello = wire::recv_message(host.as_fd())
        .map_err(|e| spawn_error("fork-server handshake", e))?
        .ok_or_else(|| Error::Spawn("fork server exited during its handshake".into()))
        .and_then(|(bytes, _)| {
            wire::decode::<Hello>(&bytes).map_err(|e| spawn_error("fork-server handshake", e))
        })?;
    if hello.cookie != cookie || hello.pid != server_pid as i32 {
        return Err(Error::Spawn("fork-server handshake: wrong cookie".into()));
    }
    // A hung fork server must not hang a spawn forever; a timeout on the
    // socket costs nothing per spawn (a poll before each recv would).
    nix::sys::socket::setsockopt(
        &host,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0),
    )
    .map_err(|e| spawn_error("fork-server socket timeout", e))?;
    Ok(Connection {
        sock: host,
        server_pid: hello.pid,
        reaped,
    })
}
