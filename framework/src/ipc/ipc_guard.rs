//! A guard in front of ipc-channel's receiving code, which trusts the bytes
//! it reads: a message shorter than its 8-byte header underflows a length;
//! a header announcing more bytes than arrived, without a descriptor to
//! read them from, unwraps `None`; a huge announced size is reserved at
//! once (a failed allocation aborts the process); a descriptor that is not
//! a socket is mapped as shared memory and asserted on; an unused channel
//! asserts in its destructor. A worker can write any of these to its
//! channel, and each panics or aborts the daemon (found by the fuzz target
//! `ipc_channel_message`, reproduced by `framework/tests/hostile_worker.rs`).
//!
//! So the daemon never lets ipc-channel parse a message from a worker that
//! it has not checked first:
//! - The worker connects to a listening socket of ours (in a fresh 0700
//!   directory) instead of an `IpcOneShotServer`; its first message, which
//!   carries its call receiver's sender and its reply receiver, must be
//!   exactly what ipc-channel sends for that, with two sockets attached.
//!   Those are then handed to ipc-channel through a message we write
//!   ourselves ([`adopt`]).
//! - Before each reply is received, the next message is peeked at
//!   ([`check_next`]): a whole message of one byte string, or the first part
//!   of a longer one with exactly one socket to read the rest from, within
//!   [`MAX_FRAME`].
//! - Our own copies of the two sockets are shut down when the link closes,
//!   so a reader or writer blocked on a socket the worker left behind wakes.

use super::frame::MAX_FRAME;
use crate::process::wire::{recv_with_fds, send_message};
use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use parking_lot::Mutex;
use serde_bytes::ByteBuf;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Bytes of ipc-channel's message header: the message's total size (a
/// native `usize`).
const HEADER: usize = std::mem::size_of::<usize>();
/// Bytes bincode puts before a byte string: its length (`u64`).
const BYTES_PREFIX: usize = 8;

/// The message ipc-channel sends for a value holding two channels and
/// nothing else: the header (16 bytes of data follow), then the channels'
/// indices among the attached descriptors, 0 and 1.
fn two_channels() -> [u8; HEADER + 16] {
    let mut m = [0u8; HEADER + 16];
    m[..HEADER].copy_from_slice(&16usize.to_ne_bytes());
    m[HEADER..HEADER + 8].copy_from_slice(&0u64.to_le_bytes());
    m[HEADER + 8..].copy_from_slice(&1u64.to_le_bytes());
    m
}

fn refused(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Whether `fd` is a unix SOCK_SEQPACKET socket (what ipc-channel's
/// channels are).
fn is_channel(fd: BorrowedFd<'_>) -> bool {
    matches!(
        socket::getsockopt(&fd, socket::sockopt::SockType),
        Ok(SockType::SeqPacket)
    ) && socket::getsockname::<UnixAddr>(fd.as_raw_fd()).is_ok()
}

/// Checks a worker's first message: its `len` bytes start with `head`, and
/// `fds` came with it.
pub(crate) fn check_hello(len: usize, head: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    if len != two_channels().len() || head != two_channels() {
        return Err(refused(format!("unexpected handshake of {len} bytes")));
    }
    if fds.len() != 2 || !fds.iter().all(|fd| is_channel(fd.as_fd())) {
        return Err(refused("the handshake must carry two channels"));
    }
    Ok(())
}

/// Checks a reply before ipc-channel reads it: `len` bytes in all, the
/// first ones `head` (at most 16), and `fds` attached.
pub(crate) fn check_message(len: usize, head: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let (Some(total), Some(prefix)) = (head.get(..HEADER), head.get(HEADER..HEADER + 8)) else {
        return Err(refused(format!("a message of {len} bytes")));
    };
    let total = usize::from_ne_bytes(total.try_into().map_err(|_| refused("header"))?);
    let prefix = u64::from_le_bytes(prefix.try_into().map_err(|_| refused("header"))?);
    let data = len - HEADER;
    let Ok(prefix) = usize::try_from(prefix) else {
        return Err(refused("a byte string longer than memory"));
    };
    if prefix > MAX_FRAME {
        return Err(super::frame::too_large(prefix));
    }
    if total != prefix + BYTES_PREFIX {
        return Err(refused(format!(
            "a message of {total} bytes holding a byte string of {prefix}"
        )));
    }
    match fds {
        [] if total == data => Ok(()),
        [] => Err(refused(format!(
            "{data} of {total} bytes and nothing to read the rest from"
        ))),
        [rest] if total > data && is_channel(rest.as_fd()) => Ok(()),
        [_] => Err(refused("a message with a descriptor that is not a channel")),
        _ => Err(refused(format!("{} descriptors with a message", fds.len()))),
    }
}

/// Most descriptors one message can carry (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Peeks at the next message on `raw` (a worker's reply channel) and checks
/// it; `Ok(false)` at the end of the stream. The socket the rest of a long
/// message comes on goes to `wakers`: ipc-channel blocks on it until the
/// rest arrives, and a worker that handed its far end to another process
/// before exiting must not hold that thread forever.
pub(crate) fn check_next(raw: BorrowedFd<'_>, wakers: &Wakers) -> io::Result<bool> {
    let mut head = [0u8; HEADER + BYTES_PREFIX];
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let (len, mut fds) = loop {
        let mut iov = [IoSliceMut::new(&mut head)];
        // MSG_TRUNC: the length of the whole message, not of what fits.
        match socket::recvmsg::<()>(
            raw.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs()? {
                    if let socket::ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel just installed these copies for us.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if len == 0 && fds.is_empty() {
        return Ok(false);
    }
    check_message(len, &head[..len.min(head.len())], &fds)?;
    if let Some(rest) = fds.pop() {
        wakers.rest(rest);
    }
    Ok(true)
}

/// Descriptors to shut down when the link closes, so that a thread blocked
/// on one of them (or on its peer) wakes.
#[derive(Default)]
pub(crate) struct Wakers {
    state: Mutex<(bool, Vec<OwnedFd>)>,
    /// The socket the rest of the message being read comes on.
    rest: Mutex<Option<OwnedFd>>,
}

impl Wakers {
    /// Adds `fd` (shut down at once if the link already closed).
    fn add(&self, fd: &OwnedFd) -> io::Result<()> {
        let copy = fd.try_clone()?;
        let mut state = self.state.lock();
        if state.0 {
            let _ = socket::shutdown(copy.as_raw_fd(), socket::Shutdown::Both);
        }
        state.1.push(copy);
        Ok(())
    }

    /// Replaces the socket the rest of a message comes on.
    fn rest(&self, fd: OwnedFd) {
        let closed = self.state.lock().0;
        if closed {
            let _ = socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Both);
        }
        *self.rest.lock() = Some(fd);
    }

    /// Shuts every socket down; later ones are shut down as they come.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.0 = true;
        for fd in &state.1 {
            let _ = socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Both);
        }
        if let Some(fd) = self.rest.lock().as_ref() {
            let _ = socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Both);
        }
    }
}

/// The socket a worker connects to, in a directory of its own (0700).
pub(crate) struct Listener {
    fd: OwnedFd,
    dir: PathBuf,
    name: String,
}

/// A worker's channels, checked and adopted.
pub(crate) struct Connected {
    pub calls: IpcSender<ByteBuf>,
    pub replies: IpcReceiver<ByteBuf>,
    /// Our copy of the reply channel, to peek at with [`check_next`].
    pub raw_replies: OwnedFd,
}

impl Listener {
    pub(crate) fn new() -> io::Result<Self> {
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("daemonic-ipc-XXXXXX"))?;
        let path = dir.join("socket");
        let bound = (|| {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
            socket::listen(&fd, socket::Backlog::new(1)?)?;
            Ok::<_, nix::Error>(fd)
        })();
        let fd = match bound {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.into());
            }
        };
        let name = path
            .to_str()
            .ok_or_else(|| refused("temporary directory is not UTF-8"))?
            .to_string();
        Ok(Self { fd, dir, name })
    }

    /// What the worker connects to (`IpcSender::connect`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Accepts the worker's connection and checks its handshake. `wakers`
    /// gets every socket a blocked call could wait on.
    pub(crate) fn accept(self, wakers: &Wakers) -> io::Result<Connected> {
        wakers.add(&self.fd)?;
        let raw = loop {
            match socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor we own.
                Ok(fd) => break unsafe { OwnedFd::from_raw_fd(fd) },
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        drop(self);
        wakers.add(&raw)?;
        let mut head = [0u8; 64];
        let (len, flags, fds) = recv_with_fds(raw.as_fd(), &mut head)?;
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(refused("an oversized handshake"));
        }
        check_hello(len, &head[..len], &fds)?;
        let [calls, replies] = <[OwnedFd; 2]>::try_from(fds)
            .map_err(|_| refused("the handshake must carry two channels"))?;
        wakers.add(&calls)?;
        wakers.add(&replies)?;
        let (calls_sender, replies_receiver) = adopt(&calls, &replies)?;
        Ok(Connected {
            calls: calls_sender,
            replies: replies_receiver,
            raw_replies: replies,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Pair = (IpcSender<ByteBuf>, IpcReceiver<ByteBuf>);

/// A channel of this process that receives pairs of channel ends: we write
/// its messages ourselves on the raw end, ipc-channel decodes them on the
/// other. Made once, through a one-shot server (the only way ipc-channel
/// takes a socket it did not create).
struct Adopter {
    raw: OwnedFd,
    pairs: IpcReceiver<Pair>,
}

fn new_adopter() -> io::Result<Adopter> {
    let (raw, far) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let (server, name) = IpcOneShotServer::<IpcReceiver<Pair>>::new()?;
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(sock.as_raw_fd(), &UnixAddr::new(name.as_str())?)?;
    // One channel: its index, 0.
    let mut message = 8usize.to_ne_bytes().to_vec();
    message.extend_from_slice(&0u64.to_le_bytes());
    send_message(sock.as_fd(), &message, &[far.as_raw_fd()])?;
    drop((sock, far));
    let (_, pairs) = server
        .accept()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Adopter { raw, pairs })
}

/// Turns two raw channel ends (a sender's and a receiver's socket) into
/// ipc-channel's types: they are sent, in the message ipc-channel itself
/// would send for the pair, to a channel of ours whose receiver decodes
/// them. We wrote every byte it reads.
pub(crate) fn adopt(calls: &OwnedFd, replies: &OwnedFd) -> io::Result<Pair> {
    static ADOPTER: Mutex<Option<Adopter>> = Mutex::new(None);
    let mut adopter = ADOPTER.lock();
    if adopter.is_none() {
        *adopter = Some(new_adopter()?);
    }
    let Some(a) = adopter.as_ref() else {
        return Err(io::Error::other("no adopter"));
    };
    send_message(
        a.raw.as_fd(),
        &two_channels(),
        &[calls.as_raw_fd(), replies.as_raw_fd()],
    )?;
    a.pairs.recv().map_err(|e| {
        // Start afresh next time.
        *adopter = None;
        io::Error::other(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn message(total: usize, prefix: u64) -> Vec<u8> {
        let mut m = total.to_ne_bytes().to_vec();
        m.extend_from_slice(&prefix.to_le_bytes());
        m
    }

    #[test]
    fn whole_and_fragmented_byte_strings_pass() {
        let mut whole = message(8 + 3, 3);
        whole.extend_from_slice(b"abc");
        assert!(check_message(whole.len(), &whole[..16], &[]).is_ok());
        let (rest, _) = pair();
        let first = message(8 + 100_000, 100_000);
        assert!(check_message(4096, &first, &[rest]).is_ok());
    }

    #[test]
    fn what_ipc_channel_would_trip_on_is_refused() {
        // Shorter than the header: ipc-channel underflows a length.
        assert!(check_message(3, &[1, 2, 3], &[]).is_err());
        // Announces more than arrived, nothing to read it from.
        assert!(check_message(16, &message(1 << 20, (1 << 20) - 8), &[]).is_err());
        // A huge announced size, with a channel to read it from.
        let (rest, _) = pair();
        assert!(check_message(16, &message(1 << 40, (1 << 40) - 8), &[rest]).is_err());
        // Sizes that disagree.
        assert!(check_message(16, &message(8, 5), &[]).is_err());
        // A descriptor that is not a channel (ipc-channel maps it).
        let file = OwnedFd::from(std::fs::File::open("/").unwrap());
        assert!(check_message(16, &message(1000, 992), &[file]).is_err());
        // Two descriptors (one would be left over, asserting on drop).
        let ((a, _), (b, _)) = (pair(), pair());
        assert!(check_message(16, &message(1000, 992), &[a, b]).is_err());
    }

    #[test]
    fn adopted_channels_carry_frames() {
        let ((calls, calls_peer), (replies, replies_peer)) = (pair(), pair());
        let (sender, receiver) = adopt(&calls, &replies).unwrap();
        // A frame on the adopted sender reaches the raw peer, and a frame
        // ipc-channel sends on the peer's side reaches the receiver.
        sender.send(ByteBuf::from(b"call".to_vec())).unwrap();
        let mut buf = [0u8; 64];
        let n =
            nix::sys::socket::recv(calls_peer.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(
            &buf[..n],
            &{
                let mut m = message(8 + 4, 4);
                m.extend_from_slice(b"call");
                m
            }[..]
        );
        let mut reply = message(8 + 5, 5);
        reply.extend_from_slice(b"reply");
        send_message(replies_peer.as_fd(), &reply, &[]).unwrap();
        assert!(check_next(replies.as_fd(), &Wakers::default()).unwrap());
        assert_eq!(receiver.recv().unwrap().into_vec(), b"reply");
    }
}
