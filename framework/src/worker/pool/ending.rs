//! How a worker's end is settled — its exit and the end of its link, in
//! either order — what becomes of the calls it held, and the restart limit
//! over all ends (see `lifecycle.rs` for the rest of its life).

use super::super::{WorkerError, WorkerMethods};
use super::schedule;
use super::slot::SlotState;
use super::{PoolState, WorkerPool};
use crate::event::{WorkerDied, WorkerPoolFailed};
use crate::process::ExitStatus;
use actix::prelude::*;
use std::time::{Duration, Instant};

/// How long after a worker's exit the pool waits for its link to end (for
/// the last replies it wrote) before settling its calls anyway.
const LINK_DRAIN: Duration = Duration::from_millis(500);

impl<W: WorkerMethods> WorkerPool<W> {
    /// Its pidfd reported the exit. Replies it wrote before dying may still
    /// be in its link: its calls are settled when the link ends.
    pub(super) fn on_exit(&mut self, key: u64, status: ExitStatus, ctx: &mut Context<Self>) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        slot.exit = Some(status);
        slot.link.close();
        if !slot.link_open {
            self.settle(key, ctx);
            return;
        }
        ctx.run_later(LINK_DRAIN, move |act, ctx| {
            if act.slot_mut(key).is_some_and(|s| s.link_open) {
                act.settle(key, ctx);
            }
        });
        // Meanwhile it takes no calls; its place is filled now.
        self.promote(ctx);
    }

    /// Its link ended: hung up, or broke (malformed bytes, a frame over the
    /// limit). A link that ends while the process lives is dropped: the
    /// process is killed and settled when it exits.
    pub(super) fn on_link_closed(
        &mut self,
        key: u64,
        error: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let name = self.config.name.clone();
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if !slot.link_open {
            return; // dropped already (a malformed frame, then the break)
        }
        slot.link_open = false;
        let pid = slot.pid;
        let exited = slot.exit.is_some();
        let leaving = slot.state.expects_exit();
        if let Some(why) = &error {
            self.error("protocol");
            self.config.logger.error(format_args!(
                "pool {name}: malformed data from worker pid {pid} ({why}); dropping its link"
            ));
        }
        if exited {
            self.settle(key, ctx);
        } else if error.is_none() && leaving {
            // It is leaving as it was asked to, and closed its link on the
            // way out: its exit follows (the kernel closes a process's
            // descriptors before its pidfd reports the exit). Kill it only
            // if the exit does not come.
            ctx.run_later(LINK_DRAIN, move |act, _| {
                if act.slot_mut(key).is_some_and(|s| s.exit.is_none()) {
                    act.kill(key, "link dropped");
                }
            });
        } else {
            self.kill(key, "link dropped");
        }
    }

    /// The worker is gone and its link drained: resolve what it held. Calls
    /// it started resolve `Died`; calls it never started run elsewhere.
    pub(super) fn settle(&mut self, key: u64, ctx: &mut Context<Self>) {
        let Some(pos) = self.slots.iter().position(|s| s.key == key) else {
            return;
        };
        let mut slot = self.slots.swap_remove(pos);
        let status = slot.exit.clone().unwrap_or(ExitStatus::Exited(-1));
        let pid = slot.pid;
        let started = slot.progress.started();
        let held = std::mem::take(&mut slot.in_flight);
        let (died, requeue) = schedule::settle(held.into_iter().map(|c| (c.seq, c)), started);
        let failed = died.len();
        for call in died {
            let result = Err(WorkerError::Died {
                pid,
                exit: status.clone(),
            });
            let latency = call.accepted.elapsed();
            self.finish(call.name, call.id, pid, latency, call.reply, result);
        }
        let requeued = requeue.len();
        if requeued > 0 {
            self.counters.requeued += requeued as u64;
            self.config.logger.debug(
                1,
                format_args!(
                    "pool {}: worker pid {pid} ended with {requeued} call(s) it never started; \
                     running them elsewhere",
                    self.config.name
                ),
            );
        }
        for call in requeue.into_iter().rev() {
            self.queued_bytes += call.args.len();
            self.queue.push_front(call.into());
        }
        let expected = slot.state.expects_exit() && status.success();
        // Killed because the whole pool failed or stopped: that failure was
        // counted (or is its supervisor's business), even if it settles
        // after a restart.
        let pool_wide = matches!(
            slot.state,
            SlotState::Killed {
                reason: "pool failed" | "shutdown grace over"
            }
        );
        if !expected {
            self.config.events.dispatch(&mut WorkerDied {
                pool: self.config.name.clone(),
                pid,
                exit: status.clone(),
                calls_failed: failed,
            });
            if self.state == PoolState::Running && !pool_wide {
                let why = match slot.state {
                    SlotState::Killed { reason } => format!(" after {reason}"),
                    _ => String::new(),
                };
                self.config.logger.warn(format_args!(
                    "pool {}: worker pid {pid} exited ({status}){why}; {failed} call(s) failed; \
                     replacing it",
                    self.config.name
                ));
                self.record_restart(ctx, &format!("worker pid {pid} exited ({status})"));
            }
        }
        match self.state {
            PoolState::Running => {
                self.promote(ctx);
                self.dispatch(ctx);
            }
            PoolState::Restarting => self.notify_if_stopped(),
            PoolState::Stopping | PoolState::Failed => {
                if self.state == PoolState::Stopping {
                    self.fail_queue(WorkerError::ShuttingDown);
                } else {
                    self.fail_queue(WorkerError::PoolFailed {
                        reason: "restart limit reached".into(),
                    });
                }
                self.notify_if_stopped();
            }
        }
    }

    /// No worker process is left. Spawns still on their way do not count:
    /// a child that arrives after the stop is dropped at once (killed and
    /// reaped), so a stopped or slow fork server never delays a shutdown.
    pub(super) fn all_gone(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn notify_if_stopped(&mut self) {
        if self.state != PoolState::Running && self.all_gone() {
            for waiter in self.stop_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// OTP-style restart intensity: more than `n` restarts within the window
    /// and the pool gives up instead of fork-bombing.
    pub(super) fn record_restart(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.state != PoolState::Running {
            return;
        }
        self.counters.restarts += 1;
        if self.budget.record(Instant::now()) {
            let reason = format!(
                "{} restarts within {:?} (last: {why})",
                self.budget.recent(),
                self.budget.window()
            );
            self.fail(ctx, reason);
        }
    }

    pub(super) fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.failure = Some(reason.clone());
        if self.supervisor.is_some() {
            return self.fail_to_supervisor(reason);
        }
        self.state = PoolState::Failed;
        self.config.logger.error(format_args!(
            "pool {}: giving up: {reason}; pending calls fail with PoolFailed",
            self.config.name
        ));
        self.fail_queue(WorkerError::PoolFailed {
            reason: reason.clone(),
        });
        let keys: Vec<u64> = self.slots.iter().map(|s| s.key).collect();
        for key in keys {
            self.kill(key, "pool failed");
        }
        self.config.events.dispatch(&mut WorkerPoolFailed {
            pool: self.config.name.clone(),
            reason,
        });
        let _ = ctx;
    }
}
