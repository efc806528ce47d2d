//! Calls to workers and replies from them.

use super::super::protocol::{self, Deadline, FromChild, Outcome, ToChild};
use super::super::{WorkerError, WorkerMethods};
use super::schedule;
use super::slot::{InFlight, SlotState};
use super::{PoolState, WorkerPool};
use actix::prelude::*;
use std::borrow::Cow;
use std::time::Instant;

impl<W: WorkerMethods> WorkerPool<W> {
    /// Hands queued calls to workers that can take them.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.state != PoolState::Running {
            return;
        }
        let max = self.config.max_in_flight;
        while !self.queue.is_empty() {
            let Some(index) = schedule::pick(self.slots.iter().map(|s| s.candidate()), max) else {
                return;
            };
            let Some(call) = self.pop_queue() else {
                return;
            };
            let slot = &mut self.slots[index];
            let deadline = self
                .config
                .call_timeout
                .and_then(|t| Instant::now().checked_add(t));
            let frame = protocol::encode(&ToChild::Call {
                id: call.id,
                method: call.method,
                args: Cow::Borrowed(&call.args),
                deadline: deadline.map(Deadline::to_wire),
            });
            let sent = frame
                .map_err(std::io::Error::other)
                .and_then(|bytes| slot.link.send(bytes));
            slot.sent += 1;
            slot.in_flight.push_back(InFlight {
                id: call.id,
                seq: slot.sent,
                method: call.method,
                name: call.name,
                args: call.args,
                accepted: call.accepted,
                deadline,
                reply: call.reply,
            });
            if sent.is_err() {
                // The link is gone: the worker is dying. The call is settled
                // with the others it held (it was never started: it runs
                // elsewhere); stop using the worker now.
                let key = slot.key;
                self.kill(key, "a broken link");
            }
        }
        let _ = ctx;
    }

    pub(super) fn send_stop_if_drained(&mut self, key: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if let SlotState::Retiring {
            reason,
            stop_sent: false,
        } = slot.state
        {
            if slot.in_flight.is_empty() {
                slot.state = SlotState::Retiring {
                    reason,
                    stop_sent: true,
                };
                let stop = protocol::encode(&ToChild::Stop).map_err(std::io::Error::other);
                if stop.and_then(|bytes| slot.link.send(bytes)).is_err() {
                    self.kill(key, "a broken link");
                }
            }
        }
    }

    pub(super) fn on_frames(&mut self, key: u64, frames: Vec<Vec<u8>>, ctx: &mut Context<Self>) {
        for frame in frames {
            match protocol::decode::<FromChild>(&frame) {
                Ok(FromChild::Ready) => self.on_ready(key),
                Ok(FromChild::Reply { id, outcome }) => self.on_reply(key, id, outcome, ctx),
                Ok(FromChild::Leaving) => self.on_leaving(key),
                Err(e) => return self.on_link_closed(key, Some(e.to_string()), ctx),
            }
        }
        self.promote(ctx);
        self.dispatch(ctx);
    }

    fn on_reply(&mut self, key: u64, id: u64, outcome: Outcome, ctx: &mut Context<Self>) {
        let max_calls = self.config.max_calls_per_child;
        let max_payload = self.config.max_payload;
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let Some(pos) = slot.in_flight.iter().position(|c| c.id == id) else {
            return; // already resolved (timed out)
        };
        let Some(call) = slot.in_flight.remove(pos) else {
            return;
        };
        slot.calls += 1;
        let pid = slot.pid;
        let by_calls = max_calls.is_some_and(|max| slot.calls >= max);
        let by_runtime = slot.recycle_at.is_some_and(|at| Instant::now() >= at);
        let panicked = matches!(outcome, Outcome::Panicked(_));
        let result = match outcome {
            Outcome::Ok(bytes) => Ok(bytes),
            Outcome::Panicked(message) => Err(WorkerError::Panicked { message }),
            Outcome::BadCall(message) => Err(WorkerError::Protocol(message)),
            Outcome::ReplyTooLarge(size) => Err(WorkerError::ReplyTooLarge {
                size,
                max: max_payload,
            }),
        };
        if panicked {
            // The worker exits after replying (its state may be poisoned);
            // it gets no new calls meanwhile and its end is no surprise.
            slot.state = SlotState::Retiring {
                reason: "panicked",
                stop_sent: true,
            };
        }
        self.finish(call.name, call.id, pid, call.accepted, call.reply, result);
        if panicked {
            self.promote(ctx);
        } else if by_calls {
            self.retire(key, "max calls", ctx);
        } else if by_runtime {
            self.retire(key, "max runtime", ctx);
        }
        self.send_stop_if_drained(key);
    }
}
