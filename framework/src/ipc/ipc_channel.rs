//! The ipc-channel transport: frames as `IpcSender<ByteBuf>` messages.
//!
//! ipc-channel cannot adopt an inherited descriptor, so each worker connects
//! back through an `IpcOneShotServer` whose name travels over the spawn
//! channel, and hands the daemon its call sender and reply receiver.
//! ipc-channel has no non-blocking API, so one thread per worker in the
//! daemon accepts the connection, then reads replies and forwards them to
//! the pool's thread, and another sends calls: the pool's thread never
//! blocks on a send. Both apply [`MAX_FRAME`]; a reader that stops for any
//! reason ends the link, and the pool then replaces the worker.

use super::frame::{too_large, MAX_FRAME};
use super::{ChildLink, HostLink};
use futures_util::stream::{LocalBoxStream, StreamExt};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io;
use std::sync::mpsc as std_mpsc;
use tokio::sync::mpsc;

/// What a worker sends back through the one-shot server.
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
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl IpcHostLink {
    /// Opens a one-shot server; the worker must be told
    /// [`server_name`](Self::server_name). At most `capacity` frames wait to
    /// be sent.
    pub fn new(pool: &str, capacity: usize) -> io::Result<Self> {
        let (server, server_name) = IpcOneShotServer::<Hello>::new()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = std_mpsc::sync_channel::<Vec<u8>>(capacity.max(1));
        let (calls_tx, calls_rx) = std_mpsc::channel::<IpcSender<ByteBuf>>();
        let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = connected.clone();
        std::thread::Builder::new()
            .name(format!("daemonic-ipc-rx:{pool}"))
            .spawn(move || {
                let Ok((_, hello)) = server.accept() else {
                    return;
                };
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                if calls_tx.send(hello.calls).is_err() {
                    return;
                }
                // Ends when the worker's sender closes (it exited), or at the
                // first frame over the limit (the link is then dropped).
                while let Ok(frame) = hello.replies.recv() {
                    let item = if frame.len() > MAX_FRAME {
                        Err(too_large(frame.len()))
                    } else {
                        Ok(vec![frame.into_vec()])
                    };
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
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
            connected,
        })
    }

    /// The name the worker connects to.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Unblocks the accepting thread if the worker died before connecting.
    fn abandon(&self) {
        if !self.connected.load(std::sync::atomic::Ordering::SeqCst) {
            // A connection that says nothing: `accept` fails and the thread ends.
            if let Ok(sender) = IpcSender::<Hello>::connect(self.server_name.clone()) {
                drop(sender);
            }
        }
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

    fn incoming(&mut self) -> Option<LocalBoxStream<'static, io::Result<Vec<Vec<u8>>>>> {
        let rx = self.incoming.take()?;
        Some(
            futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
            .boxed_local(),
        )
    }

    fn close(&mut self) {
        self.abandon();
    }
}

impl Drop for IpcHostLink {
    fn drop(&mut self) {
        self.abandon();
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
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.calls.recv() {
                Ok(frame) if frame.len() > MAX_FRAME => return Err(too_large(frame.len())),
                Ok(frame) => return Ok(Some(frame.into_vec())),
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
