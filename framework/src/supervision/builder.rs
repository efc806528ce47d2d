//! Configuring a [`Supervisor`], starting it on its own or as the child of
//! another (a nested tree, whose failure is its escalation).

use super::backoff::Backoff;
use super::budget::RestartBudget;
use super::child::{ChildKind, ChildLink, ChildSpec, IntoChild, StopMode};
use super::messages::{GetTree, RestartTree, StopChildren};
use super::strategy::Strategy;
use super::supervisor::{OnEscalation, Supervisor};
use super::tree::TreeStats;
use crate::error::{Error, Result};
use crate::event::Events;
use crate::log::Logger;
use actix::dev::channel::AddressReceiver;
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use std::time::Duration;
use tokio::sync::oneshot;

impl Supervisor {
    /// A builder for a supervisor named `name` (shown in logs, events and
    /// `status`).
    ///
    /// ```no_run
    /// use daemonic::supervision::{ActorSpec, Strategy, Supervisor};
    /// use std::time::Duration;
    /// # use daemonic::actix::prelude::*;
    /// # struct Uploader;
    /// # impl Actor for Uploader { type Context = Context<Self>; }
    /// # impl Supervised for Uploader {}
    ///
    /// # fn main() -> Result<(), daemonic::Error> {
    /// System::new().block_on(async {
    ///     let tree = Supervisor::builder("media")
    ///         .strategy(Strategy::RestForOne)
    ///         .intensity(5, Duration::from_secs(30))
    ///         .child(ActorSpec::new(|_| Uploader))
    ///         .child(Supervisor::builder("thumbnails"))
    ///         .start()?;
    ///     # let _ = tree;
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn builder(name: impl Into<String>) -> SupervisorBuilder {
        SupervisorBuilder::new(name.into())
    }
}

/// Told once a tree's children all started (`Err`: it gave up first).
pub(crate) type StartNotice = oneshot::Receiver<Result<(), String>>;

/// Configures a [`Supervisor`]: its strategy, restart intensity, backoff
/// and children (started in the order given).
pub struct SupervisorBuilder {
    name: String,
    strategy: Strategy,
    intensity: (usize, Duration),
    backoff: Backoff,
    events: Option<Events>,
    logger: Option<Logger>,
    children: Vec<ChildSpec>,
    on_escalation: Option<OnEscalation>,
    pools: Option<std::sync::Arc<crate::worker::PoolRegistry>>,
    hand_over: bool,
}

impl SupervisorBuilder {
    fn new(name: String) -> Self {
        Self {
            name,
            strategy: Strategy::OneForOne,
            intensity: (3, Duration::from_secs(5)),
            backoff: Backoff::default(),
            events: None,
            logger: None,
            children: Vec::new(),
            on_escalation: None,
            pools: None,
            hand_over: false,
        }
    }

    /// Which children restart when one fails (default
    /// [`Strategy::OneForOne`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `restarts` restarts within `period`; one more and the
    /// supervisor stops its children and fails upward (default 3 in 5 s).
    pub fn intensity(mut self, restarts: usize, period: Duration) -> Self {
        self.intensity = (restarts, period);
        self
    }

    /// The wait before each restart (default: the first immediate, then
    /// 100 ms doubling up to 10 s, with 20 % jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Raise `ChildRestarted` and `SupervisorEscalated` (and the pools'
    /// events) on this bus. A nested supervisor without one uses its
    /// parent's.
    pub fn events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Log through this logger (a nested supervisor without one uses its
    /// parent's).
    pub fn logger(mut self, logger: Logger) -> Self {
        self.logger = Some(logger);
        self
    }

    /// Adds a child; children start in the order added and stop in reverse.
    pub fn child(mut self, child: impl IntoChild) -> Self {
        self.children.push(child.into_child());
        self
    }

    /// Called with the reason when this supervisor, having no parent, gives
    /// up (its children are stopped by then). Without it, the tree logs the
    /// reason and stays stopped.
    ///
    /// ```no_run
    /// # use daemonic::supervision::Supervisor;
    /// let tree = Supervisor::builder("app").on_escalation(|reason| {
    ///     eprintln!("the application's tree gave up: {reason}");
    ///     daemonic::actix::System::current().stop_with_code(70);
    /// });
    /// # let _ = tree;
    /// ```
    pub fn on_escalation(mut self, hook: impl FnOnce(String) + Send + 'static) -> Self {
        self.on_escalation = Some(Box::new(hook));
        self
    }

    /// Its pools (nested ones too) show in a daemon's stats.
    pub(crate) fn pools(mut self, pools: std::sync::Arc<crate::worker::PoolRegistry>) -> Self {
        self.pools = Some(pools);
        self
    }

    /// Over its intensity, this (parentless) supervisor calls its
    /// `on_escalation` hook at once and leaves its children to whoever owns
    /// it, who stops them with [`StopTree`](super::StopTree) in its own
    /// time: a daemon logs its shutdown, raises its events and bounds the
    /// stop by its shutdown timeout, as for any other fatal error.
    pub(crate) fn hand_over_escalation(mut self) -> Self {
        self.hand_over = true;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.intensity.1.is_zero() {
            return Err(Error::Config(format!(
                "supervisor {}: the intensity period must be > 0",
                self.name
            )));
        }
        Ok(())
    }

    fn build(self, events: Events, logger: Logger) -> Supervisor {
        let mut supervisor = Supervisor::new(
            self.name,
            self.strategy,
            RestartBudget::new(self.intensity.0, self.intensity.1),
            self.backoff,
            self.events.unwrap_or(events),
            self.logger.unwrap_or(logger),
            self.children,
        );
        supervisor.on_escalation = self.on_escalation;
        supervisor.pools = self.pools;
        supervisor.hand_over = self.hand_over;
        supervisor
    }

    /// Starts the supervisor (inside an actix `System`), which starts its
    /// children in order, and returns its address at once.
    pub fn start(self) -> Result<Addr<Supervisor>> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoSystem);
        }
        self.validate()?;
        Ok(self.build(Events::new(), Logger::discard()).start())
    }

    /// Like [`start`](Self::start), with a receiver told once every child
    /// started (`Err` if the tree gave up meanwhile).
    pub(crate) fn start_notify(self) -> Result<(Addr<Supervisor>, StartNotice)> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoSystem);
        }
        self.validate()?;
        let (tx, rx) = oneshot::channel();
        let mut tree = self.build(Events::new(), Logger::discard());
        tree.start_waiters.push(tx);
        Ok((tree.start(), rx))
    }

    /// As a child, with the address it will have (a daemon's `ctx.workers`
    /// pools join the nested tree through it).
    pub(crate) fn into_child_with_addr(self) -> (ChildSpec, Addr<Supervisor>) {
        let (tx, rx) = actix::dev::channel::channel(16);
        let addr = Addr::new(tx);
        let name = self.name.clone();
        let kind = NestedTree {
            addr: addr.clone(),
            first: Some((self, rx)),
        };
        (ChildSpec::new(name, None, Box::new(kind)), addr)
    }
}

/// A nested supervisor as a child: its address stays across restarts.
struct NestedTree {
    addr: Addr<Supervisor>,
    first: Option<(SupervisorBuilder, AddressReceiver<Supervisor>)>,
}

impl ChildKind for NestedTree {
    fn kind(&self) -> &'static str {
        "supervisor"
    }

    fn start(&mut self, link: ChildLink) -> LocalBoxFuture<'static, Result<(), String>> {
        let (started, done) = oneshot::channel();
        match self.first.take() {
            Some((builder, mailbox)) => {
                if let Err(e) = builder.validate() {
                    return async move { Err(e.to_string()) }.boxed_local();
                }
                let pools = link.pools.clone();
                let mut tree = builder.build(link.events.clone(), link.logger.clone());
                tree.pools = tree.pools.take().or(pools);
                tree.parent = Some(link);
                tree.start_waiters.push(started);
                Context::with_receiver(mailbox).run(tree);
            }
            None => self.addr.do_send(RestartTree { link, started }),
        }
        async move {
            done.await
                .unwrap_or_else(|_| Err("the supervisor is gone".into()))
        }
        .boxed_local()
    }

    fn stop(&mut self, mode: StopMode, _: Option<Duration>) -> LocalBoxFuture<'static, ()> {
        if self.first.is_some() {
            return async {}.boxed_local();
        }
        let addr = self.addr.clone();
        async move {
            let _ = addr.send(StopChildren { mode }).await;
        }
        .boxed_local()
    }

    fn tree(&self) -> Option<LocalBoxFuture<'static, Option<TreeStats>>> {
        if self.first.is_some() {
            return None;
        }
        let addr = self.addr.clone();
        Some(async move { addr.send(GetTree).await.ok() }.boxed_local())
    }
}

impl IntoChild for SupervisorBuilder {
    fn into_child(self) -> ChildSpec {
        self.into_child_with_addr().0
    }
}
