//! The fork server: this same binary, exec'd with a marker in its
//! environment and caught by a constructor before `main` and before any
//! thread exists. It stays single-threaded and forks children on request.
//!
//! It never prints (an unflushed buffer would be duplicated into every
//! child), holds no user state (payloads go straight from the host to the
//! child over the child's own channel) and exits when the host's end of its
//! socket closes.

use super::child;
use super::lean::{restore_tunables, Scratch, Threads};
use super::spare::{self, wait_for_work, Forking, Pace, Spare, Work};
use super::wire::{self, Hello, SpawnReply, SpawnRequest};
use super::EntryPoint;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Environment marker: `<fd>:<cookie hex>:<host pid>:<spare socket fd or ->`.
pub(crate) const MARKER: &str = "DAEMONIC_FORK_SERVER";

pub(crate) struct ServerConfig {
    pub sock: OwnedFd,
    pub cookie: u128,
    pub host_pid: i32,
    /// The generation's spare socket, when the fork server keeps a warm
    /// spare (see `spare.rs`).
    pub spares: Option<OwnedFd>,
}

/// Runs before `main` in every binary that links daemonic.
#[ctor::ctor]
#[allow(unsafe_code)]
unsafe fn daemonic_fork_server_hook() {
    let Some(marker) = std::env::var_os(MARKER) else {
        return;
    };
    // SAFETY: constructors run before main, with exactly one thread.
    unsafe { std::env::remove_var(MARKER) };
    restore_tunables();
    let config = match refusal() {
        Some(why) => Err(why),
        None => marker
            .to_str()
            .and_then(validate)
            .ok_or("the marker does not name a socket this process's parent handed it"),
    };
    let code = match config {
        // A stray or forged marker (a copied environment, a hostile parent):
        // this process is neither a fork server nor the program the caller
        // meant to run with that environment. Say so and stop, rather than
        // run the program's `main` with a half-trusted environment.
        Err(why) => {
            let message = format!(
                "daemonic: refusing to start: {MARKER} is set in the environment but {why}; \
                 unset {MARKER}\n"
            );
            // SAFETY: a plain write to stderr; std's machinery is not set up yet.
            unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
            crate::error::ExitCode::Config.code().into()
        }
        Ok(config) => match std::panic::catch_unwind(move || serve(config)) {
            Ok(()) => 0,
            Err(_) => 70,
        },
    };
    // SAFETY: never return into the program's own start-up.
    unsafe { libc::_exit(code) }
}

/// Why this process must not become a fork server whatever its marker says:
/// a setuid, setgid or file-capability binary (`AT_SECURE`), or differing
/// real and effective ids. The marker names a descriptor and a parent, which
/// a less privileged caller could forge.
fn refusal() -> Option<&'static str> {
    // SAFETY: getauxval and the id getters are plain reads.
    let (secure, uid, euid, gid, egid) = unsafe {
        (
            libc::getauxval(libc::AT_SECURE),
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if secure != 0 {
        Some("this program runs in secure mode (setuid, setgid or file capabilities)")
    } else if uid != euid || gid != egid {
        Some("its real and effective user or group ids differ")
    } else {
        None
    }
}

/// Checks the marker (`<fd>:<cookie hex>:<host pid>:<spare socket fd or ->`):
/// our parent's pid, and descriptors that really are SOCK_SEQPACKET sockets.
fn validate(marker: &str) -> Option<ServerConfig> {
    let mut parts = marker.split(':');
    let fd: RawFd = parts.next()?.parse().ok()?;
    let cookie = u128::from_str_radix(parts.next()?, 16).ok()?;
    let host_pid: i32 = parts.next()?.parse().ok()?;
    let spares: Option<RawFd> = match parts.next()? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    if parts.next().is_some() || fd < 3 || nix::unistd::getppid().as_raw() != host_pid {
        return None;
    }
    if spares.is_some_and(|s| s < 3 || s == fd) {
        return None;
    }
    let sock = seqpacket(fd)?;
    let spares = match spares {
        Some(s) => Some(seqpacket(s)?),
        None => None,
    };
    Some(ServerConfig {
        sock,
        cookie,
        host_pid,
        spares,
    })
}

/// `fd`, owned, if it is an open SOCK_SEQPACKET socket.
fn seqpacket(fd: RawFd) -> Option<OwnedFd> {
    let mut sock_type: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `sock_type`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut sock_type as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || sock_type != libc::SOCK_SEQPACKET {
        return None;
    }
    // SAFETY: the descriptor is open (getsockopt succeeded) and ours alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Restores default dispositions and an empty mask. Ignored signals and the
/// mask survive `exec`: with SIGCHLD ignored in the host, children would be
/// auto-reaped and their statuses lost.
pub(crate) fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to default is always valid.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `/proc/self/stat`, read once at start (for the argv area).
pub(crate) struct SelfStat(std::fs::File);

impl SelfStat {
    pub(crate) fn open() -> io::Result<Self> {
        std::fs::File::open("/proc/self/stat").map(Self)
    }

    /// The fields after the command name (field 3 onwards).
    pub(crate) fn fields(&self) -> io::Result<Vec<u64>> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = self.0.read_at(&mut buf, 0)?;
        let text = std::str::from_utf8(&buf[..n]).map_err(io::Error::other)?;
        // The command name (field 2) may contain spaces; parse after its ')'.
        let after = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        // Field 3 (state) is a letter; keep numbers in place with 0.
        Ok(after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect())
    }

    /// The argv string area (fields 48 and 49), for process titles.
    pub(crate) fn arg_area(&self) -> Option<(usize, usize)> {
        let f = self.fields().ok()?;
        Some((*f.get(45)? as usize, *f.get(46)? as usize))
    }
}

fn serve(config: ServerConfig) {
    reset_signals();
    // The signals a terminal or service manager sends to a whole process
    // group are not the fork server's: it lives exactly as long as the
    // daemon (socket EOF, death signal). SIGINT and SIGTERM are ignored
    // (children restore them); a dead peer gives EPIPE, not SIGPIPE.
    // SAFETY: ignoring signals is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // The rest of the group signals get a no-op handler, which every child
    // inherits: it survives them too, with no system call of its own.
    child::survive_daemon_signals();
    // Children inherit these registered; each only points them at its own
    // logger (see `log::prepare_bridges_for_children`). Prepared again when
    // a request asks for another level (once, in practice).
    let mut prepared_level = 0;
    crate::log::prepare_bridges_for_children(prepared_level);
    // SAFETY: plain prctl; the host's launcher thread is our parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid().as_raw() != config.host_pid {
        return; // the host died before the death signal was armed
    }
    let spares_fd = config.spares.as_ref().map(|s| s.as_raw_fd());
    spare::keep_only(&[Some(config.sock.as_raw_fd()), spares_fd]);
    child::set_comm("fork-server");
    let arg_area = SelfStat::open().ok().and_then(|stat| stat.arg_area());
    let Ok(threads) = Threads::open() else { return };
    // Where the kernel writes each new child's pidfd: a page the children do
    // not inherit (MADV_DONTFORK), so that write is no copy-on-write fault.
    let Some(mut scratch) = Scratch::map() else {
        return;
    };
    let sock = config.sock;
    let hello = Hello {
        cookie: config.cookie,
        pid: std::process::id() as i32,
    };
    let Ok(bytes) = wire::encode(&hello) else {
        return;
    };
    if wire::send_message(fd(&sock), &bytes, &[]).is_err() {
        return;
    }
    // The loop allocates nothing: after each fork the child shares every
    // page of this process, and each page we write while it lives is a
    // copy-on-write fault here (and a page the child's exit frees). With
    // per-request allocations (a zeroed 16 KiB receive buffer, control
    // buffers, decoded strings, the reply) that was ~15 faults per spawn,
    // ~80 µs in this VM; now the request lands on one page of a buffer
    // allocated once, the reply and the pidfd in the scratch page, and the
    // rest lives in a few stack pages.
    let mut buf = vec![0u8; wire::MAX_CONTROL];
    let spares = config.spares;
    let mut spare: Option<Spare> = None;
    let mut pace = Pace::default();
    loop {
        if let Some(spares) = &spares {
            // The next child is forked here, after the last reply and only
            // when requests come apart (see `Pace`); and after the task just
            // started has had the CPU (a yield), since on a busy machine the
            // spare's fork would otherwise run first (BENCHMARKS.md "Process
            // layer").
            if spare.is_none() && pace.sporadic() && spare::no_request_waiting(fd(&sock)) {
                // SAFETY: plain system call.
                unsafe { libc::sched_yield() };
                let forking = Forking {
                    threads: &threads,
                    scratch: &scratch,
                    host_pid: config.host_pid,
                    arg_area,
                    spares: spares.as_fd(),
                    prepared_level,
                };
                spare = Spare::fork(&forking, &mut buf);
            }
            if let Some(waiting) = &spare {
                match wait_for_work(fd(&sock), waiting.sock()) {
                    Work::Request => {}
                    Work::SpareDied => {
                        if let Some(dead) = spare.take() {
                            dead.report_dead(spares.as_fd());
                        }
                        continue;
                    }
                    Work::Interrupted => continue,
                }
            }
        }
        let mut received = match wire::recv_into(fd(&sock), &mut buf) {
            Ok(Some(received)) => received,
            // The host closed its end (it exited, even by SIGKILL): so do we.
            Ok(None) => return,
            Err(_) => return,
        };
        pace.arrived(std::time::Instant::now());
        // The second descriptor is this request's own reply socket; a request
        // without one cannot be answered and is dropped.
        let Some(reply_sock) = received.take(1) else {
            continue;
        };
        let request = wire::decode_borrowed::<SpawnRequest<&str>>(&buf[..received.len]);
        #[cfg(feature = "testing")]
        let fault = request.as_ref().ok().and_then(|r| r.fault);
        if let Ok(request) = &request {
            if request.debug_level != prepared_level {
                prepared_level = request.debug_level;
                crate::log::prepare_bridges_for_children(prepared_level);
            }
        }
        let reply = match request {
            Ok(request) => match check(&request, &mut received) {
                Err(e) => Err(e),
                Ok((entry, channel, log)) => {
                    // (A spare exists only with a spare socket.)
                    let handed = spare.take().zip(spares.as_ref()).map(|(waiting, spares)| {
                        let fds = [
                            channel.as_raw_fd(),
                            log.as_ref().map_or(-1, |l| l.as_raw_fd()),
                        ];
                        let fds = if log.is_some() { &fds[..] } else { &fds[..1] };
                        waiting.hand(spares.as_fd(), &buf[..received.len], fds)
                    });
                    match handed {
                        Some(Ok(started)) => Ok(started),
                        // No spare, or it died: fork one now.
                        handed => {
                            if let (Some(Err(dead)), Some(spares)) = (handed, &spares) {
                                dead.report_dead(spares.as_fd());
                            }
                            fork_child(
                                request,
                                channel,
                                log,
                                entry,
                                config.host_pid,
                                &threads,
                                &scratch,
                                arg_area,
                            )
                        }
                    }
                }
            },
            Err(e) => Err(format!("malformed spawn request: {e}")),
        };
        #[cfg(feature = "testing")]
        if reply.is_ok() {
            super::testing::inject_in_server(fault);
        }
        let (reply, pidfd) = match reply {
            Ok((pid, pidfd)) => (SpawnReply::Started { pid }, Some(pidfd)),
            Err(error) => (SpawnReply::Failed { error }, None),
        };
        let out = scratch.reply();
        let len = match wire::encode_into(&reply, out) {
            Ok(len) => len,
            // An error message too long for the buffer: say so, shorter.
            Err(_) => {
                let short = SpawnReply::Failed {
                    error: "the spawn failed (its error message was too long to send)".into(),
                };
                match wire::encode_into(&short, out) {
                    Ok(len) => len,
                    Err(_) => continue,
                }
            }
        };
        let fds = pidfd.as_ref().map(|p| p.as_raw_fd());
        // A host that gave up on this spawn has closed its end: not our
        // problem, it finds the child itself.
        let _ = wire::send_message(fd(&reply_sock), &out[..len], fds.as_slice());
        // Our copies of the pidfd and the child's descriptors close here, so
        // the host alone sees the child's hang-up (and the next spare,
        // forked at the top of the loop, inherits none of them).
    }
}

fn fd(sock: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    sock.as_fd()
}

type Checked = (&'static EntryPoint, OwnedFd, Option<OwnedFd>);

/// The request's descriptors and entry point, checked before any child
/// sees them: the channel, then the log socket if the request says it has
/// one (the reply socket is taken out already).
fn check(request: &SpawnRequest<&str>, received: &mut wire::Received) -> Result<Checked, String> {
    let expected = 1 + usize::from(request.has_log);
    let carried = received.nfds.saturating_sub(1);
    if carried != expected {
        return Err(format!(
            "spawn request carried {carried} descriptors, expected {expected}"
        ));
    }
    let Some(entry) = super::find_entry(request.entry) else {
        return Err(format!(
            "unknown entry point `{}`: no task or worker with this name is registered in this binary",
            request.entry
        ));
    };
    let (Some(channel), log) = (received.take(0), received.take(2)) else {
        return Err("spawn request without a channel".into());
    };
    Ok((entry, channel, log))
}

/// Forks a child for `request` now (no spare was ready).
#[allow(clippy::too_many_arguments)]
fn fork_child(
    request: SpawnRequest<&str>,
    channel: OwnedFd,
    log: Option<OwnedFd>,
    entry: &'static EntryPoint,
    host_pid: i32,
    threads: &Threads,
    scratch: &Scratch,
    arg_area: Option<(usize, usize)>,
) -> Result<(i32, OwnedFd), String> {
    // Forking a multithreaded process and running Rust code in the child is
    // undefined behaviour in practice. This process never starts threads;
    // check anyway, before every fork.
    match threads.count() {
        Ok(1) => {}
        Ok(n) => return Err(format!("fork server has {n} threads; refusing to fork")),
        Err(e) => return Err(format!("cannot count fork server threads: {e}")),
    }
    match clone_into_host(scratch) {
        Ok(Cloned::Child) => child::run(request, channel, log, host_pid, arg_area, entry),
        Ok(Cloned::Parent { pid, pidfd }) => Ok((pid, pidfd)),
        Err(e) => Err(format!("clone failed: {e}")),
    }
}

pub(super) enum Cloned {
    Parent { pid: i32, pidfd: OwnedFd },
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks a child whose parent is the host (CLONE_PARENT), with a pidfd for
/// the host. (`exit_signal` must be 0 with CLONE_PARENT; the kernel then gives
/// the child the fork server's own exit signal, SIGCHLD.)
pub(super) fn clone_into_host(scratch: &Scratch) -> io::Result<Cloned> {
    let flags = (libc::CLONE_PARENT | libc::CLONE_PIDFD) as u64;
    let pidfd = scratch.pidfd();
    // SAFETY: the scratch page is mapped and ours.
    unsafe { pidfd.write(-1) };
    let args = CloneArgs {
        flags,
        pidfd: pidfd as u64,
        ..Default::default()
    };
    // SAFETY: fork-like clone (no CLONE_VM, no new stack) of a
    // single-threaded process; the child only continues in this function's
    // caller, which never returns to the server loop.
    let mut rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0
        && matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM)
        )
    {
        // Older kernels and some seccomp profiles refuse clone3; the legacy
        // clone takes the same flags (pidfd returned through parent_tid).
        // SAFETY: as above; x86-64 argument order (flags, stack, parent_tid, child_tid, tls).
        rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, pidfd, 0usize, 0usize) };
    }
    match rc {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        // SAFETY: the kernel returned a new pidfd for us, in the scratch page.
        pid => Ok(Cloned::Parent {
            pid: pid as i32,
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd.read_volatile()) },
        }),
    }
}
