//! The socket transport: frames over the child's stream socketpair.

use super::{ChildLink, HostLink, MAX_FRAME};
use futures_util::stream::{self, LocalBoxStream, StreamExt};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Host side: a writer task owns the write half and coalesces queued frames.
pub struct SocketHostLink {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    reader: Option<OwnedReadHalf>,
}

impl SocketHostLink {
    /// Wraps the host's end of a child's channel. Must be called on the
    /// thread (actix arbiter) whose runtime will drive the link.
    pub fn new(channel: StdUnixStream) -> io::Result<Self> {
        channel.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(channel)?.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        actix_rt::spawn(write_loop(writer, rx));
        Ok(Self {
            outgoing: tx,
            reader: Some(reader),
        })
    }
}

async fn write_loop(mut writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        push_frame(&mut buf, &first);
        // Everything queued meanwhile goes out in the same write.
        while buf.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(frame) => push_frame(&mut buf, &frame),
                Err(_) => break,
            }
        }
        if writer.write_all(&buf).await.is_err() {
            return; // the child is gone; its death is reported by its pidfd
        }
    }
}

fn push_frame(buf: &mut Vec<u8>, frame: &[u8]) {
    buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    buf.extend_from_slice(frame);
}

/// Splits every complete frame off the front of `buf`.
fn take_frames(buf: &mut Vec<u8>) -> io::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 4 {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
            ));
        }
        if buf.len() - at - 4 < len {
            break;
        }
        frames.push(buf[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    buf.drain(..at);
    Ok(frames)
}

impl HostLink for SocketHostLink {
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.outgoing
            .send(frame)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "link closed"))
    }

    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Vec<u8>>>>> {
        let reader = self.reader.take()?;
        let state = (reader, Vec::with_capacity(64 * 1024), false);
        Some(
            stream::unfold(state, |(mut reader, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    // Straight into the frame buffer: no zeroed scratch copy.
                    buf.reserve(64 * 1024);
                    match reader.read_buf(&mut buf).await {
                        Ok(0) => return None,
                        Ok(_) => match take_frames(&mut buf) {
                            Ok(frames) if frames.is_empty() => continue,
                            Ok(frames) => return Some((Ok(frames), (reader, buf, false))),
                            Err(e) => return Some((Err(e), (reader, buf, true))),
                        },
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some((Err(e), (reader, buf, true))),
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

/// `read_exact` that gives up on `Interrupted` once termination was
/// requested (std's retries forever). `Ok(false)`: clean end of stream.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    && !crate::process::termination_requested() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl ChildLink for SocketChildLink {
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        if !read_full(&mut self.reader, &mut len)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut frame = vec![0u8; len];
        if !read_full(&mut self.reader, &mut frame)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Some(frame))
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.writer.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.writer.write_all(frame)
    }

    fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_and_batches() {
        let mut buf = Vec::new();
        push_frame(&mut buf, b"one");
        push_frame(&mut buf, b"two");
        buf.extend_from_slice(&10u32.to_le_bytes());
        buf.extend_from_slice(b"par");
        let frames = take_frames(&mut buf).unwrap();
        assert_eq!(frames, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(buf.len(), 7);
        buf.extend_from_slice(b"tial!!!");
        assert_eq!(take_frames(&mut buf).unwrap(), vec![b"partial!!!".to_vec()]);
    }

    #[test]
    fn oversized_length_is_rejected() {
        let mut buf = u32::MAX.to_le_bytes().to_vec();
        assert!(take_frames(&mut buf).is_err());
    }
}
