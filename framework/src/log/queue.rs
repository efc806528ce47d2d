//! The byte-bounded queue between the thread that receives children's log
//! lines and the thread that writes them: the receiving thread never waits
//! for the sink, so children never find their socket full because a log file
//! is slow.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Lines waiting for the sink, bounded in bytes.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<String>,
    bytes: usize,
    closed: bool,
}

/// Most bytes of lines waiting for a slow sink.
const QUEUE_BYTES: usize = 4 * 1024 * 1024;

impl Queue {
    /// An empty queue that counts the lines it drops in `dropped`.
    pub(super) fn new(dropped: Arc<AtomicU64>) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            dropped,
        }
    }

    /// Adds lines dropped elsewhere (reported by a child) to the count.
    pub(super) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Queues `line`; drops it if the queue is full, counting it if it is a
    /// child's line (not a notice of the daemon's about one).
    pub(super) fn push(&self, line: String, childs: bool) {
        let mut state = self.state.lock();
        if state.bytes + line.len() > QUEUE_BYTES {
            if childs {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        state.bytes += line.len();
        state.lines.push_back(line);
        self.ready.notify_one();
    }

    /// The next line; `None` once closed and drained.
    pub(super) fn pop(&self) -> Option<String> {
        let mut state = self.state.lock();
        loop {
            if let Some(line) = state.lines.pop_front() {
                state.bytes -= line.len();
                return Some(line);
            }
            if state.closed {
                return None;
            }
            self.ready.wait(&mut state);
        }
    }

    pub(super) fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_only_childrens_lines() {
        let dropped = Arc::new(AtomicU64::new(0));
        let queue = Queue::new(dropped.clone());
        let big = "x".repeat(QUEUE_BYTES / 2 + 1);
        queue.push(big.clone(), true);
        queue.push(big.clone(), true);
        queue.push(big.clone(), false);
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            1,
            "the notice is not counted"
        );
        queue.close();
        assert_eq!(queue.pop().map(|l| l.len()), Some(big.len()));
        assert_eq!(queue.pop(), None, "closed and drained");
    }
}
