//! Pure decisions of a serving host: how much it takes, and how a waiting
//! call may be handed to the local pool.

use crate::worker::PoolLimits;

/// What a host takes for one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Calls held at most (waiting on the host or handed to the pool):
    /// what the pool can hold, running and queued. Beyond it: `Busy`.
    pub capacity: usize,
    /// Calls handed to the pool at most at once: enough to keep every
    /// worker busy while the next ones are synced (one more per worker),
    /// never more than the pool would accept.
    pub window: usize,
}

impl Limits {
    pub(super) fn of(pool: PoolLimits) -> Self {
        let running = pool.size.saturating_mul(pool.max_in_flight).max(1);
        // Every call passes through the pool's queue: without one, it
        // takes nothing (see `WorkerPool::accept`).
        let capacity = match pool.queue_capacity {
            0 => 0,
            queue => running.saturating_add(queue),
        };
        Self {
            capacity,
            window: running.saturating_add(pool.size).min(capacity),
        }
    }

    /// Whether a new call fits next to the `held` ones.
    pub(super) fn admits(&self, held: usize) -> bool {
        held < self.capacity
    }
}

/// Where a call held by a host is.
///
/// `mentioned` is the connection's epoch (its count of connects) when a
/// heartbeat first listed the call as queued: from then on the host
/// promised its caller not to start it before saying so, and the caller
/// runs it elsewhere if the host goes silent. A host that lost its
/// connection since may have been given up by that caller, so it must
/// never start the call: it refuses it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeldState {
    /// Waiting on the host.
    Queued { mentioned: Option<u64> },
    /// Its "running" notice is on its way; it is handed to the pool once
    /// the server confirmed the notice (a sync message came back).
    Releasing { mentioned: u64 },
    /// Handed to the pool: it may have started.
    Released,
}

/// How a call leaving the host's queue goes on, in connection epoch
/// `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// Nobody was told it waits: hand it over now.
    Now,
    /// Its caller was told it waits: tell it that it runs, sync, then hand
    /// it over.
    AfterSync,
    /// Its caller may have sent it elsewhere: answer that it did not run.
    Refuse,
}

pub(super) fn release(state: HeldState, epoch: u64) -> Option<Release> {
    match state {
        HeldState::Queued { mentioned: None } => Some(Release::Now),
        HeldState::Queued {
            mentioned: Some(at),
        } if at == epoch => Some(Release::AfterSync),
        HeldState::Queued { .. } => Some(Release::Refuse),
        HeldState::Releasing { .. } | HeldState::Released => None,
    }
}

/// When the sync came back: whether a releasing call may start now.
pub(super) fn confirmed(state: HeldState, epoch: u64) -> Option<bool> {
    match state {
        HeldState::Releasing { mentioned } => Some(mentioned == epoch),
        _ => None,
    }
}

/// How a call appears in a heartbeat: `true` as queued, `false` as
/// running.
pub(super) fn listed_as_queued(state: HeldState) -> bool {
    matches!(state, HeldState::Queued { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: usize, max_in_flight: usize, queue_capacity: usize) -> PoolLimits {
        PoolLimits {
            size,
            max_in_flight,
            queue_capacity,
            max_payload: 1 << 20,
        }
    }

    #[test]
    fn a_host_holds_what_its_pool_can_hold() {
        let limits = Limits::of(pool(2, 1, 10));
        assert_eq!(limits.capacity, 12);
        assert_eq!(limits.window, 4, "one more than runs, per worker");
        assert!(limits.admits(11) && !limits.admits(12));
    }

    #[test]
    fn a_small_queue_limits_the_window() {
        let limits = Limits::of(pool(1, 1, 1));
        assert_eq!((limits.capacity, limits.window), (2, 2));
        assert!(limits.admits(1) && !limits.admits(2));
        let limits = Limits::of(pool(4, 1, 1));
        assert_eq!(limits.window, 5, "no more than the pool takes");
    }

    #[test]
    fn a_pool_without_a_queue_takes_nothing() {
        let limits = Limits::of(pool(2, 1, 0));
        assert!(!limits.admits(0));
    }

    #[test]
    fn a_call_a_caller_knows_as_queued_waits_for_a_sync() {
        let queued = |mentioned| HeldState::Queued { mentioned };
        assert_eq!(release(queued(None), 1), Some(Release::Now));
        assert_eq!(release(queued(Some(1)), 1), Some(Release::AfterSync));
        assert_eq!(release(HeldState::Released, 1), None);
        assert!(listed_as_queued(queued(Some(1))));
        let releasing = HeldState::Releasing { mentioned: 1 };
        assert!(!listed_as_queued(releasing), "announced as running");
        assert_eq!(confirmed(releasing, 1), Some(true));
    }

    #[test]
    fn after_a_reconnect_a_promised_call_never_starts() {
        // The caller may have given the host up meanwhile and run the
        // call elsewhere.
        let queued = HeldState::Queued { mentioned: Some(1) };
        assert_eq!(release(queued, 2), Some(Release::Refuse));
        assert_eq!(
            confirmed(HeldState::Releasing { mentioned: 1 }, 2),
            Some(false)
        );
        // A call nobody heard of may still start.
        assert_eq!(
            release(HeldState::Queued { mentioned: None }, 2),
            Some(Release::Now)
        );
    }
}
