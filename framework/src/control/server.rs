//! The daemon's side of the control channel.

use super::Reply;
use crate::daemon::{GetStats, RequestShutdown, Supervisor};
use crate::event::ShutdownReason;
use crate::log::Logger;
use actix::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Serves `status` and `stop` requests.
pub(crate) struct ControlActor {
    path: PathBuf,
    supervisor: Addr<Supervisor>,
    logger: Logger,
    listener: Option<UnixListener>,
}

impl ControlActor {
    /// Binds the socket (replacing a stale one left by a dead daemon).
    pub(crate) fn bind(
        path: PathBuf,
        supervisor: Addr<Supervisor>,
        logger: Logger,
    ) -> crate::Result<Self> {
        super::prepare_dir(&path)?;
        let cant = |source: std::io::Error| crate::Error::CantCreate {
            what: "control socket",
            path: path.clone(),
            source,
        };
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(cant(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another running instance answers on it",
            )));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(cant)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(cant)?;
        Ok(Self {
            path,
            supervisor,
            logger,
            listener: Some(listener),
        })
    }
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

async fn accept_loop(listener: UnixListener, supervisor: Addr<Supervisor>, logger: Logger) {
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
                let supervisor = supervisor.clone();
                let logger = logger.clone();
                actix_rt::spawn(async move {
                    // A client that never sends its line must not hold a
                    // connection slot forever.
                    if tokio::time::timeout(CLIENT_TIMEOUT, serve(stream, supervisor, &logger))
                        .await
                        .is_err()
                    {
                        logger.debug(1, "control client timed out");
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
        ctx.spawn(actix::fut::wrap_future(accept_loop(
            listener,
            self.supervisor.clone(),
            self.logger.clone(),
        )));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

async fn serve(stream: UnixStream, supervisor: Addr<Supervisor>, logger: &Logger) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read)
        .take(256)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let reply = match line.trim() {
        "status" => match supervisor.send(GetStats).await {
            Ok(stats) => Reply::Status(Box::new(stats)),
            Err(e) => Reply::Error(format!("daemon is stopping: {e}")),
        },
        "stop" => {
            logger.log("stop requested through the control channel");
            supervisor.do_send(RequestShutdown(ShutdownReason::Requested));
            Reply::Stopping {
                pid: std::process::id() as i32,
            }
        }
        other => Reply::Error(format!("unknown request {other:?}")),
    };
    if let Ok(mut json) = serde_json::to_string(&reply) {
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
