//! A child's side of the log socket: each line goes to the daemon as one or
//! more datagrams (see [`datagram`](super::datagram)), without ever blocking
//! the child on a slow log sink.
//!
//! Sends are non-blocking. When the socket is full (the daemon's receiving
//! thread is behind), the child waits for room once, briefly, and then drops
//! the line and counts it; the count travels in the next datagram that gets
//! through, and the daemon reports it (`status`, a warning line). After a
//! drop it does not wait again until a send succeeds, so a stalled daemon
//! costs a logging child at most one short wait.

use super::datagram;
use parking_lot::Mutex;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// How long a child waits for room in a full log socket before it drops a
/// line.
const ROOM_WAIT: Duration = Duration::from_millis(50);

/// What became of a line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    Delivered,
    /// The socket stayed full: dropped and counted.
    Dropped,
    /// The daemon is gone (or the socket broke): the caller falls back to
    /// stderr.
    Failed,
}

pub(super) struct ChildSender {
    fd: OwnedFd,
    role: String,
    /// Lines dropped since the last datagram that got through.
    dropped: AtomicU32,
    /// The last send found the socket full: do not wait for room again
    /// until one succeeds.
    congested: AtomicBool,
    buf: Mutex<Vec<u8>>,
}

impl ChildSender {
    pub(super) fn new(fd: OwnedFd, role: &str) -> Self {
        Self {
            fd,
            role: datagram::truncate(role, datagram::MAX_ROLE).to_string(),
            dropped: AtomicU32::new(0),
            congested: AtomicBool::new(false),
            buf: Mutex::new(Vec::with_capacity(256)),
        }
    }

    /// Sends one line's text (`LEVEL message k=v`, no newline), in parts if
    /// it is long.
    pub(super) fn send_line(&self, text: &str) -> Sent {
        let mut buf = self.buf.lock();
        let mut parts = datagram::parts(text).peekable();
        while let Some(part) = parts.next() {
            let pending = self.dropped.load(Ordering::Relaxed);
            datagram::encode(&self.role, pending, parts.peek().is_some(), part, &mut buf);
            match self.send(&buf) {
                Sent::Delivered => {
                    self.dropped.fetch_sub(pending, Ordering::Relaxed);
                }
                Sent::Dropped => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return Sent::Dropped;
                }
                Sent::Failed => return Sent::Failed,
            }
        }
        Sent::Delivered
    }

    fn send(&self, bytes: &[u8]) -> Sent {
        use nix::errno::Errno;
        use nix::sys::socket::MsgFlags;
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let mut waited = self.congested.load(Ordering::Relaxed);
        loop {
            match nix::sys::socket::send(self.fd.as_raw_fd(), bytes, flags) {
                Ok(_) => {
                    self.congested.store(false, Ordering::Relaxed);
                    return Sent::Delivered;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if !waited => {
                    waited = true;
                    self.wait_for_room();
                }
                Err(Errno::EAGAIN) => {
                    self.congested.store(true, Ordering::Relaxed);
                    return Sent::Dropped;
                }
                Err(_) => return Sent::Failed,
            }
        }
    }

    fn wait_for_room(&self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let timeout = PollTimeout::try_from(ROOM_WAIT).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
        let _ = poll(&mut fds, timeout);
    }
}
