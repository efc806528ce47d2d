//! Targets for the decoders that read a socket: a frame with descriptors
//! attached (a child's bootstrap) and the fork server's SOCK_SEQPACKET
//! messages. The hostile bytes really travel through a socketpair, with
//! descriptors attached; every descriptor that arrives must be closed once
//! the result is dropped, whatever the decoder made of the bytes.

use crate::ipc::frame::{self, MAX_FRAME};
use crate::process::wire::{self, MAX_CONTROL};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Descriptors to attach to a message, and a way to tell afterwards that
/// every copy of them is closed: they are copies of the read end of a pipe
/// whose write end we keep. Once no read end is left, polling the write end
/// reports an error (no reader), which is how a leak shows.
pub(super) struct Probe {
    write: OwnedFd,
    copies: Vec<OwnedFd>,
}

impl Probe {
    pub(super) fn new(count: usize) -> Probe {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let copies = (0..count).map(|_| read.try_clone().expect("dup")).collect();
        Probe { write, copies }
    }

    pub(super) fn raw(&self) -> Vec<RawFd> {
        self.copies.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Closes our copies; panics if one that was sent is still open.
    pub(super) fn assert_all_closed(self) {
        let Probe { write, copies } = self;
        drop(copies);
        let mut fds = [nix::poll::PollFd::new(
            write.as_fd(),
            nix::poll::PollFlags::POLLOUT,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).expect("poll");
        let revents = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
        assert!(
            revents.contains(nix::poll::PollFlags::POLLERR),
            "a descriptor received with hostile bytes was leaked"
        );
    }
}

/// How many descriptors to attach (up to 7: more than any reader accepts).
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((n, rest)) => (usize::from(n % 8), rest),
        None => (0, data),
    }
}

/// [`frame::read_frame_with_fds`], then [`frame::read_frame`] for what
/// follows, on a stream socket (a child's spawn channel). The first byte
/// says how many descriptors come with the bytes.
pub(super) fn frame_with_fds(data: &[u8]) {
    let (count, bytes) = split(data);
    let probe = Probe::new(count);
    {
        let (a, b) = UnixStream::pair().expect("socketpair");
        if !bytes.is_empty() {
            // Fits the socket's buffer: the targets keep inputs small.
            wire::send_message(a.as_fd(), bytes, &probe.raw()).expect("send");
        }
        drop(a);
        if let Ok((body, fds)) = frame::read_frame_with_fds(&b) {
            assert!(body.len() <= MAX_FRAME);
            assert!(fds.len() <= 4 && fds.len() <= count);
            assert!(bytes.len() >= frame::HEADER + body.len());
            while let Ok(Some(next)) = frame::read_frame(&b) {
                assert!(next.len() <= MAX_FRAME);
            }
        }
    }
    probe.assert_all_closed();
}

/// The socket transport's reader of a worker link (`Decoder::recv` and
/// `frames`, `ipc/fds.rs`): the bytes travel in pieces on a stream
/// socketpair, descriptors attached to some pieces, and every frame that
/// claims one is checked as the pool checks a large result's memfd
/// (`ipc/shm.rs`). The first byte seeds the cut and the attachments. Every
/// descriptor is closed once the reader is dropped.
pub(super) fn link_with_fds(data: &[u8]) {
    use crate::worker::protocol::{self, FromChild, Outcome};
    let (seed, stream) = match data.split_first() {
        Some((seed, stream)) => (u64::from(*seed), stream),
        None => (0, data),
    };
    let mut rng = super::gen::Rng::new(seed);
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = (1 + rng.below(rest.len().min(512))).min(rest.len());
        let fds = [0, 0, 1, 2][rng.below(4)];
        pieces.push((&rest[..n], fds));
        rest = &rest[n..];
    }
    let probe = Probe::new(pieces.iter().map(|(_, n)| n).sum());
    {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let raw = probe.raw();
        let mut next = 0;
        for (piece, n) in &pieces {
            // Fits the socket's buffer: the targets keep inputs small.
            wire::send_message(a.as_fd(), piece, &raw[next..next + n]).expect("send");
            next += n;
        }
        drop(a);
        let mut decoder = frame::Decoder::new();
        while let Ok(n) = decoder.recv(b.as_fd()) {
            let Ok(frames) = decoder.frames() else { break };
            for frame in frames {
                assert!(frame.bytes.len() <= MAX_FRAME);
                let shared = match protocol::decode::<FromChild>(&frame.bytes) {
                    Ok(FromChild::Reply {
                        outcome: Outcome::Shared(len),
                        ..
                    }) => Some(len),
                    _ => None,
                };
                if let (Some(fd), Some(len)) = (frame.fds.into_iter().next(), shared) {
                    assert!(crate::ipc::shm::Mapping::open(fd, len, MAX_FRAME).is_err());
                }
            }
            if n == 0 {
                break;
            }
        }
    }
    probe.assert_all_closed();
}

/// [`wire::recv_message`] on a SOCK_SEQPACKET socket (the fork server's
/// control and reply sockets), then the message decoded as each of the fork
/// server's messages. The first byte says how many descriptors come with it.
pub(super) fn control_message(data: &[u8]) {
    let (count, bytes) = split(data);
    let probe = Probe::new(count);
    {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        wire::send_message(a.as_fd(), bytes, &probe.raw()).expect("send");
        match wire::recv_message(b.as_fd()) {
            Ok(Some((got, fds))) => {
                assert!(
                    bytes.len() <= MAX_CONTROL && count <= 4,
                    "accepted a truncated message"
                );
                assert_eq!(got, bytes);
                assert_eq!(fds.len(), count);
                super::decoders::spawn_messages(&got);
            }
            Ok(None) => assert!(bytes.is_empty() && count == 0),
            Err(_) => assert!(
                bytes.len() > MAX_CONTROL || count > 4,
                "refused a whole message"
            ),
        }
    }
    probe.assert_all_closed();
}

/// A child's log datagram as the daemon's receiving thread gets it: through
/// a datagram socket with the sender's credentials, descriptors attached
/// (closed at once), longer than the receive buffer at times (marked as
/// truncated); then turned into lines (see `decoders::log_datagram`). The
/// first byte says how many descriptors come with the bytes.
pub(super) fn log_socket(data: &[u8]) {
    use crate::log::datagram::MAX_DATAGRAM;
    use crate::log::{lines_for, receive};
    let (count, bytes) = split(data);
    let probe = Probe::new(count);
    {
        let (rx, tx) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::PassCred, &true)
            .expect("SO_PASSCRED");
        wire::send_message(tx.as_fd(), bytes, &probe.raw()).expect("send");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; 253]);
        match receive(&rx, &mut buf, &mut cmsg) {
            Ok(Some(received)) => {
                assert_eq!(received.pid, std::process::id() as i32, "the kernel's pid");
                assert_eq!(received.truncated, bytes.len() > MAX_DATAGRAM);
                let mut lines = 0;
                lines_for(&received, 1, |line, _| {
                    lines += 1;
                    assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
                });
                assert!(lines >= 1);
            }
            Ok(None) => assert!(bytes.is_empty() && count == 0),
            Err(e) => panic!("receiving a datagram failed: {e}"),
        }
    }
    probe.assert_all_closed();
}
