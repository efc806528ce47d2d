//! The daemon's shutdown, in order: the main loop, then the pools (the
//! daemon's own and its supervision tree), the NATS connection, the tasks,
//! the plugins in reverse order, and last the signal handler, the log
//! watcher and the log itself — all within the shutdown timeout.

use super::*;

impl Supervisor {
    pub(super) fn begin_shutdown(&mut self, ctx: &mut Context<Self>, reason: ShutdownReason) {
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
            (ShutdownReason::Restart(_), true) => crate::daemon::systemd::reloading(),
            _ => crate::daemon::systemd::stopping(),
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

    pub(super) fn remaining_grace(&self) -> Duration {
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
    pub(super) fn stop_pools(&mut self, ctx: &mut Context<Self>) {
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

    pub(super) fn stop_local_pools(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn close_nats(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn stop_tasks(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn teardown_plugins(&mut self, ctx: &mut Context<Self>) {
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

    /// Everything after the main loop: plugins in reverse, then the signal
    /// handler and log watcher, then the log itself.
    pub(super) fn finish(&mut self, ctx: &mut Context<Self>) {
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
}
