//! Messages of the fork server's control and reply sockets (SOCK_SEQPACKET:
//! one message per request or reply, descriptors passed with SCM_RIGHTS).
//! Stream channels use the one frame format of `ipc/frame.rs`.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest control message (requests carry names, never payloads).
pub(crate) const MAX_CONTROL: usize = 16 * 1024;

/// First message of a fork server, proving it was started by us.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub cookie: u128,
    pub pid: i32,
}

/// What the host asks the fork server to start. The fork server decodes a
/// `SpawnRequest<&str>` that borrows from its receive buffer: no allocation
/// in its loop (see `server.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpawnRequest<S = String> {
    /// Registered entry point name.
    pub entry: S,
    /// Role shown in logs and the process title (`task:send_email`).
    pub role: S,
    /// Daemon name, for the process title.
    pub daemon: S,
    /// Pid of the daemon's main process, printed in the child's log lines.
    pub daemon_pid: i32,
    /// `--debug` level of the daemon.
    pub debug_level: u8,
    /// Whether the child also writes its log lines to stderr.
    pub console: bool,
    /// Whether a log socket follows the channel and reply socket in the
    /// passed descriptors.
    pub has_log: bool,
    /// What the child gives up before its entry point runs.
    pub confinement: Option<crate::process::Confinement>,
    /// A fault the fork server injects while serving this request (tests).
    #[cfg(feature = "testing")]
    pub fault: Option<crate::process::testing::Fault>,
}

/// Sent on the request's own reply socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SpawnReply {
    /// Started; the pidfd is attached.
    Started { pid: i32 },
    /// Refused or failed.
    Failed { error: String },
}

pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Deepest nesting a message may have (they nest a few levels; see
/// `worker/protocol.rs` for why hostile nesting is cut short).
const MAX_DEPTH: usize = 16;

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> io::Result<T> {
    decode_borrowed(bytes)
}

/// [`decode`] into a value that may borrow strings from `bytes`.
pub(crate) fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> io::Result<T> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// [`encode`] into a caller's buffer; the encoded length, or an error if it
/// does not fit. Allocates nothing (the fork server's replies).
pub(crate) fn encode_into<T: Serialize>(value: &T, buf: &mut [u8]) -> io::Result<usize> {
    let mut cursor = io::Cursor::new(buf);
    rmp_serde::encode::write_named(&mut cursor, value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(cursor.position() as usize)
}

/// Most descriptors any message carries.
pub(crate) const MAX_FDS: usize = 4;

/// Room for as many descriptors as the kernel passes with one message
/// (`SCM_MAX_FD`). With less, a message carrying more is truncated, and nix
/// refuses to walk a truncated control buffer: the descriptors that did
/// arrive would be installed in this process and never closed.
const SCM_MAX_FD: usize = 253;

/// One `recvmsg` into `buf`: the bytes read, the flags, and every
/// descriptor that came with them (close-on-exec, owned: closed on drop).
/// More than [`MAX_FDS`] descriptors is an error (they are closed).
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, MsgFlags, Vec<OwnedFd>)> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} descriptors with a message (at most {MAX_FDS})",
                    fds.len()
                ),
            ));
        }
        return Ok((msg.bytes, msg.flags, fds));
    }
}

/// A control-message buffer on the stack, aligned for `cmsghdr`: room for
/// one `SCM_RIGHTS` message of up to [`STACK_FDS`] descriptors.
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BYTES]);

/// Descriptors that fit in a [`CmsgBuf`]: more than any message of ours.
const STACK_FDS: usize = 12;
/// `CMSG_SPACE(STACK_FDS * 4)` on 64-bit Linux (a 16-byte header).
const CMSG_BYTES: usize = 16 + STACK_FDS * 4;

/// Sends one control message with descriptors. Up to [`STACK_FDS`]
/// descriptors it allocates nothing (the fork server sends one per spawn,
/// and every heap page it writes after a fork is a copy-on-write fault).
pub(crate) fn send_message(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() <= STACK_FDS {
        return send_small(sock, bytes, fds);
    }
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = &cmsg;
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short control message",
                ))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn send_small(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut cmsg = CmsgBuf([0; CMSG_BYTES]);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the buffer holds
        // CMSG_SPACE(data) bytes (fds.len() <= STACK_FDS), is aligned for
        // cmsghdr, and CMSG_FIRSTHDR points at its start.
        unsafe {
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(data) as usize;
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(data) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(hdr).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n as usize != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short control message",
            ));
        }
        return Ok(());
    }
}

/// What [`recv_into`] received: the message's length and its descriptors
/// (close-on-exec, owned), in order.
pub(crate) struct Received {
    pub len: usize,
    pub fds: [Option<OwnedFd>; MAX_FDS],
    pub nfds: usize,
}

impl Received {
    /// Takes descriptor `i` out, if it came.
    pub(crate) fn take(&mut self, i: usize) -> Option<OwnedFd> {
        self.fds.get_mut(i).and_then(Option::take)
    }
}

/// [`recv_message`] into a caller's buffer, allocating nothing: the fork
/// server's loop (see `server.rs`), where every heap page written after a
/// fork is a copy-on-write fault. `Ok(None)` means the peer closed the
/// socket. A message with more than [`MAX_FDS`] descriptors, or truncated,
/// is an error (every descriptor that came with it is closed).
pub(crate) fn recv_into(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut cmsg = CmsgBuf([0; CMSG_BYTES]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; we point it at our buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BYTES;
    let n = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut received = Received {
        len: n,
        fds: Default::default(),
        nfds: 0,
    };
    let mut extra = 0;
    // SAFETY: walking the control buffer the kernel filled, within the
    // msg_controllen it reported (valid also when truncated); every
    // descriptor in an SCM_RIGHTS message was installed for us and is
    // owned from here (closed on drop).
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*hdr).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
                for i in 0..count {
                    let fd = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    match received.fds.get_mut(received.nfds) {
                        Some(slot) => {
                            *slot = Some(fd);
                            received.nfds += 1;
                        }
                        None => extra += 1, // dropped: closed
                    }
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    if extra > 0 || truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated or with too many descriptors",
        ));
    }
    if n == 0 && received.nfds == 0 {
        return Ok(None);
    }
    Ok(Some(received))
}

/// Receives one control message and the descriptors passed with it.
/// `Ok(None)` means the peer closed the socket.
pub(crate) fn recv_message(sock: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_CONTROL];
    let (len, flags, fds) = recv_with_fds(sock, &mut buf)?;
    let truncated = flags.contains(MsgFlags::MSG_TRUNC) || flags.contains(MsgFlags::MSG_CTRUNC);
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated",
        ));
    }
    buf.truncate(len);
    Ok(Some((buf, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    #[test]
    fn control_messages_carry_descriptors() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (x, _y) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        send_message(a.as_fd(), b"hello", &[x.as_raw_fd()]).unwrap();
        let (bytes, fds) = recv_message(b.as_fd()).unwrap().unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(recv_message(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn too_many_descriptors_are_refused_and_all_closed() {
        use crate::ipc::frame::tests::{all_closed, pipe_copies};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (probe, copies) = pipe_copies(6);
        let raw: Vec<_> = copies.iter().map(|c| c.as_raw_fd()).collect();
        send_message(a.as_fd(), b"request", &raw).unwrap();
        drop(copies);
        assert!(recv_message(b.as_fd()).is_err(), "more than 4 descriptors");
        drop((a, b));
        assert!(all_closed(&probe), "a received descriptor was leaked");
    }

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    /// The fork server's receive path: bytes and descriptors in order, end
    /// of stream as `None`.
    #[test]
    fn recv_into_keeps_the_descriptors_in_order() {
        use crate::ipc::frame::tests::{all_closed, pipe_copies};
        let (a, b) = seqpacket_pair();
        let (probe, copies) = pipe_copies(3);
        let raw: Vec<_> = copies.iter().map(|c| c.as_raw_fd()).collect();
        send_message(a.as_fd(), b"request", &raw).unwrap();
        drop(copies);
        let mut buf = [0u8; 64];
        let mut got = recv_into(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..got.len], b"request");
        assert_eq!(got.nfds, 3);
        assert!(got.take(0).is_some() && got.take(2).is_some() && got.take(3).is_none());
        drop(got);
        assert!(all_closed(&probe), "every received descriptor is owned");
        drop(a);
        assert!(recv_into(b.as_fd(), &mut buf).unwrap().is_none());
    }

    /// More descriptors than a message may carry, within the stack buffer
    /// (the kernel installs them) or beyond it (the kernel truncates): an
    /// error, and none of them stays open.
    #[test]
    fn recv_into_refuses_too_many_descriptors_and_closes_them() {
        use crate::ipc::frame::tests::{all_closed, pipe_copies};
        for n in [MAX_FDS + 1, STACK_FDS + 5] {
            let (a, b) = seqpacket_pair();
            let (probe, copies) = pipe_copies(n);
            let raw: Vec<_> = copies.iter().map(|c| c.as_raw_fd()).collect();
            send_message(a.as_fd(), b"request", &raw).unwrap();
            drop(copies);
            let mut buf = [0u8; 64];
            assert!(recv_into(b.as_fd(), &mut buf).is_err(), "{n} descriptors");
            drop((a, b));
            assert!(all_closed(&probe), "{n} descriptors: one was leaked");
        }
    }

    /// A message longer than the buffer is refused, not cut.
    #[test]
    fn recv_into_refuses_a_truncated_message() {
        let (a, b) = seqpacket_pair();
        send_message(a.as_fd(), &[7u8; 100], &[]).unwrap();
        let mut buf = [0u8; 10];
        assert!(recv_into(b.as_fd(), &mut buf).is_err());
    }

    #[test]
    fn replies_encode_into_a_buffer_and_decode_back() {
        let reply = SpawnReply::Started { pid: 42 };
        let mut buf = [0u8; 64];
        let n = encode_into(&reply, &mut buf).unwrap();
        assert_eq!(&buf[..n], encode(&reply).unwrap().as_slice());
        assert!(encode_into(&reply, &mut buf[..3]).is_err(), "does not fit");
    }
}
