//! The daemon's side of the control channel.

use super::dir::{ControlDir, SOCKET_NAME};
use super::{parse_request, Location, Reply, Request, Trusted, MAX_REQUEST};
use crate::daemon::{GetStats, RequestShutdown, Supervisor};
use crate::event::ShutdownReason;
use crate::log::Logger;
use actix::prelude::*;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Serves `status` and `stop` requests.
pub(crate) struct ControlActor {
    dir: ControlDir,
    supervisor: Addr<Supervisor>,
    logger: Logger,
    listener: Option<UnixListener>,
    trusted: Arc<Trusted>,
}

impl ControlActor {
    /// Binds the socket (replacing a stale one left by a dead daemon) in its
    /// checked directory. Peers must run as one of `trusted`'s users.
    pub(crate) fn bind(
        location: &Location,
        trusted: Trusted,
        supervisor: Addr<Supervisor>,
        logger: Logger,
    ) -> crate::Result<Self> {
        let dir = ControlDir::open(location, &trusted, true)?;
        let socket = dir.entry(SOCKET_NAME);
        let cant = |source: std::io::Error| crate::Error::CantCreate {
            what: "control socket",
            path: location.socket(),
            source,
        };
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(cant(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another running instance answers on it",
            )));
        }
        let _ = dir.remove(SOCKET_NAME);
        let listener = bind_private(&socket).map_err(cant)?;
        let listener = UnixListener::from_std(listener).map_err(cant)?;
        Ok(Self {
            dir,
            supervisor,
            logger,
            listener: Some(listener),
            trusted: Arc::new(trusted),
        })
    }

    /// Gives the socket and its directory to the user the daemon is about to
    /// drop to, so it can still remove them on exit.
    pub(crate) fn hand_over(&self, uid: u32, gid: u32) -> crate::Result<()> {
        self.dir
            .hand_over(SOCKET_NAME, uid, gid)
            .map_err(|e| crate::Error::os(format!("chown {}", self.dir.path().display()), e))
    }
}

/// A listening socket of mode 0600 from the moment it exists: the mode is set
/// on the socket before `bind` creates its file (Linux applies the socket
/// inode's mode, less the umask), so no other user can ever connect, not even
/// between `bind` and a later `chmod`.
fn bind_private(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    nix::sys::stat::fchmod(&sock, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    socket::bind(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    socket::listen(&sock, socket::Backlog::new(128)?)?;
    Ok(std::os::unix::net::UnixListener::from(sock))
}

/// At most this many `status`/`stop` clients are served at once; more wait
/// in the listen backlog (a flood of idle connections cannot exhaust the
/// daemon's descriptors).
const MAX_CONNECTIONS: usize = 16;

/// First pause after a failed `accept`; doubled per failure up to
/// [`MAX_BACKOFF`], reset by the next success.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What to do after `accept` failed with `error` (a pure decision).
#[derive(Debug, PartialEq, Eq)]
enum AfterFailure {
    /// Transient for this one connection (interrupted, aborted by the
    /// client): accept the next one at once.
    Retry,
    /// The daemon is short of something (descriptors, memory): pause, then
    /// try again. Never give up: the daemon keeps running, so must its
    /// control channel.
    BackOff(Duration),
}

fn after_failure(error: &std::io::Error, previous: Option<Duration>) -> AfterFailure {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset => {
            AfterFailure::Retry
        }
        _ => AfterFailure::BackOff(match previous {
            None => FIRST_BACKOFF,
            Some(d) => (d * 2).min(MAX_BACKOFF),
        }),
    }
}

/// What serving one connection needs.
#[derive(Clone)]
struct Service {
    supervisor: Addr<Supervisor>,
    logger: Logger,
    trusted: Arc<Trusted>,
}

async fn accept_loop(listener: UnixListener, service: Service) {
    let logger = service.logger.clone();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff: Option<Duration> = None;
    let mut failures = 0u64;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                if failures > 0 {
                    logger.log(format_args!(
                        "control channel: accepting again after {failures} failed accept(s)"
                    ));
                }
                (backoff, failures) = (None, 0);
                let service = service.clone();
                actix_rt::spawn(async move {
                    // A client that never sends its line must not hold a
                    // connection slot forever.
                    if tokio::time::timeout(CLIENT_TIMEOUT, serve(stream, &service))
                        .await
                        .is_err()
                    {
                        service.logger.debug(1, "control client timed out");
                    }
                    drop(permit);
                });
            }
            Err(e) => match after_failure(&e, backoff) {
                AfterFailure::Retry => {}
                AfterFailure::BackOff(pause) => {
                    if failures == 0 {
                        logger.warn(format_args!(
                            "control channel: accept failed: {e}; retrying every {MAX_BACKOFF:?} at most"
                        ));
                    }
                    failures += 1;
                    backoff = Some(pause);
                    drop(permit);
                    tokio::time::sleep(pause).await;
                }
            },
        }
    }
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Actor for ControlActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        // Owned by the actor: stopping it drops the listener.
        let service = Service {
            supervisor: self.supervisor.clone(),
            logger: self.logger.clone(),
            trusted: self.trusted.clone(),
        };
        ctx.spawn(actix::fut::wrap_future(accept_loop(listener, service)));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.dir.remove(SOCKET_NAME);
        self.dir.remove_self();
    }
}

async fn serve(stream: UnixStream, service: &Service) {
    let Service {
        supervisor,
        logger,
        trusted,
    } = service;
    // The socket's mode already keeps other users out; this holds even if
    // someone loosened it (or its directory) by hand.
    let peer = match stream.peer_cred() {
        Ok(peer) => peer,
        Err(e) => {
            logger.warn(format_args!(
                "control channel: cannot read a peer's credentials: {e}"
            ));
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    if BufReader::new(read)
        .take(MAX_REQUEST)
        .read_until(b'\n', &mut line)
        .await
        .is_err()
    {
        return;
    }
    let Some(request) = parse_request(&line) else {
        return;
    };
    if !trusted.contains(peer.uid()) {
        logger.warn(format_args!(
            "control channel: refused a connection from uid {} (pid {}): only the daemon's user and root may use it",
            peer.uid(),
            peer.pid().map_or("?".into(), |p| p.to_string()),
        ));
        let reply = Reply::Refused(format!(
            "uid {} may not use this daemon's control channel",
            peer.uid()
        ));
        send(&mut write, &reply).await;
        return;
    }
    let reply = match request {
        Request::Status => match supervisor.send(GetStats).await {
            Ok(stats) => Reply::Status(Box::new(stats)),
            Err(e) => Reply::Error(format!("daemon is stopping: {e}")),
        },
        Request::Stop => {
            logger.log("stop requested through the control channel");
            supervisor.do_send(RequestShutdown(ShutdownReason::Requested));
            Reply::Stopping {
                pid: std::process::id() as i32,
            }
        }
        Request::Unknown(other) => Reply::Error(format!("unknown request {other:?}")),
    };
    send(&mut write, &reply).await;
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) {
    if let Ok(mut json) = serde_json::to_string(reply) {
        json.push('\n');
        let _ = write.write_all(json.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_accept_backs_off_and_never_gives_up() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(
            after_failure(&emfile, None),
            AfterFailure::BackOff(FIRST_BACKOFF)
        );
        let mut pause = FIRST_BACKOFF;
        for _ in 0..20 {
            match after_failure(&emfile, Some(pause)) {
                AfterFailure::BackOff(next) => pause = next,
                AfterFailure::Retry => panic!("EMFILE is not per-connection"),
            }
        }
        assert_eq!(pause, MAX_BACKOFF);
        let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(after_failure(&aborted, Some(pause)), AfterFailure::Retry);
    }
}
