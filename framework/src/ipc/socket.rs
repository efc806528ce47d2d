//! The socket transport: frames over the child's stream socketpair.

use super::frame::{self, Decoder};
use super::{ChildLink, HostLink};
use futures_util::stream::{self, LocalBoxStream, StreamExt};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Host side: a writer task owns the write half and coalesces queued frames.
pub struct SocketHostLink {
    outgoing: mpsc::Sender<Vec<u8>>,
    reader: Option<OwnedReadHalf>,
}

impl SocketHostLink {
    /// Wraps the host's end of a child's channel. Must be called on the
    /// thread (actix arbiter) whose runtime will drive the link. At most
    /// `capacity` frames wait to be written; the pool never queues more than
    /// the calls it lets a worker hold, so a full queue is a broken link.
    pub fn new(channel: StdUnixStream, capacity: usize) -> io::Result<Self> {
        channel.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(channel)?.into_split();
        let (tx, rx) = mpsc::channel(capacity.max(1));
        actix_rt::spawn(write_loop(writer, rx));
        Ok(Self {
            outgoing: tx,
            reader: Some(reader),
        })
    }
}

async fn write_loop(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        if frame::push(&mut buf, &first).is_err() {
            return; // the pool checks sizes first; the child sees EOF
        }
        // Everything queued meanwhile goes out in the same write.
        while buf.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(next) => {
                    if frame::push(&mut buf, &next).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        if writer.write_all(&buf).await.is_err() {
            return; // the child is gone; its death is reported by its pidfd
        }
        if buf.capacity() > 4 * 1024 * 1024 {
            buf = Vec::with_capacity(64 * 1024); // after a large call
        }
    }
}

impl HostLink for SocketHostLink {
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.outgoing.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => io::Error::new(
                io::ErrorKind::WouldBlock,
                "link queue full (more frames than the worker may hold)",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                io::Error::new(io::ErrorKind::BrokenPipe, "link closed")
            }
        })
    }

    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Vec<u8>>>>> {
        let reader = self.reader.take()?;
        let state = (reader, Decoder::new(), false);
        Some(
            stream::unfold(state, |(mut reader, mut decoder, done)| async move {
                if done {
                    return None;
                }
                loop {
                    // Frames before an oversized header were delivered;
                    // now the header ends the link.
                    if let Some(e) = decoder.refused() {
                        return Some((Err(e), (reader, decoder, true)));
                    }
                    match reader.read_buf(decoder.read_buffer()).await {
                        Ok(0) => return None,
                        Ok(_) => match decoder.frames() {
                            Ok(frames) if frames.is_empty() => continue,
                            Ok(frames) => return Some((Ok(frames), (reader, decoder, false))),
                            Err(e) => return Some((Err(e), (reader, decoder, true))),
                        },
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some((Err(e), (reader, decoder, true))),
                    }
                }
            })
            .boxed_local(),
        )
    }
}

/// Child side: buffered blocking reads and writes on the channel.
pub struct SocketChildLink {
    reader: BufReader<StdUnixStream>,
    writer: BufWriter<StdUnixStream>,
}

impl SocketChildLink {
    /// Wraps the child's end of its channel.
    pub fn new(channel: StdUnixStream) -> io::Result<Self> {
        let writer = channel.try_clone()?;
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, channel),
            writer: BufWriter::with_capacity(64 * 1024, writer),
        })
    }
}

impl ChildLink for SocketChildLink {
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        // std's read_exact retries on EINTR forever; a worker asked to
        // terminate must stop waiting instead.
        frame::read_frame_or_give_up(&mut self.reader, &crate::process::termination_requested)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.writer.write_all(&frame::header(frame.len())?)?;
        self.writer.write_all(frame)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}
