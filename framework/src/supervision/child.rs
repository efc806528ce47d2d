//! A child as its supervisor sees it: a spec (name, restart type, shutdown
//! timeout) around a kind (pool, actor, nested supervisor) that knows how to
//! start, restart in place and stop.

use super::strategy::{Exit, Restart};
use super::tree::TreeStats;
use crate::event::Events;
use crate::log::Logger;
use actix::Recipient;
use futures_util::future::LocalBoxFuture;
use std::time::Duration;

/// Default [`ChildSpec::shutdown`] of pools and actors (OTP's 5 s).
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

/// Why a child is stopped: to be restarted (a pool keeps its queued calls
/// for the new workers) or for good (they fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    Restart,
    Final,
}

/// A child's report to its supervisor (one per incarnation).
pub(crate) struct ChildExited {
    /// The child's id in its supervisor (stable when siblings come and go).
    pub id: u64,
    pub generation: u64,
    pub exit: Exit,
}

impl actix::Message for ChildExited {
    type Result = ();
}

/// How one incarnation of a child reports its end.
#[derive(Clone)]
pub(crate) struct ChildLink {
    pub supervisor: Recipient<ChildExited>,
    pub id: u64,
    pub generation: u64,
    /// The supervisor's events and logger, for children that have none.
    pub events: Events,
    pub logger: Logger,
    /// A daemon's pool list: its tree's pools show in its stats.
    pub pools: Option<std::sync::Arc<crate::worker::PoolRegistry>>,
}

impl ChildLink {
    pub(crate) fn exited(&self, exit: Exit) {
        self.supervisor.do_send(ChildExited {
            id: self.id,
            generation: self.generation,
            exit,
        });
    }
}

/// What a supervisor does with one kind of child. Every method runs on the
/// supervisor's thread; the futures it returns must not block it.
pub(crate) trait ChildKind: Send {
    /// `"pool"`, `"actor"` or `"supervisor"`.
    fn kind(&self) -> &'static str;
    /// Starts the child, or restarts it in place (its address stays); the
    /// future resolves once it runs (`Err`: it could not start).
    fn start(&mut self, link: ChildLink) -> LocalBoxFuture<'static, Result<(), String>>;
    /// Stops it; resolves once it stopped. The supervisor bounds the wait by
    /// the child's shutdown timeout.
    fn stop(&mut self, mode: StopMode, timeout: Option<Duration>) -> LocalBoxFuture<'static, ()>;
    /// A nested supervisor's own tree.
    fn tree(&self) -> Option<LocalBoxFuture<'static, Option<TreeStats>>> {
        None
    }
}

/// A child of a [`Supervisor`](super::Supervisor): what it is, its name,
/// when it restarts and how long it may take to stop.
///
/// ```no_run
/// use daemonic::supervision::{ActorSpec, IntoChild, Restart, Supervisor};
/// use std::time::Duration;
/// # struct Uploader;
/// # impl daemonic::actix::Actor for Uploader { type Context = daemonic::actix::Context<Self>; }
/// # impl daemonic::actix::Supervised for Uploader {}
///
/// let uploader = ActorSpec::new(|_| Uploader)
///     .name("uploader")
///     .restart(Restart::Transient)
///     .shutdown(Duration::from_secs(2));
/// let tree = Supervisor::builder("media").child(uploader);
/// # let _ = tree;
/// ```
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) restart: Restart,
    /// `None`: wait as long as it takes (nested supervisors, whose own
    /// children have timeouts).
    pub(crate) shutdown: Option<Duration>,
    pub(crate) kind: Box<dyn ChildKind>,
}

impl ChildSpec {
    pub(crate) fn new(name: String, shutdown: Option<Duration>, kind: Box<dyn ChildKind>) -> Self {
        Self {
            name,
            restart: Restart::Permanent,
            shutdown,
            kind,
        }
    }

    /// The name in logs, events and `status`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// When it restarts (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long it may take to stop before the supervisor forces it (a
    /// pool's workers are killed, an actor is terminated) and moves on to
    /// the next (default 5 s; nested supervisors: as long as their own
    /// children take). `Duration::MAX`: no limit.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = (timeout != Duration::MAX).then_some(timeout);
        self
    }
}

/// Anything a supervisor can supervise: [`ActorSpec`](super::ActorSpec),
/// [`PoolSpec`](super::PoolSpec) (or a plain
/// [`WorkerPoolBuilder`](crate::worker::WorkerPoolBuilder)), a nested
/// [`SupervisorBuilder`](super::SupervisorBuilder), or a [`ChildSpec`].
///
/// The provided methods set the child's options on any of them.
pub trait IntoChild {
    /// The child's spec.
    fn into_child(self) -> ChildSpec;

    /// See [`ChildSpec::restart`].
    fn restart(self, restart: Restart) -> ChildSpec
    where
        Self: Sized,
    {
        self.into_child().restart(restart)
    }

    /// See [`ChildSpec::shutdown`].
    fn shutdown(self, timeout: Duration) -> ChildSpec
    where
        Self: Sized,
    {
        self.into_child().shutdown(timeout)
    }
}

impl IntoChild for ChildSpec {
    fn into_child(self) -> ChildSpec {
        self
    }
}
