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

/// What the host asks the fork server to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpawnRequest {
    /// Registered entry point name.
    pub entry: String,
    /// Role shown in logs and the process title (`task:send_email`).
    pub role: String,
    /// Daemon name, for the process title.
    pub daemon: String,
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
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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

/// Sends one control message with descriptors.
pub(crate) fn send_message(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
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
}
