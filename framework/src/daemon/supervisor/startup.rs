//! The daemon's start, in order: the log watcher, the signal handler, the
//! control socket, the plugins, then the supervision tree's root and the
//! main loop's `initialize` (see `shutdown.rs` for the reverse).

use super::*;

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
            let dropped = crate::daemon::privilege::at_drop_point(
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
    pub(super) fn initialize_loop(&mut self, ctx: &mut Context<Self>) {
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
        if crate::daemon::systemd::enabled() {
            ctx.run_interval(Duration::from_secs(10), |act, _| {
                if act.state == State::Running {
                    crate::daemon::systemd::status(&act.shared.stats().summary());
                }
            });
        }
    }
}
