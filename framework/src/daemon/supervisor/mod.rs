//! The daemon actor: its root supervisor (`fixed.rs`) starts the daemon's
//! actors in order (log watcher, signal handler, plugins, …, main loop) and
//! stops them in reverse within the shutdown timeout; it routes signals.
//! `startup.rs` does each child's start, `shutdown.rs` each one's stop; this
//! file holds the state, the decisions (restart, fatal errors) and the
//! messages it answers.

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
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod fixed;
mod shutdown;
mod startup;

/// State every actor of the daemon shares.
pub(crate) struct Shared {
    pub name: String,
    pub interval: Duration,
    pub loop_priority: super::LoopPriority,
    /// The application's supervision tree (under the daemon's root, see
    /// `supervisor/fixed.rs`): `ctx.workers(..)` pools become its children.
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
    /// The daemon's root supervisor (see `fixed.rs`).
    root: Option<Addr<crate::supervision::Supervisor>>,
    /// Why it stops (for the main loop's `StopLoop`).
    shutdown_reason: Option<ShutdownReason>,
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
            root: None,
            shutdown_reason: None,
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
        if super::systemd::enabled() {
            ctx.run_interval(Duration::from_secs(10), |act, _| {
                if act.state == State::Running {
                    super::systemd::status(&act.shared.stats().summary());
                }
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
        let tree = self.root.clone();
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
