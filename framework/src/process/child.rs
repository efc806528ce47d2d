//! A child's first moments after the fork, before any user code: own only
//! its channel (fd 3) and log socket (fd 4), default signal state, die with
//! the daemon, show its role in `ps`, then run its entry point.

use super::wire::{self, SpawnRequest};
use super::EntryPoint;
use crate::log::{Level, LogConfig, Logger};
use serde::de::DeserializeOwned;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Descriptor number of a child's channel to the host.
pub const CHANNEL_FD: RawFd = 3;
/// Descriptor number of a child's log socket, when the daemon has one.
pub const LOG_FD: RawFd = 4;

/// What a child's entry point gets.
#[derive(Debug)]
pub struct ChildStart {
    channel: UnixStream,
    log: Option<OwnedFd>,
    /// Role shown in logs (`task:send_email`, `worker:hasher`).
    pub role: String,
    /// Name of the daemon.
    pub daemon: String,
    /// Pid of the daemon's main process.
    pub daemon_pid: i32,
    /// The daemon's `--debug` level.
    pub debug_level: u8,
    console: bool,
}

impl ChildStart {
    /// The channel to the host.
    pub fn channel(&mut self) -> &mut UnixStream {
        &mut self.channel
    }

    /// Takes the channel out (for a worker's transport).
    pub fn into_channel(self) -> UnixStream {
        self.channel
    }

    /// Reads the next frame the host sent (the serialized state to run).
    pub fn read_payload<T: DeserializeOwned>(&mut self) -> io::Result<T> {
        let bytes = crate::ipc::frame::read_frame(&mut self.channel)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "host closed the channel")
        })?;
        wire::decode(&bytes)
    }

    /// Reads the next frame with the descriptors the host attached to it.
    pub(crate) fn read_payload_with_fds<T: DeserializeOwned>(
        &mut self,
    ) -> io::Result<(T, Vec<OwnedFd>)> {
        let (bytes, fds) = crate::ipc::frame::read_frame_with_fds(&self.channel)?;
        Ok((wire::decode(&bytes)?, fds))
    }

    /// A logger whose lines reach the daemon's log (or stderr), tagged with
    /// this child's pid and role. Synchronous: a child has no writer thread
    /// to flush before it exits.
    pub fn logger(&mut self) -> Logger {
        let config = LogConfig {
            file: None,
            console: self.console || self.log.is_none(),
            debug_level: self.debug_level,
            role: self.role.clone(),
            daemon_pid: self.daemon_pid,
            daemon_name: self.daemon.clone(),
        };
        crate::log::child_logger(&config, self.log.take())
    }

    /// The most verbose level this child logs.
    pub fn max_level(&self) -> Level {
        Level::max_for_debug(self.debug_level)
    }
}

static TERMINATION_REQUESTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_termination(_: libc::c_int) {
    TERMINATION_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGTERM and SIGINT request a graceful exit instead of killing the
/// process: blocking reads return `Interrupted`, and the child checks
/// [`termination_requested`] between units of work. (Children must stop
/// promptly on SIGTERM — the PHP original's ignored it for a minute.)
pub fn handle_termination_gracefully() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); no
    // SA_RESTART, so a blocked read returns EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_termination as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = 0;
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// Whether SIGTERM or SIGINT arrived (see [`handle_termination_gracefully`]).
pub fn termination_requested() -> bool {
    TERMINATION_REQUESTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Signals that mean something to the daemon, not to its children: SIGHUP
/// (restart, reopen the log), SIGUSR1 (dump stats), SIGUSR2 and SIGQUIT
/// (delivered to the daemon as events). `pkill -USR1 -f <daemon>` matches the
/// children's titles too, and a terminal sends Ctrl-\'s SIGQUIT to the whole
/// foreground group; at their default action these would kill every worker
/// and task at once, and could fail a pool for good.
pub(crate) const DAEMON_SIGNALS: [i32; 4] =
    [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGQUIT];

extern "C" fn ignore_signal(_: libc::c_int) {}

/// The fork server, and so every child, catches [`DAEMON_SIGNALS`] with a
/// handler that does nothing, rather than ignoring them: a caught signal is
/// reset to its default by `exec`, so a program a worker runs (`sh`,
/// `convert`) starts with normal signal handling, while an ignored one would
/// stay ignored there. System calls interrupted by them restart
/// (SA_RESTART); user code may install handlers of its own.
pub(crate) fn survive_daemon_signals() {
    // SAFETY: the handler does nothing (async-signal-safe).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESTART;
        for sig in DAEMON_SIGNALS {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Sets the kernel's short process name (`ps -e`, `top`): 15 bytes at most.
pub(crate) fn set_comm(name: &str) {
    let buf = comm_bytes(name);
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

fn comm_bytes(name: &str) -> [u8; 16] {
    let mut buf = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    buf[..n].copy_from_slice(&bytes[..n]);
    buf
}

/// A system call of the child's set-up, made through `libc::syscall` only.
/// A fork copies no page-table entries of the program's code (the kernel
/// lets the child fault them in again), so each libc wrapper the child
/// calls first costs a page fault (~5 µs in this VM); the child came back
/// from `clone3` inside `syscall`, whose page is therefore mapped already.
/// A child never outlives the daemon: SIGKILL when its parent (the daemon)
/// dies; if the daemon died already, exit now. Inlined: the set-up runs
/// from code pages already mapped (see `sys`).
#[inline(always)]
fn arm_death_signal(host_pid: i32) {
    // SAFETY: plain prctl.
    unsafe {
        sys(
            libc::SYS_prctl,
            [libc::PR_SET_PDEATHSIG as _, libc::SIGKILL as _, 0],
        )
    };
    // SAFETY: getppid cannot fail.
    if unsafe { sys(libc::SYS_getppid, [0; 3]) } != host_pid as libc::c_long {
        // SAFETY: the daemon died before the death signal was armed.
        unsafe { libc::_exit(71) };
    }
}

/// Five wrappers (`dup3`, `close_range`, `signal`, `prctl`, `getppid`) were
/// five faults before any user code ran.
///
/// # Safety
/// As for the system call `number` with these arguments.
unsafe fn sys(number: libc::c_long, args: [libc::c_long; 3]) -> libc::c_long {
    // SAFETY: the caller's.
    unsafe { libc::syscall(number, args[0], args[1], args[2]) }
}

/// The kernel's `struct sigaction` (x86-64, aarch64: handler, flags,
/// restorer, mask), for `rt_sigaction` through [`sys`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Puts `sig` back to its default action.
fn default_disposition(sig: libc::c_int) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let action = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: a valid kernel sigaction for SIG_DFL (no handler, so no
        // restorer needed); the old action is not asked for. The last
        // argument, the size of the kernel's signal set, is 8.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: restoring a default disposition.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Rewrites the argv area (located once by the fork server; a forked child
/// has the same addresses) so `ps aux` shows `<daemon>: <role>`: the title
/// is written piece by piece, with no string built for it.
fn set_title(pieces: &[&str], arg_area: Option<(usize, usize)>) {
    let Some((start, end)) = arg_area else {
        return;
    };
    if end <= start || end - start > 64 * 1024 {
        return;
    }
    let len = end - start;
    // SAFETY: [arg_start, arg_end) is this process's own argv string area,
    // mapped and writable (it lives on the initial stack); nothing else
    // reads argv after start-up in a forked child.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    let mut n = 0;
    for piece in pieces {
        let take = piece.len().min(len - 1 - n);
        area[n..n + take].copy_from_slice(&piece.as_bytes()[..take]);
        n += take;
    }
    area[n..].fill(0);
}

/// Puts the channel on fd 3 and the log socket (if any) on fd 4, then
/// closes everything else. Allocates nothing: each heap page a child writes
/// is a copy-on-write fault before its user code runs.
fn place_descriptors(channel: OwnedFd, log: Option<OwnedFd>) -> io::Result<()> {
    let mut sources = [
        channel.into_raw_fd(),
        log.map_or(-1, IntoRawFd::into_raw_fd),
    ];
    let count = if sources[1] < 0 { 1 } else { 2 };
    let sources = &mut sources[..count];
    // A source already sitting on an earlier source's target would be
    // clobbered by that source's dup3: move only those out of the way (no
    // system call in the usual case).
    for (j, source) in sources.iter_mut().enumerate() {
        if (CHANNEL_FD..CHANNEL_FD + j as RawFd).contains(source) {
            // SAFETY: duplicating a descriptor we own above every target.
            let high = unsafe {
                sys(
                    libc::SYS_fcntl,
                    [*source as _, libc::F_DUPFD_CLOEXEC as _, 100],
                )
            };
            if high < 0 {
                return Err(io::Error::last_os_error());
            }
            *source = high as RawFd; // the original is overwritten by a dup3 below
        }
    }
    for (i, source) in sources.iter().enumerate() {
        let target = CHANNEL_FD + i as RawFd;
        if *source == target {
            continue; // received with MSG_CMSG_CLOEXEC: already close-on-exec
        }
        // dup3 with O_CLOEXEC, not dup2 (which clears close-on-exec): a
        // program the child execs (`sh`, ImageMagick, `git`) must not inherit
        // a live channel to the pool or the daemon's log socket.
        // SAFETY: dup3 onto a fixed slot; the source is closed below.
        if unsafe {
            sys(
                libc::SYS_dup3,
                [*source as _, target as _, libc::O_CLOEXEC as _],
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let first_free = CHANNEL_FD + count as RawFd;
    // SAFETY: closes every descriptor this child does not own: the fork
    // server's sockets and `/proc/self/stat`, the received originals and
    // staged copies, anything inherited. (Descriptors below `first_free`
    // were all replaced by a dup3 above.)
    unsafe {
        sys(
            libc::SYS_close_range,
            [first_free as _, libc::c_uint::MAX as _, 0],
        )
    };
    Ok(())
}

/// Runs in the freshly cloned child; never returns.
pub(crate) fn run(
    request: SpawnRequest<&str>,
    channel: OwnedFd,
    log: Option<OwnedFd>,
    host_pid: i32,
    arg_area: Option<(usize, usize)>,
    entry: &EntryPoint,
) -> ! {
    // The fork server's own descriptors (and a spare's) are closed by
    // `place_descriptors` (one close_range for all of them).
    if place_descriptors(channel, log).is_err() {
        // SAFETY: exit without running any of the fork server's state.
        unsafe { libc::_exit(71) };
    }
    // The fork server's signal state is known: default dispositions, an
    // empty mask, SIGPIPE ignored (as in any Rust program), SIGINT and
    // SIGTERM ignored (a group signal is the daemon's to handle), and no-op
    // handlers for the daemon's own signals (see `survive_daemon_signals`),
    // which a child keeps. It gets SIGINT and SIGTERM back at their defaults
    // (a worker then installs its graceful handler).
    default_disposition(libc::SIGINT);
    default_disposition(libc::SIGTERM);
    arm_death_signal(host_pid);
    // Title first: tests (and people) wait for comm to change.
    set_title(&[request.daemon, ": ", request.role], arg_area);
    let comm = comm_bytes(request.role);
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
    unsafe {
        sys(
            libc::SYS_prctl,
            [libc::PR_SET_NAME as _, comm.as_ptr() as _, 0],
        )
    };
    // Before any user code, and before the entry point reads anything the
    // daemon sent: a child that cannot give up what it was told to runs
    // nothing.
    if let Some(confinement) = &request.confinement {
        if let Err(why) = super::confine::apply(confinement) {
            let line = format!(
                "{}: {}: cannot confine the child: {why}\n",
                request.daemon, request.role
            );
            // SAFETY: a plain write to stderr (no logger exists yet).
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            // SAFETY: exit without running any of the fork server's state.
            unsafe { libc::_exit(super::confine::EXIT_CONFINE) };
        }
        // A change of user or group clears the death signal (the kernel
        // does, for any change of credentials): armed again.
        arm_death_signal(host_pid);
    }
    // SAFETY: fd 3 is the channel placed above; we own it from here.
    let channel = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    let log = request.has_log.then(|| {
        // SAFETY: fd 4 is the log socket placed above.
        unsafe { OwnedFd::from_raw_fd(LOG_FD) }
    });
    let start = ChildStart {
        channel,
        log,
        role: request.role.to_string(),
        daemon: request.daemon.to_string(),
        daemon_pid: request.daemon_pid,
        debug_level: request.debug_level,
        console: request.console,
    };
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (entry.run)(start)))
        .unwrap_or(101);
    // SAFETY: _exit skips atexit handlers and destructors that belong to the
    // fork server's image.
    unsafe { libc::_exit(code) }
}
