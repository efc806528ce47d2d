//! The daemon's shutdown: its root supervisor (see `fixed.rs`) stops the
//! children in reverse start order — the main loop, the NATS host, the
//! application's tree with its pools, the NATS connection, the tasks, the
//! status server, the control socket, the pid file, the plugins in reverse
//! order, the signal handler and the log watcher — and this file does each
//! one's work, all within the shutdown timeout; the log itself goes last.

use super::fixed::{Fixed, StopFixed};
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

        // The root stops its children in reverse start order (see
        // `fixed.rs`); the timeout above bounds it all.
        self.shutdown_reason = Some(reason);
        match self.root.clone() {
            Some(root) => {
                let stopped = root.send(crate::supervision::StopTree);
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(stopped).map(|_, act, ctx| {
                        if act.state == State::Stopping {
                            act.finish(ctx);
                        }
                    }),
                );
            }
            None => self.finish(ctx),
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

    /// One child's stop, within the remaining shutdown time.
    fn stop_fixed(&mut self, which: Fixed) -> LocalBoxFuture<'static, ()> {
        let grace = self.remaining_grace();
        let done = || async {}.boxed_local();
        match which {
            Fixed::Loop => match self.main_loop.as_ref() {
                Some(link) => {
                    let reason = self
                        .shutdown_reason
                        .clone()
                        .unwrap_or(ShutdownReason::Requested);
                    let stopped = link.stop.send(StopLoop(reason));
                    async move {
                        let _ = stopped.await;
                    }
                    .boxed_local()
                }
                None => done(),
            },
            // A NATS host stops taking calls first (the ones waiting on it
            // go elsewhere); the calls its pools run finish next.
            #[cfg(feature = "nats")]
            Fixed::NatsHost => match self.config.nats.clone() {
                Some(nats) => async move { nats.stop_serving(grace).await }.boxed_local(),
                None => done(),
            },
            // The application's tree stops itself (see `fixed.rs`); pools
            // outside it finish the calls their workers hold (new calls get
            // `ShuttingDown`).
            Fixed::App => {
                let pools = self
                    .shared
                    .pools
                    .all()
                    .into_iter()
                    .filter(|p| !p.supervised);
                let stopped = futures_util::future::join_all(
                    pools.map(move |p| p.stop.send(StopPool { grace })),
                );
                async move {
                    stopped.await;
                }
                .boxed_local()
            }
            // The pools' last answers are out: close the connection.
            #[cfg(feature = "nats")]
            Fixed::Nats => match self.config.nats.clone() {
                Some(nats) => async move {
                    let _ = actix_rt::time::timeout(grace, nats.close()).await;
                }
                .boxed_local(),
                None => done(),
            },
            // Running tasks get SIGTERM, and SIGKILL shortly before the
            // shutdown timeout ends, so none outlives the daemon.
            Fixed::Tasks => match self.task_manager.clone() {
                Some(manager) => {
                    let stopped = manager.send(StopTasks { grace });
                    async move {
                        let _ = stopped.await;
                    }
                    .boxed_local()
                }
                None => done(),
            },
            #[cfg(feature = "metrics")]
            Fixed::StatusServer => {
                if let Some(server) = self.metrics_server.take() {
                    server.stop();
                }
                done()
            }
            Fixed::Control => {
                stop_actor(self.control.take());
                done()
            }
            // While the locks are still held: a second instance waiting for
            // them must never have its pid file removed by us.
            Fixed::PidFile => {
                if let Some(pidfile) = self.pidfile.take() {
                    pidfile.remove();
                }
                done()
            }
            // One at a time in reverse set-up order (a lock is released
            // after everything that worked under it stopped).
            Fixed::Plugins => {
                let actors: Vec<_> = self.plugin_actors.drain(..).rev().collect();
                async move {
                    for plugin in actors {
                        let _ = plugin.send(TearDown).await;
                    }
                }
                .boxed_local()
            }
            Fixed::Signals => {
                stop_actor(self.signals.take());
                done()
            }
            Fixed::LogWatcher => {
                stop_actor(self.log_watcher.take());
                done()
            }
            _ => done(),
        }
    }

    /// After the root stopped every child (or the shutdown timeout passed):
    /// whatever still runs is let go, then the log itself.
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

fn stop_actor<A>(actor: Option<Addr<A>>)
where
    A: Actor<Context = Context<A>> + Handler<StopActor>,
{
    if let Some(actor) = actor {
        actor.do_send(StopActor);
    }
}

impl Handler<StopFixed> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, StopFixed(which): StopFixed, _: &mut Context<Self>) -> Self::Result {
        self.stop_fixed(which)
    }
}
