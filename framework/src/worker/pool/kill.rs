//! Killing a worker on purpose (feature `testing`: tests and chaos drills).

use super::super::WorkerMethods;
use super::slot::Slot;
use super::WorkerPool;
use actix::prelude::*;

/// Sends `signal` to one worker (tests, chaos drills). Returns its pid.
#[derive(Message)]
#[rtype(result = "Option<i32>")]
pub struct KillWorker {
    /// Which active worker (index among active workers, wrapping).
    pub index: usize,
    /// The signal.
    pub signal: i32,
}

impl<W: WorkerMethods> Handler<KillWorker> for WorkerPool<W> {
    type Result = Option<i32>;

    fn handle(&mut self, msg: KillWorker, _: &mut Context<Self>) -> Option<i32> {
        let active: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.state.is_active() && s.exit.is_none())
            .collect();
        if active.is_empty() {
            return None;
        }
        let slot = active[msg.index % active.len()];
        slot.signal(msg.signal);
        Some(slot.pid)
    }
}
