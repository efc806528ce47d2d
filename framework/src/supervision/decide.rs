//! What a child's exit sets in motion: nothing (not restarted), a restart
//! of the strategy's set after a backoff, or an escalation.

use super::child::{ChildExited, StopMode};
use super::strategy::{Exit, Restart};
use super::supervisor::{ChildState, Op, Supervisor, TreeState};
use crate::event::SupervisorEscalated;
use std::time::Instant;

/// A random number in `[0, 1)` for the backoff's jitter (not security).
fn jitter_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

impl Supervisor {
    /// A child ended (or could not start): queue what follows.
    pub(super) fn on_exit(&mut self, exited: ChildExited) {
        if self.busy {
            self.pending.push(exited);
            return;
        }
        if !self.state.supervising() {
            return;
        }
        let ChildExited {
            id,
            generation,
            exit,
        } = exited;
        let supervisor = self.name.clone();
        let Some(index) = self.children.iter().position(|s| s.id == id) else {
            return;
        };
        let slot = &mut self.children[index];
        let current = matches!(
            slot.state,
            ChildState::Running | ChildState::Starting | ChildState::Failed
        );
        if slot.generation != generation || !current {
            return;
        }
        slot.state = ChildState::Failed;
        let name = slot.spec.name.clone();
        if let Exit::Failed(why) = &exit {
            slot.last_failure = Some(why.clone());
        }
        if slot.leaving {
            // Being removed: its stop is queued already.
            return;
        }
        if !slot.spec.restart.restarts_after(&exit) {
            self.logger.log(format_args!(
                "supervisor {supervisor}: child {name} ended ({exit}); {} children are not \
                 restarted",
                slot.spec.restart.name()
            ));
            self.ops.push_back(Op::Stop {
                id,
                mode: StopMode::Final,
            });
            return;
        }
        if self.budget.record(Instant::now()) {
            let reason = format!(
                "{} restarts within {:?} (last: {name}: {exit})",
                self.budget.recent(),
                self.budget.window()
            );
            return self.escalate(reason);
        }
        let delay = self
            .backoff
            .delay(self.budget.recent().saturating_sub(1), jitter_unit());
        self.logger.warn(format_args!(
            "supervisor {supervisor}: child {name} failed ({exit}); {} restarts {}in {delay:?}",
            self.strategy,
            if delay.is_zero() { "now, not " } else { "" },
        ));
        let reason = format!("{name} failed: {exit}");
        let set = self.strategy.restart_set(index, self.children.len());
        for i in set.rev() {
            let sibling = &mut self.children[i];
            if sibling.state == ChildState::Terminated || sibling.leaving {
                continue;
            }
            if sibling.spec.restart == Restart::Temporary {
                // Never restarted, even when a sibling takes it down.
                self.ops.push_back(Op::Stop {
                    id: sibling.id,
                    mode: StopMode::Final,
                });
                continue;
            }
            sibling.restart_reason = Some(reason.clone());
            if i == index {
                // It is down already (a failed pool waits with its calls).
                sibling.state = ChildState::Stopped;
            } else {
                self.ops.push_back(Op::Stop {
                    id: sibling.id,
                    mode: StopMode::Restart,
                });
            }
        }
        self.ops.push_back(Op::Delay(delay));
        self.ops.push_back(Op::StartAll);
        if self.state == TreeState::Running {
            self.state = TreeState::Restarting;
        }
    }

    /// Over the intensity: stop every child in reverse order, then fail
    /// upward.
    pub(super) fn escalate(&mut self, reason: String) {
        let hand_over = self.hand_over && self.parent.is_none();
        self.logger.error(format_args!(
            "supervisor {}: giving up: {reason}; {}escalating",
            self.name,
            if hand_over {
                ""
            } else {
                "stopping its children and "
            }
        ));
        self.events.dispatch(&mut SupervisorEscalated {
            supervisor: self.name.clone(),
            reason: reason.clone(),
        });
        self.state = TreeState::Failed;
        self.ops.clear();
        self.pending.clear();
        if hand_over {
            // Its owner stops it (see `SupervisorBuilder::
            // hand_over_escalation`): nothing more starts, the owner hears
            // it now.
            self.start_waiters.clear();
            return self.escalated(reason);
        }
        // A parent may restart this tree in place: pools keep their calls.
        let mode = match self.parent {
            Some(_) => StopMode::Restart,
            None => StopMode::Final,
        };
        for id in self.children.iter().rev().map(|s| s.id) {
            self.ops.push_back(Op::Stop { id, mode });
        }
        self.ops.push_back(Op::Escalate(reason));
    }

    /// The children are stopped: tell the parent, or whoever runs the root.
    pub(super) fn escalated(&mut self, reason: String) {
        if !self.start_waiters.is_empty() {
            // It gave up while (re)starting: its parent hears it as a
            // failure to start, once.
            for waiter in self.start_waiters.drain(..) {
                let _ = waiter.send(Err(reason.clone()));
            }
            return;
        }
        match (&self.parent, self.on_escalation.take()) {
            (Some(parent), _) => parent.exited(Exit::Failed(format!(
                "supervisor {} gave up: {reason}",
                self.name
            ))),
            (None, Some(hook)) => hook(reason),
            (None, None) => self.logger.error(format_args!(
                "supervisor {}: stopped for good (no parent to escalate to)",
                self.name
            )),
        }
    }
}
