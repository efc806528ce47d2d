//! Links between a worker pool (in the daemon) and its worker processes.
//!
//! A link carries length-prefixed frames (`u32` little-endian + bytes) whose
//! payloads are encoded with rmp-serde. [`HostLink`] is the daemon's side,
//! asynchronous and non-blocking; [`ChildLink`] is the worker's side,
//! blocking. The [`socket`] transport runs over the stream socketpair every
//! child gets at spawn: frames queued while a write is pending are coalesced
//! into one `write(2)`, and the reader hands over every frame a `read(2)`
//! returned at once, so pipelined calls cost a fraction of a system call
//! each.

pub mod ipc_channel;
pub mod socket;

use futures_util::stream::LocalBoxStream;
use std::io;

/// The daemon's side of a link to one child.
pub trait HostLink: 'static {
    /// Queues one frame for the child; never blocks. An error means the link
    /// is gone.
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()>;

    /// Batches of frames from the child, in order; ends when the child hangs
    /// up. An error (a malformed or oversized frame) ends it too.
    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Vec<u8>>>>>;
}

/// The worker's side of a link (blocking).
pub trait ChildLink {
    /// The next frame from the daemon; `None` when it hung up.
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>>;

    /// Queues a frame for the daemon.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Whether a frame is already buffered (so replies can be batched).
    fn has_buffered(&self) -> bool;

    /// Writes queued frames out.
    fn flush(&mut self) -> io::Result<()>;
}

/// Which transport a worker pool uses.
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

/// Largest frame either side accepts; larger ones are a protocol error.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
