//! The main loop actor: calls `execute` on schedule, raises the loop events and
//! keeps the loop stats.

use super::stats::LoopCounters;
use super::supervisor::{RequestShutdown, Shared};
use super::timer::{LoopTimer, PreciseSleep, Wait};
use super::Daemon;
use crate::event::{
    CachedListeners, ErrorOccurred, Events, IdleStarted, ShutdownReason, TickFinished, TickStarting,
};
use crate::log::Logger;
use actix::prelude::*;
use std::fmt::Display;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ticks run back to back at interval 0 before the loop yields to other
/// futures on its thread (so it never starves them).
const BATCH_TICKS: u32 = 256;
const BATCH_TIME: Duration = Duration::from_micros(500);

/// The actor that owns the user's [`Daemon`] and runs its loop.
pub(crate) struct MainLoop<D: Daemon> {
    // Boxed so the actor is `Unpin` whatever the user's type is.
    daemon: Box<D>,
    shared: Arc<Shared>,
    iteration: u64,
    timer: LoopTimer,
    sleeper: Option<Rc<PreciseSleep>>,
    pre: CachedListeners<TickStarting>,
    post: CachedListeners<TickFinished>,
    idle: CachedListeners<IdleStarted>,
    initialized: bool,
    stopping: bool,
    watchdog: Option<(Duration, Instant)>,
}

/// The handle `execute` and the hooks get: logging, events, the tick number,
/// and the actix context of the loop for spawning futures.
///
/// ```
/// use daemonic::{Daemon, LoopContext};
///
/// struct Every10th;
///
/// impl Daemon for Every10th {
///     fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
///         if ctx.iteration() % 10 == 0 {
///             ctx.log(format_args!("tick {} (every {:?})", ctx.iteration(), ctx.interval()));
///         }
///         if ctx.iteration() == 1000 {
///             ctx.shutdown();
///         }
///     }
/// }
/// ```
pub struct LoopContext<'a, D: Daemon> {
    actix: &'a mut Context<MainLoop<D>>,
    shared: &'a Arc<Shared>,
    iteration: u64,
}

impl<D: Daemon> LoopContext<'_, D> {
    /// Number of the current tick (1-based; 0 in `initialize`).
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// The configured loop interval.
    pub fn interval(&self) -> Duration {
        self.shared.interval
    }

    /// The metrics registry, to register metrics of your own (see
    /// [`metrics`](crate::metrics)).
    #[cfg(feature = "metrics")]
    pub fn metrics_registry(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// A cloneable logger for user code.
    pub fn logger(&self) -> &Logger {
        &self.shared.logger
    }

    /// Logs an informational line.
    pub fn log(&self, message: impl Display) {
        self.shared.logger.log(message);
    }

    /// Logs an error line.
    pub fn error(&self, message: impl Display) {
        self.shared.logger.error(message);
    }

    /// Logs a debug line if `--debug=LEVEL` with `level <= LEVEL`.
    pub fn debug(&self, level: u8, message: impl Display) {
        self.shared.logger.debug(level, message);
    }

    /// The daemon's event bus (subscribe, or raise your own events).
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    /// Starts `task` in a child process and returns at once with its pid.
    /// Its exit arrives as a [`TaskExited`](crate::event::TaskExited) event.
    /// Refused with [`Error::Busy`](crate::Error::Busy) when the task type's
    /// `MAX_CONCURRENT` instances already run, and with
    /// [`Error::ShuttingDown`](crate::Error::ShuttingDown) during shutdown.
    pub fn task<T: crate::task::RegisteredTask>(
        &self,
        task: T,
    ) -> crate::Result<crate::TaskHandle> {
        self.shared.tasks.spawn(&task)
    }

    /// A builder for a worker pool wired to this daemon: worker events on the
    /// daemon's bus, lines in its log, the pool actor on the supervisor's
    /// thread (replies are handled while `execute` runs), included in the
    /// SIGUSR1 stats dump, and stopped gracefully at shutdown.
    ///
    /// Call it in `initialize` and keep the returned address.
    pub fn workers<W: crate::worker::WorkerMethods>(
        &self,
        worker: W,
    ) -> crate::worker::WorkerPoolBuilder<W> {
        crate::worker::WorkerPool::builder(worker)
            .for_daemon(
                self.shared.events.clone(),
                self.shared.logger.clone(),
                self.shared.arbiter.clone(),
                self.shared.pools.clone(),
            )
            .under(self.shared.root.get().cloned())
    }

    /// Sets up a plugin registered with
    /// [`DaemonBuilder::lazy_plugin`](crate::DaemonBuilder::lazy_plugin), once.
    pub fn ensure_plugin(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let request = self
            .shared
            .supervisor
            .send(super::EnsurePlugin(name.to_string()));
        async move {
            request
                .await
                .unwrap_or_else(|e| Err(format!("daemon unavailable: {e}")))
        }
    }

    /// Asks for a graceful shutdown; the current tick finishes first.
    pub fn shutdown(&self) {
        self.shared
            .supervisor
            .do_send(RequestShutdown(ShutdownReason::Requested));
    }

    /// Runs a future on the loop's thread without blocking the loop. To
    /// act on its result with the daemon's own state, use
    /// [`spawn_then`](Self::spawn_then).
    pub fn spawn<F>(&mut self, future: F) -> SpawnHandle
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        self.actix.spawn(actix::fut::wrap_future(future))
    }

    /// Runs `future` on the loop's thread without blocking the loop, then
    /// `then(daemon, ctx, output)` with the daemon itself (`&mut self`) the
    /// moment it completes, between ticks: the way to put a worker's reply
    /// into the daemon's state.
    ///
    /// `then` runs like `execute` (a panic in it is a fatal error of the
    /// daemon). If the daemon stops first, it does not run.
    ///
    /// ```no_run
    /// use daemonic::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[daemonic::worker]
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Squarer;
    ///
    /// #[daemonic::worker]
    /// impl Squarer {
    ///     pub fn square(&mut self, n: u64) -> u64 {
    ///         n * n
    ///     }
    /// }
    ///
    /// #[derive(Default)]
    /// struct Summer {
    ///     pool: Option<Addr<WorkerPool<Squarer>>>,
    ///     sum: u64,
    /// }
    ///
    /// impl Daemon for Summer {
    ///     fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
    ///         self.pool = Some(ctx.workers(Squarer).size(2).start()?);
    ///         Ok(())
    ///     }
    ///
    ///     fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
    ///         let Some(pool) = &self.pool else { return };
    ///         let n = ctx.iteration();
    ///         ctx.spawn_then(pool.call(squarer::Square { n }), move |daemon, ctx, result| {
    ///             match result {
    ///                 Ok(square) => daemon.sum += square,
    ///                 Err(e) => ctx.error(format_args!("square of {n}: {e}")),
    ///             }
    ///         });
    ///     }
    /// }
    /// # fn main() {}
    /// ```
    pub fn spawn_then<F>(
        &mut self,
        future: F,
        then: impl FnOnce(&mut D, &mut LoopContext<'_, D>, F::Output) + 'static,
    ) -> SpawnHandle
    where
        F: std::future::Future + 'static,
    {
        self.actix
            .spawn(actix::fut::wrap_future::<_, MainLoop<D>>(future).map(
                move |output, act, ctx| {
                    if act.stopping && !act.initialized {
                        return; // the daemon's `shutdown` hook has run
                    }
                    act.with_daemon(ctx, "a spawn_then callback", |daemon, lctx| {
                        then(daemon, lctx, output)
                    });
                },
            ))
    }
}

impl<D: Daemon> MainLoop<D> {
    pub(crate) fn new(daemon: D, shared: Arc<Shared>) -> Self {
        let events = shared.events.clone();
        Self {
            daemon: Box::new(daemon),
            timer: LoopTimer::new(shared.interval, Instant::now()),
            shared,
            iteration: 0,
            sleeper: None,
            pre: events.cached(),
            post: events.cached(),
            idle: events.cached(),
            initialized: false,
            stopping: false,
            watchdog: None,
        }
    }

    fn counters(&self) -> &LoopCounters {
        &self.shared.counters
    }

    /// Runs `f` with the user's daemon and a fresh context; a panic becomes a
    /// fatal error instead of killing the loop thread silently.
    fn with_daemon<R>(
        &mut self,
        ctx: &mut Context<Self>,
        what: &str,
        f: impl FnOnce(&mut D, &mut LoopContext<'_, D>) -> R,
    ) -> Option<R> {
        let mut lctx = LoopContext {
            actix: ctx,
            shared: &self.shared,
            iteration: self.iteration,
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut self.daemon, &mut lctx))) {
            Ok(r) => Some(r),
            Err(panic) => {
                let message = crate::panic_message(&*panic);
                self.fatal(&format!("{what} panicked: {message}"));
                None
            }
        }
    }

    fn fatal(&mut self, message: &str) {
        self.shared.logger.error(message);
        self.shared.events.dispatch(&mut ErrorOccurred {
            context: "main loop".into(),
            message: message.into(),
        });
        self.stopping = true;
        self.shared
            .supervisor
            .do_send(RequestShutdown(ShutdownReason::Error(message.into())));
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, wait: Wait) {
        if self.stopping {
            return;
        }
        match (wait, &self.sleeper) {
            (Wait::Until(deadline), Some(sleeper)) => {
                let sleeper = sleeper.clone();
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(async move {
                        sleeper.sleep_until(deadline).await
                    })
                    .map(|res, act, ctx| {
                        if let Err(e) = res {
                            act.fatal(&format!("loop timer failed: {e}"));
                            return;
                        }
                        act.run_batch(ctx);
                    }),
                );
            }
            (Wait::Until(deadline), None) => {
                ctx.run_later(
                    deadline.saturating_duration_since(Instant::now()),
                    |act, ctx| act.run_batch(ctx),
                );
            }
            (Wait::Now, _) => {
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(tokio::task::yield_now())
                        .map(|_, act, ctx| act.run_batch(ctx)),
                );
            }
        }
    }

    fn run_batch(&mut self, ctx: &mut Context<Self>) {
        let batch_end = Instant::now() + BATCH_TIME;
        let mut ran = 0;
        loop {
            if self.stopping {
                return;
            }
            let wait = self.tick(ctx);
            ran += 1;
            if wait != Wait::Now || ran >= BATCH_TICKS || Instant::now() >= batch_end {
                self.schedule(ctx, wait);
                return;
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) -> Wait {
        self.iteration += 1;
        let started = Instant::now();
        if !self.shared.interval.is_zero() {
            self.counters()
                .record_lateness(started.saturating_duration_since(self.timer.due()));
        }
        self.counters()
            .iterations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

        let mut pre = TickStarting::new(self.iteration);
        self.pre.dispatch(&mut pre);
        if pre.is_skipped() {
            self.counters()
                .skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            let began = Instant::now();
            if self
                .with_daemon(ctx, "execute", |d, c| d.execute(c))
                .is_none()
            {
                return Wait::Now;
            }
            let took = began.elapsed();
            self.counters().record_execute(took);
            if self.post.active() {
                self.post.dispatch(&mut TickFinished {
                    iteration: self.iteration,
                    duration: took,
                });
            }
        }

        let finished = Instant::now();
        let next = self.timer.after_tick(finished);
        if next.overrun {
            self.counters()
                .overruns
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.shared.logger.debug(
                1,
                format_args!(
                    "loop overrun: tick {} took {:?} (interval {:?}); next tick starts now",
                    self.iteration,
                    finished - started,
                    self.shared.interval
                ),
            );
        }
        if let Some(available) = next.idle {
            self.idle.dispatch(&mut IdleStarted {
                iteration: self.iteration,
                available,
            });
        }
        self.ping_watchdog(finished);
        next.wait
    }

    fn ping_watchdog(&mut self, now: Instant) {
        if let Some((period, last)) = &mut self.watchdog {
            if now.duration_since(*last) >= *period {
                *last = now;
                super::systemd::watchdog();
            }
        }
    }
}

impl<D: Daemon> Actor for MainLoop<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Without a precise timer the loop still works, on tokio's 1 ms wheel.
        match PreciseSleep::new() {
            Ok(s) => self.sleeper = Some(Rc::new(s)),
            Err(e) => self.shared.logger.warn(format_args!(
                "timerfd unavailable ({e}); loop timing falls back to 1 ms resolution"
            )),
        }
        if let Some(period) = super::systemd::watchdog_period() {
            // Ping from the loop's own thread and also on a timer here: a loop
            // stuck in `execute` blocks both, which is what the watchdog is for.
            self.watchdog = Some((period / 2, Instant::now()));
            ctx.run_interval(period / 2, |act, _| act.ping_watchdog(Instant::now()));
        }
    }
}

/// Run `initialize`; on success the loop starts ticking.
#[derive(Message)]
#[rtype(result = "Result<(), crate::Error>")]
pub(crate) struct Initialize;

impl<D: Daemon> Handler<Initialize> for MainLoop<D> {
    type Result = Result<(), crate::Error>;

    fn handle(&mut self, _: Initialize, ctx: &mut Context<Self>) -> Self::Result {
        // On the loop's own thread, before any user code runs on it.
        if let Err(e) = self.shared.loop_priority.apply_to_current_thread() {
            self.stopping = true;
            return Err(e);
        }
        match self.with_daemon(ctx, "initialize", |d, c| d.initialize(c)) {
            Some(Ok(())) => {
                self.initialized = true;
                Ok(())
            }
            Some(Err(e)) => {
                self.stopping = true;
                Err(crate::Error::Initialize(e))
            }
            None => Err(crate::Error::Initialize("initialize panicked".into())),
        }
    }
}

/// Start ticking (sent once the init event was raised).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct BeginTicking;

impl<D: Daemon> Handler<BeginTicking> for MainLoop<D> {
    type Result = ();

    fn handle(&mut self, _: BeginTicking, ctx: &mut Context<Self>) {
        if self.initialized && !self.stopping {
            self.timer = LoopTimer::new(self.shared.interval, Instant::now());
            self.run_batch(ctx);
        }
    }
}

/// Stop ticking, run the `shutdown` hook, stop the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopLoop(pub ShutdownReason);

impl<D: Daemon> Handler<StopLoop> for MainLoop<D> {
    type Result = ();

    fn handle(&mut self, msg: StopLoop, ctx: &mut Context<Self>) {
        self.stopping = true;
        if self.initialized {
            self.initialized = false;
            self.with_daemon(ctx, "shutdown", |d, c| d.shutdown(c, &msg.0));
        }
        ctx.stop();
    }
}
