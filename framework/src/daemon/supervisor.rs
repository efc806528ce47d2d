//! The supervisor: starts the daemon's actors in order (logger watcher,
//! signal handler, plugins, main loop), routes signals, and stops everything
//! in reverse order within the shutdown timeout.

use super::main_loop::{BeginTicking, Initialize, StopLoop};
use super::stats::{LoopCounters, MemoryStats, Stats};
use crate::control::server::ControlActor;
use crate::error::ExitCode;
use crate::event::{
    DaemonStarted, ErrorOccurred, Events, PidChanged, ShutdownReason, ShutdownStarted,
    SignalReceived, StatsCollecting,
};
use crate::event::{RestartStarting, WorkerPoolFailed};
use crate::log::watcher::LogWatcher;
use crate::log::{LogFile, LogGuard, Logger};
use crate::plugin::{Plugin, PluginActor, PluginContext, PluginStats, TearDown};
use crate::signal::{CaughtSignal, SignalActor};
use crate::task::{StopTasks, TaskManager, TaskRegistry};
use crate::worker::{GetPoolStats, PoolRegistry, StopPool};
use actix::prelude::*;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// State every actor of the daemon shares.
pub(crate) struct Shared {
    pub name: String,
    pub interval: Duration,
    pub loop_priority: super::LoopPriority,
    /// The root of the daemon's supervision tree, once it started (before
    /// `initialize`): `ctx.workers(..)` pools become its children.
    pub root: std::sync::OnceLock<Addr<crate::supervision::Supervisor>>,
    pub logger: Logger,
    pub events: Events,
    pub counters: LoopCounters,
    pub supervisor: Addr<Supervisor>,
    pub started_at: Instant,
    pub tasks: Arc<TaskRegistry>,
    pub pools: Arc<PoolRegistry>,
    /// The supervisor's arbiter: pools run here, never on the loop's thread.
    pub arbiter: ArbiterHandle,
    /// The metrics registry (user metrics too).
    #[cfg(feature = "metrics")]
    pub metrics: crate::metrics::Metrics,
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            name: self.name.clone(),
            pid: std::process::id() as i32,
            uptime: self.started_at.elapsed(),
            main_loop: self.counters.snapshot(self.interval),
            memory: MemoryStats::current(),
            pools: Vec::new(),
            plugins: Vec::new(),
            tasks: self
                .tasks
                .running()
                .into_iter()
                .map(|(name, n)| (crate::task::short_name(name), n))
                .collect(),
            extra: Vec::new(),
            log_lines_dropped: crate::log::child_lines_dropped(),
            nats: None,
            tree: None,
        }
    }
}

/// Called once when start-up finished or failed (used to release the
/// terminal that launched `--daemon`).
pub(crate) type ReadyCallback = Box<dyn FnOnce(Result<(), (ExitCode, String)>) + Send>;

pub(crate) struct SupervisorConfig {
    pub shutdown_timeout: Duration,
    pub handle_signals: bool,
    /// Written once the plugins are set up (see `pidfile`).
    pub pending_pidfile: Option<super::pidfile::PendingPidFile>,
    /// `--user`, `--group`, `--chdir`, `--chroot`: applied once the control
    /// socket is bound (see `privilege`).
    pub privileges: Option<super::privilege::Plan>,
    pub log_file: Option<Arc<LogFile>>,
    pub log_guard: Option<LogGuard>,
    pub plugins: Vec<Box<dyn Plugin>>,
    /// Set up on first use ([`EnsurePlugin`]).
    pub lazy_plugins: Vec<Box<dyn Plugin>>,
    pub on_ready: Option<ReadyCallback>,
    pub previous_pid: Option<i32>,
    /// Started before the supervisor so `DaemonHandle::task` works at once.
    pub task_manager: Option<Addr<TaskManager>>,
    /// Where the control channel listens (`status`, `stop`).
    pub control_socket: Option<crate::control::Location>,
    /// When to restart (only when the framework owns the process).
    pub restart: Option<super::RestartPolicy>,
    /// Set when the daemon stops in order to restart.
    pub restart_requested: Arc<Mutex<Option<String>>>,
    /// A restart re-execs this process in place (foreground), keeping its pid.
    pub in_place_restart: bool,
    /// Serve `/metrics`, the status page and `/status.json` (`--metrics`).
    #[cfg(feature = "metrics")]
    pub metrics: Option<crate::metrics::server::ServerConfig>,
    /// Connected before `initialize`, closed after the pools stopped.
    #[cfg(feature = "nats")]
    pub nats: Option<crate::remote::Nats>,
    /// The root of the supervision tree (`DaemonBuilder::supervise`),
    /// started before `initialize`, stopped with the pools.
    pub tree: Option<crate::supervision::SupervisorBuilder>,
}

/// Links to the main loop, which is generic over the user's daemon type.
pub(crate) struct LoopLink {
    pub init: Recipient<Initialize>,
    pub begin: Recipient<BeginTicking>,
    pub stop: Recipient<StopLoop>,
    pub arbiter: ArbiterHandle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Stopping,
    Stopped,
}

/// The root actor of a daemon.
pub struct Supervisor {
    shared: Arc<Shared>,
    config: SupervisorConfig,
    main_loop: Option<LoopLink>,
    log_watcher: Option<Addr<LogWatcher>>,
    signals: Option<Addr<SignalActor>>,
    control: Option<Addr<ControlActor>>,
    #[cfg(feature = "metrics")]
    metrics_server: Option<crate::metrics::server::StatusServer>,
    task_manager: Option<Addr<TaskManager>>,
    shutdown_started: Option<Instant>,
    /// Set-up plugins, in set-up order.
    plugin_actors: Vec<Addr<PluginActor>>,
    state: State,
    exit_code: ExitCode,
    interrupts: u32,
    done: Option<oneshot::Sender<ExitCode>>,
    log_guard: Arc<Mutex<Option<LogGuard>>>,
    /// The pid file once written (removed before the locks are released).
    pidfile: Option<super::pidfile::PidFile>,
    tree: Option<Addr<crate::supervision::Supervisor>>,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        mut config: SupervisorConfig,
        main_loop: LoopLink,
        done: oneshot::Sender<ExitCode>,
    ) -> Self {
        let log_guard = Arc::new(Mutex::new(config.log_guard.take()));
        let task_manager = config.task_manager.take();
        Self {
            shared,
            config,
            main_loop: Some(main_loop),
            log_watcher: None,
            signals: None,
            control: None,
            #[cfg(feature = "metrics")]
            metrics_server: None,
            task_manager,
            shutdown_started: None,
            plugin_actors: Vec::new(),
            state: State::Starting,
            exit_code: ExitCode::Ok,
            interrupts: 0,
            done: Some(done),
            log_guard,
            pidfile: None,
            tree: None,
        }
    }

    fn logger(&self) -> &Logger {
        &self.shared.logger
    }

    fn start_failed(&mut self, ctx: &mut Context<Self>, code: ExitCode, message: String) {
        self.logger().error(&message);
        self.shared.events.dispatch(&mut ErrorOccurred {
            context: "start-up".into(),
            message: message.clone(),
        });
        if let Some(ready) = self.config.on_ready.take() {
            ready(Err((code, message.clone())));
        }
        self.exit_code = code;
        self.begin_shutdown(ctx, ShutdownReason::Error(message));
    }

    fn became_ready(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Running;
        let pid = std::process::id() as i32;
        self.shared.events.dispatch(&mut DaemonStarted { pid });
        if let Some(old) = self.config.previous_pid {
            self.shared
                .events
                .dispatch(&mut PidChanged { old, new: pid });
        }
        self.logger().log(format_args!(
            "{} started: pid {}, interval {:?}",
            self.shared.name, pid, self.shared.interval
        ));
        super::systemd::ready(&self.shared.stats().summary());
        if let Some(ready) = self.config.on_ready.take() {
            ready(Ok(()));
        }
        if let Some(link) = &self.main_loop {
            link.begin.do_send(BeginTicking);
        }
        if let Some(after) = self.config.restart.as_ref().and_then(|p| p.after) {
            ctx.run_later(after, move |act, ctx| {
                act.restart(ctx, format!("ran for {after:?}"));
            });
        }
    }

    /// A graceful restart, unless an `RestartStarting` listener cancels it.
    /// Returns whether the restart goes ahead.
    fn restart(&mut self, ctx: &mut Context<Self>, reason: String) -> bool {
        if self.state != State::Running || self.config.restart.is_none() {
            return false;
        }
        let mut event = RestartStarting::new(reason.clone());
        self.shared.events.dispatch(&mut event);
        if event.is_cancelled() {
            self.logger()
                .log(format_args!("restart ({reason}) cancelled by a listener"));
            return false;
        }
        *self.config.restart_requested.lock() = Some(reason.clone());
        self.begin_shutdown(ctx, ShutdownReason::Restart(reason));
        true
    }

    /// A fatal error restarts the daemon, unless it happened within the
    /// minimum runtime (a restart loop in the making).
    fn restart_after_fatal(&mut self, ctx: &mut Context<Self>, error: &str) -> bool {
        let Some(policy) = self.config.restart.clone() else {
            return false;
        };
        if !policy.on_fatal || self.state != State::Running {
            return false;
        }
        let runtime = self.shared.started_at.elapsed();
        if runtime < policy.min_runtime {
            self.logger().error(format_args!(
                "fatal error after {runtime:.1?}, within the minimum runtime of {:?}: not restarting",
                policy.min_runtime
            ));
            return false;
        }
        self.restart(ctx, format!("fatal error: {error}"))
    }

    fn begin_shutdown(&mut self, ctx: &mut Context<Self>, reason: ShutdownReason) {
        if matches!(self.state, State::Stopping | State::Stopped) {
            return;
        }
        if let ShutdownReason::Error(e) = &reason {
            if self.restart_after_fatal(ctx, &e.clone()) {
                return;
            }
        }
        self.state = State::Stopping;
        self.shutdown_started = Some(Instant::now());
        if let ShutdownReason::Error(_) = reason {
            if self.exit_code == ExitCode::Ok {
                self.exit_code = ExitCode::Software;
            }
        }
        self.logger().log(format_args!("shutting down: {reason}"));
        self.shared.events.dispatch(&mut ShutdownStarted {
            reason: reason.clone(),
        });
        match (&reason, self.config.in_place_restart) {
            (ShutdownReason::Restart(_), true) => super::systemd::reloading(),
            _ => super::systemd::stopping(),
        }

        let timeout = self.config.shutdown_timeout;
        ctx.run_later(timeout, move |act, ctx| {
            if act.state == State::Stopping {
                act.logger().error(format_args!(
                    "graceful shutdown did not finish within {timeout:?}; stopping anyway"
                ));
                act.exit_code = ExitCode::Software;
                act.finish(ctx);
            }
        });

        match self.main_loop.as_ref() {
            Some(link) => {
                let stopped = link.stop.send(StopLoop(reason));
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(stopped).map(|_, act, ctx| {
                        if act.state == State::Stopping {
                            act.stop_pools(ctx);
                        }
                    }),
                );
            }
            None => self.stop_pools(ctx),
        }
    }

    fn remaining_grace(&self) -> Duration {
        let elapsed = self
            .shutdown_started
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let margin = (self.config.shutdown_timeout / 10).min(Duration::from_millis(500));
        self.config
            .shutdown_timeout
            .saturating_sub(elapsed)
            .saturating_sub(margin)
            .max(Duration::from_millis(10))
    }

    /// Worker pools finish the calls their workers hold (new calls get
    /// `ShuttingDown`), within the remaining shutdown time.
    fn stop_pools(&mut self, ctx: &mut Context<Self>) {
        // A NATS host stops taking calls first (the ones waiting on it go
        // elsewhere); the calls its pools run finish below.
        #[cfg(feature = "nats")]
        if let Some(nats) = self.config.nats.clone() {
            let grace = self.remaining_grace();
            let stopped = async move { nats.stop_serving(grace).await };
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(stopped).map(|_, act, ctx| {
                    if act.state == State::Stopping {
                        act.stop_local_pools(ctx);
                    }
                }),
            );
            return;
        }
        self.stop_local_pools(ctx);
    }

    fn stop_local_pools(&mut self, ctx: &mut Context<Self>) {
        let pools: Vec<_> = (self.shared.pools.all().into_iter())
            .filter(|p| !p.supervised)
            .collect();
        let tree = self.tree.clone();
        if pools.is_empty() && tree.is_none() {
            return self.close_nats(ctx);
        }
        let grace = self.remaining_grace();
        let pools = futures_util::future::join_all(
            pools
                .into_iter()
                .map(move |p| p.stop.send(StopPool { grace })),
        );
        // The tree stops its children in reverse order, each within its
        // own shutdown timeout (the daemon's timeout bounds it all).
        let tree = async move {
            if let Some(tree) = tree {
                let _ = tree.send(crate::supervision::StopTree).await;
            }
        };
        let stopped = futures_util::future::join(pools, tree);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(stopped).map(|_, act, ctx| {
                if act.state == State::Stopping {
                    act.close_nats(ctx);
                }
            }),
        );
    }

    /// The pools' last answers out, then the NATS connection closed.
    fn close_nats(&mut self, ctx: &mut Context<Self>) {
        #[cfg(feature = "nats")]
        if let Some(nats) = self.config.nats.clone() {
            let grace = self.remaining_grace();
            let closed = async move {
                let _ = actix_rt::time::timeout(grace, nats.close()).await;
            };
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(closed).map(|_, act, ctx| {
                    if act.state == State::Stopping {
                        act.stop_tasks(ctx);
                    }
                }),
            );
            return;
        }
        self.stop_tasks(ctx);
    }

    /// Running tasks get SIGTERM, and SIGKILL shortly before the shutdown
    /// timeout ends, so none outlives the daemon.
    fn stop_tasks(&mut self, ctx: &mut Context<Self>) {
        let Some(manager) = self.task_manager.clone() else {
            return self.finish(ctx);
        };
        let grace = self.remaining_grace();
        let stopped = manager.send(StopTasks { grace });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(stopped).map(|_, act, ctx| {
                if act.state == State::Stopping {
                    act.teardown_plugins(ctx);
                }
            }),
        );
    }

    /// Plugins last, one at a time in reverse set-up order (a lock is
    /// released after everything that worked under it stopped).
    fn teardown_plugins(&mut self, ctx: &mut Context<Self>) {
        // While the locks are still held: a second instance waiting for them
        // must never have its pid file removed by us.
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.remove();
        }
        let actors: Vec<_> = self.plugin_actors.drain(..).rev().collect();
        let teardown = async move {
            for plugin in actors {
                let _ = plugin.send(TearDown).await;
            }
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(teardown).map(|_, act, ctx| {
                if act.state == State::Stopping {
                    act.finish(ctx);
                }
            }),
        );
    }

    /// Sets up one plugin and hands it to its own actor.
    fn set_up_plugin(&mut self, mut plugin: Box<dyn Plugin>) -> Result<(), (ExitCode, String)> {
        let plugin_ctx = self.plugin_context();
        if let Err(e) = plugin.setup(&plugin_ctx) {
            // A framework error keeps its own exit code (a held lock: 75).
            return Err(match e.downcast::<crate::Error>() {
                Ok(e) => (e.exit_code(), e.to_string()),
                Err(e) => (
                    ExitCode::Config,
                    format!("plugin {} failed to start: {e}", plugin.name()),
                ),
            });
        }
        self.plugin_actors
            .push(PluginActor::start(plugin, plugin_ctx));
        Ok(())
    }

    /// Everything after the main loop: plugins in reverse, then the signal
    /// handler and log watcher, then the log itself.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Stopped;
        if let Some(link) = self.main_loop.take() {
            link.arbiter.stop();
        }
        // Normally torn down already, in order; after a forced stop the
        // actors still release what they hold.
        for plugin in self.plugin_actors.drain(..).rev() {
            plugin.do_send(TearDown);
        }
        if let Some(signals) = self.signals.take() {
            signals.do_send(StopActor);
        }
        if let Some(watcher) = self.log_watcher.take() {
            watcher.do_send(StopActor);
        }
        if let Some(manager) = self.task_manager.take() {
            manager.do_send(StopActor);
        }
        if let Some(control) = self.control.take() {
            control.do_send(StopActor);
        }
        #[cfg(feature = "metrics")]
        if let Some(server) = self.metrics_server.take() {
            server.stop();
        }
        // Start-up failed before the pid file was written.
        self.config.pending_pidfile.take();
        // A forced stop: the plugins' teardown was only just requested.
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.remove();
        }
        // Every child is gone: their last lines go before our last line.
        if let Some(guard) = self.log_guard.lock().as_mut() {
            guard.drain_children();
        }
        self.logger().log(format_args!(
            "{} stopped (exit code {})",
            self.shared.name,
            self.exit_code.code()
        ));
        crate::log::detach_bridge();
        // Dropping the guard flushes every queued line before we report done.
        self.log_guard.lock().take();
        if let Some(done) = self.done.take() {
            let _ = done.send(self.exit_code);
        }
        ctx.stop();
    }

    fn plugin_context(&self) -> PluginContext {
        PluginContext {
            logger: self.shared.logger.clone(),
            events: self.shared.events.clone(),
            name: self.shared.name.clone(),
        }
    }

    /// Collects stats (asking every pool), raises the stats event, and hands
    /// the result to `then`.
    fn collect_stats(
        &self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, Stats) + 'static,
    ) {
        let pools = self.shared.pools.all();
        let plugins = self.plugin_actors.clone();
        let tree = self.tree.clone();
        #[cfg(feature = "nats")]
        let nats = self.config.nats.clone();
        let asks = async move {
            let tree = match tree {
                Some(tree) => tree.send(crate::supervision::GetTree).await.ok(),
                None => None,
            };
            let pools = futures_util::future::join_all(
                pools.into_iter().map(|p| p.stats.send(GetPoolStats)),
            )
            .await;
            let plugins =
                futures_util::future::join_all(plugins.iter().map(|p| p.send(PluginStats))).await;
            #[cfg(feature = "nats")]
            let nats = match nats {
                Some(nats) => Some(nats.stats().await),
                None => None,
            };
            #[cfg(not(feature = "nats"))]
            let nats = None;
            (pools, plugins, nats, tree)
        };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(asks).map(
            move |(pools, plugins, nats, tree), act, _| {
                let mut stats = act.shared.stats();
                stats.pools = pools.into_iter().filter_map(|r| r.ok()).collect();
                stats.nats = nats;
                stats.tree = tree;
                for (name, lines) in plugins.into_iter().filter_map(|r| r.ok()) {
                    stats.extra.extend(
                        lines
                            .into_iter()
                            .map(|(k, v)| (format!("plugin {name} {k}"), v)),
                    );
                    stats.plugins.push(name);
                }
                let mut event = StatsCollecting { stats };
                act.shared.events.dispatch(&mut event);
                then(act, event.stats);
            },
        ));
    }

    fn immediate_exit(&mut self) -> ! {
        self.logger()
            .error("second SIGINT during shutdown: exiting immediately");
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.remove();
        }
        self.log_guard.lock().take();
        std::process::exit(ExitCode::Interrupted.code().into());
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A pool that gives up tells its supervisor.
        self.shared
            .events
            .subscribe(ctx.address().recipient::<WorkerPoolFailed>());
        if let Some(file) = &self.config.log_file {
            self.log_watcher = Some(LogWatcher::new(file.clone()).start());
        }
        if self.config.handle_signals {
            match SignalActor::new(ctx.address().recipient()) {
                Ok(actor) => self.signals = Some(actor.start()),
                Err(e) => {
                    let msg = format!("cannot install signal handlers: {e}");
                    return self.start_failed(ctx, ExitCode::OsError, msg);
                }
            }
        }
        for plugin in std::mem::take(&mut self.config.plugins) {
            if let Err((code, msg)) = self.set_up_plugin(plugin) {
                return self.start_failed(ctx, code, msg);
            }
        }
        // After the plugins: an instance refused by a lock never touches the
        // running one's pid file or socket.
        if let Some(pending) = self.config.pending_pidfile.take() {
            match pending.write() {
                Ok(written) => self.pidfile = Some(written),
                Err(e) => return self.start_failed(ctx, e.exit_code(), e.to_string()),
            }
        }
        let target = self
            .config
            .privileges
            .as_ref()
            .and_then(|p| p.target.clone());
        if let Some(location) = self.config.control_socket.clone() {
            let trusted = crate::control::Trusted::new(target.as_ref().map(|t| t.uid));
            match ControlActor::bind(
                &location,
                trusted,
                ctx.address(),
                self.shared.logger.clone(),
            ) {
                Ok(control) => {
                    // The dropped daemon must still remove its socket.
                    if let Some(t) = &target {
                        if let Err(e) = control.hand_over(t.uid, t.gid) {
                            return self.start_failed(ctx, e.exit_code(), e.to_string());
                        }
                    }
                    self.control = Some(control.start());
                }
                // A planted or loosened directory is an attack sign, not a
                // missing convenience: refuse to start.
                Err(e @ crate::Error::Insecure { .. }) => {
                    return self.start_failed(ctx, e.exit_code(), e.to_string())
                }
                Err(e) => self.logger().warn(format_args!(
                    "control channel unavailable (status/stop will not reach this daemon): {e}"
                )),
            }
        }
        // Before the privilege drop: the port may be privileged.
        #[cfg(feature = "metrics")]
        if let Some(config) = self.config.metrics.take() {
            let logger = self.shared.logger.clone();
            match crate::metrics::server::StatusServer::start(config, ctx.address(), &logger) {
                Ok(server) => self.metrics_server = Some(server),
                Err(e) => return self.start_failed(ctx, e.exit_code(), e.to_string()),
            }
        }
        // Last: everything that needs root is in place, nothing of the
        // user's has run yet.
        if let Some(plan) = self.config.privileges.take() {
            let log = self.config.log_file.clone();
            let pid = self.pidfile.as_ref().map(|p| p.path().to_path_buf());
            let dropped = super::privilege::at_drop_point(
                &plan,
                self.logger(),
                log.as_deref(),
                pid.as_deref(),
            );
            if let Err(e) = dropped {
                return self.start_failed(ctx, e.exit_code(), e.to_string());
            }
            if plan.target.is_some() {
                // Re-executing would need root again: SIGHUP only reopens
                // the log, and restarts are the service manager's job.
                self.config.restart = None;
            }
        }
        #[cfg(feature = "nats")]
        if let Some(nats) = self.config.nats.clone() {
            // The daemon is ready only once connected; `initialize` may
            // serve pools and start remote pools.
            nats.set_logger(self.shared.logger.clone());
            let connected = async move { nats.connect().await };
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(connected).map(|res, act, ctx| {
                    if act.state != State::Starting {
                        return;
                    }
                    match res {
                        Ok(()) => act.initialize_loop(ctx),
                        Err(e) => act.start_failed(ctx, e.exit_code(), e.to_string()),
                    }
                }),
            );
            return;
        }
        self.initialize_loop(ctx);
    }
}

impl Supervisor {
    /// The main loop's `initialize`, then ticking.
    fn initialize_loop(&mut self, ctx: &mut Context<Self>) {
        {
            // The root always exists: `ctx.workers(..)` pools join it. An
            // escalation reaching it is a fatal error: exit code 70, or a
            // restart (with its restart-loop guard) when the daemon
            // restarts on fatal errors.
            let tree = self.config.tree.take().unwrap_or_else(|| {
                crate::supervision::Supervisor::builder(self.shared.name.clone())
            });
            let daemon = ctx.address();
            let tree = tree
                .events(self.shared.events.clone())
                .logger(self.shared.logger.clone())
                .pools(self.shared.pools.clone())
                .on_escalation(move |reason| {
                    daemon.do_send(RequestShutdown(ShutdownReason::Error(format!(
                        "the supervision tree gave up: {reason}"
                    ))));
                });
            match tree.start() {
                Ok(addr) => {
                    let _ = self.shared.root.set(addr.clone());
                    self.tree = Some(addr);
                }
                Err(e) => return self.start_failed(ctx, e.exit_code(), e.to_string()),
            }
        }
        let Some(link) = self.main_loop.as_ref() else {
            return;
        };
        let init = link.init.send(Initialize);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(init).map(|res, act, ctx| {
                if act.state != State::Starting {
                    return;
                }
                match res {
                    Ok(Ok(())) => act.became_ready(ctx),
                    Ok(Err(e)) => act.start_failed(ctx, e.exit_code(), e.to_string()),
                    Err(e) => act.start_failed(
                        ctx,
                        ExitCode::Software,
                        format!("main loop did not start: {e}"),
                    ),
                }
            }),
        );
        if super::systemd::enabled() {
            ctx.run_interval(Duration::from_secs(10), |act, _| {
                if act.state == State::Running {
                    super::systemd::status(&act.shared.stats().summary());
                }
            });
        }
    }
}

/// Ask the daemon to shut down gracefully.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestShutdown(pub ShutdownReason);

impl Handler<RequestShutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RequestShutdown, ctx: &mut Context<Self>) {
        self.begin_shutdown(ctx, msg.0);
    }
}

/// Collect the daemon's stats (raises the stats event).
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

impl Handler<GetStats> for Supervisor {
    type Result = ResponseFuture<Stats>;

    fn handle(&mut self, _: GetStats, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.collect_stats(ctx, move |_, stats| {
            let _ = tx.send(stats);
        });
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

/// Sets up a lazily registered plugin now (a no-op if it already runs).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct EnsurePlugin(pub String);

impl Handler<EnsurePlugin> for Supervisor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: EnsurePlugin, _: &mut Context<Self>) -> Self::Result {
        let Some(pos) = self
            .config
            .lazy_plugins
            .iter()
            .position(|p| p.name() == msg.0)
        else {
            return Err(format!(
                "no lazy plugin named `{}` is waiting to start",
                msg.0
            ));
        };
        if self.state != State::Running {
            return Err("the daemon is not running".into());
        }
        let plugin = self.config.lazy_plugins.swap_remove(pos);
        self.logger()
            .debug(1, format_args!("starting lazy plugin {}", msg.0));
        self.set_up_plugin(plugin).map_err(|(_, e)| e)
    }
}

impl Handler<WorkerPoolFailed> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerPoolFailed, _: &mut Context<Self>) {
        let message = format!("worker pool {} failed: {}", msg.pool, msg.reason);
        self.logger().error(&message);
        self.shared.events.dispatch(&mut ErrorOccurred {
            context: format!("worker pool {}", msg.pool),
            message,
        });
    }
}

impl Handler<CaughtSignal> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: CaughtSignal, ctx: &mut Context<Self>) {
        let (signal, name) = (msg.signal, msg.name);
        self.shared
            .events
            .dispatch(&mut SignalReceived { signal, name });
        match signal {
            libc::SIGTERM => self.begin_shutdown(ctx, ShutdownReason::Signal(name)),
            libc::SIGINT => {
                self.interrupts += 1;
                if self.interrupts > 1 && self.state == State::Stopping {
                    self.immediate_exit();
                }
                self.begin_shutdown(ctx, ShutdownReason::Signal(name));
            }
            libc::SIGHUP => {
                let restart_on_hup = self.config.restart.as_ref().is_some_and(|p| p.on_sighup);
                if !(restart_on_hup && self.restart(ctx, "SIGHUP".into())) {
                    match &self.config.log_file {
                        Some(file) => {
                            // Before logging, so the line below lands in the new file.
                            file.request_reopen();
                            self.logger().log("SIGHUP: log file reopened");
                        }
                        None => self.logger().log("SIGHUP received"),
                    }
                }
            }
            libc::SIGUSR1 => self.collect_stats(ctx, |act, stats| {
                for line in stats.lines() {
                    act.logger().log(format_args!("stats: {line}"));
                }
            }),
            _ => self
                .logger()
                .debug(1, format_args!("signal {name} received")),
        }
    }
}

/// Stops a helper actor (signal handler, log watcher).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopActor;

impl Handler<StopActor> for LogWatcher {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StopActor> for TaskManager {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StopActor> for ControlActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StopActor> for SignalActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
