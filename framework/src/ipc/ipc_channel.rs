//! The ipc-channel transport: frames as `IpcSender<ByteBuf>` messages.
//!
//! ipc-channel cannot adopt an inherited descriptor, so each worker connects
//! back through an `IpcOneShotServer` whose name travels over the spawn
//! channel, and hands the daemon its call sender and reply receiver. Replies
//! are read by one blocking thread per worker (ipc-channel has no
//! non-blocking readiness API) and forwarded to the pool's thread.

use super::{ChildLink, HostLink};
use futures_util::stream::{LocalBoxStream, StreamExt};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What a worker sends back through the one-shot server.
#[derive(Serialize, Deserialize)]
struct Hello {
    calls: IpcSender<ByteBuf>,
    replies: IpcReceiver<ByteBuf>,
}

enum Outgoing {
    Pending(Vec<Vec<u8>>),
    Connected(IpcSender<ByteBuf>),
    Closed,
}

/// Daemon side.
pub struct IpcHostLink {
    outgoing: Arc<Mutex<Outgoing>>,
    incoming: Option<mpsc::UnboundedReceiver<io::Result<Vec<Vec<u8>>>>>,
    server_name: String,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl IpcHostLink {
    /// Opens a one-shot server; the worker must be told [`server_name`](Self::server_name).
    pub fn new(pool: &str) -> io::Result<Self> {
        let (server, server_name) = IpcOneShotServer::<Hello>::new()?;
        let outgoing = Arc::new(Mutex::new(Outgoing::Pending(Vec::new())));
        let (tx, rx) = mpsc::unbounded_channel();
        let sends = outgoing.clone();
        std::thread::Builder::new()
            .name(format!("daemonic-ipc:{pool}"))
            .spawn(move || {
                let Ok((_, hello)) = server.accept() else {
                    *sends.lock() = Outgoing::Closed;
                    return;
                };
                {
                    let mut out = sends.lock();
                    if let Outgoing::Pending(queued) = &mut *out {
                        for frame in queued.drain(..) {
                            let _ = hello.calls.send(ByteBuf::from(frame));
                        }
                    }
                    if !matches!(*out, Outgoing::Closed) {
                        *out = Outgoing::Connected(hello.calls.clone());
                    }
                }
                // Ends when the worker's sender closes (it exited).
                while let Ok(frame) = hello.replies.recv() {
                    if tx.send(Ok(vec![frame.into_vec()])).is_err() {
                        break;
                    }
                }
                *sends.lock() = Outgoing::Closed;
            })?;
        Ok(Self {
            outgoing,
            incoming: Some(rx),
            server_name,
        })
    }

    /// The name the worker connects to.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Unblocks the accepting thread if the worker died before connecting.
    pub fn abandon(&self) {
        let mut out = self.outgoing.lock();
        if matches!(*out, Outgoing::Pending(_)) {
            *out = Outgoing::Closed;
            drop(out);
            if let Ok(sender) = IpcSender::<Hello>::connect(self.server_name.clone()) {
                drop(sender);
            }
        }
    }
}

impl HostLink for IpcHostLink {
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        match &mut *self.outgoing.lock() {
            Outgoing::Pending(queued) => {
                queued.push(frame);
                Ok(())
            }
            Outgoing::Connected(sender) => sender.send(ByteBuf::from(frame)).map_err(other),
            Outgoing::Closed => Err(io::Error::new(io::ErrorKind::BrokenPipe, "link closed")),
        }
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
        self.replies
            .send(ByteBuf::from(frame.to_vec()))
            .map_err(other)
    }

    fn has_buffered(&self) -> bool {
        false
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
