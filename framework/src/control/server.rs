//! The daemon's side of the control channel.

use super::Reply;
use crate::daemon::{GetStats, RequestShutdown, Supervisor};
use crate::event::ShutdownReason;
use crate::log::Logger;
use actix::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

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

impl Actor for ControlActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let connections = futures_util::stream::unfold(listener, |listener| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => return Some((Connection(stream), listener)),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return None,
                }
            }
        });
        ctx.add_stream(connections);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

struct Connection(UnixStream);

impl StreamHandler<Connection> for ControlActor {
    fn handle(&mut self, Connection(stream): Connection, _: &mut Context<Self>) {
        let supervisor = self.supervisor.clone();
        let logger = self.logger.clone();
        actix_rt::spawn(async move {
            // A client that never sends its line must not hold a task forever.
            if tokio::time::timeout(Duration::from_secs(5), serve(stream, supervisor, &logger))
                .await
                .is_err()
            {
                logger.debug(1, "control client timed out");
            }
        });
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
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
