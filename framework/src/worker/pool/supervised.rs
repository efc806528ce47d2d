//! A pool run by a supervisor (`supervision/pool.rs`): it reports its
//! failure instead of giving up, is stopped to be restarted, and restarts in
//! place, so its address (held by callers) stays valid throughout.
//!
//! Meanwhile (state `Restarting`) calls queue as usual, up to
//! `queue_capacity`; each waits at most `start_timeout` for the restart and
//! then resolves `StartTimeout`. If the supervisor stops the pool for good
//! instead, waiting calls resolve `PoolFailed` (with why it failed) or
//! `ShuttingDown`.

use super::super::{WorkerError, WorkerMethods};
use super::{PoolState, WorkerPool};
use crate::event::WorkerPoolFailed;
use actix::prelude::*;
use std::time::Instant;

/// Tells the supervisor that the pool went over its restart limit.
pub(crate) type PoolReport = Box<dyn Fn(String) + Send>;

impl<W: WorkerMethods> WorkerPool<W> {
    /// The supervisor decides: keep the calls, kill the workers, report.
    pub(super) fn fail_to_supervisor(&mut self, reason: String) {
        self.state = PoolState::Restarting;
        self.config.logger.error(format_args!(
            "pool {}: giving up: {reason}; its supervisor decides (calls wait up to {:?})",
            self.config.name, self.config.start_timeout
        ));
        let keys: Vec<u64> = self.slots.iter().map(|s| s.key).collect();
        for key in keys {
            self.kill(key, "pool failed");
        }
        self.config.events.dispatch(&mut WorkerPoolFailed {
            pool: self.config.name.clone(),
            reason: reason.clone(),
        });
        if let Some(report) = &self.supervisor {
            report(reason);
        }
    }

    /// Calls that waited `start_timeout` for a restart resolve now.
    pub(super) fn expire_waiting(&mut self, now: Instant) {
        let after = self.config.start_timeout;
        while self
            .queue
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.accepted) >= after)
        {
            if let Some(call) = self.pop_queue() {
                let error = WorkerError::StartTimeout { after };
                let latency = call.accepted.elapsed();
                self.finish(call.name, call.id, 0, latency, call.reply, Err(error));
            }
        }
    }
}

/// Stops the workers so the supervisor can restart the pool: calls held by
/// workers get until `grace`; queued and new calls wait for the restart.
/// Resolves when every worker has exited.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SuspendPool {
    pub grace: std::time::Duration,
}

impl<W: WorkerMethods> Handler<SuspendPool> for WorkerPool<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: SuspendPool, ctx: &mut Context<Self>) -> Self::Result {
        if self.state == PoolState::Running {
            self.state = PoolState::Restarting;
        }
        self.wind_down(msg.grace, ctx)
    }
}

/// Restarts the pool in place: a fresh restart budget, new workers, the
/// queued calls served; `report` is told if it fails again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ResumePool {
    pub report: PoolReport,
}

impl<W: WorkerMethods> Handler<ResumePool> for WorkerPool<W> {
    type Result = ();

    fn handle(&mut self, msg: ResumePool, ctx: &mut Context<Self>) {
        self.supervisor = Some(msg.report);
        if self.state == PoolState::Running {
            return;
        }
        self.state = PoolState::Running;
        self.failure = None;
        self.budget.reset();
        self.config.logger.log(format_args!(
            "pool {}: restarted by its supervisor ({} call(s) waiting)",
            self.config.name,
            self.queue.len()
        ));
        self.promote(ctx);
        self.dispatch(ctx);
    }
}
