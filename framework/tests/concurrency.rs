//! `max_concurrent`: `async fn(&self)` methods of one worker overlap, and
//! the worker keeps the progress-word contract (calls start in arrival
//! order; a worker that dies fails the calls it started and gives back the
//! ones it did not). Nothing here depends on timing: overlapping calls meet
//! at a barrier that only opens when they all run at once.

use daemonic::event::{Events, WorkerRecycled};
use daemonic::prelude::*;
use daemonic::testing::KillWorker;
use daemonic::worker::{CallFuture, GetPoolStats, WorkerPoolBuilder};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

#[daemonic::worker]
#[derive(Default, Serialize, Deserialize)]
pub struct Gate {
    /// Calls started so far, in order.
    #[serde(skip)]
    started: AtomicUsize,
    /// `meet` calls that entered so far (they meet in groups, by entry).
    #[serde(skip)]
    entered: AtomicUsize,
    /// `meet` calls inside now.
    #[serde(skip)]
    inside: AtomicUsize,
    #[serde(skip)]
    changed: Notify,
}

/// What a `meet` call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Met {
    /// Its place among the calls started (0-based).
    order: usize,
    call_id: Option<u64>,
    pid: u32,
}

impl Gate {
    fn start(&self) -> usize {
        self.started.fetch_add(1, Ordering::SeqCst)
    }

    fn enter(&self) -> usize {
        let entry = self.entered.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        entry
    }

    /// Waits until `cond` holds, re-checking whenever a call enters.
    async fn wait(&self, cond: impl Fn(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if cond(self) {
                return;
            }
            changed.await;
        }
    }
}

#[daemonic::worker]
impl Gate {
    /// Returns only once its group of `n` `meet` calls (by entry) have
    /// all entered: they must run at the same time.
    pub async fn meet(&self, ctx: &mut WorkerContext, n: usize) -> Met {
        let order = self.start();
        self.inside.fetch_add(1, Ordering::SeqCst);
        let entry = self.enter();
        let group_end = (entry / n + 1) * n;
        self.wait(|g| g.entered.load(Ordering::SeqCst) >= group_end)
            .await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Met {
            order,
            call_id: ctx.call_id(),
            pid: ctx.pid(),
        }
    }

    /// An `async` method taking `&mut self`: runs alone. Returns its place
    /// and how many `meet` calls were inside when it ran.
    pub async fn alone(&mut self) -> (usize, usize) {
        let order = self.start();
        tokio::task::yield_now().await;
        (order, self.inside.load(Ordering::SeqCst))
    }

    /// A plain method: runs alone, outside the runtime, and may still block
    /// on a future.
    pub fn plain(&mut self, ctx: &mut WorkerContext) -> (usize, usize, u64) {
        let order = self.start();
        let slept = ctx.block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            7
        });
        (order, self.inside.load(Ordering::SeqCst), slept)
    }

    /// Creates `flag` (the call has started), then sleeps `ms`.
    pub async fn hold(&self, flag: String, ms: u64) -> usize {
        let order = self.start();
        let _ = std::fs::write(&flag, b"");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        order
    }

    /// Completes a `meet` group, then panics.
    pub async fn boom(&self) -> usize {
        self.start();
        self.enter();
        panic!("boom in an async method");
    }

    pub async fn pid(&self) -> u32 {
        std::process::id()
    }
}

fn gate(max_concurrent: usize) -> WorkerPoolBuilder<Gate> {
    WorkerPool::builder(Gate::default())
        .size(1)
        .max_concurrent(max_concurrent)
        // A bound for the test if calls never overlap (they would wait at
        // the barrier forever): it fails with `Timeout` instead of hanging.
        .call_timeout(Duration::from_secs(20))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix::test]
async fn async_calls_overlap_in_one_worker_and_start_in_arrival_order() {
    let pool = gate(4).start().unwrap();
    // Four calls that can only return together: each waits until all four
    // are inside. Sent in order (actix queues a message when `call` is
    // made, not when it is awaited).
    let calls: Vec<_> = (0..4).map(|_| pool.call(gate::Meet { n: 4 })).collect();
    let met: Vec<Met> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("the four calls met"))
        .collect();
    let orders: Vec<usize> = met.iter().map(|m| m.order).collect();
    assert_eq!(orders, [0, 1, 2, 3], "started in the order they arrived");
    let mut ids: Vec<u64> = met.iter().filter_map(|m| m.call_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each call has its own context: {met:?}");
    assert!(
        met.iter().all(|m| m.pid == met[0].pid),
        "one worker process ran them all: {met:?}"
    );
}

#[actix::test]
async fn a_mut_self_or_plain_method_runs_alone_between_concurrent_calls() {
    let pool = gate(8).start().unwrap();
    let first: Vec<_> = (0..2).map(|_| pool.call(gate::Meet { n: 2 })).collect();
    let alone = pool.call(gate::Alone {});
    let middle: Vec<_> = (0..2).map(|_| pool.call(gate::Meet { n: 2 })).collect();
    let plain = pool.call(gate::Plain {});
    let last: Vec<_> = (0..2).map(|_| pool.call(gate::Meet { n: 2 })).collect();

    let first = futures_util::future::join_all(first).await;
    let (alone, middle, plain, last) = futures_util::join!(
        alone,
        futures_util::future::join_all(middle),
        plain,
        futures_util::future::join_all(last)
    );
    let orders = |calls: Vec<Result<Met, CallError>>| -> Vec<usize> {
        calls.into_iter().map(|m| m.unwrap().order).collect()
    };
    assert_eq!(orders(first), [0, 1]);
    assert_eq!(
        alone.unwrap(),
        (2, 0),
        "`&mut self` started after the two before it finished, with none inside"
    );
    assert_eq!(orders(middle), [3, 4], "and the next ones waited for it");
    assert_eq!(plain.unwrap(), (5, 0, 7), "a plain method too");
    assert_eq!(orders(last), [6, 7]);
}

#[actix::test]
async fn calls_over_max_concurrent_wait_their_turn() {
    // Two run at once: the first pair meets, then the second pair.
    let pool = gate(2).max_in_flight(4).start().unwrap();
    let calls: Vec<_> = (0..4).map(|_| pool.call(gate::Meet { n: 2 })).collect();
    let orders: Vec<usize> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|m| m.unwrap().order)
        .collect();
    assert_eq!(orders, [0, 1, 2, 3]);
}

/// Three `hold` calls to a pool that runs two at once and lets a worker
/// hold three: `a` and `b` (holding for `ms`) start, `c` waits in the
/// worker. Returns them with a future that resolves once `a` and `b` have
/// started.
fn three_holds<'a>(
    pool: &Addr<WorkerPool<Gate>>,
    dir: &'a std::path::Path,
    ms: u64,
) -> (
    [CallFuture<WorkerPool<Gate>, gate::Hold>; 3],
    impl std::future::Future<Output = ()> + 'a,
) {
    let flag = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let call = |name: &str, ms| {
        pool.call(gate::Hold {
            flag: flag(name),
            ms,
        })
    };
    let calls = [call("a", ms), call("b", ms), call("c", 0)];
    let started = async move {
        wait_for("both calls started", || {
            dir.join("a").exists() && dir.join("b").exists()
        })
        .await;
        assert!(!dir.join("c").exists(), "c did not start");
    };
    (calls, started)
}

#[actix::test]
async fn a_killed_worker_fails_the_calls_it_started_and_gives_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // Two run at once; the worker holds a third it cannot start yet.
    let pool = gate(2).max_in_flight(3).start().unwrap();
    let victim = pool.call(gate::Pid {}).await.unwrap();
    let ([a, b, c], started) = three_holds(&pool, dir.path(), 60_000);
    let waiting = async {
        started.await;
        let stats = pool.send(GetPoolStats).await.unwrap();
        assert_eq!(stats.in_flight, 3, "the worker holds all three: {stats:?}");
        let killed = pool
            .send(KillWorker {
                index: 0,
                signal: libc::SIGKILL,
            })
            .await
            .unwrap();
        assert_eq!(killed, Some(victim as i32));
    };
    let (a, b, c, ()) = futures_util::join!(a, b, c, waiting);
    for started in [a, b] {
        assert!(
            matches!(started, Err(CallError::Worker(WorkerError::Died { pid, .. })) if pid == victim as i32),
            "{started:?}"
        );
    }
    assert!(c.is_ok(), "the call it never started ran elsewhere: {c:?}");
    assert_ne!(pool.call(gate::Pid {}).await.unwrap(), victim);
    let stats = pool.send(GetPoolStats).await.unwrap();
    assert_eq!(stats.requeued, 1, "{stats:?}");
}

#[actix::test]
async fn a_panic_fails_its_call_and_lets_the_running_ones_finish() {
    let pool = gate(4).start().unwrap();
    let victim = pool.call(gate::Pid {}).await.unwrap();
    // `meet` waits for two inside; `boom` counts as one, wakes it, panics.
    let waiting = pool.call(gate::Meet { n: 2 });
    let boom = pool.call(gate::Boom {});
    let (waiting, boom) = futures_util::join!(waiting, boom);
    assert!(
        matches!(&boom, Err(CallError::Worker(WorkerError::Panicked { message })) if message.contains("boom in an async method")),
        "{boom:?}"
    );
    assert_eq!(waiting.unwrap().order, 0, "the running call still answered");
    assert_ne!(
        pool.call(gate::Pid {}).await.unwrap(),
        victim,
        "the worker was replaced"
    );
}

#[actix::test]
async fn sigterm_finishes_running_calls_and_gives_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let events = Events::new();
    let recycled = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = recycled.clone();
    events.on(move |e: &mut WorkerRecycled| seen.lock().push((e.pid, e.reason)));
    let pool = gate(2).max_in_flight(3).events(events).start().unwrap();
    let victim = pool.call(gate::Pid {}).await.unwrap();
    let ([a, b, c], started) = three_holds(&pool, dir.path(), 300);
    let terminate = async {
        started.await;
        pool.send(KillWorker {
            index: 0,
            signal: libc::SIGTERM,
        })
        .await
        .unwrap();
    };
    let (a, b, c, ()) = futures_util::join!(a, b, c, terminate);
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (0, 1),
        "the running calls finished"
    );
    assert_eq!(
        c.unwrap(),
        0,
        "the third ran on a fresh worker (its first call)"
    );
    assert_eq!(recycled.lock().as_slice(), &[(victim as i32, "terminated")]);
}
