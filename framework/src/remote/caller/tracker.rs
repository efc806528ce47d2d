//! What a caller knows about each call it sent, and what follows from it:
//! the pure half of the remote pool (no I/O, unit-tested).
//!
//! A call is `Sent` until a host says it holds it; then `Queued` on that
//! host (the host promised not to start it before saying so) or `Running`
//! there (it may have started). A host that goes silent past the deadline
//! loses its calls: queued ones are sent elsewhere (they never ran), the
//! others resolve `HostLost` (they may have run), unless the caller marked
//! them idempotent.

use crate::worker::WorkerError;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A host's name, shared by the calls it holds.
pub(super) type HostName = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Where {
    /// Published (to the queue group, or to one host); nobody claimed it.
    Sent { at: Instant, to: Option<HostName> },
    /// Waits on `host`, which has not started it.
    Queued { host: HostName, since: Instant },
    /// `host` may have started it.
    Running { host: HostName, since: Instant },
}

impl Where {
    fn host(&self) -> Option<&HostName> {
        match self {
            Where::Sent { .. } => None,
            Where::Queued { host, .. } | Where::Running { host, .. } => Some(host),
        }
    }
}

/// One attempt of a call.
#[derive(Debug)]
pub(super) struct Tracked<T> {
    pub at: Where,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// Hosts that refused or lost this call: retries go elsewhere.
    pub avoid: Vec<HostName>,
    /// Whether a call that may have run may run again (idempotent).
    pub may_repeat: bool,
    pub data: T,
}

/// What becomes of an attempt that ended without the method's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send the call again, to another host than these.
    Retry,
    /// Resolve the call with this error.
    Fail(WorkerError),
}

/// After an answer that is an error: errors that mean "this host did not
/// run it" (full, stopping, failed pool, no worker started, a promise it
/// could not keep) are retried elsewhere while attempts are left.
pub(super) fn after_error(error: &WorkerError, attempts: u32, max_attempts: u32) -> Verdict {
    let elsewhere = matches!(
        error,
        WorkerError::Busy { .. }
            | WorkerError::ShuttingDown
            | WorkerError::PoolFailed { .. }
            | WorkerError::StartTimeout { .. }
            | WorkerError::Unavailable { .. }
    );
    if elsewhere && attempts < max_attempts {
        Verdict::Retry
    } else {
        Verdict::Fail(error.clone())
    }
}

/// After the host holding an attempt was lost (silent, or its answer lost).
pub(super) fn after_loss<T>(call: &Tracked<T>, silent: Duration, max_attempts: u32) -> Verdict {
    let left = call.attempts < max_attempts;
    match &call.at {
        Where::Queued { .. } if left => Verdict::Retry,
        Where::Queued { host, .. } => Verdict::Fail(WorkerError::Unavailable {
            reason: format!(
                "host {host} was lost before it started the call, and no attempt is left"
            ),
        }),
        _ if call.may_repeat && left => Verdict::Retry,
        Where::Sent { to, .. } => Verdict::Fail(WorkerError::HostLost {
            host: to
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_else(|| "unknown".into()),
            silent,
        }),
        Where::Running { host, .. } => Verdict::Fail(WorkerError::HostLost {
            host: host.to_string(),
            silent,
        }),
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    last: Instant,
    /// The host's heartbeat interval, as it announced it.
    interval: Duration,
}

/// The calls in flight and the hosts heard from.
pub(super) struct Tracker<T> {
    calls: HashMap<u64, Tracked<T>>,
    hosts: HashMap<HostName, Seen>,
    /// Silence after which a host is lost.
    deadline: Duration,
    max_attempts: u32,
}

impl<T> Tracker<T> {
    pub(super) fn new(deadline: Duration, max_attempts: u32) -> Self {
        Self {
            calls: HashMap::new(),
            hosts: HashMap::new(),
            deadline,
            max_attempts: max_attempts.max(1),
        }
    }

    pub(super) fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(super) fn insert(&mut self, id: u64, call: Tracked<T>) {
        self.calls.insert(id, call);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Tracked<T>> {
        self.calls.remove(&id)
    }

    pub(super) fn drain(&mut self) -> Vec<Tracked<T>> {
        self.calls.drain().map(|(_, c)| c).collect()
    }

    /// The interned name of `host` (one allocation per host, not per call).
    pub(super) fn intern(&self, host: &str) -> HostName {
        match self.hosts.get_key_value(host) {
            Some((name, _)) => name.clone(),
            None => Arc::from(host),
        }
    }

    /// `host` spoke (an answer, a notice, its presence).
    pub(super) fn heard(&mut self, host: &HostName, now: Instant, interval: Option<Duration>) {
        let seen = self.hosts.entry(host.clone()).or_insert(Seen {
            last: now,
            interval: Duration::ZERO,
        });
        seen.last = seen.last.max(now);
        if let Some(interval) = interval {
            seen.interval = interval;
        }
    }

    /// `host` is gone (no responders on its own subject).
    pub(super) fn forget(&mut self, host: &str) {
        self.hosts.remove(host);
    }

    /// How long a host may be silent: the configured deadline, and at least
    /// three of its heartbeat intervals.
    fn allowed(&self, host: &str) -> Duration {
        let interval = self.hosts.get(host).map(|s| s.interval).unwrap_or_default();
        self.deadline.max(interval * 3)
    }

    /// Hosts heard from within the deadline.
    pub(super) fn live_hosts(&self, now: Instant) -> usize {
        self.hosts
            .keys()
            .filter(|h| now.saturating_duration_since(self.hosts[*h].last) <= self.allowed(h))
            .count()
    }

    /// A live host not in `avoid` for a retry: the one heard from last.
    pub(super) fn pick(&self, avoid: &[HostName], now: Instant) -> Option<HostName> {
        self.hosts
            .iter()
            .filter(|(h, s)| {
                !avoid.contains(h) && now.saturating_duration_since(s.last) <= self.allowed(h)
            })
            .max_by_key(|(_, s)| s.last)
            .map(|(h, _)| h.clone())
    }

    /// A heartbeat of `host`: where the listed calls are; calls it held
    /// that it no longer lists (and whose answer did not come: it was
    /// lost) are returned with their verdict.
    pub(super) fn heartbeat(
        &mut self,
        host: &HostName,
        interval: Duration,
        queued: &[u64],
        running: &[u64],
        now: Instant,
    ) -> Vec<(Tracked<T>, Verdict)> {
        self.heard(host, now, Some(interval));
        for (ids, is_queued) in [(queued, true), (running, false)] {
            for id in ids {
                if let Some(call) = self.calls.get_mut(id) {
                    // Running is final: a late queued list does not undo it.
                    let running_already = matches!(call.at, Where::Running { .. });
                    call.at = if is_queued && !running_already {
                        Where::Queued {
                            host: host.clone(),
                            since: now,
                        }
                    } else {
                        Where::Running {
                            host: host.clone(),
                            since: now,
                        }
                    };
                }
            }
        }
        let listed: HashSet<u64> = queued.iter().chain(running).copied().collect();
        let vanished: Vec<u64> = self
            .calls
            .iter()
            .filter(|(id, c)| c.at.host() == Some(host) && !listed.contains(id))
            .map(|(id, _)| *id)
            .collect();
        self.settle(vanished, now)
    }

    /// `host` says these calls may start now.
    pub(super) fn running(&mut self, host: &HostName, ids: &[u64], now: Instant) {
        self.heard(host, now, None);
        for id in ids {
            if let Some(call) = self.calls.get_mut(id) {
                call.at = Where::Running {
                    host: host.clone(),
                    since: now,
                };
            }
        }
    }

    /// Calls whose host went silent past its deadline, and calls nobody
    /// claimed within the deadline, with their verdicts.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<(Tracked<T>, Verdict)> {
        let expired: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| self.silence(&c.at, now).is_some())
            .map(|(id, _)| *id)
            .collect();
        self.settle(expired, now)
    }

    /// How long nothing was heard about a call, if that is too long.
    fn silence(&self, at: &Where, now: Instant) -> Option<Duration> {
        let (since, allowed) = match at {
            Where::Sent { at, .. } => (*at, self.deadline),
            Where::Queued { host, since } | Where::Running { host, since } => {
                let last = self.hosts.get(host).map(|s| s.last).unwrap_or(*since);
                (last.max(*since), self.allowed(host))
            }
        };
        let silent = now.saturating_duration_since(since);
        (silent > allowed).then_some(silent)
    }

    fn settle(&mut self, ids: Vec<u64>, now: Instant) -> Vec<(Tracked<T>, Verdict)> {
        let calls: Vec<Tracked<T>> = ids
            .into_iter()
            .filter_map(|id| self.calls.remove(&id))
            .collect();
        calls
            .into_iter()
            .map(|mut call| {
                let silent = self.silence(&call.at, now).unwrap_or_default();
                let verdict = after_loss(&call, silent, self.max_attempts);
                if let Some(host) = call.at.host().cloned() {
                    call.avoid.push(host);
                }
                (call, verdict)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(1);

    fn call(at: Where, may_repeat: bool) -> Tracked<&'static str> {
        Tracked {
            at,
            attempts: 1,
            avoid: Vec::new(),
            may_repeat,
            data: "x",
        }
    }

    fn sent(t0: Instant) -> Where {
        Where::Sent { at: t0, to: None }
    }

    #[test]
    fn only_errors_that_mean_not_run_are_retried() {
        let busy = WorkerError::Busy {
            queued: 1,
            queued_bytes: 1,
        };
        assert_eq!(after_error(&busy, 1, 3), Verdict::Retry);
        assert_eq!(after_error(&busy, 3, 3), Verdict::Fail(busy));
        assert_eq!(
            after_error(&WorkerError::ShuttingDown, 1, 3),
            Verdict::Retry
        );
        let panicked = WorkerError::Panicked {
            message: "x".into(),
        };
        assert_eq!(after_error(&panicked, 1, 3), Verdict::Fail(panicked));
    }

    #[test]
    fn a_lost_host_resends_its_queued_calls_and_fails_its_running_ones() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(DEADLINE, 3);
        let h: HostName = Arc::from("h1");
        tracker.insert(1, call(sent(t0), false));
        tracker.insert(2, call(sent(t0), false));
        tracker.insert(3, call(sent(t0), true));
        let lost = tracker.heartbeat(&h, Duration::from_millis(200), &[1], &[2, 3], t0);
        assert!(lost.is_empty());
        assert!(tracker.expired(t0 + DEADLINE).is_empty(), "not yet");
        let mut lost = tracker.expired(t0 + DEADLINE + Duration::from_millis(1));
        lost.sort_by_key(|(c, _)| {
            matches!(c.at, Where::Running { .. }) as u8 * 10 + c.may_repeat as u8
        });
        assert_eq!(lost.len(), 3);
        assert_eq!(lost[0].1, Verdict::Retry, "queued: never started");
        assert_eq!(
            lost[0].0.avoid,
            vec![h.clone()],
            "and not to that host again"
        );
        assert!(
            matches!(&lost[1].1, Verdict::Fail(WorkerError::HostLost { host, .. }) if host == "h1")
        );
        assert_eq!(lost[2].1, Verdict::Retry, "idempotent");
    }

    #[test]
    fn a_slow_heartbeat_interval_stretches_the_deadline() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(DEADLINE, 3);
        let h: HostName = Arc::from("h1");
        tracker.insert(1, call(sent(t0), false));
        tracker.heartbeat(&h, Duration::from_secs(2), &[], &[1], t0);
        assert!(tracker.expired(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(tracker.expired(t0 + Duration::from_secs(7)).len(), 1);
    }

    #[test]
    fn a_call_nobody_claims_may_have_run() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(DEADLINE, 3);
        tracker.insert(1, call(sent(t0), false));
        let lost = tracker.expired(t0 + DEADLINE * 2);
        assert!(
            matches!(&lost[0].1, Verdict::Fail(WorkerError::HostLost { host, .. }) if host == "unknown")
        );
    }

    #[test]
    fn a_call_a_heartbeat_no_longer_lists_lost_its_answer() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(DEADLINE, 3);
        let (h1, h2): (HostName, HostName) = (Arc::from("h1"), Arc::from("h2"));
        tracker.insert(1, call(sent(t0), false));
        tracker.insert(2, call(sent(t0), false));
        tracker.heartbeat(&h1, Duration::from_millis(200), &[], &[1], t0);
        tracker.heartbeat(&h2, Duration::from_millis(200), &[2], &[], t0);
        // h1 no longer holds 1, and no answer came: it was lost.
        let lost = tracker.heartbeat(&h1, Duration::from_millis(200), &[], &[], t0);
        assert_eq!(lost.len(), 1);
        assert!(matches!(
            lost[0].1,
            Verdict::Fail(WorkerError::HostLost { .. })
        ));
        assert_eq!(tracker.len(), 1, "h2's call is untouched");
    }

    #[test]
    fn running_is_final_and_retries_run_out() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(DEADLINE, 2);
        let h: HostName = Arc::from("h1");
        tracker.insert(1, call(sent(t0), false));
        tracker.running(&h, &[1], t0);
        tracker.heartbeat(&h, Duration::from_millis(200), &[1], &[], t0);
        let lost = tracker.expired(t0 + DEADLINE * 2);
        assert!(matches!(
            lost[0].1,
            Verdict::Fail(WorkerError::HostLost { .. })
        ));
        let mut last = call(
            Where::Queued {
                host: h.clone(),
                since: t0,
            },
            false,
        );
        last.attempts = 2;
        assert!(matches!(
            after_loss(&last, DEADLINE, 2),
            Verdict::Fail(WorkerError::Unavailable { .. })
        ));
    }

    #[test]
    fn retries_go_to_a_live_host_not_avoided() {
        let t0 = Instant::now();
        let mut tracker: Tracker<()> = Tracker::new(DEADLINE, 3);
        let (h1, h2): (HostName, HostName) = (Arc::from("h1"), Arc::from("h2"));
        tracker.heard(&h1, t0, None);
        tracker.heard(&h2, t0 + Duration::from_millis(1), None);
        assert_eq!(tracker.pick(&[], t0), Some(h2.clone()));
        assert_eq!(
            tracker.pick(std::slice::from_ref(&h2), t0),
            Some(h1.clone())
        );
        assert_eq!(tracker.pick(&[h1.clone(), h2.clone()], t0), None);
        assert_eq!(
            tracker.pick(&[], t0 + DEADLINE * 3),
            None,
            "silent hosts are not picked"
        );
        assert_eq!(tracker.live_hosts(t0), 2);
        tracker.forget("h2");
        assert_eq!(tracker.live_hosts(t0), 1);
        assert!(Arc::ptr_eq(&tracker.intern("h1"), &h1));
    }
}
