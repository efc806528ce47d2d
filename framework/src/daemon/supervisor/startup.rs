//! The daemon's start: its root supervisor (see `fixed.rs`) starts the
//! children in order — the log watcher, the signal handler, the plugins,
//! the pid file, the control socket, the status server, the privilege
//! drop, the tasks, the NATS connection, the application's tree, the NATS
//! host and the main loop's `initialize` — and this file does each one's
//! work (see `shutdown.rs` for the reverse).

use super::fixed::{self, Fixed, StartFixed};
use super::*;

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A pool that gives up tells its supervisor.
        self.shared
            .events
            .subscribe(ctx.address().recipient::<WorkerPoolFailed>());
        if let Err((code, msg)) = self.start_root(ctx) {
            self.start_failed(ctx, code, msg);
        }
    }
}

/// Why a child could not start: the exit code the daemon ends with.
type StartError = (ExitCode, String);

/// A start that finishes later (the NATS connection, `initialize`).
type PendingStart = LocalBoxFuture<'static, Result<(), StartError>>;

impl Supervisor {
    /// The children this daemon has, in start order.
    fn present(&self, which: Fixed) -> bool {
        let config = &self.config;
        match which {
            Fixed::LogWatcher => config.log_file.is_some(),
            Fixed::Signals => config.handle_signals,
            Fixed::Plugins => !config.plugins.is_empty() || !config.lazy_plugins.is_empty(),
            Fixed::PidFile => config.pending_pidfile.is_some(),
            Fixed::Control => config.control_socket.is_some(),
            #[cfg(feature = "metrics")]
            Fixed::StatusServer => config.metrics.is_some(),
            #[cfg(not(feature = "metrics"))]
            Fixed::StatusServer => false,
            Fixed::Privileges => config.privileges.is_some(),
            Fixed::Tasks => self.task_manager.is_some(),
            #[cfg(feature = "nats")]
            Fixed::Nats | Fixed::NatsHost => config.nats.is_some(),
            #[cfg(not(feature = "nats"))]
            Fixed::Nats | Fixed::NatsHost => false,
            Fixed::App => true,
            Fixed::Loop => self.main_loop.is_some(),
        }
    }

    /// Builds and starts the daemon's root supervisor; once every child
    /// started, the daemon is ready.
    fn start_root(&mut self, ctx: &mut Context<Self>) -> Result<(), StartError> {
        let failed = |e: crate::Error| (e.exit_code(), e.to_string());
        let daemon = ctx.address();
        let app = self
            .config
            .tree
            .take()
            .unwrap_or_else(|| crate::supervision::Supervisor::builder("app"));
        app.validate().map_err(failed)?;
        let (app, app_addr) = app.into_child_with_addr();
        // `ctx.workers(..)` pools join the application's tree.
        let _ = self.shared.root.set(app_addr);
        let mut app = Some(app);
        let mut root = crate::supervision::Supervisor::builder(self.shared.name.clone())
            .intensity(0, Duration::from_secs(5))
            .events(self.shared.events.clone())
            .logger(self.shared.logger.clone())
            .pools(self.shared.pools.clone())
            .hand_over_escalation()
            .on_escalation(fixed::on_escalation(daemon.clone()));
        for which in fixed::sequence(|f| self.present(f)) {
            root = root.child(fixed::child(which, &daemon, &mut app));
        }
        let (root, started) = root.start_notify().map_err(failed)?;
        self.root = Some(root);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(started).map(|res, act, ctx| {
                if act.state == State::Starting && matches!(res, Ok(Ok(()))) {
                    act.became_ready(ctx);
                }
            }),
        );
        Ok(())
    }

    /// One child's start: `Err` with the exit code the daemon ends with.
    fn start_fixed(
        &mut self,
        which: Fixed,
        ctx: &mut Context<Self>,
    ) -> Result<Option<PendingStart>, StartError> {
        let failed = |e: crate::Error| (e.exit_code(), e.to_string());
        match which {
            Fixed::LogWatcher => {
                if let Some(file) = &self.config.log_file {
                    self.log_watcher = Some(LogWatcher::new(file.clone()).start());
                }
            }
            Fixed::Signals => match SignalActor::new(ctx.address().recipient()) {
                Ok(actor) => self.signals = Some(actor.start()),
                Err(e) => {
                    return Err((
                        ExitCode::OsError,
                        format!("cannot install signal handlers: {e}"),
                    ))
                }
            },
            Fixed::Plugins => {
                for plugin in std::mem::take(&mut self.config.plugins) {
                    self.set_up_plugin(plugin)?;
                }
            }
            Fixed::PidFile => {
                if let Some(pending) = self.config.pending_pidfile.take() {
                    self.pidfile = Some(
                        pending
                            .write()
                            .map_err(|e| (e.exit_code(), e.to_string()))?,
                    );
                }
            }
            Fixed::Control => self.bind_control(ctx)?,
            #[cfg(feature = "metrics")]
            Fixed::StatusServer => {
                if let Some(config) = self.config.metrics.take() {
                    let logger = self.shared.logger.clone();
                    let server =
                        crate::metrics::server::StatusServer::start(config, ctx.address(), &logger)
                            .map_err(failed)?;
                    self.metrics_server = Some(server);
                }
            }
            Fixed::Privileges => self.drop_privileges().map_err(failed)?,
            #[cfg(feature = "nats")]
            Fixed::Nats => {
                if let Some(nats) = self.config.nats.clone() {
                    // The daemon is ready only once connected; `initialize`
                    // may serve pools and start remote pools.
                    nats.set_logger(self.shared.logger.clone());
                    return Ok(Some(
                        async move {
                            nats.connect()
                                .await
                                .map_err(|e| (e.exit_code(), e.to_string()))
                        }
                        .boxed_local(),
                    ));
                }
            }
            Fixed::Loop => {
                if let Some(link) = self.main_loop.as_ref() {
                    let init = link.init.send(Initialize);
                    return Ok(Some(
                        async move {
                            match init.await {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(e)) => Err(failed(e)),
                                Err(e) => Err((
                                    ExitCode::Software,
                                    format!("main loop did not start: {e}"),
                                )),
                            }
                        }
                        .boxed_local(),
                    ));
                }
            }
            // Running before the daemon (`DaemonHandle::task` works at once),
            // a child for its place in the stop order.
            Fixed::Tasks => {}
            // Started by the root itself; the host serves what `initialize`
            // hands it.
            _ => {}
        }
        Ok(None)
    }

    /// The control socket, after the locks: an instance a lock refuses never
    /// touches the running one's socket.
    fn bind_control(&mut self, ctx: &mut Context<Self>) -> Result<(), StartError> {
        let Some(location) = self.config.control_socket.clone() else {
            return Ok(());
        };
        let target = self
            .config
            .privileges
            .as_ref()
            .and_then(|p| p.target.clone());
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
                    control
                        .hand_over(t.uid, t.gid)
                        .map_err(|e| (e.exit_code(), e.to_string()))?;
                }
                self.control = Some(control.start());
            }
            // A planted or loosened directory is an attack sign, not a
            // missing convenience: refuse to start.
            Err(e @ crate::Error::Insecure { .. }) => return Err((e.exit_code(), e.to_string())),
            Err(e) => self.logger().warn(format_args!(
                "control channel unavailable (status/stop will not reach this daemon): {e}"
            )),
        }
        Ok(())
    }

    /// Last of what needs root: everything that does is in place, nothing of
    /// the user's has run yet.
    fn drop_privileges(&mut self) -> crate::Result<()> {
        let Some(plan) = self.config.privileges.take() else {
            return Ok(());
        };
        let log = self.config.log_file.clone();
        let pid = self.pidfile.as_ref().map(|p| p.path().to_path_buf());
        crate::daemon::privilege::at_drop_point(
            &plan,
            self.logger(),
            log.as_deref(),
            pid.as_deref(),
        )?;
        if plan.target.is_some() {
            // Re-executing would need root again: SIGHUP only reopens
            // the log, and restarts are the service manager's job.
            self.config.restart = None;
        }
        Ok(())
    }
}

impl Handler<StartFixed> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, StartFixed(which): StartFixed, ctx: &mut Context<Self>) -> Self::Result {
        if self.state != State::Starting {
            return Box::pin(actix::fut::ready(Err("the daemon is stopping".into())));
        }
        let pending = match self.start_fixed(which, ctx) {
            Ok(None) => return Box::pin(actix::fut::ready(Ok(()))),
            Ok(Some(pending)) => pending,
            Err((code, msg)) => {
                self.start_failed(ctx, code, msg.clone());
                return Box::pin(actix::fut::ready(Err(msg)));
            }
        };
        Box::pin(
            actix::fut::wrap_future::<_, Self>(pending).map(|res, act, ctx| match res {
                Ok(()) => Ok(()),
                Err((code, msg)) => {
                    if act.state == State::Starting {
                        act.start_failed(ctx, code, msg.clone());
                    }
                    Err(msg)
                }
            }),
        )
    }
}
