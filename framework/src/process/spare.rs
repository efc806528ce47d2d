//! The warm spare: a child the fork server forks *before* a request comes,
//! so that a spawn hands the request to a process that already exists and
//! the `clone3` of the next one happens after the reply, off the spawn's
//! latency (BENCHMARKS.md "Process layer").
//!
//! A spare is forked like any child (`CLONE_PARENT`): it is the daemon's
//! own child from the start, so once it becomes the task the daemon reaps
//! it through its pidfd and sees its exit status, exactly as for a child
//! forked on demand. (It cannot be the fork server's child: a process
//! cannot change parents, and the daemon could not wait for it.) While it
//! waits it holds only two descriptors: its end of a socket pair with the
//! fork server, which brings it one request, and the generation's *spare
//! socket* to the daemon's service thread. It shows as `fork-spare` (comm)
//! and `<daemon>: fork-spare` (title) in `ps`. It is forked only when
//! requests come apart (`Pace` in `server.rs`); back-to-back spawns are
//! forked on demand.
//!
//! It never outlives what it belongs to:
//! - the daemon (the service thread, its parent) dies: the same
//!   `PR_SET_PDEATHSIG` as every child kills it;
//! - the fork server dies or is stopped for good: its socket pair reaches
//!   end of stream, and a spare that got no request sends its own pidfd on
//!   the spare socket and exits; the service thread reaps it (a request
//!   already queued is read before the end of stream, so a spare that was
//!   handed a task always runs it, and one that was not never does);
//! - the spare is killed while the fork server lives: the fork server sees
//!   its socket hang up and sends the dead spare's pidfd on the spare
//!   socket for the service thread to reap;
//! - `ForkServer::shutdown` (before an in-place restart or a privilege
//!   drop) kills the fork server and waits until its spare has left and
//!   been reaped.
//!
//! The service thread knows that a generation has no spare left when every
//! copy of the spare socket's other end is closed (end of stream): the fork
//! server, its spare, and children between their fork and their
//! `close_range`, hold one. And it hears of every spare at its birth (the
//! fork server sends its pidfd) and when it is handed a request (from then
//! on it is a task, the host's to reap): a spare that died with nobody left
//! to report it (killed while its fork server was stopped, then the fork
//! server killed) is reaped at the generation's end of stream all the same.

use super::child;
use super::lean::Threads;
use super::wire::{self, SpawnRequest};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// The kernel's short name of a waiting spare (`ps -e`, `/proc/PID/comm`).
pub(crate) const SPARE_COMM: &str = "fork-spare";

/// A spare as the fork server holds it.
pub(super) struct Spare {
    pub pid: i32,
    pub pidfd: OwnedFd,
    sock: OwnedFd,
}

/// What the fork server's spare needs that is not the request.
pub(super) struct Forking<'a> {
    pub threads: &'a Threads,
    pub scratch: &'a super::lean::Scratch,
    pub host_pid: i32,
    pub arg_area: Option<(usize, usize)>,
    /// The generation's spare socket (the fork server's copy).
    pub spares: BorrowedFd<'a>,
    /// The level the `log` bridges are prepared for.
    pub prepared_level: u8,
}

impl Spare {
    /// Forks a spare, after the single-thread check that precedes every
    /// fork. `None` if it cannot (the next request is forked on demand).
    pub(super) fn fork(ctx: &Forking<'_>, buf: &mut [u8]) -> Option<Spare> {
        if !matches!(ctx.threads.count(), Ok(1)) {
            return None;
        }
        let (ours, theirs) = seqpacket_pair().ok()?;
        match super::server::clone_into_host(ctx.scratch) {
            Ok(super::server::Cloned::Child) => {
                drop(ours);
                wait_for_request(theirs, ctx, buf)
            }
            Ok(super::server::Cloned::Parent { pid, pidfd }) => {
                // Before anything else: the spare may die unreported.
                let _ = send_note(ctx.spares, Note::Born, pid, None);
                Some(Spare {
                    pid,
                    pidfd,
                    sock: ours,
                })
            }
            Err(_) => None,
        }
    }

    /// Hands the request (its bytes, its channel and log socket) to the
    /// spare: from here it is the task, the host's to reap (the service
    /// thread is told first). `Err(self)` if the spare is gone.
    pub(super) fn hand(
        self,
        spares: BorrowedFd<'_>,
        request: &[u8],
        fds: &[RawFd],
    ) -> Result<(i32, OwnedFd), Spare> {
        let _ = send_note(spares, Note::Handed, self.pid, None);
        match wire::send_message(self.sock.as_fd(), request, fds) {
            Ok(()) => Ok((self.pid, self.pidfd)),
            Err(_) => Err(self),
        }
    }

    /// The spare's socket: readable (hang-up) once the spare is dead.
    pub(super) fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// A spare that died a spare (killed from outside): its pidfd goes to
    /// the service thread, which reaps it.
    pub(super) fn report_dead(self, spares: BorrowedFd<'_>) {
        let _ = send_note(spares, Note::Left, self.pid, Some(self.pidfd.as_raw_fd()));
    }
}

/// A close-on-exec SOCK_SEQPACKET socket pair.
pub(super) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// What a message on the spare socket says about a spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Note {
    /// Forked: to reap if it ends a spare. (A pid alone: the spare is the
    /// daemon's own unreaped child, so its pid stays its own until the
    /// daemon reaps it, and the daemon holds no descriptor per spare.)
    Born,
    /// Handed a request: a task now, reaped by the host.
    Handed,
    /// Gone, or leaving without a request (its pidfd attached): to reap.
    Left,
}

impl Note {
    fn tag(self) -> u8 {
        match self {
            Note::Born => b'B',
            Note::Handed => b'H',
            Note::Left => b'L',
        }
    }
}

/// One message on the spare socket: a tag, a spare's pid, and its pidfd
/// attached when the note takes one.
fn send_note(spares: BorrowedFd<'_>, note: Note, pid: i32, pidfd: Option<RawFd>) -> io::Result<()> {
    let mut bytes = [0u8; 5];
    bytes[0] = note.tag();
    bytes[1..].copy_from_slice(&pid.to_le_bytes());
    match pidfd {
        Some(pidfd) => wire::send_message(spares, &bytes, &[pidfd]),
        None => wire::send_message(spares, &bytes, &[]),
    }
}

/// A note and its spare's pid, from a message of the spare socket.
pub(super) fn read_note(bytes: &[u8]) -> Option<(Note, i32)> {
    let (&tag, pid) = bytes.split_first()?;
    let note = [Note::Born, Note::Handed, Note::Left]
        .into_iter()
        .find(|n| n.tag() == tag)?;
    Some((note, i32::from_le_bytes(pid.try_into().ok()?)))
}

/// Exit code of a spare that leaves without a request.
const EXIT_UNUSED: i32 = 0;
/// Exit code of a spare whose request was unusable (the fork server checked
/// it before handing it over, so this is a bug).
const EXIT_BAD_REQUEST: i32 = 71;

/// The spare's life, in the freshly forked child: wait for one request,
/// become its task. Never returns.
fn wait_for_request(sock: OwnedFd, ctx: &Forking<'_>, buf: &mut [u8]) -> ! {
    let spares = ctx.spares.as_raw_fd();
    keep_only(&[Some(sock.as_raw_fd()), Some(spares)]);
    // Title first: tests (and people) wait for comm to change.
    retitle(ctx.arg_area);
    child::set_comm(SPARE_COMM);
    // SAFETY: plain prctl; the parent is the daemon's service thread, as for
    // every child, so this is the death signal a task has too.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid().as_raw() != ctx.host_pid {
        // SAFETY: the daemon died before the death signal was armed.
        unsafe { libc::_exit(EXIT_UNUSED) };
    }
    let received = wire::recv_into(sock.as_fd(), buf);
    let mut received = match received {
        Ok(Some(received)) => received,
        // A request whose descriptors could not all be installed (the
        // fork server may have answered the host already): a task that
        // cannot run, reaped by whoever was told of it.
        // SAFETY: exit without running any of the fork server's state.
        Err(_) => unsafe { libc::_exit(EXIT_BAD_REQUEST) },
        // The fork server is gone: leave, and let the service thread reap
        // us.
        Ok(None) => {
            // SAFETY: a pidfd for ourselves, to pass on; plain syscall.
            let me = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
            // SAFETY: getpid cannot fail.
            let pid = unsafe { libc::getpid() };
            // SAFETY: borrowing the spare socket we kept above.
            let spares = unsafe { BorrowedFd::borrow_raw(spares) };
            let _ = send_note(spares, Note::Left, pid, Some(me as RawFd));
            // SAFETY: exit without running any of the fork server's state.
            unsafe { libc::_exit(EXIT_UNUSED) }
        }
    };
    drop(sock);
    let request = match wire::decode_borrowed::<SpawnRequest<&str>>(&buf[..received.len]) {
        Ok(request) => request,
        // SAFETY: as above.
        Err(_) => unsafe { libc::_exit(EXIT_BAD_REQUEST) },
    };
    let (Some(entry), Some(channel)) = (super::find_entry(request.entry), received.take(0)) else {
        // SAFETY: as above.
        unsafe { libc::_exit(EXIT_BAD_REQUEST) }
    };
    let log = received.take(1);
    if request.debug_level != ctx.prepared_level {
        crate::log::prepare_bridges_for_children(request.debug_level);
    }
    // The spare socket closes in `place_descriptors`, with everything else
    // that is not the channel or the log socket.
    child::run(request, channel, log, ctx.host_pid, ctx.arg_area, entry)
}

/// The fork server's title, `<daemon>: fork-server`, becomes `<daemon>:
/// fork-spare` in the spare's argv area (`ps aux`): a spare must not pass
/// for a second fork server.
fn retitle(arg_area: Option<(usize, usize)>) {
    let Some((start, end)) = arg_area else { return };
    if end <= start || end - start > 64 * 1024 {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's own argv string area,
    // mapped and writable (see `child::set_title`).
    retitle_in(unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) });
}

/// Rewrites `<daemon>: fork-server` (the area's first string) as
/// `<daemon>: fork-spare`, zeroing the rest; any other title is left alone.
fn retitle_in(area: &mut [u8]) {
    let len = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let suffix = b": fork-server";
    if !area[..len].ends_with(suffix) {
        return;
    }
    let at = len - suffix.len() + 2;
    let role = SPARE_COMM.as_bytes();
    let stop = (at + role.len()).min(area.len());
    area[at..stop].copy_from_slice(&role[..stop - at]);
    area[stop..].fill(0);
}

/// Closes every descriptor from 3 up but those in `keep`.
pub(super) fn keep_only(keep: &[Option<RawFd>; 2]) {
    let mut keep = keep.map(|fd| fd.unwrap_or(-1));
    keep.sort_unstable();
    let mut from: RawFd = 3;
    for fd in keep {
        if fd > from {
            // SAFETY: closing descriptors this fresh process does not use.
            unsafe { libc::close_range(from as libc::c_uint, (fd - 1) as libc::c_uint, 0) };
        }
        from = from.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::close_range(from as libc::c_uint, libc::c_uint::MAX, 0) };
}

/// Spares to reap: `(pid, pidfd)`.
pub(super) type Found = Vec<(i32, OwnedFd)>;

/// The spares of one generation, as its spare socket tells of them.
#[derive(Default)]
pub(super) struct Ledger {
    /// Born and not handed a request yet: the service thread's to reap if
    /// they end as spares.
    waiting: Vec<i32>,
}

impl Ledger {
    /// Reads every message waiting on the service thread's end of a spare
    /// socket: `(pid, pidfd)` of spares to reap. `Err` (with the last ones,
    /// and every spare born and never handed a request, killed) once no
    /// process holds the other end any more: no spare of that generation
    /// is left, and none it forked can still be waiting.
    pub(super) fn drain(&mut self, spares: &OwnedFd) -> Result<Found, Found> {
        let mut found = Vec::new();
        loop {
            match wire::recv_message(spares.as_fd()) {
                Ok(Some((bytes, mut fds))) => {
                    let pidfd = fds.pop().filter(|_| fds.is_empty());
                    match (read_note(&bytes), pidfd) {
                        (Some((Note::Born, pid)), None) => self.waiting.push(pid),
                        (Some((Note::Handed, pid)), _) => self.waiting.retain(|p| *p != pid),
                        (Some((Note::Left, pid)), Some(pidfd)) => {
                            self.waiting.retain(|p| *p != pid);
                            found.push((pid, pidfd));
                        }
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(found),
                // End of stream; or a broken socket, which tells us nothing
                // more.
                Ok(None) | Err(_) => {
                    for pid in self.waiting.drain(..) {
                        // Our child, unreaped: the pid is still its own.
                        let Ok(pidfd) = super::reap::pidfd_open(pid) else {
                            continue;
                        };
                        // Dead already, most likely (it held the socket
                        // while it waited); killed in case it is not.
                        // SAFETY: a signal through a pidfd we hold.
                        unsafe {
                            libc::syscall(
                                libc::SYS_pidfd_send_signal,
                                pidfd.as_raw_fd(),
                                libc::SIGKILL,
                                std::ptr::null::<libc::siginfo_t>(),
                                0,
                            )
                        };
                        found.push((pid, pidfd));
                    }
                    return Err(found);
                }
            }
        }
    }
}

/// Whether spawn requests come apart, so that a spare forked after one is
/// likely to be ready before the next: the gap before the last request was
/// at least [`Pace::APART`] (or none came yet). Back-to-back spawns (a
/// burst, a loop) get no spare: each would be forked while the last task
/// wants the CPU and handed a request at once, a round trip more for
/// nothing (BENCHMARKS.md "Process layer"). A clock read per request, no
/// timer: arming one per request cost 14% of the tasks per second here.
#[derive(Default)]
pub(super) struct Pace {
    last: Option<std::time::Instant>,
    apart: bool,
}

impl Pace {
    const APART: Duration = Duration::from_micros(500);

    pub(super) fn arrived(&mut self, now: std::time::Instant) {
        self.apart = match self.last {
            Some(last) => now.saturating_duration_since(last) >= Self::APART,
            None => true,
        };
        self.last = Some(now);
    }

    pub(super) fn sporadic(&self) -> bool {
        self.last.is_none() || self.apart
    }
}

/// Whether no request is queued on `sock` (a poll that does not wait).
pub(super) fn no_request_waiting(sock: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll on one live descriptor, into our own array.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) == 0 }
}

/// What woke the fork server while it keeps a spare.
pub(super) enum Work {
    Request,
    SpareDied,
    Interrupted,
}

/// Waits for a request on `sock`, or for the spare's socket to hang up (it
/// was killed: it must be reaped and replaced).
pub(super) fn wait_for_work(sock: BorrowedFd<'_>, spare: BorrowedFd<'_>) -> Work {
    let mut fds = [
        libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: spare.as_raw_fd(),
            events: 0,
            revents: 0,
        },
    ];
    // SAFETY: poll on two live descriptors, into our own array.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
    if n < 0 {
        return Work::Interrupted;
    }
    if fds[1].revents != 0 {
        Work::SpareDied
    } else {
        Work::Request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_title_names_the_spare() {
        let mut area = *b"mydaemon: fork-server\0    padding   ";
        retitle_in(&mut area);
        assert!(area.starts_with(b"mydaemon: fork-spare\0"));
        assert!(area[20..].iter().all(|&b| b == 0));
        let mut other = *b"mydaemon: worker:x\0";
        retitle_in(&mut other);
        assert_eq!(&other, b"mydaemon: worker:x\0");
    }

    #[test]
    fn notes_carry_what_and_a_pid() {
        let (a, b) = seqpacket_pair().unwrap();
        let me = std::fs::File::open("/").unwrap();
        for (note, fd) in [
            (Note::Born, None),
            (Note::Handed, None),
            (Note::Left, Some(me.as_raw_fd())),
        ] {
            send_note(a.as_fd(), note, 42, fd).unwrap();
            let (bytes, fds) = wire::recv_message(b.as_fd()).unwrap().unwrap();
            assert_eq!(read_note(&bytes), Some((note, 42)));
            assert_eq!(fds.len(), usize::from(fd.is_some()));
        }
        assert_eq!(read_note(b"xy"), None);
        assert_eq!(read_note(b"Z\x2a\0\0\0"), None);
    }

    #[test]
    fn a_spare_is_forked_only_when_requests_come_apart() {
        let mut pace = Pace::default();
        assert!(pace.sporadic(), "before any request");
        let t0 = Instant::now();
        pace.arrived(t0);
        assert!(pace.sporadic(), "the first request");
        pace.arrived(t0 + Duration::from_micros(100));
        assert!(!pace.sporadic(), "back to back");
        pace.arrived(t0 + Duration::from_micros(700));
        assert!(pace.sporadic(), "apart again");
        pace.arrived(t0 + Duration::from_micros(700));
        assert!(!pace.sporadic());
    }
}
