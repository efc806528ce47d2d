//! How a configured daemon runs: the command line applied, files opened and
//! checked before anything runs, then `main`/`run` (the `status` and `stop`
//! commands, `--daemon`, auto-restart) or `start` inside a running System.

use super::*;

/// Configuration checked and files opened, before anything runs.
pub(super) struct Prepared {
    pub(super) interval: Duration,
    pub(super) shutdown_timeout: Duration,
    log_file: Option<Arc<LogFile>>,
    pidfile: Option<PathBuf>,
    privileges: Option<crate::daemon::privilege::Plan>,
    #[cfg(feature = "metrics")]
    metrics_addr: Option<std::net::SocketAddr>,
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::Config(format!("bad path {}: {e}", path.display())))
}

/// `duration` if it is usable for `what` (the command line's parsers check
/// the same bounds, so only values set through the builder can fail here).
fn checked(what: &str, duration: Duration, allow_zero: bool) -> Result<Duration> {
    if duration.is_zero() && !allow_zero {
        return Err(Error::Config(format!("{what} must be more than zero")));
    }
    if duration > crate::cli::MAX_DURATION {
        return Err(Error::Config(format!(
            "{what} must be shorter than {}s, got {duration:?}",
            crate::cli::MAX_DURATION.as_secs()
        )));
    }
    Ok(duration)
}

impl<D: Daemon> DaemonBuilder<D> {
    /// Parses the standard command line with [`program`](Self::program), then
    /// [`run`](Self::run)s. Returns the process exit code:
    /// `fn main() -> ExitCode { builder.main() }`. A daemon with flags of its
    /// own parses with [`Program::parse`] instead and calls
    /// [`args`](Self::args); its `--help` reads the same. After
    /// [`args`](Self::args), the command line is parsed already: `main` runs
    /// with those flags, like [`run`](Self::run).
    pub fn main(self) -> std::process::ExitCode {
        if self.command_line.is_some() {
            return self.run();
        }
        match self.program().parse::<NoArgs>() {
            Ok(cli) => self.args(&cli.daemon).run(),
            Err(code) => code.into(),
        }
    }

    /// Runs the daemon in this process (daemonizing first if configured) in a
    /// new actix `System`, until it stops. Errors are printed as one line.
    pub fn run(mut self) -> std::process::ExitCode {
        self.apply_command_line();
        let name = self.program.name.clone();
        match self.run_inner() {
            Ok(code) => code.into(),
            Err(e) => {
                eprintln!("{name}: error: {e}");
                e.exit_code().into()
            }
        }
    }

    pub(super) fn prepare(&mut self) -> Result<Prepared> {
        self.apply_command_line();
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
        if let Some(secs) = self.bad_interval_secs {
            return Err(Error::Config(format!(
                "the interval must be a number of seconds >= 0, got {secs}"
            )));
        }
        let interval = checked("the interval", self.interval, true)?;
        self.loop_priority.check(interval).map_err(Error::Config)?;
        let shutdown_timeout = checked("the shutdown timeout", self.shutdown_timeout, false)?;
        if let Some(after) = self.restart.after {
            checked("the runtime before a restart", after, false)?;
        }
        checked("the minimum runtime", self.restart.min_runtime, true)?;
        let mut privileges = self.privileges.plan()?;
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
        let log_path = self.log_file.as_deref().map(absolute).transpose()?;
        if let (Some(plan), Some(path)) = (privileges.as_mut(), &log_path) {
            plan.created_log = std::fs::symlink_metadata(path).is_err();
        }
        let log_file = match log_path {
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
            privileges,
            #[cfg(feature = "metrics")]
            metrics_addr,
        })
    }

    /// `status` / `stop`: talk to the running daemon, start nothing.
    fn run_command(&self, command: &ControlCommand) -> Result<ExitCode> {
        let pidfile = self.pidfile.as_deref().map(absolute).transpose()?;
        let location = crate::control::Location::current(&self.program.name, pidfile.as_deref());
        // A daemon that dropped to --user answers as that user.
        let trusted = crate::control::Trusted::new(self.privileges.user_uid()?);
        let target = crate::control::client::Target {
            location: &location,
            trusted: &trusted,
        };
        Ok(match command {
            ControlCommand::Status { json } => {
                crate::control::client::status(&self.program.name, &target, *json)
            }
            ControlCommand::Stop { timeout } => {
                crate::control::client::stop(&self.program.name, &target, *timeout)
            }
            ControlCommand::Completions { shell } => {
                crate::cli::docs::completions(&self.program.name, *shell)
            }
            ControlCommand::Man => crate::cli::docs::man(&self.program.name),
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
        // Before any file is created (the log file is opened next).
        self.privileges.apply_core_dumps()?;
        self.privileges.apply_umask();
        let restarted_from = crate::daemon::restart::take_restarted_from();
        // Before daemonizing: arguments and working directory as given.
        let invocation = crate::daemon::restart::Invocation::capture(self.daemonize);
        let prepared = self.prepare()?;
        let (ready, previous_pid) = if self.daemonize {
            let launcher = std::process::id() as i32;
            let pipe = daemonize::daemonize(&self.program.name)?;
            let mut keep = vec![pipe.raw_fd()];
            keep.extend(prepared.log_file.as_ref().map(|f| f.raw_fd()));
            daemonize::close_inherited(&keep);
            // --daemon set umask 027; an explicit one wins.
            self.privileges.apply_umask();
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
            return crate::daemon::restart::restart(&invocation);
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
        // A start-up failure reaches the terminal even when lines go only to
        // the log file (through the launcher's pipe with --daemon).
        let quiet_console = self.log_file.is_some() && !self.verbose;
        let name = self.program.name.clone();
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
        // (A pid file written by the supervisor is removed by it; one that
        // was only opened is removed when dropped.)
        result
    }

    /// Starts the daemon inside the current actix `System` (next to an
    /// actix-web server, say) and returns a handle. Does not parse the command
    /// line or daemonize.
    pub fn start(mut self) -> Result<DaemonHandle> {
        self.privileges.apply_core_dumps()?;
        self.privileges.apply_umask();
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
            daemon_name: self.program.name.clone(),
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
        let name = self.program.name;
        let control_socket = crate::control::Location::current(&name, prepared.pidfile.as_deref());
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
            #[cfg(feature = "nats")]
            nats: self.nats,
            control_socket: Some(control_socket),
            restart_requested: restart.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
            in_place_restart: !self.daemonize,
            restart: restart.map(|(policy, _)| policy),
            shutdown_timeout: prepared.shutdown_timeout,
            handle_signals: self.handle_signals,
            pending_pidfile,
            privileges: prepared.privileges,
            log_file: logs.file.clone(),
            log_guard: Some(logs.guard),
            plugins: self.plugins,
            lazy_plugins: self.lazy_plugins,
            tree: self.tree,
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
                loop_priority: self.loop_priority,
                root: std::sync::OnceLock::new(),
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
