//! The one frame format of every stream link: a `u32` little-endian length,
//! then that many bytes. Worker links, a child's bootstrap and a task's report
//! all use it, with one limit, [`MAX_FRAME`].
//!
//! Lengths are checked, never cast: a frame longer than the limit is refused
//! by the writer, and a header announcing one is an error for the reader
//! before any byte of the body is read. Readers grow their buffer as bytes
//! arrive, never from the announced length alone, so a hostile header cannot
//! make the daemon allocate memory the peer never sends.

use std::io::{self, Read, Write};
use std::ops::ControlFlow;

/// Largest frame either side of any link accepts (64 MiB).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Bytes of a frame's length header.
pub const HEADER: usize = 4;

/// The header's top bit: the frame carries descriptors (see `fds.rs`).
/// Only readers that take descriptors accept it; for every other reader
/// such a header announces a frame over the limit.
const WITH_FD: u32 = 1 << 31;

/// One frame as a descriptor-taking reader returns it.
#[derive(Debug)]
pub struct Frame {
    /// The frame's bytes.
    pub bytes: Vec<u8>,
    /// The descriptors it carried, in the order they were sent (empty
    /// unless its header announced some).
    pub fds: Vec<std::os::fd::OwnedFd>,
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Frame {
            bytes,
            fds: Vec::new(),
        }
    }
}

/// How much a reader reserves at a time while a large frame arrives.
const CHUNK: usize = 1024 * 1024;

/// Capacity a reader keeps between frames; it shrinks back to this after a
/// large frame has passed.
const KEEP: usize = 64 * 1024;

/// A frame longer than [`MAX_FRAME`].
pub(crate) fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
    )
}

/// The header of a frame of `len` bytes.
pub(crate) fn header(len: usize) -> io::Result<[u8; HEADER]> {
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    let len = u32::try_from(len).map_err(|_| too_large(len))?;
    Ok(len.to_le_bytes())
}

/// The header of a frame of `len` bytes sent with a descriptor attached.
pub(crate) fn header_with_fd(len: usize) -> io::Result<[u8; HEADER]> {
    let header = u32::from_le_bytes(header(len)?) | WITH_FD;
    Ok(header.to_le_bytes())
}

/// Appends one frame (header and body) to `buf`.
pub(crate) fn push(buf: &mut Vec<u8>, frame: &[u8]) -> io::Result<()> {
    buf.extend_from_slice(&header(frame.len())?);
    buf.extend_from_slice(frame);
    Ok(())
}

fn announced(header: [u8; HEADER]) -> io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    Ok(len)
}

/// A header's length, and whether a descriptor comes with the frame.
fn announced_with_fd(header: [u8; HEADER]) -> io::Result<(usize, bool)> {
    let word = u32::from_le_bytes(header);
    let len = announced((word & !WITH_FD).to_le_bytes())?;
    Ok((len, word & WITH_FD != 0))
}

/// Splits frames off a byte stream that arrives in pieces (the daemon's
/// non-blocking side of a link).
///
/// Frames may carry descriptors: [`recv`](Self::recv) reads a socket and
/// keeps what arrived with each read (see `fds.rs`), and every frame whose
/// header announces a descriptor gets the one sent with it.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`: bytes taken as frames so far.
    taken: u64,
    fds: super::fds::FdQueue,
    /// Why the link is broken, found after frames that came before it.
    broken: Option<io::Error>,
    /// Why the last read's descriptors were refused: reported once the
    /// frames that read completed have been handed over.
    refused_read: Option<io::Error>,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(KEEP),
            ..Self::default()
        }
    }

    /// One read from `sock` (one `recvmsg`: blocking or not, as the socket
    /// is), keeping the descriptors that came with it; the bytes read (0:
    /// the peer hung up).
    pub(crate) fn recv(&mut self, sock: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
        self.recv_checked(sock).map(|(n, _)| n)
    }

    /// [`recv`](Self::recv), and whether the read left the socket empty: it
    /// returned less than it had room for and no descriptor. A stream
    /// socket's read takes everything queued up to its buffer's size, and
    /// stops short otherwise only after bytes that carried descriptors (or
    /// before bytes of another sending process), so a non-blocking reader
    /// need not read again to learn it would block.
    pub(crate) fn recv_checked(
        &mut self,
        sock: std::os::fd::BorrowedFd<'_>,
    ) -> io::Result<(usize, bool)> {
        let start = self.taken + self.buf.len() as u64;
        let buffer = self.read_buffer();
        let room = buffer.capacity() - buffer.len();
        let (n, fds) = super::fds::recv_into(sock, buffer)?;
        let drained = n > 0 && n < room && fds.is_empty();
        if let Err(e) = self.fds.arrived(start, start + n as u64, fds) {
            if n == 0 {
                return Err(e);
            }
            // The bytes are in: the frames they complete go first.
            self.refused_read = Some(e);
            return Ok((n, false));
        }
        Ok((n, drained))
    }

    /// Whether part of a frame has arrived.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffer to read into, with room reserved for the next read: at
    /// most what the frame being received still lacks, and at most a chunk.
    pub(crate) fn read_buffer(&mut self) -> &mut Vec<u8> {
        let want = match self.pending_len() {
            Some(len) => (HEADER + len)
                .saturating_sub(self.buf.len())
                .clamp(1, CHUNK),
            None => KEEP,
        };
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        &mut self.buf
    }

    /// Length of the frame at the front, if its header has arrived (and is
    /// within the limit).
    fn pending_len(&self) -> Option<usize> {
        let header: [u8; HEADER] = self.buf.get(..HEADER)?.try_into().ok()?;
        announced_with_fd(header).ok().map(|(len, _)| len)
    }

    /// Every complete frame received so far, in order, with the descriptor
    /// each announced. A broken link (an oversized header, a descriptor
    /// missing or unclaimed) is an error as soon as it shows; frames that
    /// arrived whole before it are returned first, and the error then (see
    /// [`refused`](Self::refused)).
    pub(crate) fn frames(&mut self) -> io::Result<Vec<Frame>> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        let mut frames = Vec::new();
        let failed = self
            .each_frame(|bytes, fds| {
                frames.push(Frame {
                    bytes: bytes.to_vec(),
                    fds,
                });
                ControlFlow::Continue(())
            })
            .err();
        match failed {
            Some(e) if frames.is_empty() => Err(e),
            Some(e) => {
                self.broken = Some(e);
                Ok(frames)
            }
            None => Ok(frames),
        }
    }

    /// Hands every complete frame received so far to `each`, in order, with
    /// the descriptors it announced, borrowed from the read buffer: no copy,
    /// no allocation per frame (the pool's reader decodes replies in place).
    /// Stops after a frame for which `each` breaks. A broken link (see
    /// [`frames`](Self::frames)) is the error returned after the frames that
    /// arrived whole before it.
    pub(crate) fn each_frame(
        &mut self,
        mut each: impl FnMut(&[u8], Vec<std::os::fd::OwnedFd>) -> ControlFlow<()>,
    ) -> io::Result<()> {
        let mut at = 0;
        let failed = loop {
            if let Err(e) = self.fds.stale(self.taken + at as u64) {
                break Some(e);
            }
            if self.buf.len() - at < HEADER {
                break None;
            }
            let header: [u8; HEADER] = match self.buf[at..at + HEADER].try_into() {
                Ok(header) => header,
                Err(_) => break Some(io::Error::from(io::ErrorKind::InvalidData)),
            };
            let (len, with_fd) = match announced_with_fd(header) {
                Ok(announced) => announced,
                Err(e) => break Some(e),
            };
            if self.buf.len() - at - HEADER < len {
                // Its descriptor came with its first byte: if it did not,
                // the link is broken now, not once the body is in.
                if with_fd {
                    if let Err(e) = self.fds.check(self.taken + at as u64) {
                        break Some(e);
                    }
                }
                break None;
            }
            let fds = if with_fd {
                match self.fds.claim(self.taken + at as u64) {
                    Ok(fds) => fds,
                    Err(e) => break Some(e),
                }
            } else {
                Vec::new()
            };
            let flow = each(&self.buf[at + HEADER..at + HEADER + len], fds);
            at += HEADER + len;
            if flow.is_break() {
                break None;
            }
        };
        self.buf.drain(..at);
        self.taken += at as u64;
        if self.buf.capacity() > 2 * KEEP && self.buf.len() <= KEEP {
            self.buf.shrink_to(KEEP);
        }
        match failed.or_else(|| self.refused_read.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The error that broke the link after the frames
    /// [`frames`](Self::frames) returned before it.
    pub(crate) fn refused(&mut self) -> Option<io::Error> {
        self.broken.take()
    }

    /// Bytes held (capacity), to check that buffers shrink.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Writes one frame with a single `write` for small frames.
pub(crate) fn write_frame(mut out: impl Write, bytes: &[u8]) -> io::Result<()> {
    let header = header(bytes.len())?;
    if bytes.len() <= KEEP {
        let mut frame = Vec::with_capacity(HEADER + bytes.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(bytes);
        return out.write_all(&frame);
    }
    out.write_all(&header)?;
    out.write_all(bytes)
}

/// Fills `buf` completely. `Ok(false)` if the stream ended before the first
/// byte. `Interrupted` is retried unless `give_up` says otherwise, then
/// returned (a child asked to terminate stops waiting).
fn fill(input: &mut impl Read, buf: &mut [u8], give_up: &dyn Fn() -> bool) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !give_up() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Sends one small frame with descriptors attached (SCM_RIGHTS) in a single
/// `sendmsg`; the socket must have room for it (a frame sent first on a new
/// channel). A partial send is an error, never retried: the stream would be
/// corrupt.
pub(crate) fn send_frame_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[std::os::fd::RawFd],
) -> io::Result<()> {
    let mut frame = Vec::with_capacity(HEADER + bytes.len());
    push(&mut frame, bytes)?;
    crate::process::wire::send_message(sock, &frame, fds)
}

/// Reads one frame sent with [`send_frame_with_fds`], blocking, with the
/// descriptors that came with it (close-on-exec).
pub(crate) fn read_frame_with_fds(
    mut sock: &std::os::unix::net::UnixStream,
) -> io::Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::AsFd;
    let mut header = [0u8; HEADER];
    // The descriptors arrive with the first byte of the frame: read the
    // header with recvmsg, the body with plain reads.
    let (got, _, fds) = crate::process::wire::recv_with_fds(sock.as_fd(), &mut header)?;
    if got == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if got < HEADER && !fill(&mut sock, &mut header[got..], &|| false)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let len = announced(header)?;
    let body = read_body(&mut sock, len, &|| false)?;
    Ok((body, fds))
}

/// Reads one frame, blocking; `Ok(None)` on a clean end of stream.
pub(crate) fn read_frame(input: impl Read) -> io::Result<Option<Vec<u8>>> {
    read_frame_or_give_up(input, &|| false)
}

/// [`read_frame`] that stops at `Interrupted` once `give_up()` is true.
pub(crate) fn read_frame_or_give_up(
    mut input: impl Read,
    give_up: &dyn Fn() -> bool,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER];
    if !fill(&mut input, &mut header, give_up)? {
        return Ok(None);
    }
    let len = announced(header)?;
    read_body(&mut input, len, give_up).map(Some)
}

/// Reads a body of `len` bytes, growing the buffer as they arrive.
fn read_body(input: &mut impl Read, len: usize, give_up: &dyn Fn() -> bool) -> io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(len.min(KEEP));
    while frame.len() < len {
        let from = frame.len();
        let to = len.min(from + CHUNK.max(from));
        frame.resize(to, 0);
        if !fill(input, &mut frame[from..to], give_up)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(frame)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn bodies(frames: Vec<Frame>) -> Vec<Vec<u8>> {
        frames.into_iter().map(|f| f.bytes).collect()
    }

    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for p in parts {
            push(&mut buf, p).unwrap();
        }
        buf
    }

    #[test]
    fn frames_split_across_reads_and_batches() {
        let mut d = Decoder::new();
        let mut bytes = framed(&[b"one", b"two"]);
        bytes.extend_from_slice(&10u32.to_le_bytes());
        bytes.extend_from_slice(b"par");
        d.read_buffer().extend_from_slice(&bytes);
        assert_eq!(
            bodies(d.frames().unwrap()),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        d.read_buffer().extend_from_slice(b"tial!!!");
        assert_eq!(bodies(d.frames().unwrap()), vec![b"partial!!!".to_vec()]);
        assert!(d.frames().unwrap().is_empty());
    }

    /// A read whose descriptors are refused (more than a frame carries)
    /// also completed frames: they are handed over, then the error.
    #[test]
    fn frames_completed_by_a_refused_read_come_before_its_error() {
        use std::os::fd::{AsFd, AsRawFd};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = std::fs::File::open("/").unwrap();
        let many: Vec<std::os::fd::RawFd> = (0..=super::super::fds::MAX_FDS)
            .map(|_| file.as_raw_fd())
            .collect();
        crate::process::wire::send_message(a.as_fd(), &framed(&[b"one", b"two"]), &many).unwrap();
        let mut d = Decoder::new();
        let mut seen = Vec::new();
        let read = d.recv(b.as_fd()).and_then(|_| {
            d.each_frame(|bytes, _| {
                seen.push(bytes.to_vec());
                ControlFlow::Continue(())
            })
        });
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
        let e = read.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn frames_handed_over_in_place_stop_where_the_reader_breaks() {
        let mut d = Decoder::new();
        d.read_buffer()
            .extend_from_slice(&framed(&[b"one", b"two", b"three"]));
        let mut seen = Vec::new();
        d.each_frame(|bytes, fds| {
            assert!(fds.is_empty());
            seen.push(bytes.to_vec());
            if bytes == b"two" {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
        // The frame after the break is still there for the next reader.
        assert_eq!(bodies(d.frames().unwrap()), vec![b"three".to_vec()]);
        // A broken header after whole frames: the frames, then the error.
        let mut bytes = framed(&[b"reply"]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        d.read_buffer().extend_from_slice(&bytes);
        let mut seen = 0;
        let read = d.each_frame(|_, _| {
            seen += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(seen, 1);
        assert!(read.is_err());
    }

    #[test]
    fn frames_before_an_oversized_header_are_delivered_first() {
        let mut d = Decoder::new();
        let mut bytes = framed(&[b"reply"]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        d.read_buffer().extend_from_slice(&bytes);
        assert_eq!(bodies(d.frames().unwrap()), vec![b"reply".to_vec()]);
        assert!(d.refused().is_some());
        assert!(d.frames().is_err());
    }

    #[test]
    fn a_header_cut_short_is_not_a_frame() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        (&a).write_all(&[0]).unwrap();
        drop(a);
        let err = read_frame_with_fds(&b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn an_oversized_header_is_refused_at_once() {
        let mut d = Decoder::new();
        d.read_buffer().extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(d.frames().is_err());
        let mut d = Decoder::new();
        d.read_buffer()
            .extend_from_slice(&header_with_fd(MAX_FRAME + 1).unwrap_or([0xff; 4]));
        assert!(d.frames().is_err());
        // A header announcing a descriptor means nothing to a plain reader.
        let flagged = header_with_fd(3).unwrap();
        assert!(read_frame(&[&flagged[..], b"abc"].concat()[..]).is_err());
        let too_big = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(read_frame(&too_big[..]).is_err());
        let mut out = Vec::new();
        assert!(header(MAX_FRAME + 1).is_err());
        assert!(header(u32::MAX as usize + 1).is_err(), "no wrap-around");
        assert!(write_frame(&mut out, &vec![0; MAX_FRAME + 1]).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn a_reader_never_allocates_from_the_announced_length_alone() {
        // A peer announces 60 MiB and sends 3 bytes.
        let mut d = Decoder::new();
        let mut bytes = (60u32 * 1024 * 1024).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        d.read_buffer().extend_from_slice(&bytes);
        assert!(d.frames().unwrap().is_empty());
        let _ = d.read_buffer();
        assert!(d.capacity() <= 2 * CHUNK, "reserved {}", d.capacity());
        // The blocking reader fails at the end of stream without having
        // reserved the announced size.
        assert!(read_frame(&bytes[..]).is_err());
    }

    #[test]
    fn buffers_shrink_after_a_large_frame() {
        let big = vec![7u8; 8 * 1024 * 1024];
        let bytes = framed(&[&big, b"small"]);
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        for piece in bytes.chunks(300 * 1024) {
            d.read_buffer().extend_from_slice(piece);
            frames.extend(d.frames().unwrap());
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].bytes.len(), big.len());
        assert!(d.capacity() <= 2 * KEEP, "kept {}", d.capacity());
    }

    #[test]
    fn descriptors_travel_with_their_frame() {
        use std::os::fd::{AsFd, AsRawFd};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        send_frame_with_fds(a.as_fd(), b"boot", &[file.as_raw_fd()]).unwrap();
        write_frame(&a, b"state").unwrap();
        let (bytes, fds) = read_frame_with_fds(&b).unwrap();
        assert_eq!(bytes, b"boot");
        assert_eq!(fds.len(), 1);
        assert_eq!(read_frame(&b).unwrap().unwrap(), b"state");
    }

    /// Copies of a pipe's read end; `all_closed` tells whether every copy
    /// (ours and any sent along) is closed.
    pub(crate) fn pipe_copies(n: usize) -> (std::os::fd::OwnedFd, Vec<std::os::fd::OwnedFd>) {
        let (read, write) = nix::unistd::pipe().unwrap();
        let copies = (0..n).map(|_| read.try_clone().unwrap()).collect();
        (write, copies)
    }

    pub(crate) fn all_closed(write: &std::os::fd::OwnedFd) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(write.as_fd(), PollFlags::POLLOUT)];
        poll(&mut fds, PollTimeout::ZERO).unwrap();
        fds[0].revents().unwrap().contains(PollFlags::POLLERR)
    }

    #[test]
    fn too_many_descriptors_are_refused_and_all_closed() {
        use std::os::fd::{AsFd, AsRawFd};
        let (probe, copies) = pipe_copies(6);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let raw: Vec<_> = copies.iter().map(|c| c.as_raw_fd()).collect();
        send_frame_with_fds(a.as_fd(), b"boot", &raw).unwrap();
        drop(copies);
        assert!(read_frame_with_fds(&b).is_err(), "more than 4 descriptors");
        drop((a, b));
        assert!(all_closed(&probe), "a received descriptor was leaked");
    }

    #[test]
    fn blocking_frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let big = vec![1u8; 3 * CHUNK + 17];
        write_frame(&mut buf, &big).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"abc");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), big);
        assert!(read_frame(&mut r).unwrap().is_none());
    }
}
