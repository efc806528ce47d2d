//! Frames on their way out of a stream link: coalesced into as few writes
//! as possible, except that a frame carrying descriptors starts a
//! `sendmsg` of its own, the descriptors attached to its first byte (the
//! receiver's side of that rule is in `fds.rs`).

use super::fds::send_part;
use super::frame;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const NO_FDS: &[OwnedFd] = &[];

/// Capacity kept after a large frame has left.
const KEEP: usize = 64 * 1024;

/// Frames queued for one link.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already sent.
    sent: usize,
    /// Frames that carry descriptors: where each starts in `buf`.
    fds: VecDeque<(usize, Vec<OwnedFd>)>,
}

impl Outbox {
    /// Queues a frame.
    pub(crate) fn push(&mut self, frame: &[u8]) -> io::Result<()> {
        frame::push(&mut self.buf, frame)
    }

    /// Queues a frame that `encode` appends to the buffer, in place (no
    /// buffer of its own); nothing is queued if it fails.
    pub(crate) fn push_with(
        &mut self,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; frame::HEADER]);
        let header = encode(&mut self.buf)
            .and_then(|()| frame::header(self.buf.len() - start - frame::HEADER));
        match header {
            Ok(header) => {
                self.buf[start..start + frame::HEADER].copy_from_slice(&header);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Queues a frame that carries `fds` (at most
    /// [`MAX_FDS`](super::fds::MAX_FDS); none: a plain frame).
    pub(crate) fn push_with_fds(&mut self, frame: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
        if fds.is_empty() {
            return self.push(frame);
        }
        if fds.len() > super::fds::MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} descriptors for one frame (at most {})",
                    fds.len(),
                    super::fds::MAX_FDS
                ),
            ));
        }
        let header = frame::header_with_fd(frame.len())?;
        self.fds.push_back((self.buf.len(), fds));
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(frame);
        Ok(())
    }

    /// Queues a frame, with its descriptors.
    pub(crate) fn push_frame(&mut self, frame: frame::Frame) -> io::Result<()> {
        self.push_with_fds(&frame.bytes, frame.fds)
    }

    /// Bytes waiting to be sent.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next piece one `sendmsg` may carry: up to the next frame with
    /// descriptors, or that frame (with them) up to the one after.
    fn next_part(&self) -> (&[u8], &[OwnedFd]) {
        let mut fds = self.fds.iter();
        match fds.next() {
            Some((at, attached)) if *at == self.sent => {
                let end = fds.next().map_or(self.buf.len(), |(next, _)| *next);
                (&self.buf[self.sent..end], attached)
            }
            Some((at, _)) => (&self.buf[self.sent..*at], NO_FDS),
            None => (&self.buf[self.sent..], NO_FDS),
        }
    }

    /// `n` bytes of the next part left.
    fn advance(&mut self, n: usize) {
        if n > 0 && self.fds.front().is_some_and(|(at, _)| *at == self.sent) {
            self.fds.pop_front(); // it left with the first byte
        }
        self.sent += n;
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            if self.buf.capacity() > 4 * 1024 * 1024 {
                self.buf = Vec::with_capacity(KEEP); // after a large frame
            }
        }
    }

    /// Sends everything on a blocking socket.
    pub(crate) fn write_blocking(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        while !self.is_empty() {
            let (bytes, fd) = self.next_part();
            match send_part(sock, bytes, fd) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends everything on a non-blocking socket of the current runtime.
    /// Writes everything to a non-blocking socket that no reactor watches
    /// for writability: straight away, and through a registration made
    /// only while a full send buffer makes it wait (see `socket.rs`).
    pub(crate) async fn write_direct(
        &mut self,
        sock: &std::os::unix::net::UnixStream,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        /// The socket's descriptor, borrowed for the registration: dropping
        /// the registration deregisters it and leaves the socket open.
        struct Raw(std::os::fd::RawFd);
        impl AsRawFd for Raw {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.0
            }
        }
        let mut waiting: Option<tokio::io::unix::AsyncFd<Raw>> = None;
        while !self.is_empty() {
            let (bytes, fd) = self.next_part();
            match send_part(sock.as_fd(), bytes, fd) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registered now, epoll reports at once a socket that
                    // became writable in the meantime: no edge is missed.
                    let registration = match waiting.take() {
                        Some(r) => r,
                        // SAFETY: `sock` stays open (borrowed) until this
                        // function returns, and the registration is
                        // dropped before that.
                        None => unsafe {
                            tokio::io::unix::AsyncFd::register_with_interest(
                                Raw(sock.as_raw_fd()),
                                tokio::io::Interest::WRITABLE,
                            )
                        }?,
                    };
                    registration.writable().await?.clear_ready();
                    waiting = Some(registration);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) async fn write_async(&mut self, sock: &tokio::net::UnixStream) -> io::Result<()> {
        while !self.is_empty() {
            sock.writable().await?;
            let sent = sock.try_io(tokio::io::Interest::WRITABLE, || {
                let (bytes, fd) = self.next_part();
                send_part(sock.as_fd(), bytes, fd)
            });
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::frame::Decoder;
    use std::io::{Seek, Write};
    use std::os::fd::AsFd;

    fn file(text: &[u8]) -> OwnedFd {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text).unwrap();
        f.rewind().unwrap();
        f.into()
    }

    fn read_back(fd: OwnedFd) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut out).unwrap();
        out
    }

    /// Frames encoded in place sit between others as pushed ones do; one
    /// whose encoding fails leaves nothing behind.
    #[test]
    fn frames_encoded_in_place_are_framed_and_failures_leave_nothing() {
        let mut out = Outbox::default();
        out.push(b"one").unwrap();
        out.push_with(&mut |buf| {
            buf.extend_from_slice(b"two");
            Ok(())
        })
        .unwrap();
        let failed = out.push_with(&mut |buf| {
            buf.extend_from_slice(b"half");
            Err(io::Error::other("cannot encode"))
        });
        assert!(failed.is_err());
        out.push_with(&mut |_| Ok(())).unwrap();
        out.push(b"three").unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        out.write_blocking(a.as_fd()).unwrap();
        drop(a);
        let mut d = Decoder::new();
        while d.recv(b.as_fd()).unwrap() > 0 {}
        let frames: Vec<Vec<u8>> = d.frames().unwrap().into_iter().map(|f| f.bytes).collect();
        assert_eq!(frames, [&b"one"[..], b"two", b"", b"three"]);
    }

    /// Plain frames and frames with descriptors, coalesced, cut into
    /// pieces by a small socket buffer: each descriptor reaches its frame.
    #[test]
    fn each_descriptor_reaches_its_frame() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
        let mut out = Outbox::default();
        let mut expected = Vec::new();
        for i in 0..40u32 {
            let body = vec![i as u8; (i as usize * 997) % 20_000];
            if i % 3 == 1 {
                // One, two or three descriptors, each its own file.
                let texts: Vec<Vec<u8>> = (0..=(i % 3 + i % 2))
                    .map(|k| format!("fd {i}.{k}").into_bytes())
                    .collect();
                let fds = texts.iter().map(|t| file(t)).collect();
                out.push_with_fds(&body, fds).unwrap();
                expected.push((body, texts));
            } else {
                out.push(&body).unwrap();
                expected.push((body, Vec::new()));
            }
        }
        let writer = std::thread::spawn(move || {
            out.write_blocking(a.as_fd()).unwrap();
            assert!(out.is_empty());
        });
        let mut d = Decoder::new();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            assert!(d.recv(b.as_fd()).unwrap() > 0);
            got.extend(d.frames().unwrap());
        }
        writer.join().unwrap();
        for (frame, (body, texts)) in got.into_iter().zip(expected) {
            assert_eq!(frame.bytes, body);
            let fds: Vec<Vec<u8>> = frame.fds.into_iter().map(read_back).collect();
            assert_eq!(fds, texts);
        }
    }

    fn decode_all(bytes_then_fds: impl FnOnce(&std::os::unix::net::UnixStream)) -> io::Error {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        bytes_then_fds(&a);
        drop(a);
        let mut d = Decoder::new();
        loop {
            match d.recv(b.as_fd()).and_then(|_| d.frames()) {
                Err(e) => return e,
                Ok(frames) if frames.is_empty() && d.is_empty() => {
                    panic!("the stream ended without an error")
                }
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn a_descriptor_on_a_plain_frame_or_none_on_an_announcing_one_breaks_the_link() {
        let e = decode_all(|a| {
            let mut framed = Vec::new();
            frame::push(&mut framed, b"plain").unwrap();
            send_part(a.as_fd(), &framed, &[file(b"x")]).unwrap();
            frame::push(&mut framed, b"next").unwrap();
            send_part(a.as_fd(), &framed, &[]).unwrap();
        });
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let e = decode_all(|a| {
            let mut framed = frame::header_with_fd(3).unwrap().to_vec();
            framed.extend_from_slice(b"abc");
            send_part(a.as_fd(), &framed, &[]).unwrap();
        });
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
