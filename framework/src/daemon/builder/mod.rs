//! Configuring and starting a daemon.

use super::main_loop::MainLoop;
use super::stats::{LoopCounters, Stats};
use super::supervisor::{
    GetStats, LoopLink, ReadyCallback, RequestShutdown, Shared, Supervisor, SupervisorConfig,
};
use super::{pidfile, Daemon, RestartPolicy};
use crate::cli::{ControlCommand, DaemonArgs, NoArgs, Program};
use crate::error::{Error, ExitCode, Result};
use crate::event::{Event, Events, ShutdownReason, Subscription};
use crate::log::{LogConfig, LogFile, LogSystem, Logger};
use crate::plugin::Plugin;
use crate::process::daemonize::{self, ReadyPipe};
use crate::task::{RegisteredTask, TaskHandle, TaskManager, TaskRegistry};
use crate::worker::{PoolRegistry, WorkerMethods, WorkerPool, WorkerPoolBuilder};
use actix::prelude::*;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Configures a daemon, then runs it with [`main`](Self::main) (the framework
/// owns the process: command line, `--daemon`, exit code) or
/// [`start`](Self::start) (inside an actix `System` you already run).
///
/// The builder's settings are defaults: options given on the command line
/// ([`args`](Self::args), or [`main`](Self::main) parsing it) win over them,
/// whatever order the methods are called in.
///
/// ```no_run
/// use daemonic::{Daemon, DaemonBuilder, LoopContext};
/// use std::time::Duration;
///
/// struct Poller;
///
/// impl Daemon for Poller {
///     fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
///         ctx.debug(1, "polling");
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     DaemonBuilder::new(Poller)
///         .name("poller")
///         .version(env!("CARGO_PKG_VERSION"))
///         .about("Polls every 250 ms.")
///         .interval(Duration::from_millis(250))
///         .shutdown_timeout(Duration::from_secs(30))
///         .main() // `--interval 1s` on the command line still wins
/// }
/// ```
pub struct DaemonBuilder<D: Daemon> {
    daemon: D,
    /// Name, version and description.
    program: Program,
    interval: Duration,
    /// What `interval_secs` got when no `Duration` holds it (reported at start).
    bad_interval_secs: Option<f64>,
    loop_priority: super::LoopPriority,
    shutdown_timeout: Duration,
    log_file: Option<PathBuf>,
    verbose: bool,
    debug_level: u8,
    pidfile: Option<PathBuf>,
    daemonize: bool,
    handle_signals: bool,
    events: Events,
    plugins: Vec<Box<dyn Plugin>>,
    lazy_plugins: Vec<Box<dyn Plugin>>,
    /// The root of the supervision tree, once a child is given.
    tree: Option<crate::supervision::SupervisorBuilder>,
    command: Option<ControlCommand>,
    restart: RestartPolicy,
    /// Applied over the settings above when the daemon runs.
    command_line: Option<DaemonArgs>,
    privileges: super::privilege::Settings,
    metrics_addr: Option<String>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::Metrics,
    #[cfg(feature = "nats")]
    nats: Option<crate::remote::Nats>,
}

/// A running daemon started with [`DaemonBuilder::start`].
///
/// ```no_run
/// use daemonic::{Daemon, DaemonBuilder, LoopContext};
///
/// struct Idle;
///
/// impl Daemon for Idle {
///     fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
/// }
///
/// fn main() -> Result<(), daemonic::Error> {
///     daemonic::actix::System::new().block_on(async {
///         // Inside an actix application that handles signals itself.
///         let handle = DaemonBuilder::new(Idle).handle_signals(false).start()?;
///         if let Some(stats) = handle.stats().await {
///             println!("{} iterations", stats.main_loop.iterations);
///         }
///         handle.shutdown();
///         let code = handle.wait().await;
///         println!("stopped with {code:?}");
///         Ok(())
///     })
/// }
/// ```
pub struct DaemonHandle {
    supervisor: Addr<Supervisor>,
    done: oneshot::Receiver<ExitCode>,
    events: Events,
    logger: Logger,
    tasks: Arc<TaskRegistry>,
    pools: Arc<PoolRegistry>,
    arbiter: ArbiterHandle,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for DaemonHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHandle").finish_non_exhaustive()
    }
}

impl DaemonHandle {
    /// Asks for a graceful shutdown.
    pub fn shutdown(&self) {
        self.supervisor
            .do_send(RequestShutdown(ShutdownReason::Requested));
    }

    /// Current stats (raises the stats event); `None` once stopped.
    pub async fn stats(&self) -> Option<Stats> {
        self.supervisor.send(GetStats).await.ok()
    }

    /// The daemon's event bus.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The daemon's logger.
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// Starts a task in a child process (see [`LoopContext::task`](crate::LoopContext::task)).
    pub fn task<T: RegisteredTask>(&self, task: T) -> Result<TaskHandle> {
        self.tasks.spawn(&task)
    }

    /// A builder for a worker pool wired to this daemon: its events and log,
    /// its stats dump, and its graceful shutdown.
    pub fn workers<W: WorkerMethods>(&self, worker: W) -> WorkerPoolBuilder<W> {
        WorkerPool::builder(worker).for_daemon(
            self.events.clone(),
            self.logger.clone(),
            self.arbiter.clone(),
            self.pools.clone(),
        )
    }

    /// The metrics registry, to register metrics of your own.
    #[cfg(feature = "metrics")]
    pub fn metrics_registry(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Waits until the daemon stopped; returns its exit code.
    pub async fn wait(self) -> ExitCode {
        self.done.await.unwrap_or(ExitCode::Software)
    }
}

impl<D: Daemon> DaemonBuilder<D> {
    /// A builder for `daemon` with defaults: interval 1 s, shutdown timeout
    /// 10 s, log to stderr, signals handled, named after the binary.
    pub fn new(daemon: D) -> Self {
        Self {
            daemon,
            program: Program::default(),
            interval: Duration::from_secs(1),
            bad_interval_secs: None,
            loop_priority: super::LoopPriority::Inherit,
            shutdown_timeout: Duration::from_secs(10),
            log_file: None,
            verbose: false,
            debug_level: 0,
            pidfile: None,
            daemonize: false,
            handle_signals: true,
            events: Events::new(),
            plugins: Vec::new(),
            lazy_plugins: Vec::new(),
            tree: None,
            command: None,
            restart: RestartPolicy::default(),
            command_line: None,
            privileges: Default::default(),
            metrics_addr: None,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::Metrics::new(),
            #[cfg(feature = "nats")]
            nats: None,
        }
    }

    /// The daemon's name (log lines, `--help`, process titles).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.program.name = name.into();
        self
    }

    /// The version `--version` prints (e.g. `env!("CARGO_PKG_VERSION")`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.program = self.program.version(version);
        self
    }

    /// The description `--help` prints.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.program = self.program.about(about);
        self
    }

    /// Time between the starts of two ticks (zero: as fast as possible);
    /// `--interval` overrides it.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self.bad_interval_secs = None;
        self
    }

    /// How the main loop's thread is scheduled: [`LoopPriority::Nice`] or
    /// [`LoopPriority::RealTime`] keep ticks on time beside CPU-bound work
    /// (default [`LoopPriority::Inherit`]). Applied on the loop's thread
    /// before `initialize`; a setting the process may not use stops the
    /// start with exit code 77, one out of range with 78.
    ///
    /// [`LoopPriority::Nice`]: super::LoopPriority::Nice
    /// [`LoopPriority::RealTime`]: super::LoopPriority::RealTime
    /// [`LoopPriority::Inherit`]: super::LoopPriority::Inherit
    pub fn loop_priority(mut self, priority: super::LoopPriority) -> Self {
        self.loop_priority = priority;
        self
    }

    /// Whether the fork server keeps a warm spare (default: off): when
    /// spawns come apart (0.5 ms or more between two), it forks the next
    /// worker or task process ahead of time, and the next spawn is handed
    /// to it, so the fork is off the spawn's latency. The spare is one more process of the
    /// daemon, `<daemon>: fork-spare` in `ps`. Process-wide, for fork
    /// servers started from then on; the environment variable
    /// `DAEMONIC_PREFORK=1` turns it on too. Off by default: under a chaos
    /// test that kills the fork server every 500 ms, a daemon with spares
    /// sometimes ends holding one descriptor more than it started with, a
    /// cause not found yet (BENCHMARKS.md "The warm spare").
    pub fn prefork(self, on: bool) -> Self {
        crate::process::fork_server().set_prefork(on);
        self
    }

    /// [`interval`](Self::interval) in fractional seconds (a convenience);
    /// a negative or non-finite value is refused when the daemon starts.
    pub fn interval_secs(mut self, secs: f64) -> Self {
        match Duration::try_from_secs_f64(secs) {
            Ok(interval) => self = self.interval(interval),
            Err(_) => self.bad_interval_secs = Some(secs),
        }
        self
    }

    /// How long a graceful shutdown may take before the daemon stops anyway
    /// (more than zero); `--shutdown-timeout` overrides it.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Append log lines to `path` (reopened when rotated).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Also log to stderr when a log file is set.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Debug level (0 = off); `debug(level, ..)` lines with `level <=` this are logged.
    pub fn debug_level(mut self, level: u8) -> Self {
        self.debug_level = level;
        self
    }

    /// Write the daemon's pid to `path` (removed on exit).
    pub fn pidfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.pidfile = Some(path.into());
        self
    }

    /// Detach into the background (only with [`main`](Self::main)/[`run`](Self::run)).
    pub fn daemonize(mut self, daemonize: bool) -> Self {
        self.daemonize = daemonize;
        self
    }

    /// Install signal handlers (default). Turn off when embedding the daemon
    /// in an application that handles signals itself.
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// Restart the daemon (gracefully) after it ran this long.
    pub fn restart_after(mut self, runtime: Duration) -> Self {
        self.restart.after = Some(runtime);
        self
    }

    /// Restart on SIGHUP (default); `false`: SIGHUP only reopens the log.
    pub fn restart_on_sighup(mut self, restart: bool) -> Self {
        self.restart.on_sighup = restart;
        self
    }

    /// Restart after a fatal error (default), unless it happened within the
    /// minimum runtime.
    pub fn restart_on_fatal(mut self, restart: bool) -> Self {
        self.restart.on_fatal = restart;
        self
    }

    /// The restart-loop guard: a fatal error within this runtime exits with
    /// an error instead of restarting (default 10 s).
    pub fn min_runtime(mut self, runtime: Duration) -> Self {
        self.restart.min_runtime = runtime;
        self
    }

    /// Once started (locks, pid file, log file and control socket in place),
    /// run as `user` (a name or a uid), with its supplementary groups
    /// (`initgroups`) and its primary group unless [`group`](Self::group) is
    /// given. Needs a daemon started as root. Workers and tasks run as the
    /// user too. See the README's "Privileges" section.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.privileges.user = Some(user.into());
        self
    }

    /// Once started, run with `group` (a name or a gid) as the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.privileges.group = Some(group.into());
        self
    }

    /// The file mode creation mask (e.g. `0o027`), set before any file is
    /// created (and again after `--daemon`, which sets 027).
    pub fn umask(mut self, mask: u32) -> Self {
        self.privileges.umask = Some(mask);
        self
    }

    /// Once started, change the working directory to `dir` (absolute).
    pub fn chdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.privileges.chdir = Some(dir.into());
        self
    }

    /// Once started, change the root directory to `dir` (absolute; needs
    /// root). See the README for what the new root must contain.
    pub fn chroot(mut self, dir: impl Into<PathBuf>) -> Self {
        self.privileges.chroot = Some(dir.into());
        self
    }

    /// Allow core dumps. By default a daemon started as root sets its core
    /// size limit to 0 (for itself, its workers and tasks): a core file of
    /// a root daemon holds whatever secrets it read.
    pub fn core_dumps(mut self, allow: bool) -> Self {
        self.privileges.core_dumps = Some(allow);
        self
    }

    /// Serve Prometheus `/metrics`, a live status page (`/`) and
    /// `/status.json` on `addr`: `PORT`, `:PORT` (both on 127.0.0.1) or
    /// `HOST:PORT`. Needs the `metrics` cargo feature (a daemon started with
    /// `--metrics` without it exits with a configuration error).
    pub fn metrics(mut self, addr: impl Into<String>) -> Self {
        self.metrics_addr = Some(addr.into());
        self
    }

    /// The metrics registry, to register metrics of your own (see
    /// [`metrics`](crate::metrics)).
    #[cfg(feature = "metrics")]
    pub fn metrics_registry(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Connect `nats` at start-up, before `initialize` (so pools can be
    /// served and remote pools started there): the daemon is ready only once
    /// connected, and a server that cannot be reached (exit 69) or that
    /// refuses the credentials (exit 77) stops the start with a clear
    /// message. At shutdown it stops serving before the pools stop, and is
    /// closed after. `status` shows the connection, the pools served and the
    /// remote pools. Needs the `nats` cargo feature (see
    /// [`remote`](crate::remote)).
    #[cfg(feature = "nats")]
    pub fn nats(mut self, nats: &crate::remote::Nats) -> Self {
        self.nats = Some(nats.clone());
        self
    }

    /// Adds a plugin, set up in the order added.
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.plugins.push(Box::new(plugin));
        self
    }

    /// Adds a child (a pool, an actor, a nested supervisor) to the
    /// application's tree, `app` (one_for_one, at most 3 restarts in 5 s),
    /// a child of the daemon's root supervisor. The tree starts before
    /// `initialize`, in the order given, and stops right after the main
    /// loop at shutdown; `status` shows it. When `app` gives up, the daemon
    /// ends with exit code 70, or restarts when it restarts on fatal errors.
    ///
    /// ```no_run
    /// # use daemonic::prelude::*;
    /// # #[daemonic::worker]
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// # struct Decoder;
    /// # #[daemonic::worker]
    /// # impl Decoder {
    /// #     pub fn decode(&mut self, n: u32) -> u32 { n }
    /// # }
    /// # struct App;
    /// # impl Daemon for App { fn execute(&mut self, _: &mut LoopContext<'_, Self>) {} }
    /// use daemonic::supervision::{PoolSpec, Strategy, Supervisor};
    /// use std::time::Duration;
    ///
    /// let decoder = PoolSpec::new(WorkerPool::builder(Decoder).size(2));
    /// let decode = decoder.addr(); // hand it to the daemon's state
    /// let builder = DaemonBuilder::new(App).supervise(
    ///     Supervisor::builder("media")
    ///         .strategy(Strategy::RestForOne)
    ///         .intensity(5, Duration::from_secs(30))
    ///         .child(decoder),
    /// );
    /// # let _ = (builder, decode);
    /// ```
    pub fn supervise(mut self, child: impl crate::supervision::IntoChild) -> Self {
        let root = self
            .tree
            .take()
            .unwrap_or_else(|| crate::supervision::Supervisor::builder("app"));
        self.tree = Some(root.child(child));
        self
    }

    /// Registers a plugin that is set up on first use
    /// ([`LoopContext::ensure_plugin`](crate::LoopContext::ensure_plugin))
    /// instead of at start. Its options are still validated at start.
    pub fn lazy_plugin(mut self, plugin: impl Plugin) -> Self {
        self.lazy_plugins.push(Box::new(plugin));
        self
    }

    /// The event bus, to subscribe before the daemon starts.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Subscribes a closure to an event (see [`Events::on`]).
    pub fn on<E: Event>(self, listener: impl Fn(&mut E) + Send + Sync + 'static) -> Self {
        let _: Subscription = self.events.on(listener);
        self
    }

    /// Applies the standard command-line flags when the daemon runs: flags
    /// given on the command line win over the builder's settings, whatever
    /// the order of the calls. Flags parsed by a [`Program`] also give the
    /// daemon the program's name, version and description. A second call
    /// replaces the first.
    pub fn args(mut self, args: &DaemonArgs) -> Self {
        self.command_line = Some(args.clone());
        self
    }

    /// The [`Program`] `main` parses the command line with: this builder's
    /// name, version and description.
    pub fn program(&self) -> Program {
        self.program.clone()
    }

    /// Puts the flags given to [`args`](Self::args) over the builder's
    /// settings (once; the daemon's start calls it).
    fn apply_command_line(&mut self) {
        let Some(args) = self.command_line.take() else {
            return;
        };
        if let Some(program) = &args.program {
            self.program = program.clone();
        }
        self.daemonize |= args.daemon;
        self.command = args.command.clone();
        if let Some(p) = &args.pidfile {
            self.pidfile = Some(p.clone());
        }
        if let Some(p) = &args.log_file {
            self.log_file = Some(p.clone());
        }
        self.verbose |= args.verbose > 0;
        if let Some(level) = args.debug {
            self.debug_level = level;
        }
        if let Some(interval) = args.interval {
            self.interval = interval;
            self.bad_interval_secs = None;
        }
        if let Some(timeout) = args.shutdown_timeout {
            self.shutdown_timeout = timeout;
        }
        if let Some(after) = args.restart_after {
            self.restart.after = Some(after);
        }
        if let Some(min_runtime) = args.min_runtime {
            self.restart.min_runtime = min_runtime;
        }
        let p = &mut self.privileges;
        for (flag, field) in [(&args.user, &mut p.user), (&args.group, &mut p.group)] {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        for (flag, field) in [(&args.chdir, &mut p.chdir), (&args.chroot, &mut p.chroot)] {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        if args.umask.is_some() {
            p.umask = args.umask;
        }
        if args.core_dumps {
            p.core_dumps = Some(true);
        }
        if let Some(addr) = &args.metrics {
            self.metrics_addr = Some(addr.clone());
        }
    }
}

mod launch;
#[cfg(test)]
mod tests;
