//! Links between a worker pool (in the daemon) and its worker processes.
//!
//! A link carries frames (see [`frame`]: a `u32` little-endian length, then
//! the bytes, at most [`MAX_FRAME`]) whose payloads are encoded with
//! rmp-serde. [`HostLink`] is the daemon's side, asynchronous and
//! non-blocking; [`ChildLink`] is the worker's side, blocking. The [`socket`]
//! transport runs over the stream socketpair every child gets at spawn:
//! frames queued while a write is pending are coalesced into one `write(2)`,
//! and the reader hands over every frame a `read(2)` returned at once. On
//! it, a call's arguments or result above the pool's
//! [`shm_threshold`](crate::worker::WorkerPoolBuilder::shm_threshold) travel
//! in a sealed memfd attached to their frame ([`shm`]), not in the stream,
//! and so does every [`SharedBytes`](shared_bytes::SharedBytes) in them
//! ([`shared_bytes`]): a frame carries up to 33 descriptors.

pub(crate) mod fds;
pub mod frame;
pub mod ipc_channel;
pub(crate) mod ipc_guard;
pub(crate) mod outbox;
pub(crate) mod shared_bytes;
pub(crate) mod shm;
pub mod socket;

pub use frame::{Frame, MAX_FRAME};

use futures_util::stream::LocalBoxStream;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::OwnedFd;
use std::task::Poll;

fn no_descriptors() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this transport carries no descriptors",
    )
}

/// The daemon's side of a link to one child.
pub trait HostLink: 'static {
    /// Queues one frame for the child; never blocks. An error means the link
    /// is gone.
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()>;

    /// Queues one frame that `encode` appends to the buffer it is given: the
    /// link's outgoing buffer where it has one (no buffer per frame), or a
    /// new one.
    fn send_with(&mut self, encode: &mut Encode<'_>) -> io::Result<()> {
        let mut frame = Vec::with_capacity(128);
        encode(&mut frame)?;
        self.send(frame)
    }

    /// Queues one frame that carries descriptors (a large payload's memfd,
    /// shared bytes' memfds; none: a plain frame). Transports that cannot
    /// carry them refuse.
    fn send_with_fds(&mut self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> io::Result<()> {
        if fds.is_empty() {
            return self.send(frame);
        }
        Err(no_descriptors())
    }

    /// Batches of frames from the child, in order; ends when the child hangs
    /// up. An error (a malformed or oversized frame, a descriptor that does
    /// not belong to its frame) ends it too.
    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Frame>>>>;

    /// The frames from the child, read in place (see [`FrameSource`]); by
    /// default [`incoming`](Self::incoming)'s batches, one frame at a time.
    fn frame_source(&mut self) -> Option<Box<dyn FrameSource>> {
        let stream = self.incoming()?;
        Some(Box::new(StreamSource(stream)))
    }

    /// The child has exited: whatever the link still waits for (a
    /// connection that will never come) is given up, so that
    /// [`incoming`](Self::incoming) ends.
    fn close(&mut self) {}
}

/// Appends one frame's bytes to the buffer given (see [`HostLink::send_with`]).
pub type Encode<'a> = dyn FnMut(&mut Vec<u8>) -> io::Result<()> + 'a;

/// What a link's reader does with each frame (its bytes, borrowed, and the
/// descriptors it carried): `Break` stops reading (the link is dropped).
pub type OnFrame<'a> = dyn FnMut(&[u8], Vec<OwnedFd>) -> ControlFlow<()> + 'a;

/// The frames from one child, handed over where they were read: the pool's
/// reader decodes each reply from the read buffer itself, with no copy or
/// allocation per frame and no batch of frames passed through a stream.
pub trait FrameSource {
    /// Waits for the next read from the link (registering `cx`'s waker) and
    /// hands each whole frame it completed to `each`, in order, as a
    /// stream's `poll_next`: `Some(Ok(()))` after a read, `None` once the
    /// child hung up (or `each` broke), `Some(Err(..))` when the link broke
    /// (frames that came whole before the break were handed over first).
    fn poll_frames(
        &mut self,
        cx: &mut std::task::Context<'_>,
        each: &mut OnFrame<'_>,
    ) -> Poll<Option<io::Result<()>>>;
}

/// A [`FrameSource`] over a transport's stream of frame batches.
struct StreamSource(LocalBoxStream<'static, io::Result<Vec<Frame>>>);

impl FrameSource for StreamSource {
    fn poll_frames(
        &mut self,
        cx: &mut std::task::Context<'_>,
        each: &mut OnFrame<'_>,
    ) -> Poll<Option<io::Result<()>>> {
        use futures_util::StreamExt;
        match std::task::ready!(self.0.poll_next_unpin(cx)) {
            Some(Ok(frames)) => {
                for frame in frames {
                    if each(&frame.bytes, frame.fds).is_break() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(Some(Ok(())))
            }
            other => Poll::Ready(other.map(|r| r.map(drop))),
        }
    }
}

/// The worker's side of a link (blocking).
pub trait ChildLink {
    /// The next frame from the daemon; `None` when it hung up.
    fn recv(&mut self) -> io::Result<Option<Frame>>;

    /// Queues a frame for the daemon.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Queues a frame that carries descriptors (a large result's memfd,
    /// shared bytes' memfds; none: a plain frame). Transports that cannot
    /// carry them refuse.
    fn send_with_fds(&mut self, frame: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
        if fds.is_empty() {
            return self.send(frame);
        }
        Err(no_descriptors())
    }

    /// Writes queued frames out.
    fn flush(&mut self) -> io::Result<()>;
}

/// Which transport a worker pool uses.
///
/// ```
/// use daemonic::worker::{Transport, WorkerPool};
/// # #[daemonic::worker]
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// # struct Calc;
/// # #[daemonic::worker]
/// # impl Calc {
/// #     pub fn add(&mut self, a: i64, b: i64) -> i64 { a + b }
/// # }
///
/// let builder = WorkerPool::builder(Calc).transport(Transport::IpcChannel);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    /// Frames over the stream socketpair every child gets at spawn: no extra
    /// thread, writes coalesced, reads batched (the default: fastest).
    #[default]
    Socket,
    /// ipc-channel (`IpcSender`/`IpcReceiver`), bootstrapped through a
    /// one-shot server; one reader thread per worker in the daemon.
    IpcChannel,
}
