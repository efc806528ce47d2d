//! One worker process as the pool sees it, and the calls it holds.

use super::super::progress::Progress;
use super::reply::Reply;
use super::schedule::Candidate;
use crate::ipc::shared_bytes::Attachments;
use crate::ipc::shm::Encoded;
use crate::ipc::HostLink;
use crate::process::{ExitStatus, Signaller};
use std::collections::VecDeque;
use std::time::Instant;

/// Whether a worker serves calls or waits as a warm spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Active,
    Spare,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Its `started` hook runs; it takes calls once it says it is ready.
    Starting {
        role: Role,
        deadline: Instant,
    },
    Ready {
        role: Role,
    },
    /// Being replaced on purpose: no new calls; it gets `Stop` once the calls
    /// it holds are done.
    Retiring {
        reason: &'static str,
        stop_sent: bool,
    },
    /// It announced that it leaves (it was asked to terminate): it finished
    /// the call it was running and exits.
    Leaving,
    /// We killed it (timeout, start timeout, broken link, pool stopping).
    Killed {
        reason: &'static str,
    },
}

impl SlotState {
    pub(super) fn name(&self) -> &'static str {
        match self {
            SlotState::Starting {
                role: Role::Spare, ..
            } => "starting spare",
            SlotState::Starting { .. } => "starting",
            SlotState::Ready { role: Role::Spare } => "spare",
            SlotState::Ready { .. } => "ready",
            SlotState::Retiring { .. } => "retiring",
            SlotState::Leaving => "leaving",
            SlotState::Killed { .. } => "killed",
        }
    }

    /// Counts toward the pool's size (serves now, or will once ready).
    pub(super) fn is_active(&self) -> bool {
        matches!(
            self,
            SlotState::Starting {
                role: Role::Active,
                ..
            } | SlotState::Ready { role: Role::Active }
        )
    }

    /// Whether the worker's end is of our making, not a failure: it finished
    /// after being told to stop, or after saying it leaves.
    pub(super) fn expects_exit(&self) -> bool {
        matches!(
            self,
            SlotState::Retiring {
                stop_sent: true,
                ..
            } | SlotState::Leaving
        )
    }
}

/// A call a worker holds.
pub(super) struct InFlight {
    pub id: u64,
    /// Its place among the calls sent to this worker (1-based): compared
    /// with the worker's progress word to tell whether it started.
    pub seq: u64,
    pub method: u16,
    pub name: &'static str,
    /// Kept to run the call elsewhere if this worker never starts it.
    pub args: Encoded,
    /// The descriptors of the `SharedBytes` in the arguments.
    pub attached: Attachments,
    pub accepted: Instant,
    pub deadline: Option<Instant>,
    pub reply: Reply,
}

/// A call waiting for a worker.
pub(super) struct Queued {
    pub id: u64,
    pub method: u16,
    pub name: &'static str,
    pub args: Encoded,
    pub attached: Attachments,
    pub accepted: Instant,
    pub reply: Reply,
}

impl From<InFlight> for Queued {
    fn from(call: InFlight) -> Self {
        Queued {
            id: call.id,
            method: call.method,
            name: call.name,
            args: call.args,
            attached: call.attached,
            accepted: call.accepted,
            reply: call.reply,
        }
    }
}

pub(super) struct Slot {
    pub key: u64,
    pub pid: i32,
    pub link: Box<dyn HostLink>,
    pub signaller: Option<Signaller>,
    pub progress: Progress,
    pub started: Instant,
    pub state: SlotState,
    /// Replies received.
    pub calls: u64,
    /// Calls sent (the last sequence number).
    pub sent: u64,
    /// In the order they were sent.
    pub in_flight: VecDeque<InFlight>,
    pub recycle_at: Option<Instant>,
    /// Set when its pidfd reported the exit.
    pub exit: Option<ExitStatus>,
    /// Until the link's stream ended: replies may still be on their way.
    pub link_open: bool,
}

impl Slot {
    pub(super) fn candidate(&self) -> Candidate {
        Candidate {
            open: self.state == SlotState::Ready { role: Role::Active } && self.exit.is_none(),
            held: self.in_flight.len(),
        }
    }

    pub(super) fn signal(&self, signal: i32) {
        if let Some(s) = &self.signaller {
            s.signal(signal);
        }
    }
}
