//! Targets for the ipc-channel transport: what a worker can write to its
//! reply channel, and to the socket it connects to at start, as raw
//! messages with descriptors attached. The daemon's checks
//! (`ipc/ipc_guard.rs`) must refuse whatever ipc-channel's own receiving
//! code would trip on, and pass what it then decodes into a frame within
//! the limit; no descriptor may be left open.

use super::sockets::Probe;
use crate::ipc::ipc_guard::{adopt, check_next, Listener, Wakers};
use crate::ipc::MAX_FRAME;
use crate::process::wire::send_message;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair")
}

/// ipc-channel's message for a byte string: the total size (native
/// `usize`), bincode's length prefix, the bytes.
fn frame_message(bytes: &[u8]) -> Vec<u8> {
    let mut m = (bytes.len() + 8).to_ne_bytes().to_vec();
    m.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    m.extend_from_slice(bytes);
    m
}

pub(super) fn seeds() -> Vec<Vec<u8>> {
    let whole = frame_message(b"\x81\xa5Reply\x92\x07\x81\xa2Ok\xc4\x01\x2a");
    let mut first_part = (100_000usize + 8).to_ne_bytes().to_vec();
    first_part.extend_from_slice(&100_000u64.to_le_bytes());
    first_part.extend_from_slice(&[0x41; 64]);
    // Found by the driver: the first 17 bytes of a 16 MiB frame, a socket
    // attached, and the rest never sent (ipc-channel reserves the whole).
    let mut announced = (0xfe_86a8usize).to_ne_bytes().to_vec();
    announced.extend_from_slice(&0xfe_86a0u64.to_le_bytes());
    announced.extend_from_slice(b"AAAAAAAAA");
    let mut seeds = Vec::new();
    for (attach, m) in [
        (0u8, whole),
        (1, first_part),
        (0, frame_message(b"")),
        (1, announced),
    ] {
        let mut seed = vec![attach];
        seed.extend(m);
        seeds.push(seed);
    }
    seeds
}

/// Descriptors to attach, chosen by `kind`: none, a socket (what a longer
/// message brings to read the rest from), pipes, or a socket and a pipe.
struct Attached {
    /// The far ends of attached sockets: the rest of a message is written
    /// there, and they tell afterwards whether the attached end was closed.
    far: Vec<OwnedFd>,
    sent: Vec<OwnedFd>,
    pipes: Probe,
}

fn attach(kind: u8) -> Attached {
    let (sockets, pipes) = match kind % 6 {
        0 => (0, 0),
        1 | 2 => (1, 0),
        3 => (0, 1),
        4 => (1, 1),
        _ => (2, 0),
    };
    let mut far = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..sockets {
        let (near, other) = seqpacket_pair();
        sent.push(near);
        far.push(other);
    }
    Attached {
        far,
        sent,
        pipes: Probe::new(pipes),
    }
}

impl Attached {
    fn raw(&self) -> Vec<RawFd> {
        let mut raw: Vec<RawFd> = self.sent.iter().map(AsRawFd::as_raw_fd).collect();
        raw.extend(self.pipes.raw());
        raw
    }

    /// Writes `rest` as the following parts of a message on every attached
    /// socket, then ends them, so that a reader of the rest never waits.
    fn feed(&self, rest: &[u8]) {
        for far in &self.far {
            for part in rest.chunks(4096) {
                let _ = socket::send(far.as_raw_fd(), part, MsgFlags::MSG_DONTWAIT);
            }
            let _ = socket::shutdown(far.as_raw_fd(), socket::Shutdown::Write);
        }
    }

    fn assert_all_closed(self) {
        let Attached { far, sent, pipes } = self;
        drop(sent);
        pipes.assert_all_closed();
        for f in far {
            let mut fds = [nix::poll::PollFd::new(
                f.as_fd(),
                nix::poll::PollFlags::empty(),
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).expect("poll");
            let revents = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
            assert!(
                revents.contains(nix::poll::PollFlags::POLLHUP),
                "an attached socket was left open"
            );
        }
    }
}

/// A reply: the daemon's check before ipc-channel reads it, then the read.
/// The first byte chooses the attachments; the rest is the message, whose
/// second half also goes to attached sockets as the rest of a long one.
pub(super) fn message(data: &[u8]) {
    let (kind, bytes) = data.split_first().map_or((0, data), |(k, b)| (*k, b));
    let attached = attach(kind);
    {
        let (calls, _calls_peer) = seqpacket_pair();
        let (replies, worker) = seqpacket_pair();
        let (_sender, receiver) = adopt(&calls, &replies).expect("adopt");
        send_message(worker.as_fd(), bytes, &attached.raw()).expect("send");
        attached.feed(&bytes[bytes.len() / 2..]);
        drop(worker);
        let wakers = Wakers::default();
        match check_next(replies.as_fd(), &wakers) {
            Ok(true) => {
                // What passed is a byte string within the limit, whole or
                // with a socket to read the rest from: ipc-channel reads it
                // without panicking, and it is what its header says.
                let announced = bytes
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .expect("checked");
                // An error: the rest never came (the socket ended first).
                if let Ok(frame) = receiver.recv() {
                    assert!(frame.len() <= MAX_FRAME);
                    assert_eq!(frame.len() as u64, announced);
                }
            }
            Ok(false) => assert!(bytes.is_empty() && attached.raw().is_empty()),
            Err(_) => {}
        }
    }
    attached.assert_all_closed();
}

pub(super) fn hello_seeds() -> Vec<Vec<u8>> {
    let mut hello = vec![5u8]; // two sockets
    hello.extend_from_slice(&16usize.to_ne_bytes());
    hello.extend_from_slice(&0u64.to_le_bytes());
    hello.extend_from_slice(&1u64.to_le_bytes());
    vec![hello]
}

/// A worker's handshake, as the daemon accepts and checks it. The first
/// byte chooses the attachments.
pub(super) fn hello(data: &[u8]) {
    let (kind, bytes) = data.split_first().map_or((0, data), |(k, b)| (*k, b));
    let attached = attach(kind);
    {
        let listener = Listener::new().expect("listener");
        let sock = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        socket::connect(
            sock.as_raw_fd(),
            &UnixAddr::new(listener.name()).expect("name"),
        )
        .expect("connect");
        // Within the socket's buffer: the targets keep inputs small.
        send_message(sock.as_fd(), bytes, &attached.raw()).expect("send");
        let wakers = Wakers::default();
        if let Ok(connected) = listener.accept(&wakers) {
            assert_eq!(attached.sent.len(), 2, "two channels were sent");
            drop(connected);
        }
        wakers.close();
    }
    attached.assert_all_closed();
}
