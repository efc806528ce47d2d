//! Configuring and starting a daemon.

use super::main_loop::MainLoop;
use super::stats::{LoopCounters, Stats};
use super::supervisor::{
    GetStats, LoopLink, ReadyCallback, RequestShutdown, Shared, Supervisor, SupervisorConfig,
};
use super::{pidfile, Daemon, RestartPolicy};
use crate::cli::{ControlCommand, DaemonArgs};
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
pub struct DaemonBuilder<D: Daemon> {
    daemon: D,
    name: String,
    version: Option<String>,
    about: Option<String>,
    interval_secs: f64,
    shutdown_timeout_secs: f64,
    log_file: Option<PathBuf>,
    verbose: bool,
    debug_level: u8,
    pidfile: Option<PathBuf>,
    daemonize: bool,
    handle_signals: bool,
    events: Events,
    plugins: Vec<Box<dyn Plugin>>,
    lazy_plugins: Vec<Box<dyn Plugin>>,
    command: Option<ControlCommand>,
    restart: RestartPolicy,
    min_runtime_secs: Option<f64>,
    restart_after_secs: Option<f64>,
    metrics_addr: Option<String>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::Metrics,
}

/// A running daemon started with [`DaemonBuilder::start`].
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

    /// The supervisor actor.
    pub fn supervisor(&self) -> &Addr<Supervisor> {
        &self.supervisor
    }

    /// Waits until the daemon stopped; returns its exit code.
    pub async fn wait(self) -> ExitCode {
        self.done.await.unwrap_or(ExitCode::Software)
    }
}

/// Configuration checked and files opened, before anything runs.
struct Prepared {
    interval: Duration,
    shutdown_timeout: Duration,
    log_file: Option<Arc<LogFile>>,
    pidfile: Option<PathBuf>,
    #[cfg(feature = "metrics")]
    metrics_addr: Option<std::net::SocketAddr>,
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::Config(format!("bad path {}: {e}", path.display())))
}

fn seconds(what: &str, secs: f64, allow_zero: bool) -> Result<Duration> {
    let ok = secs.is_finite() && (secs > 0.0 || (allow_zero && secs == 0.0)) && secs < 1e9;
    if !ok {
        let bound = if allow_zero { ">= 0" } else { "> 0" };
        return Err(Error::Config(format!(
            "{what} must be a number of seconds {bound}, got {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn default_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "daemon".into())
}

impl<D: Daemon> DaemonBuilder<D> {
    /// A builder for `daemon` with defaults: interval 1 s, shutdown timeout
    /// 10 s, log to stderr, signals handled, named after the binary.
    pub fn new(daemon: D) -> Self {
        Self {
            daemon,
            name: default_name(),
            version: None,
            about: None,
            interval_secs: 1.0,
            shutdown_timeout_secs: 10.0,
            log_file: None,
            verbose: false,
            debug_level: 0,
            pidfile: None,
            daemonize: false,
            handle_signals: true,
            events: Events::new(),
            plugins: Vec::new(),
            lazy_plugins: Vec::new(),
            command: None,
            restart: RestartPolicy::default(),
            min_runtime_secs: None,
            restart_after_secs: None,
            metrics_addr: None,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::Metrics::new(),
        }
    }

    /// The daemon's name (log lines, `--help`, process titles).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The version `--version` prints (e.g. `env!("CARGO_PKG_VERSION")`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The description `--help` prints.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// Time between the starts of two ticks (zero: as fast as possible).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval_secs = interval.as_secs_f64();
        self
    }

    /// The interval in fractional seconds; negative values are rejected at start.
    pub fn interval_secs(mut self, secs: f64) -> Self {
        self.interval_secs = secs;
        self
    }

    /// How long a graceful shutdown may take before the daemon stops anyway.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout_secs = timeout.as_secs_f64();
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

    /// Adds a plugin, set up in the order added.
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.plugins.push(Box::new(plugin));
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

    /// Applies the standard command-line flags.
    pub fn args(mut self, args: &DaemonArgs) -> Self {
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
        if let Some(secs) = args.interval {
            self.interval_secs = secs;
        }
        if let Some(secs) = args.shutdown_timeout {
            self.shutdown_timeout_secs = secs;
        }
        if args.restart_after.is_some() {
            self.restart_after_secs = args.restart_after;
        }
        if args.min_runtime.is_some() {
            self.min_runtime_secs = args.min_runtime;
        }
        if let Some(addr) = &args.metrics {
            self.metrics_addr = Some(addr.clone());
        }
        self
    }

    /// Parses the standard command line, then [`run`](Self::run)s. Returns the
    /// process exit code: `fn main() -> ExitCode { builder.main() }`.
    pub fn main(self) -> std::process::ExitCode {
        let parsed =
            crate::cli::parse_daemon_args(&self.name, self.version.clone(), self.about.clone());
        match parsed {
            Ok(args) => self.args(&args).run(),
            Err(code) => code.into(),
        }
    }

    /// Runs the daemon in this process (daemonizing first if configured) in a
    /// new actix `System`, until it stops. Errors are printed as one line.
    pub fn run(self) -> std::process::ExitCode {
        let name = self.name.clone();
        match self.run_inner() {
            Ok(code) => code.into(),
            Err(e) => {
                eprintln!("{name}: error: {e}");
                e.exit_code().into()
            }
        }
    }

    fn prepare(&mut self) -> Result<Prepared> {
        let mut names = std::collections::HashSet::new();
        for plugin in self.plugins.iter().chain(&self.lazy_plugins) {
            if !names.insert(plugin.name().to_string()) {
                return Err(Error::Config(format!(
                    "two plugins are named `{}`",
                    plugin.name()
                )));
            }
            plugin
                .validate()
                .map_err(|e| Error::Config(format!("plugin {}: {e}", plugin.name())))?;
        }
        let interval = seconds("--interval", self.interval_secs, true)?;
        let shutdown_timeout = seconds("--shutdown-timeout", self.shutdown_timeout_secs, false)?;
        if let Some(secs) = self.restart_after_secs {
            self.restart.after = Some(seconds("--restart-after", secs, false)?);
        }
        if let Some(secs) = self.min_runtime_secs {
            self.restart.min_runtime = seconds("--min-runtime", secs, true)?;
        }
        #[cfg(feature = "metrics")]
        let metrics_addr = self
            .metrics_addr
            .as_deref()
            .map(crate::metrics::parse_addr)
            .transpose()?;
        #[cfg(not(feature = "metrics"))]
        if self.metrics_addr.is_some() {
            return Err(Error::Config(
                "--metrics needs daemonic built with its `metrics` cargo feature".into(),
            ));
        }
        let pidfile = self.pidfile.as_deref().map(absolute).transpose()?;
        let log_file = match self.log_file.as_deref().map(absolute).transpose()? {
            Some(path) => Some(Arc::new(LogFile::open(path.clone()).map_err(|source| {
                Error::CantCreate {
                    what: "log file",
                    path,
                    source,
                }
            })?)),
            None => None,
        };
        Ok(Prepared {
            interval,
            shutdown_timeout,
            log_file,
            pidfile,
            #[cfg(feature = "metrics")]
            metrics_addr,
        })
    }

    /// `status` / `stop`: talk to the running daemon, start nothing.
    fn run_command(&self, command: &ControlCommand) -> Result<ExitCode> {
        let pidfile = self.pidfile.as_deref().map(absolute).transpose()?;
        let socket = crate::control::socket_path(&self.name, pidfile.as_deref());
        Ok(match command {
            ControlCommand::Status { json } => {
                crate::control::client::status(&self.name, &socket, *json)
            }
            ControlCommand::Stop { timeout } => {
                let timeout = seconds("--timeout", *timeout, false)?;
                crate::control::client::stop(&self.name, &socket, timeout)
            }
            ControlCommand::Completions { shell } => {
                crate::cli::docs::completions(&self.name, *shell)
            }
            ControlCommand::Man => crate::cli::docs::man(&self.name),
        })
    }

    fn run_inner(mut self) -> Result<ExitCode> {
        if let Some(command) = self.command.take() {
            return self.run_command(&command);
        }
        if self.handle_signals {
            // Before any thread exists, so every thread inherits the mask.
            crate::signal::unblock_handled();
        }
        let restarted_from = super::restart::take_restarted_from();
        // Before daemonizing: arguments and working directory as given.
        let invocation = super::restart::Invocation::capture(self.daemonize);
        let prepared = self.prepare()?;
        let (ready, previous_pid) = if self.daemonize {
            let launcher = std::process::id() as i32;
            let pipe = daemonize::daemonize(&self.name)?;
            let mut keep = vec![pipe.raw_fd()];
            keep.extend(prepared.log_file.as_ref().map(|f| f.raw_fd()));
            daemonize::close_inherited(&keep);
            (Some(pipe), Some(launcher))
        } else {
            (None, None)
        };
        // A restarted daemon reports the pid it replaced.
        let previous_pid = restarted_from
            .or(previous_pid)
            .filter(|p| *p != std::process::id() as i32);
        let ready = Arc::new(Mutex::new(ready));
        let restart_requested = Arc::new(Mutex::new(None));
        let outcome = self.run_system(
            prepared,
            ready.clone(),
            previous_pid,
            restart_requested.clone(),
        );
        if outcome.is_ok() && restart_requested.lock().is_some() {
            return super::restart::restart(&invocation);
        }
        if let (Err(e), Some(pipe)) = (&outcome, ready.lock().take()) {
            pipe.report(Err((e.exit_code(), e.to_string())));
        }
        outcome
    }

    fn run_system(
        self,
        prepared: Prepared,
        ready: Arc<Mutex<Option<ReadyPipe>>>,
        previous_pid: Option<i32>,
        restart_requested: Arc<Mutex<Option<String>>>,
    ) -> Result<ExitCode> {
        let pending_pidfile = prepared.pidfile.as_deref().map(pidfile::open).transpose()?;
        let pid_path = prepared.pidfile.clone();
        // A start-up failure reaches the terminal even when lines go only to
        // the log file (through the launcher's pipe with --daemon).
        let quiet_console = self.log_file.is_some() && !self.verbose;
        let name = self.name.clone();
        let on_ready: ReadyCallback = Box::new(move |outcome| match ready.lock().take() {
            Some(pipe) => pipe.report(outcome),
            None => {
                if let (Err((_, message)), true) = (&outcome, quiet_console) {
                    eprintln!("{name}: error: {message}");
                }
            }
        });
        let system = System::new();
        let result = system.block_on(async move {
            let restart = Some((self.restart.clone(), restart_requested));
            let handle = self.start_prepared(
                prepared,
                pending_pidfile,
                Some(on_ready),
                previous_pid,
                restart,
            )?;
            Ok(handle.wait().await)
        });
        if result.is_err() {
            if let Some(path) = &pid_path {
                pidfile::remove_if_ours(path);
            }
        }
        result
    }

    /// Starts the daemon inside the current actix `System` (next to an
    /// actix-web server, say) and returns a handle. Does not parse the command
    /// line or daemonize.
    pub fn start(mut self) -> Result<DaemonHandle> {
        let prepared = self.prepare()?;
        let pending_pidfile = prepared.pidfile.as_deref().map(pidfile::open).transpose()?;
        // Restarting means re-executing the program: only when the framework
        // owns the process (`main`/`run`).
        self.start_prepared(prepared, pending_pidfile, None, None, None)
    }

    fn start_prepared(
        self,
        prepared: Prepared,
        pending_pidfile: Option<pidfile::PendingPidFile>,
        on_ready: Option<ReadyCallback>,
        previous_pid: Option<i32>,
        restart: Option<(RestartPolicy, Arc<Mutex<Option<String>>>)>,
    ) -> Result<DaemonHandle> {
        if System::try_current().is_none() {
            return Err(Error::NoSystem);
        }
        let log_config = LogConfig {
            file: prepared.log_file.as_ref().map(|f| f.path().to_path_buf()),
            // Without a log file, stderr is the only place lines can go.
            console: self.verbose || prepared.log_file.is_none(),
            debug_level: self.debug_level,
            role: "main".into(),
            daemon_pid: std::process::id() as i32,
            daemon_name: self.name.clone(),
        };
        let logs = LogSystem::start_with(&log_config, &self.events, prepared.log_file.clone());
        let logger = logs.logger.clone();
        let events = self.events.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let tasks = Arc::new(TaskRegistry::default());
        let handle_tasks = tasks.clone();
        let pools = Arc::new(PoolRegistry::default());
        let handle_pools = pools.clone();
        let loop_arbiter = Arbiter::new();
        let daemon = self.daemon;
        let name = self.name;
        let control_socket = crate::control::socket_path(&name, prepared.pidfile.as_deref());
        #[cfg(feature = "metrics")]
        let metrics = self.metrics;
        #[cfg(feature = "metrics")]
        let metrics_server = prepared.metrics_addr.map(|addr| {
            metrics.watch(&events);
            crate::metrics::server::ServerConfig {
                addr,
                metrics: metrics.clone(),
            }
        });
        #[cfg(feature = "metrics")]
        let handle_metrics = metrics.clone();
        let config = SupervisorConfig {
            #[cfg(feature = "metrics")]
            metrics: metrics_server,
            control_socket: Some(control_socket),
            restart_requested: restart.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
            in_place_restart: !self.daemonize,
            restart: restart.map(|(policy, _)| policy),
            shutdown_timeout: prepared.shutdown_timeout,
            handle_signals: self.handle_signals,
            pidfile: prepared.pidfile,
            pending_pidfile,
            log_file: logs.file.clone(),
            log_guard: Some(logs.guard),
            plugins: self.plugins,
            lazy_plugins: self.lazy_plugins,
            on_ready,
            previous_pid,
            task_manager: Some(TaskManager::start(
                tasks.clone(),
                self.events.clone(),
                logger.clone(),
            )),
        };
        let supervisor = Supervisor::create(move |ctx| {
            let shared = Arc::new(Shared {
                name,
                interval: prepared.interval,
                logger: logs.logger,
                events: events.clone(),
                counters: LoopCounters::default(),
                supervisor: ctx.address(),
                started_at: Instant::now(),
                tasks: tasks.clone(),
                pools: pools.clone(),
                arbiter: Arbiter::current(),
                #[cfg(feature = "metrics")]
                metrics,
            });
            let loop_shared = shared.clone();
            let main_loop = MainLoop::start_in_arbiter(&loop_arbiter.handle(), move |_| {
                MainLoop::new(daemon, loop_shared)
            });
            let link = LoopLink {
                init: main_loop.clone().recipient(),
                begin: main_loop.clone().recipient(),
                stop: main_loop.recipient(),
                arbiter: loop_arbiter.handle(),
            };
            Supervisor::new(shared, config, link, done_tx)
        });
        Ok(DaemonHandle {
            supervisor,
            done: done_rx,
            events: self.events,
            logger,
            tasks: handle_tasks,
            pools: handle_pools,
            arbiter: Arbiter::current(),
            #[cfg(feature = "metrics")]
            metrics: handle_metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl Daemon for Nop {
        fn execute(&mut self, _: &mut crate::LoopContext<'_, Self>) {}
    }

    #[test]
    fn negative_or_nan_interval_is_a_config_error() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = DaemonBuilder::new(Nop)
                .interval_secs(bad)
                .prepare()
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), ExitCode::Config, "{bad}");
            assert!(err.to_string().contains("--interval"), "{err}");
        }
    }

    #[test]
    fn unwritable_log_file_is_refused_before_start() {
        let err = DaemonBuilder::new(Nop)
            .log_file("/nonexistent-dir/x.log")
            .prepare()
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), ExitCode::CantCreate);
        assert!(err.to_string().contains("/nonexistent-dir/x.log"));
    }

    #[test]
    fn start_outside_a_system_is_an_error() {
        let err = DaemonBuilder::new(Nop).start().err().unwrap();
        assert!(matches!(err, Error::NoSystem));
    }
}
