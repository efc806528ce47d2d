//! The ipc-channel transport: frames as `IpcSender<ByteBuf>` messages.
//!
//! ipc-channel cannot adopt an inherited descriptor, so each worker connects
//! back through a socket whose name travels over the spawn channel, and
//! hands the daemon its call sender and reply receiver. ipc-channel has no
//! non-blocking API, so one thread per worker in the daemon accepts the
//! connection, then reads replies and forwards them to the pool's thread,
//! and another sends calls: the pool's thread never blocks on a send. Both
//! apply [`MAX_FRAME`]; a reader that stops for any reason ends the link,
//! and the pool then replaces the worker.
//!
//! ipc-channel's own receiving code trusts the bytes it reads, so the daemon
//! checks every message a worker sends before ipc-channel parses it (see
//! `ipc_guard.rs`).

use super::frame::{too_large, Frame, MAX_FRAME};
use super::ipc_guard::{check_next, Listener, Wakers};
use super::{ChildLink, HostLink};
use futures_util::stream::{LocalBoxStream, StreamExt};
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io;
use std::os::fd::AsFd;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What a worker sends back through the socket it connects to.
#[derive(Serialize, Deserialize)]
struct Hello {
    calls: IpcSender<ByteBuf>,
    replies: IpcReceiver<ByteBuf>,
}

/// Daemon side.
pub struct IpcHostLink {
    outgoing: std_mpsc::SyncSender<Vec<u8>>,
    incoming: Option<mpsc::UnboundedReceiver<io::Result<Vec<Vec<u8>>>>>,
    server_name: String,
    wakers: Arc<Wakers>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl IpcHostLink {
    /// Opens the socket the worker connects to; the worker must be told
    /// [`server_name`](Self::server_name). At most `capacity` frames wait to
    /// be sent.
    pub fn new(pool: &str, capacity: usize) -> io::Result<Self> {
        let listener = Listener::new()?;
        let server_name = listener.name().to_string();
        let wakers = Arc::new(Wakers::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = std_mpsc::sync_channel::<Vec<u8>>(capacity.max(1));
        let (calls_tx, calls_rx) = std_mpsc::channel::<IpcSender<ByteBuf>>();
        let accepting = wakers.clone();
        std::thread::Builder::new()
            .name(format!("daemonic-ipc-rx:{pool}"))
            .spawn(move || {
                let connected = match listener.accept(&accepting) {
                    Ok(connected) => connected,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                if calls_tx.send(connected.calls).is_err() {
                    return;
                }
                // Ends when the worker's sender closes (it exited), when the
                // link closes, or at the first message that is not a frame
                // within the limit (the link is then dropped).
                loop {
                    match check_next(connected.raw_replies.as_fd(), &accepting) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    let Ok(frame) = connected.replies.recv() else {
                        return;
                    };
                    let item = if frame.len() > MAX_FRAME {
                        Err(too_large(frame.len()))
                    } else {
                        Ok(vec![frame.into_vec()])
                    };
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            })?;
        std::thread::Builder::new()
            .name(format!("daemonic-ipc-tx:{pool}"))
            .spawn(move || {
                let Ok(calls) = calls_rx.recv() else {
                    return;
                };
                while let Ok(frame) = out_rx.recv() {
                    if calls.send(ByteBuf::from(frame)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            outgoing: out_tx,
            incoming: Some(rx),
            server_name,
            wakers,
        })
    }

    /// The name the worker connects to.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }
}

impl HostLink for IpcHostLink {
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        if frame.len() > MAX_FRAME {
            return Err(too_large(frame.len()));
        }
        self.outgoing.try_send(frame).map_err(|e| match e {
            std_mpsc::TrySendError::Full(_) => io::Error::new(
                io::ErrorKind::WouldBlock,
                "link queue full (more frames than the worker may hold)",
            ),
            std_mpsc::TrySendError::Disconnected(_) => {
                io::Error::new(io::ErrorKind::BrokenPipe, "link closed")
            }
        })
    }

    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Frame>>>> {
        let rx = self.incoming.take()?;
        Some(
            futures_util::stream::unfold(rx, |mut rx| async move {
                let item = rx.recv().await?;
                let frames = item.map(|batch| batch.into_iter().map(Frame::from).collect());
                Some((frames, rx))
            })
            .boxed_local(),
        )
    }

    /// The worker exited: a thread still waiting for its connection, or
    /// blocked on a socket it left behind (replies it sent are read first),
    /// wakes and ends.
    fn close(&mut self) {
        self.wakers.close();
    }
}

impl Drop for IpcHostLink {
    fn drop(&mut self) {
        self.wakers.close();
    }
}

/// Worker side.
pub struct IpcChildLink {
    calls: IpcReceiver<ByteBuf>,
    replies: IpcSender<ByteBuf>,
}

impl IpcChildLink {
    /// Connects back to the daemon's one-shot server.
    pub fn connect(server_name: String) -> io::Result<Self> {
        let hello = IpcSender::<Hello>::connect(server_name)?;
        let (calls_tx, calls_rx) = ipc::channel::<ByteBuf>()?;
        let (replies_tx, replies_rx) = ipc::channel::<ByteBuf>()?;
        hello
            .send(Hello {
                calls: calls_tx,
                replies: replies_rx,
            })
            .map_err(other)?;
        Ok(Self {
            calls: calls_rx,
            replies: replies_tx,
        })
    }
}

impl ChildLink for IpcChildLink {
    fn recv(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match self.calls.recv() {
                Ok(frame) if frame.len() > MAX_FRAME => return Err(too_large(frame.len())),
                Ok(frame) => return Ok(Some(Frame::from(frame.into_vec()))),
                Err(ipc_channel::ipc::IpcError::Disconnected) => return Ok(None),
                Err(_) if crate::process::termination_requested() => {
                    return Err(io::ErrorKind::Interrupted.into())
                }
                Err(ipc_channel::ipc::IpcError::Io(e))
                    if e.kind() == io::ErrorKind::Interrupted =>
                {
                    continue
                }
                Err(e) => return Err(other(e)),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() > MAX_FRAME {
            return Err(too_large(frame.len()));
        }
        self.replies
            .send(ByteBuf::from(frame.to_vec()))
            .map_err(other)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
