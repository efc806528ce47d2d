//! Descriptors that travel with frames on a stream link (a large payload's
//! memfd and the memfds of [`SharedBytes`](super::shared_bytes::SharedBytes)
//! values, see `shm.rs`).
//!
//! A frame that carries descriptors says so in its header (see
//! [`frame::header_with_fd`](super::frame::header_with_fd)) and is sent
//! with one `sendmsg` whose first byte is the frame's first byte, its
//! descriptors attached (SCM_RIGHTS, at most [`MAX_FDS`]). On a stream
//! socket the kernel hands them to the read that returns that byte, and
//! ends that read within the message they came with: descriptors of two
//! messages never arrive in one read. So the receiver knows, for each
//! message's descriptors, the span of the stream its read returned, and the
//! frame that owns them is the one that starts within that span. Anything
//! else is a broken link: descriptors no frame claims, more than a frame
//! may carry, a frame that announces some and finds none.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Messages with descriptors a receiver holds before the frames that own
/// them are whole; more means a peer that sends descriptors without frames.
const MAX_WAITING: usize = 64;

/// Descriptors a receiver holds before the frames that own them are whole.
/// Frames are taken after every read, so a well-behaved peer has those of
/// the frame being read waiting, and perhaps the next one's: more is a peer
/// hoarding the receiver's descriptors (each message may carry
/// [`MAX_FDS`]).
const MAX_WAITING_FDS: usize = 2 * MAX_FDS;

/// Most descriptors one frame carries: a large payload's memfd and up to
/// 32 [`SharedBytes`](super::shared_bytes::SharedBytes) memfds.
pub(crate) const MAX_FDS: usize = 33;

/// Room for the control message of one read: one descriptor more than a
/// frame may carry, so that a peer sending more is seen (and refused)
/// rather than silently cut. Even, for the control buffer's size below.
const CONTROL_FDS: usize = MAX_FDS + 1;
const _: () = assert!(CONTROL_FDS % 2 == 0);

fn broken(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Descriptors received, each message's with the span of the stream (byte
/// offsets since the link began) of the read that brought them.
#[derive(Debug, Default)]
pub(crate) struct FdQueue {
    waiting: VecDeque<(u64, u64, Vec<OwnedFd>)>,
}

impl FdQueue {
    /// A read returned stream bytes `start..end` with `fds` attached.
    pub(crate) fn arrived(&mut self, start: u64, end: u64, fds: Vec<OwnedFd>) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(broken(format!(
                "{} descriptors arrived with one message (at most {MAX_FDS})",
                fds.len()
            )));
        }
        if fds.is_empty() {
            return Ok(());
        }
        if start >= end {
            return Err(broken("a descriptor arrived without data".into()));
        }
        let held: usize = self.waiting.iter().map(|(_, _, fds)| fds.len()).sum();
        if self.waiting.len() >= MAX_WAITING || held + fds.len() > MAX_WAITING_FDS {
            return Err(broken(format!(
                "more than {MAX_WAITING_FDS} descriptors, or {MAX_WAITING} messages with some, \
                 arrived ahead of their frames"
            )));
        }
        self.waiting.push_back((start, end, fds));
        Ok(())
    }

    /// The descriptors of the frame starting at stream offset `at`, which
    /// announced some (at least one, in the order they were sent).
    pub(crate) fn claim(&mut self, at: u64) -> io::Result<Vec<OwnedFd>> {
        self.check(at)?;
        let (_, _, fds) = self
            .waiting
            .pop_front()
            .ok_or_else(|| broken("no descriptor".into()))?;
        Ok(fds)
    }

    /// The frame starting at stream offset `at` announced a descriptor: it
    /// is waiting (it came with the frame's first byte).
    pub(crate) fn check(&self, at: u64) -> io::Result<()> {
        self.stale(at)?;
        match self.waiting.front() {
            Some(&(start, end, _)) if start <= at && at < end => Ok(()),
            _ => Err(broken(format!(
                "the frame at stream offset {at} announced a descriptor that did not come with it"
            ))),
        }
    }

    /// Every frame starting before `at` has been taken: a descriptor that
    /// arrived with bytes before `at` and was not claimed is one no frame
    /// announced.
    pub(crate) fn stale(&self, at: u64) -> io::Result<()> {
        match self.waiting.front() {
            Some(&(start, end, _)) if end <= at => Err(broken(format!(
                "a descriptor arrived with stream bytes {start}..{end}, which no frame announced"
            ))),
            _ => Ok(()),
        }
    }
}

/// One `recvmsg` on `fd` appending to `buf` (into its spare capacity): the bytes read, and the descriptors that came with
/// them (close-on-exec). A control message cut short is an error (the
/// kernel closed what did not fit).
pub(crate) fn recv_into(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for the header and CONTROL_FDS descriptors, in u64s (aligned
    // for cmsghdr): CMSG_SPACE(CONTROL_FDS * 4).
    let mut control = [0u64; 2 + CONTROL_FDS / 2];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg writes at most iov_len bytes into the spare capacity
    // and at most msg_controllen bytes of control data.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote, within
    // msg_controllen, with the libc macros made for it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // The kernel just installed it for us.
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(broken(
            "more descriptors arrived with one message than any frame carries".into(),
        ));
    }
    Ok((n, fds))
}

/// One `sendmsg` of (a prefix of) `bytes` on `sock`, with `fds` attached
/// (none: a plain write): how many bytes left. Never raises SIGPIPE.
pub(crate) fn send_part(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut raw = [0 as RawFd; MAX_FDS];
    let Some(raw) = raw.get_mut(..fds.len()) else {
        return Err(broken(format!(
            "{} descriptors for one frame (at most {MAX_FDS})",
            fds.len()
        )));
    };
    for (raw, fd) in raw.iter_mut().zip(fds) {
        *raw = fd.as_raw_fd();
    }
    let rights = [ControlMessage::ScmRights(raw)];
    let cmsg: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let iov = [io::IoSlice::new(bytes)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/").unwrap().into()
    }

    #[test]
    fn a_descriptor_belongs_to_the_frame_starting_in_its_read() {
        let mut q = FdQueue::default();
        // One read returned a plain frame at 0..10, then the first bytes of
        // a frame at 10 that carries the descriptor.
        q.arrived(0, 30, vec![fd()]).unwrap();
        q.stale(10).unwrap();
        q.claim(10).unwrap();
        q.stale(200).unwrap();
    }

    #[test]
    fn a_descriptor_no_frame_claims_breaks_the_link() {
        let mut q = FdQueue::default();
        q.arrived(0, 30, vec![fd()]).unwrap();
        // The frame that starts in 0..30 did not announce it; the next
        // frame starts at 40.
        assert!(q.stale(40).is_err());
        assert!(q.claim(40).is_err());
    }

    #[test]
    fn a_frame_whose_descriptor_is_missing_breaks_the_link() {
        let mut q = FdQueue::default();
        assert!(q.claim(0).is_err());
        // One that came later, with bytes after the frame's start.
        q.arrived(50, 60, vec![fd()]).unwrap();
        assert!(q.claim(10).is_err());
    }

    #[test]
    fn too_many_descriptors_at_once_or_too_many_waiting_break_the_link() {
        let mut q = FdQueue::default();
        q.arrived(0, 10, vec![fd(), fd()]).unwrap();
        assert_eq!(q.claim(0).unwrap().len(), 2);
        let over: Vec<OwnedFd> = (0..=MAX_FDS).map(|_| fd()).collect();
        assert!(q.arrived(10, 20, over).is_err());
        assert!(q.arrived(0, 0, vec![fd()]).is_err());
        let mut q = FdQueue::default();
        for i in 0..MAX_WAITING as u64 {
            q.arrived(i, i + 1, vec![fd()]).unwrap();
        }
        assert!(q.arrived(100, 101, vec![fd()]).is_err());
        // Two frames' worth of descriptors may wait; a third message's not:
        // a peer cannot make the receiver hold its descriptors by the
        // thousand behind a frame that never completes.
        let mut q = FdQueue::default();
        let full = || (0..MAX_FDS).map(|_| fd()).collect::<Vec<_>>();
        q.arrived(0, 1, full()).unwrap();
        q.arrived(1, 2, full()).unwrap();
        assert!(q.arrived(2, 3, vec![fd()]).is_err());
    }

    #[test]
    fn descriptors_cross_a_socket_with_their_bytes() {
        use std::os::fd::AsFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = fd();
        assert_eq!(send_part(a.as_fd(), b"plain", &[]).unwrap(), 5);
        assert_eq!(
            send_part(a.as_fd(), b"with", std::slice::from_ref(&file)).unwrap(),
            4
        );
        let mut buf = Vec::with_capacity(64);
        let mut got = Vec::new();
        while buf.len() < 9 {
            let (_, fds) = recv_into(b.as_fd(), &mut buf).unwrap();
            got.extend(fds);
        }
        assert_eq!(buf, b"plainwith");
        assert_eq!(got.len(), 1);
        // As many as a frame carries, in one message, in order.
        let all: Vec<OwnedFd> = (0..MAX_FDS).map(|_| fd()).collect();
        assert_eq!(send_part(a.as_fd(), b"m", &all).unwrap(), 1);
        let mut buf = Vec::with_capacity(64);
        let (_, fds) = recv_into(b.as_fd(), &mut buf).unwrap();
        assert_eq!(fds.len(), MAX_FDS);
        let over: Vec<OwnedFd> = (0..=MAX_FDS).map(|_| fd()).collect();
        assert!(send_part(a.as_fd(), b"m", &over).is_err());
        // Too many at once: refused, and none leaks.
        let many: Vec<RawFd> = (0..CONTROL_FDS * 4).map(|_| file.as_raw_fd()).collect();
        crate::process::wire::send_message(a.as_fd(), b"x", &many).unwrap();
        let mut buf = Vec::with_capacity(64);
        assert!(recv_into(b.as_fd(), &mut buf).is_err());
    }
}
