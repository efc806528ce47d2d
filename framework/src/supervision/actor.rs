//! Any actix actor as a supervised child, keeping its address across
//! restarts the way actix's own `Supervisor` does (the same actor value,
//! its `Supervised::restarting` hook, the same mailbox), except that the
//! restart waits for the tree's decision instead of happening at once.
//!
//! Actors have no exit reason. Here an actor that stops by itself has
//! failed; one that calls [`stop_normally`] has finished (what `Transient`
//! distinguishes). A stop the supervisor asks for is neither. An actor
//! that refuses to stop (its `stopping` returns `Continue`) past its
//! shutdown timeout is terminated with actix's `terminate`, which runs its
//! `started` hook once more before `stopped`.

use super::child::{ChildKind, ChildLink, ChildSpec, IntoChild, StopMode, DEFAULT_SHUTDOWN};
use super::strategy::Exit;
use actix::dev::channel::AddressReceiver;
use actix::dev::ContextFut;
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

thread_local! {
    /// Addresses of actors that asked to end normally (read by their cell on
    /// the same thread as soon as they stop).
    static NORMAL_STOPS: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Stops a supervised actor as finished rather than failed: a
/// [`Transient`](super::Restart::Transient) actor is then not restarted.
/// (`ctx.stop()` alone counts as a failure.)
///
/// ```
/// use daemonic::actix::prelude::*;
///
/// struct Job;
/// impl Actor for Job {
///     type Context = Context<Self>;
///     fn started(&mut self, ctx: &mut Context<Self>) {
///         // … the job's work …
///         daemonic::supervision::stop_normally(ctx);
///     }
/// }
/// impl Supervised for Job {}
/// ```
pub fn stop_normally<A>(ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
{
    let addr = ctx.address();
    NORMAL_STOPS.with(|s| s.borrow_mut().push(Box::new(addr)));
    ctx.stop();
}

fn stopped_normally<A: Actor<Context = Context<A>>>(addr: &Addr<A>) -> bool {
    NORMAL_STOPS.with(|s| {
        let mut stops = s.borrow_mut();
        let found = stops
            .iter()
            .position(|b| b.downcast_ref::<Addr<A>>().is_some_and(|a| a == addr));
        found.map(|i| stops.swap_remove(i)).is_some()
    })
}

type Factory<A> = Box<dyn FnOnce(&mut Context<A>) -> A + Send>;

/// An actix actor as the child of a [`Supervisor`](super::Supervisor).
///
/// `factory` builds the actor once, at the first start; a restart keeps the
/// same actor value and mailbox and calls its
/// [`Supervised::restarting`](actix::Supervised::restarting) hook (reset
/// its state there), as actix's own supervisor does. Its address is known
/// before the tree starts and stays valid across restarts: messages sent
/// meanwhile wait in the mailbox.
///
/// ```no_run
/// use daemonic::actix::prelude::*;
/// use daemonic::supervision::{ActorSpec, Supervisor};
///
/// #[derive(Default)]
/// struct Uploader { sent: u64 }
/// impl Actor for Uploader { type Context = Context<Self>; }
/// impl Supervised for Uploader {
///     fn restarting(&mut self, _: &mut Context<Self>) { self.sent = 0; }
/// }
///
/// # fn main() -> Result<(), daemonic::Error> {
/// System::new().block_on(async {
///     let uploader = ActorSpec::new(|_| Uploader::default()).name("uploader");
///     let addr: Addr<Uploader> = uploader.addr();
///     let _tree = Supervisor::builder("media").child(uploader).start()?;
///     # let _ = addr;
///     Ok(())
/// })
/// # }
/// ```
pub struct ActorSpec<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    name: String,
    addr: Addr<A>,
    first: Option<(Factory<A>, AddressReceiver<A>)>,
    cell: Option<mpsc::UnboundedSender<Command>>,
}

impl<A> ActorSpec<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// The actor `factory` builds, as a child (named after its type).
    pub fn new(factory: impl FnOnce(&mut Context<A>) -> A + Send + 'static) -> Self {
        let (tx, rx) = actix::dev::channel::channel(16);
        Self {
            name: crate::worker::short_name(std::any::type_name::<A>()),
            addr: Addr::new(tx),
            first: Some((Box::new(factory), rx)),
            cell: None,
        }
    }

    /// The name in logs, events and `status`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The actor's address, valid across restarts.
    pub fn addr(&self) -> Addr<A> {
        self.addr.clone()
    }
}

enum Command {
    Restart {
        link: ChildLink,
        started: oneshot::Sender<Result<(), String>>,
    },
    Stop {
        stopped: oneshot::Sender<()>,
    },
    Terminate,
}

impl<A> ChildKind for ActorSpec<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fn kind(&self) -> &'static str {
        "actor"
    }

    fn start(&mut self, link: ChildLink) -> LocalBoxFuture<'static, Result<(), String>> {
        if let Some((factory, mailbox)) = self.first.take() {
            let mut ctx = Context::with_receiver(mailbox);
            let actor = factory(&mut ctx);
            let (tx, commands) = mpsc::unbounded_channel();
            self.cell = Some(tx);
            actix_rt::spawn(Cell {
                fut: ctx.into_future(actor),
                commands,
                link,
                state: CellState::Running,
            });
            return async { Ok(()) }.boxed_local();
        }
        let (started, done) = oneshot::channel();
        let sent = self
            .cell
            .as_ref()
            .is_some_and(|c| c.send(Command::Restart { link, started }).is_ok());
        async move {
            if !sent {
                return Err("the actor's cell is gone".to_string());
            }
            done.await
                .unwrap_or_else(|_| Err("the actor's cell is gone".into()))
        }
        .boxed_local()
    }

    fn stop(&mut self, _: StopMode, timeout: Option<Duration>) -> LocalBoxFuture<'static, ()> {
        let Some(cell) = self.cell.clone() else {
            return async {}.boxed_local();
        };
        let (stopped, done) = oneshot::channel();
        let _ = cell.send(Command::Stop { stopped });
        async move {
            let waited = match timeout {
                Some(t) => actix_rt::time::timeout(t, done).await.ok(),
                None => done.await.ok().map(Ok),
            };
            if waited.is_none() {
                // Its `stopping` hook refused, or a `wait` future holds it.
                let _ = cell.send(Command::Terminate);
            }
        }
        .boxed_local()
    }
}

impl<A> IntoChild for ActorSpec<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fn into_child(self) -> ChildSpec {
        ChildSpec::new(self.name.clone(), Some(DEFAULT_SHUTDOWN), Box::new(self))
    }
}

enum CellState {
    Running,
    /// The supervisor asked it to stop; these hear when it did.
    Stopping(Vec<oneshot::Sender<()>>),
    /// Stopped, its mailbox kept: waits for a restart or the end.
    Parked,
}

/// Runs the actor's context and restarts it when told (actix's
/// `Supervisor`, with a supervisor's decision in between).
struct Cell<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fut: ContextFut<A, Context<A>>,
    commands: mpsc::UnboundedReceiver<Command>,
    link: ChildLink,
    state: CellState,
}

impl<A> Future for Cell<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            match this.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Restart { link, started })) => {
                    if !matches!(this.state, CellState::Parked) {
                        let _ = started.send(Ok(()));
                        continue;
                    }
                    if this.fut.restart() {
                        this.link = link;
                        this.state = CellState::Running;
                        let _ = started.send(Ok(()));
                    } else {
                        let _ = started.send(Err("nobody holds its address any more".into()));
                    }
                }
                Poll::Ready(Some(Command::Stop { stopped })) => match &mut this.state {
                    CellState::Parked => {
                        let _ = stopped.send(());
                    }
                    CellState::Stopping(waiters) => waiters.push(stopped),
                    CellState::Running => {
                        this.fut.ctx().stop();
                        this.state = CellState::Stopping(vec![stopped]);
                    }
                },
                Poll::Ready(Some(Command::Terminate)) => {
                    if !matches!(this.state, CellState::Parked) {
                        this.fut.ctx().terminate();
                    }
                }
                // The supervisor is gone: so is its child.
                Poll::Ready(None) => {
                    if !matches!(this.state, CellState::Parked) {
                        this.fut.ctx().terminate();
                        let _ = Pin::new(&mut this.fut).poll(cx);
                    }
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        if matches!(this.state, CellState::Parked) {
            return Poll::Pending;
        }
        if Pin::new(&mut this.fut).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let addr = this.fut.address();
        let normal = stopped_normally(&addr);
        match std::mem::replace(&mut this.state, CellState::Parked) {
            CellState::Stopping(waiters) => {
                for waiter in waiters {
                    let _ = waiter.send(());
                }
            }
            _ => this.link.exited(if normal {
                Exit::Normal
            } else {
                Exit::Failed("the actor stopped".into())
            }),
        }
        // Commands that came while it stopped are read on the next wake.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
