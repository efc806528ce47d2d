//! Descriptors that travel with frames on a stream link (a large payload's
//! memfd, see `shm.rs`).
//!
//! A frame that carries a descriptor says so in its header (see
//! [`frame::header_with_fd`](super::frame::header_with_fd)) and is sent
//! with one `sendmsg` whose first byte is the frame's first byte, the
//! descriptor attached (SCM_RIGHTS). On a stream socket the kernel hands
//! the descriptor to the read that returns that byte, and ends that read
//! within the message it came with: descriptors of two messages never
//! arrive in one read. So the receiver knows, for each descriptor, the span
//! of the stream its read returned, and the frame that owns it is the one
//! that starts within that span. Anything else is a broken link: a
//! descriptor no frame claims, two at once, a frame that announces one and
//! finds none.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Descriptors a receiver holds before the frames that own them are whole;
/// more means a peer that sends descriptors without frames.
const MAX_WAITING: usize = 64;

/// Room for the control message of one read: a few descriptors, so that a
/// peer sending more is seen (and refused) rather than silently cut.
const CONTROL_FDS: usize = 8;

fn broken(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Descriptors received, each with the span of the stream (byte offsets
/// since the link began) of the read that brought it.
#[derive(Debug, Default)]
pub(crate) struct FdQueue {
    waiting: VecDeque<(u64, u64, OwnedFd)>,
}

impl FdQueue {
    /// A read returned stream bytes `start..end` with `fds` attached.
    pub(crate) fn arrived(
        &mut self,
        start: u64,
        end: u64,
        mut fds: Vec<OwnedFd>,
    ) -> io::Result<()> {
        if fds.len() > 1 {
            return Err(broken(format!(
                "{} descriptors arrived with one message (at most 1)",
                fds.len()
            )));
        }
        let Some(fd) = fds.pop() else {
            return Ok(());
        };
        if start >= end {
            return Err(broken("a descriptor arrived without data".into()));
        }
        if self.waiting.len() >= MAX_WAITING {
            return Err(broken(format!(
                "more than {MAX_WAITING} descriptors arrived without their frames"
            )));
        }
        self.waiting.push_back((start, end, fd));
        Ok(())
    }

    /// The descriptor of the frame starting at stream offset `at`, which
    /// announced one.
    pub(crate) fn claim(&mut self, at: u64) -> io::Result<OwnedFd> {
        self.check(at)?;
        let (_, _, fd) = self
            .waiting
            .pop_front()
            .ok_or_else(|| broken("no descriptor".into()))?;
        Ok(fd)
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

/// One `sendmsg` of (a prefix of) `bytes` on `sock`, with `fd` attached if
/// given: how many bytes left. Never raises SIGPIPE.
pub(crate) fn send_part(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw = fd.map(|fd| [fd.as_raw_fd()]);
    let cmsg: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|raw| ControlMessage::ScmRights(raw))
        .into_iter()
        .collect();
    let iov = [io::IoSlice::new(bytes)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
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
    fn two_descriptors_at_once_or_too_many_waiting_break_the_link() {
        let mut q = FdQueue::default();
        assert!(q.arrived(0, 10, vec![fd(), fd()]).is_err());
        assert!(q.arrived(0, 0, vec![fd()]).is_err());
        let mut q = FdQueue::default();
        for i in 0..MAX_WAITING as u64 {
            q.arrived(i, i + 1, vec![fd()]).unwrap();
        }
        assert!(q.arrived(100, 101, vec![fd()]).is_err());
    }

    #[test]
    fn descriptors_cross_a_socket_with_their_bytes() {
        use std::os::fd::AsFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = fd();
        assert_eq!(send_part(a.as_fd(), b"plain", None).unwrap(), 5);
        assert_eq!(
            send_part(a.as_fd(), b"with", Some(file.as_fd())).unwrap(),
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
        // Too many at once: refused, and none leaks.
        let many: Vec<RawFd> = (0..CONTROL_FDS * 4).map(|_| file.as_raw_fd()).collect();
        crate::process::wire::send_message(a.as_fd(), b"x", &many).unwrap();
        let mut buf = Vec::with_capacity(64);
        assert!(recv_into(b.as_fd(), &mut buf).is_err());
    }
}
