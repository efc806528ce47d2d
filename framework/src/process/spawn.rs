//! The one child-spawn path, shared by tasks and workers.
//!
//! A spawn sends one request to the fork server over its control socket,
//! with three descriptors: the child's end of a fresh channel, the child's
//! log socket (if the daemon has one), and the sending end of a fresh
//! per-spawn reply socket. The fork server answers on that reply socket
//! (the new pid, with a pidfd) and closes it. So the reply reaches exactly
//! the spawn that asked, on whatever thread and runtime it runs, and no
//! shared reader is needed; sending the request never blocks (the control
//! socket is non-blocking).
//!
//! A reply that never comes means the fork server died (end of stream on
//! the reply socket) or stopped answering (timeout, after which it is
//! killed). The spawn then fails with [`Error::ForkServer`], and the child
//! the fork server may already have forked is found and reaped by the
//! service thread (see `orphans.rs`): it keeps blocking on the channel we
//! keep open until then, so it never runs its entry point.

use super::launcher::{fork_server, Connection};
use super::orphans::inode_of;
use super::reap::{ChildProcess, Registered};
use super::service::wait_readable;
use super::wire::{self, SpawnReply, SpawnRequest};
use crate::error::{Error, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// How long a fork server may take to answer a spawn request before it is
/// declared hung, killed and replaced. A healthy one answers in well under a
/// millisecond.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// What to start in a child.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Registered entry point.
    pub entry: String,
    /// Role for logs and the process title.
    pub role: String,
    /// What the child gives up before the entry point runs.
    pub confinement: Option<super::Confinement>,
}

/// A started child: its process handle and the host's end of its channel.
#[derive(Debug)]
pub struct Spawned {
    /// The process (reaped through its pidfd).
    pub process: ChildProcess,
    /// The host's end of the child's channel.
    pub channel: UnixStream,
}

/// A request on its way: what the host keeps until the reply.
struct Pending {
    conn: Arc<Connection>,
    role: String,
    /// Taken when the spawn concludes; still here if the spawn was abandoned
    /// (its future dropped), in which case the child is found and reaped.
    channel: Option<OwnedFd>,
    /// Our copy of the child's end, kept only to name the child if the
    /// reply is lost (by its socket's inode; looked up only then).
    child_end: OwnedFd,
    reply: OwnedFd,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            let inode = inode_of(&self.child_end).unwrap_or(0);
            fork_server().recover_orphan(inode, channel);
        }
    }
}

fn os(context: &str, e: impl Into<io::Error>) -> Error {
    Error::Spawn(format!("{context}: {}", e.into()))
}

/// Sends the request for `options` on `conn`.
fn send(conn: Arc<Connection>, options: &SpawnOptions) -> Result<Pending> {
    let (channel, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| os("socketpair", e))?;
    let (reply, reply_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| os("socketpair", e))?;
    let settings = crate::log::child_log_settings();
    let request = SpawnRequest {
        entry: options.entry.clone(),
        role: options.role.clone(),
        daemon: settings.daemon.clone(),
        daemon_pid: settings.daemon_pid,
        debug_level: settings.debug_level,
        console: settings.console,
        has_log: settings.sink.is_some(),
        confinement: options.confinement.clone(),
        #[cfg(feature = "testing")]
        fault: super::testing::take_fault(),
    };
    let mut fds: Vec<RawFd> = vec![child_end.as_raw_fd(), reply_end.as_raw_fd()];
    if let Some(sink) = &settings.sink {
        fds.push(sink.as_raw_fd());
    }
    let bytes = wire::encode(&request).map_err(|e| os("spawn request", e))?;
    match wire::send_message(conn.sock.as_fd(), &bytes, &fds) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // Its request queue is full: it has not read for a long time.
            fork_server().kill_generation(conn.generation);
            return Err(Error::ForkServer(
                "the fork server stopped reading requests; it was killed and will be replaced"
                    .into(),
            ));
        }
        Err(e) => {
            fork_server().kill_generation(conn.generation);
            return Err(Error::ForkServer(format!(
                "cannot reach the fork server ({e}); it will be replaced"
            )));
        }
    }
    // The fork server has its own copy now; only the child keeps it.
    drop(reply_end);
    Ok(Pending {
        conn,
        role: options.role.clone(),
        channel: Some(channel),
        child_end,
        reply,
    })
}

/// What came back on a reply socket.
enum Answer {
    Reply(Vec<u8>, Vec<OwnedFd>),
    Closed,
    TimedOut,
    Broken(io::Error),
}

fn receive(reply: &OwnedFd) -> Option<Answer> {
    match wire::recv_message(reply.as_fd()) {
        Ok(Some((bytes, fds))) => Some(Answer::Reply(bytes, fds)),
        Ok(None) => Some(Answer::Closed),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Answer::Broken(e)),
    }
}

fn conclude(mut pending: Pending, answer: Answer) -> Result<Spawned> {
    let why = match answer {
        Answer::Reply(bytes, mut fds) => match wire::decode::<SpawnReply>(&bytes) {
            Ok(SpawnReply::Started { pid }) => match fds.pop() {
                Some(pidfd) if fds.is_empty() => {
                    // Its log lines carry this role, whatever it claims.
                    crate::log::register_child(pid, &pending.role);
                    // The child has its end: ours must go, or the channel
                    // would never see the child's hang-up.
                    if let Some(channel) = pending.channel.take() {
                        return Ok(Spawned {
                            process: ChildProcess::new(pid, pidfd),
                            channel: UnixStream::from(channel),
                        });
                    }
                    "the spawn's channel is gone".to_string()
                }
                _ => "the fork server's reply carried no pidfd".to_string(),
            },
            Ok(SpawnReply::Failed { error }) => {
                // No child was forked: nothing to recover.
                pending.channel = None;
                return Err(Error::Spawn(error));
            }
            Err(e) => format!("malformed reply from the fork server: {e}"),
        },
        Answer::Closed => "the fork server died before it answered".into(),
        Answer::TimedOut => format!(
            "the fork server did not answer within {REPLY_TIMEOUT:?}; it was killed and will be replaced"
        ),
        Answer::Broken(e) => format!("cannot read the fork server's reply: {e}"),
    };
    // The reply is lost: replace the fork server, and find the child it may
    // have forked (it waits on the channel we hand over, so it runs nothing).
    fork_server().kill_generation(pending.conn.generation);
    drop(pending); // recovers the child, if one was forked
    Err(Error::ForkServer(why))
}

/// Forks a child running `options.entry`, without blocking the calling
/// thread (inside a tokio runtime, e.g. an actix arbiter).
pub(crate) async fn spawn(options: &SpawnOptions) -> Result<Spawned> {
    let conn = fork_server().connection().await?;
    let pending = send(conn, options)?;
    // SAFETY: `pending` owns the reply socket and outlives the registration.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            Registered(pending.reply.as_raw_fd()),
            tokio::io::Interest::READABLE,
        )
    };
    let answer = match registered.map_err(|e| e.into_parts().1) {
        Ok(afd) => {
            let waiting = async {
                loop {
                    let mut guard = match afd.readable().await {
                        Ok(g) => g,
                        Err(e) => return Answer::Broken(e),
                    };
                    match receive(&pending.reply) {
                        Some(answer) => return answer,
                        None => guard.clear_ready(),
                    }
                }
            };
            tokio::time::timeout(REPLY_TIMEOUT, waiting)
                .await
                .unwrap_or(Answer::TimedOut)
        }
        Err(e) => Answer::Broken(e),
    };
    conclude(pending, answer)
}

/// [`spawn`], blocking the calling thread until the fork server answers (at
/// most [`REPLY_TIMEOUT`], plus a fork server's start-up when none runs).
pub(crate) fn spawn_blocking(options: &SpawnOptions) -> Result<Spawned> {
    let conn = fork_server().connection_blocking()?;
    let pending = send(conn, options)?;
    let answer = match wait_readable(&pending.reply, REPLY_TIMEOUT) {
        Ok(()) => receive(&pending.reply).unwrap_or(Answer::TimedOut),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Answer::TimedOut,
        Err(e) => Answer::Broken(e),
    };
    conclude(pending, answer)
}

impl super::ForkServer {
    /// Forks a child running `options.entry`, blocking the calling thread
    /// until the fork server answered. Inside an actix arbiter, prefer the
    /// asynchronous path the worker pools use.
    // Used by the test hooks (`testing.rs`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn spawn(&self, options: &SpawnOptions) -> Result<Spawned> {
        spawn_blocking(options)
    }
}
