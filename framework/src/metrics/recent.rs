//! The status page's "recent restarts": the last worker deaths, timeouts,
//! recycles and pool failures, from the daemon's events. (A restarted daemon
//! is a new process with a new page; its uptime tells.)

use crate::event::{Events, WorkerDied, WorkerPoolFailed, WorkerRecycled, WorkerTimedOut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

/// How many entries the page shows.
const KEEP: usize = 20;

/// One restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Restart {
    pub at: SystemTime,
    /// The pool.
    pub what: String,
    pub pid: i32,
    pub why: String,
}

#[derive(Clone, Default)]
pub(super) struct Recent(Arc<Mutex<VecDeque<Restart>>>);

impl Recent {
    fn push(&self, what: &str, pid: i32, why: String) {
        let mut list = self.0.lock();
        if list.len() == KEEP {
            list.pop_front();
        }
        list.push_back(Restart {
            at: SystemTime::now(),
            what: what.to_string(),
            pid,
            why,
        });
    }

    /// Newest first.
    pub(super) fn list(&self) -> Vec<Restart> {
        self.0.lock().iter().rev().cloned().collect()
    }

    pub(super) fn subscribe(&self, events: &Events) {
        let r = self.clone();
        events.on(move |e: &mut WorkerDied| {
            r.push(
                &e.pool,
                e.pid,
                format!("died ({}), calls failed: {}", e.exit, e.calls_failed),
            );
        });
        let r = self.clone();
        events.on(move |e: &mut WorkerTimedOut| {
            r.push(
                &e.pool,
                e.pid,
                format!("timed out in {} after {:?}", e.method, e.after),
            );
        });
        let r = self.clone();
        events.on(move |e: &mut WorkerRecycled| {
            r.push(&e.pool, e.pid, format!("recycled ({})", e.reason));
        });
        let r = self.clone();
        events.on(move |e: &mut WorkerPoolFailed| {
            r.push(&e.pool, 0, format!("pool failed: {}", e.reason));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_first_and_at_most_keep() {
        let events = Events::new();
        let recent = Recent::default();
        recent.subscribe(&events);
        for pid in 0..(KEEP as i32 + 5) {
            events.dispatch(&mut WorkerRecycled {
                pool: "p".into(),
                pid,
                reason: "max calls",
            });
        }
        let list = recent.list();
        assert_eq!(list.len(), KEEP);
        assert_eq!(list[0].pid, KEEP as i32 + 4);
        assert_eq!(list[0].why, "recycled (max calls)");
        assert_eq!(list[KEEP - 1].pid, 5);
    }
}
