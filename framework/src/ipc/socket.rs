//! The socket transport: frames over the child's stream socketpair, with
//! the descriptors of large payloads and shared bytes attached (see `fds.rs`,
//! `shm.rs`).

use super::frame::{Decoder, Frame};
use super::outbox::Outbox;
use super::{ChildLink, Encode, FrameSource, HostLink, OnFrame};
use futures_util::stream::{self, LocalBoxStream, StreamExt};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::task::{ready, Poll, Waker};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// Host side: a writer task owns a duplicate of the socket and coalesces
/// queued frames; the reader waits for readability only.
///
/// The socket is registered for reading alone: registered for writing too,
/// it would wake the pool's thread every time the worker reads a call (the
/// send buffer drains, an EPOLLOUT edge) for nothing, a wake-up per call on
/// a same-core round trip. The writer writes straight away and registers
/// for writability only while a full buffer makes it wait (`outbox.rs`).
pub struct SocketHostLink {
    outgoing: Rc<RefCell<Outgoing>>,
    capacity: usize,
    reader: Option<AsyncFd<StdUnixStream>>,
}

/// Frames queued for the writer task, which runs on the same thread: the
/// pool appends each frame to `out` and wakes the task only if it waits
/// (no channel, no per-frame message); the task swaps the whole batch out
/// and writes it.
#[derive(Default)]
struct Outgoing {
    out: Outbox,
    /// Frames in `out`.
    frames: usize,
    /// The writer task, while it waits for frames.
    writer: Option<Waker>,
    /// The writer stopped: the child is gone.
    closed: bool,
    /// The link was dropped: the writer sends what is queued and stops.
    dropped: bool,
}

impl SocketHostLink {
    /// Wraps the host's end of a child's channel. Must be called on the
    /// thread (actix arbiter) whose runtime will drive the link. At most
    /// `capacity` frames wait to be written; the pool never queues more than
    /// the calls it lets a worker hold, so a full queue is a broken link.
    pub fn new(channel: StdUnixStream, capacity: usize) -> io::Result<Self> {
        channel.set_nonblocking(true)?;
        // Non-blocking is a flag of the open socket, so the duplicate is too.
        let writer = channel.try_clone()?;
        // SAFETY: the AsyncFd owns the socket for its whole life, so the
        // descriptor stays open and the same.
        let reader = unsafe { AsyncFd::register_with_interest(channel, Interest::READABLE) }?;
        let outgoing = Rc::new(RefCell::new(Outgoing::default()));
        actix_rt::spawn(write_loop(writer, outgoing.clone()));
        Ok(Self {
            outgoing,
            capacity: capacity.max(1),
            reader: Some(reader),
        })
    }

    fn queue(&mut self, frame: Frame) -> io::Result<()> {
        self.queue_with(|out| out.push_frame(frame))
    }

    /// Queues a frame that `push` appends to the outgoing batch, and wakes
    /// the writer if it waits.
    fn queue_with(&mut self, push: impl FnOnce(&mut Outbox) -> io::Result<()>) -> io::Result<()> {
        let mut outgoing = self.outgoing.borrow_mut();
        if outgoing.closed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link closed"));
        }
        if outgoing.frames >= self.capacity {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "link queue full (more frames than the worker may hold)",
            ));
        }
        push(&mut outgoing.out)?;
        outgoing.frames += 1;
        if let Some(writer) = outgoing.writer.take() {
            writer.wake();
        }
        Ok(())
    }
}

impl Drop for SocketHostLink {
    fn drop(&mut self) {
        let mut outgoing = self.outgoing.borrow_mut();
        outgoing.dropped = true;
        if let Some(writer) = outgoing.writer.take() {
            writer.wake();
        }
    }
}

async fn write_loop(writer: StdUnixStream, outgoing: Rc<RefCell<Outgoing>>) {
    // Swapped with the queue's: frames queued while a batch is written wait
    // for the next one, in order.
    let mut out = Outbox::default();
    loop {
        let more = std::future::poll_fn(|cx| {
            let mut queued = outgoing.borrow_mut();
            if !queued.out.is_empty() {
                std::mem::swap(&mut queued.out, &mut out);
                queued.frames = 0;
                Poll::Ready(true)
            } else if queued.dropped {
                Poll::Ready(false)
            } else {
                if !queued
                    .writer
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    queued.writer = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await;
        if !more {
            return;
        }
        if out.write_direct(&writer).await.is_err() {
            // The child is gone; its death is reported by its pidfd.
            outgoing.borrow_mut().closed = true;
            return;
        }
    }
}

/// One read from a non-blocking link into `decoder`, descriptors
/// included, once the socket is readable: the bytes read (0: hung up).
/// Cancel-safe (nothing is read until the socket is ready).
pub(crate) async fn read_into(reader: &OwnedReadHalf, decoder: &mut Decoder) -> io::Result<usize> {
    let sock: &UnixStream = reader.as_ref();
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || decoder.recv(sock.as_fd())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// The host's reader as a [`FrameSource`]: one read per poll, every frame
/// it completed handed over from the read buffer in place.
struct SocketSource {
    reader: AsyncFd<StdUnixStream>,
    decoder: Decoder,
}

impl FrameSource for SocketSource {
    fn poll_frames(
        &mut self,
        cx: &mut std::task::Context<'_>,
        each: &mut OnFrame<'_>,
    ) -> Poll<Option<io::Result<()>>> {
        let Self { reader, decoder } = self;
        loop {
            let mut guard = match ready!(reader.poll_read_ready(cx)) {
                Ok(guard) => guard,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            match guard.try_io(|sock| decoder.recv_checked(sock.get_ref().as_fd())) {
                Ok(Ok((0, _))) => return Poll::Ready(None),
                Ok(Ok((_, drained))) => {
                    // Nothing left: the next wait goes to the reactor
                    // instead of spending a read on EAGAIN first. (If
                    // bytes came since, the reactor saw them: clearing
                    // keeps that event.)
                    if drained {
                        guard.clear_ready();
                    }
                }
                // The child closed its end with calls unread in it (it
                // died busy): reported once everything it wrote was read,
                // so it is the link's end.
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Poll::Ready(None)
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                Err(_would_block) => continue,
            }
            let mut stopped = false;
            let read = decoder.each_frame(|bytes, fds| {
                let flow = each(bytes, fds);
                stopped = flow.is_break();
                flow
            });
            return Poll::Ready(match read {
                Err(e) => Some(Err(e)),
                Ok(()) if stopped => None,
                Ok(()) => Some(Ok(())),
            });
        }
    }
}

impl HostLink for SocketHostLink {
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.queue(Frame::from(frame))
    }

    fn send_with(&mut self, encode: &mut Encode<'_>) -> io::Result<()> {
        self.queue_with(|out| out.push_with(encode))
    }

    fn send_with_fds(&mut self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> io::Result<()> {
        if fds.len() > crate::ipc::fds::MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors for one frame",
            ));
        }
        self.queue(Frame { bytes: frame, fds })
    }

    fn frame_source(&mut self) -> Option<Box<dyn FrameSource>> {
        let reader = self.reader.take()?;
        Some(Box::new(SocketSource {
            reader,
            decoder: Decoder::new(),
        }))
    }

    /// The frames of [`frame_source`](HostLink::frame_source), copied
    /// into batches.
    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Frame>>>> {
        let mut source = self.frame_source()?;
        // Frames that came before a break go first; the break after them.
        let mut end: Option<Option<io::Error>> = None;
        Some(
            stream::poll_fn(move |cx| {
                if let Some(end) = end.take() {
                    return Poll::Ready(end.map(Err));
                }
                let mut frames = Vec::new();
                let read = source.poll_frames(cx, &mut |bytes, fds| {
                    frames.push(Frame {
                        bytes: bytes.to_vec(),
                        fds,
                    });
                    ControlFlow::Continue(())
                });
                match ready!(read) {
                    Some(Ok(())) if frames.is_empty() => {
                        // Part of a frame: read on.
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Some(Ok(())) => Poll::Ready(Some(Ok(frames))),
                    ended if frames.is_empty() => Poll::Ready(ended.and_then(Result::err).map(Err)),
                    ended => {
                        end = Some(ended.and_then(Result::err));
                        Poll::Ready(Some(Ok(frames)))
                    }
                }
            })
            .boxed_local(),
        )
    }
}

/// Child side: blocking reads (each `recvmsg` takes every frame that came)
/// and writes queued until [`flush`](ChildLink::flush).
pub struct SocketChildLink {
    channel: StdUnixStream,
    decoder: Decoder,
    received: VecDeque<Frame>,
    out: Outbox,
}

impl SocketChildLink {
    /// Wraps the child's end of its channel.
    pub fn new(channel: StdUnixStream) -> io::Result<Self> {
        channel.set_nonblocking(false)?;
        Ok(Self {
            channel,
            decoder: Decoder::new(),
            received: VecDeque::new(),
            out: Outbox::default(),
        })
    }
}

/// Blocks until `sock` has something to read (or hung up).
///
/// The worker waits here rather than in a blocking `recvmsg`: a reader
/// asleep in a stream socket's `recvmsg` shares the socket's wait queue with
/// writers waiting for room, and is woken (to find nothing and sleep again)
/// every time the pool reads one of its replies and frees the room it took
/// — two needless context switches per call on a shared core. `poll` wakes
/// only for the events asked for (BENCHMARKS.md, "Workers").
fn wait_readable(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    match unsafe { libc::poll(&mut pfd, 1, -1) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

impl ChildLink for SocketChildLink {
    fn recv(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.received.pop_front() {
                return Ok(Some(frame));
            }
            if let Some(e) = self.decoder.refused() {
                return Err(e);
            }
            match wait_readable(self.channel.as_fd())
                .and_then(|()| self.decoder.recv(self.channel.as_fd()))
            {
                Ok(0) if self.decoder.is_empty() => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => self.received.extend(self.decoder.frames()?),
                // A worker asked to terminate stops waiting.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        && !crate::process::termination_requested() => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.out.push(frame)
    }

    fn send_with_fds(&mut self, frame: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
        self.out.push_with_fds(frame, fds)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_blocking(self.channel.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The writer blocked by a full socket (the child not reading yet)
    /// while the pool queues more, plain frames and frames with
    /// descriptors: every frame arrives once, whole, in order, each
    /// descriptor with its own.
    #[test]
    fn frames_queued_while_the_writer_waits_arrive_whole_and_in_order() {
        actix_rt::System::new().block_on(async {
            let (host, child) = StdUnixStream::pair().unwrap();
            nix::sys::socket::setsockopt(&host, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
            let mut link = SocketHostLink::new(host, 1024).unwrap();
            let body = |i: usize| vec![i as u8; 1000 + (i * 7919) % 30_000];
            let mut expected = Vec::new();
            for round in 0..4 {
                for k in 0..20 {
                    let i = round * 20 + k;
                    if i % 9 == 4 {
                        let file = tempfile::tempfile().unwrap();
                        file.set_len(i as u64).unwrap();
                        link.send_with_fds(body(i), vec![file.into()]).unwrap();
                        expected.push((body(i), Some(i as u64)));
                    } else {
                        link.send(body(i)).unwrap();
                        expected.push((body(i), None));
                    }
                }
                // The writer runs, fills the socket and waits for room.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            }
            let count = expected.len();
            let reader = std::thread::spawn(move || {
                let mut d = crate::ipc::frame::Decoder::new();
                let mut got = Vec::new();
                while got.len() < count {
                    assert!(d.recv(std::os::fd::AsFd::as_fd(&child)).unwrap() > 0);
                    got.extend(d.frames().unwrap());
                }
                got
            });
            // Keep the writer's runtime turning until the reader has it all.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !reader.is_finished() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the frames never all arrived"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let got = reader.join().unwrap();
            assert_eq!(got.len(), expected.len());
            for (frame, (body, fd_len)) in got.into_iter().zip(expected) {
                assert_eq!(frame.bytes, body);
                let lens: Vec<u64> = frame
                    .fds
                    .iter()
                    .map(|fd| nix::sys::stat::fstat(fd).unwrap().st_size as u64)
                    .collect();
                assert_eq!(lens, fd_len.into_iter().collect::<Vec<_>>());
            }
            drop(link);
        });
    }

    /// The stream of batches over the in-place reader: the frames, then the
    /// break after them; and calls written through the shared outbox.
    #[test]
    fn batches_end_with_the_break_after_their_frames() {
        actix_rt::System::new().block_on(async {
            let (host, mut child) = StdUnixStream::pair().unwrap();
            let mut link = SocketHostLink::new(host, 4).unwrap();
            let mut frames = link.incoming().unwrap();
            let mut bytes = Vec::new();
            super::super::frame::push(&mut bytes, b"one").unwrap();
            super::super::frame::push(&mut bytes, b"two").unwrap();
            bytes.extend_from_slice(&u32::MAX.to_le_bytes());
            child.write_all(&bytes).unwrap();
            let batch = frames.next().await.unwrap().unwrap();
            let bodies: Vec<_> = batch.into_iter().map(|f| f.bytes).collect();
            assert_eq!(bodies, [b"one".to_vec(), b"two".to_vec()]);
            assert!(frames.next().await.unwrap().is_err());
            link.send(b"call".to_vec()).unwrap();
            link.send_with(&mut |out| {
                out.extend_from_slice(b"in place");
                Ok(())
            })
            .unwrap();
            // The writer sends what is queued, then stops: the child end
            // reads the frames, then the end of the stream.
            drop((link, frames));
            child.set_nonblocking(true).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let (mut read, mut buf) = (Vec::new(), [0u8; 256]);
            loop {
                match std::io::Read::read(&mut child, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the writer never finished"
                        );
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let mut expected = Vec::new();
            super::super::frame::push(&mut expected, b"call").unwrap();
            super::super::frame::push(&mut expected, b"in place").unwrap();
            assert_eq!(read, expected);
        });
    }
}
