//! [`Nats`]: one connection to NATS, shared by the pools a process serves
//! and the remote pools it calls.

use super::caller::{GetRemotePoolStats, RemotePoolBuilder, StopRemotePool};
use super::host::{FlushHost, GetHostStats, Host, Serve, ServeSpec, StopServing};
use super::options::{state_name, ConnectError, ConnectionEvents, NatsOptions};
use super::stats::NatsStats;
use crate::error::{Error, ExitCode, Result};
use crate::log::Logger;
use crate::worker::{GetPoolLimits, GetPoolStats, WorkerMethods, WorkerPool};
use actix::prelude::*;
use async_nats::Client;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A handle on a NATS connection: serve local worker pools to other hosts
/// ([`serve`](Self::serve)) and call pools served elsewhere
/// ([`remote`](Self::remote)). Cheap to clone.
///
/// A daemon connects it at start-up when it is given to
/// [`DaemonBuilder::nats`](crate::DaemonBuilder::nats) (a server that
/// cannot be reached, or refuses the credentials, is a start-up error), and
/// stops serving and closes it at shutdown. Elsewhere, in any actix
/// `System`, [`connect`](Self::connect) it yourself.
///
/// ```no_run
/// use daemonic::remote::{Nats, NatsOptions};
/// use serde::{Deserialize, Serialize};
///
/// #[daemonic::worker]
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Hasher;
///
/// #[daemonic::worker]
/// impl Hasher {
///     pub fn digest(&mut self, input: String) -> u64 {
///         input.bytes().map(u64::from).sum()
///     }
/// }
///
/// async fn caller() -> Result<(), Box<dyn std::error::Error>> {
///     let nats = Nats::new(NatsOptions::new("nats://127.0.0.1:4222"));
///     nats.connect().await?;
///     let pool = nats.remote::<Hasher>().retries(2).start()?;
///     let digest = pool.send(hasher::Digest { input: "abc".into() }).await?;
///     println!("{digest:?}");
///     Ok(())
/// }
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct Nats {
    inner: Arc<Inner>,
}

struct Inner {
    options: NatsOptions,
    link: OnceLock<Link>,
    logger: Mutex<Logger>,
    host: Mutex<Option<Addr<Host>>>,
    remotes: Mutex<Vec<Remote>>,
}

#[derive(Clone)]
struct Link {
    client: Client,
    events: Arc<ConnectionEvents>,
    /// Where the connection was made: the host actor runs there, next to
    /// the connection's task (and, in a daemon, next to the pools).
    arbiter: ArbiterHandle,
}

struct Remote {
    stats: Recipient<GetRemotePoolStats>,
    stop: Recipient<StopRemotePool>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("options", &self.inner.options)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Nats {
    /// A handle, not connected yet.
    pub fn new(options: NatsOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                link: OnceLock::new(),
                logger: Mutex::new(Logger::discard()),
                host: Mutex::new(None),
                remotes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Connects (once; later calls return at once). Must run inside an
    /// actix `System`. After that the client reconnects by itself.
    pub async fn connect(&self) -> std::result::Result<(), ConnectError> {
        if self.inner.link.get().is_some() {
            return Ok(());
        }
        let Some(arbiter) = actix_rt::Arbiter::try_current() else {
            return Err(ConnectError::no_system(
                self.inner.options.display_servers(),
            ));
        };
        let (client, events) = self.inner.options.connect().await?;
        let logger = self.inner.logger.lock().clone();
        if self
            .inner
            .link
            .set(Link {
                client,
                events,
                arbiter,
            })
            .is_ok()
        {
            logger.log(format_args!(
                "nats: connected to {} as {}",
                self.server(),
                self.host_name()
            ));
        }
        Ok(())
    }

    /// Whether [`connect`](Self::connect) succeeded (the connection may be
    /// down for a while since: see [`stats`](Self::stats)).
    pub fn is_connected(&self) -> bool {
        self.inner.link.get().is_some()
    }

    /// This process's name as a host (see [`NatsOptions::host_name`]).
    pub fn host_name(&self) -> String {
        self.inner.options.host()
    }

    /// The options it was made with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    /// Log through this logger (the daemon's, when given to its builder).
    pub fn set_logger(&self, logger: Logger) {
        *self.inner.logger.lock() = logger;
    }

    fn link(&self) -> Result<&Link> {
        self.inner.link.get().ok_or_else(|| {
            Error::Config(
                "the NATS handle is not connected (connect it, or give it to the daemon's builder)"
                    .into(),
            )
        })
    }

    pub(crate) fn client_and_prefix(&self) -> Option<(Client, Arc<ConnectionEvents>, String)> {
        let link = self.inner.link.get()?;
        Some((
            link.client.clone(),
            link.events.clone(),
            self.inner.options.prefix.clone(),
        ))
    }

    /// Serves `pool` to other hosts: calls published to the pool's subject
    /// (`<prefix>.<worker's stable name>`, in a queue group shared with
    /// every other host serving it) run on this pool, with its semantics,
    /// and their answers go back unchanged. The subscription is made in the
    /// background; call it once the handle is connected (in a daemon's
    /// `initialize`).
    pub fn serve<W: WorkerMethods>(&self, pool: &Addr<WorkerPool<W>>) -> Result<()> {
        let link = self.link()?;
        let host = {
            let mut host = self.inner.host.lock();
            host.get_or_insert_with(|| {
                let (name, prefix, heartbeat) = (
                    self.host_name(),
                    self.inner.options.prefix.clone(),
                    self.inner.options.heartbeat,
                );
                let (client, events) = (link.client.clone(), link.events.clone());
                let logger = self.inner.logger.lock().clone();
                Host::start_in_arbiter(&link.arbiter, move |_| {
                    Host::new(name, prefix, heartbeat, client, events, logger)
                })
            })
            .clone()
        };
        let limits = pool.send(GetPoolLimits);
        let stats = pool.send(GetPoolStats);
        let raw = pool.clone().recipient();
        let logger = self.inner.logger.lock().clone();
        link.arbiter.spawn(async move {
            match (limits.await, stats.await) {
                (Ok(limits), Ok(stats)) => {
                    let spec = ServeSpec {
                        pool: stats.name,
                        worker: W::NAME,
                        schema: super::wire::schema::<W>(),
                        raw,
                        limits,
                    };
                    let _ = host.send(Serve(spec)).await;
                }
                _ => logger.error("nats: the pool to serve stopped before it was served"),
            }
        });
        Ok(())
    }

    /// A builder for a pool of `W` workers served by other hosts.
    pub fn remote<W: WorkerMethods>(&self) -> RemotePoolBuilder<W> {
        RemotePoolBuilder::new(self.clone())
    }

    pub(crate) fn register_remote(
        &self,
        stats: Recipient<GetRemotePoolStats>,
        stop: Recipient<StopRemotePool>,
    ) {
        self.inner.remotes.lock().push(Remote { stats, stop });
    }

    fn server(&self) -> String {
        match self.inner.link.get() {
            Some(link) => {
                let info = link.client.server_info();
                if info.host.is_empty() {
                    self.inner.options.display_servers()
                } else {
                    format!("{}:{} ({})", info.host, info.port, info.server_name)
                }
            }
            None => self.inner.options.display_servers(),
        }
    }

    /// The connection, the pools served and the remote pools, for `status`.
    pub async fn stats(&self) -> NatsStats {
        let host = self.inner.host.lock().clone();
        let remotes: Vec<_> = self
            .inner
            .remotes
            .lock()
            .iter()
            .map(|r| r.stats.clone())
            .collect();
        let host = match host {
            Some(host) => host.send(GetHostStats).await.ok(),
            None => None,
        };
        let remote_pools =
            futures_util::future::join_all(remotes.iter().map(|r| r.send(GetRemotePoolStats)))
                .await
                .into_iter()
                .filter_map(|r| r.ok())
                .collect();
        let (state, disconnects, errors, last_error) = match self.inner.link.get() {
            Some(link) => (
                state_name(&link.client.connection_state()).to_string(),
                link.events.disconnects.load(Ordering::Relaxed),
                link.events.errors.load(Ordering::Relaxed),
                link.events.last_error.lock().clone(),
            ),
            None => ("not connected".into(), 0, 0, None),
        };
        NatsStats {
            server: self.server(),
            state,
            disconnects,
            errors,
            last_error,
            host,
            remote_pools,
        }
    }

    /// Stops serving (the calls that wait on this host are answered
    /// `ShuttingDown`, so their callers send them elsewhere) and stops the
    /// remote pools (calls in flight get `grace`). Resolves when the calls
    /// handed to local pools are answered, so stop those pools next.
    pub(crate) async fn stop_serving(&self, grace: Duration) {
        let host = self.inner.host.lock().clone();
        let remotes: Vec<_> = self
            .inner
            .remotes
            .lock()
            .drain(..)
            .map(|r| r.stop)
            .collect();
        let stopping_remotes = futures_util::future::join_all(
            remotes.iter().map(|r| r.send(StopRemotePool { grace })),
        );
        let drained = async {
            if let Some(host) = &host {
                let _ = actix_rt::time::timeout(grace, host.send(StopServing)).await;
            }
        };
        futures_util::future::join(stopping_remotes, drained).await;
    }

    /// After the local pools stopped: the last answers out, then the
    /// connection closed.
    pub(crate) async fn close(&self) {
        let host = self.inner.host.lock().take();
        if let Some(host) = host {
            let _ = host.send(FlushHost).await;
            host.do_send(StopActor);
        }
        if let Some(link) = self.inner.link.get() {
            let _ = link.client.flush().await;
            let _ = link.client.drain().await;
        }
    }
}

/// Stops an actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopActor;

impl Handler<StopActor> for Host {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl ConnectError {
    fn no_system(servers: String) -> Self {
        Self::new(
            servers,
            "no actix System is running (connect from inside one)".into(),
            ExitCode::Software,
        )
    }
}
