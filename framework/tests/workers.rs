//! Worker pools: every failure semantic (a worker that dies, times out or
//! panics, a full queue, an oversized payload, malformed bytes, a restart
//! storm, recycling, a graceful stop), each as a test that fails if the
//! behaviour breaks. Workers run in real child processes forked by the
//! fork server under the multithreaded test harness.

#[macro_use]
mod common;

use daemonic::event::{Events, WorkerDied, WorkerPoolFailed};
use daemonic::testing::KillWorker;
use daemonic::worker::Transport;
use daemonic::worker::{StopPool, WorkerContext, WorkerError, WorkerPool, WorkerPoolBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("division by zero")]
pub struct DivByZero;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Calc {
    offset: i64,
    panic_in_started: bool,
}

#[daemonic::worker]
impl Calc {
    fn started(&mut self, ctx: &mut WorkerContext) {
        if self.panic_in_started {
            panic!("cannot connect to the database");
        }
        ctx.log("calc worker ready");
    }

    pub fn add(&mut self, a: i64, b: i64) -> i64 {
        a + b + self.offset
    }

    pub fn divide(&mut self, a: i64, b: i64) -> Result<i64, DivByZero> {
        if b == 0 {
            Err(DivByZero)
        } else {
            Ok(a / b)
        }
    }

    pub fn pid(&mut self) -> i32 {
        std::process::id() as i32
    }

    pub fn sleep(&mut self, ms: u64) -> i32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id() as i32
    }

    /// Creates `flag`, then sleeps: the caller knows the call started.
    pub fn sleep_flagged(&mut self, flag: String, ms: u64) -> i32 {
        let _ = std::fs::write(&flag, b"");
        self.sleep(ms)
    }

    pub fn boom(&mut self, message: String) -> i32 {
        panic!("{message}");
    }

    pub fn echo(&mut self, bytes: Vec<u8>) -> usize {
        bytes.len()
    }

    pub async fn add_later(&mut self, a: i64, b: i64) -> i64 {
        a + b
    }

    /// Writes garbage on the channel to the daemon, as a broken or hostile
    /// worker could.
    pub fn corrupt(&mut self) -> i32 {
        let garbage = [4u8, 0, 0, 0, 0xc1, 0xc1, 0xc1, 0xc1];
        // SAFETY: fd 3 is this worker's channel.
        unsafe { libc::write(3, garbage.as_ptr().cast(), garbage.len()) };
        std::thread::sleep(Duration::from_secs(5));
        0
    }
}

/// Waits (with a deadline) until workers hold `calls` calls.
async fn held_by_worker(pool: &daemonic::actix::Addr<WorkerPool<Calc>>, calls: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pool.send(daemonic::worker::GetPoolStats).await.unwrap();
        if stats.in_flight >= calls {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers never held {calls} call(s): {stats:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

fn builder(t: Transport, worker: Calc) -> WorkerPoolBuilder<Calc> {
    WorkerPool::builder(worker).transport(t)
}

fn calc() -> Calc {
    Calc {
        offset: 0,
        panic_in_started: false,
    }
}

async fn methods_return_values_and_errs_exactly(t: Transport) {
    let pool = builder(
        t,
        Calc {
            offset: 1,
            panic_in_started: false,
        },
    )
    .size(2)
    .start()
    .unwrap();
    assert_eq!(pool.send(calc::Add { a: 2, b: 3 }).await.unwrap(), Ok(6));
    assert_eq!(
        pool.send(calc::Divide { a: 7, b: 2 }).await.unwrap(),
        Ok(Ok(3))
    );
    assert_eq!(
        pool.send(calc::Divide { a: 7, b: 0 }).await.unwrap(),
        Ok(Err(DivByZero))
    );
    assert_eq!(
        pool.send(calc::AddLater { a: 1, b: 2 }).await.unwrap(),
        Ok(3)
    );
    let pid = pool.send(calc::Pid {}).await.unwrap().unwrap();
    assert_ne!(pid, std::process::id() as i32, "the method ran in a child");
}

async fn a_panic_resolves_with_panicked_and_the_worker_is_replaced(t: Transport) {
    let pool = builder(t, calc()).size(1).start().unwrap();
    let before = pool.send(calc::Pid {}).await.unwrap().unwrap();
    match pool
        .send(calc::Boom {
            message: "kaboom".into(),
        })
        .await
        .unwrap()
    {
        Err(WorkerError::Panicked { message }) => assert!(message.contains("kaboom"), "{message}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    let after = pool.send(calc::Pid {}).await.unwrap().unwrap();
    assert_ne!(before, after, "a fresh worker replaced the poisoned one");
}

async fn a_call_over_the_timeout_resolves_with_timeout_and_the_worker_is_replaced(t: Transport) {
    let pool = builder(t, calc())
        .size(1)
        .call_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let before = pool.send(calc::Pid {}).await.unwrap().unwrap();
    let started = std::time::Instant::now();
    match pool.send(calc::Sleep { ms: 10_000 }).await.unwrap() {
        Err(WorkerError::Timeout { pid, after }) => {
            assert_eq!(pid, before);
            assert_eq!(after, Duration::from_millis(200));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let after = pool.send(calc::Pid {}).await.unwrap().unwrap();
    assert_ne!(before, after);
}

async fn a_killed_worker_fails_its_call_with_died_and_queued_calls_go_to_the_replacement(
    t: Transport,
) {
    let pool = builder(t, calc()).size(1).start().unwrap();
    let victim = pool.send(calc::Pid {}).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("running");
    let held = pool.send(calc::SleepFlagged {
        flag: flag.to_string_lossy().into_owned(),
        ms: 10_000,
    });
    let queued = pool.send(calc::Add { a: 1, b: 1 });
    // Kill the worker once it runs the slow call (killed before it started
    // it, the call would run on the replacement instead).
    held_by_worker(&pool, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !flag.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow call started"
        );
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        pool.send(KillWorker {
            index: 0,
            signal: libc::SIGKILL
        })
        .await
        .unwrap(),
        Some(victim)
    );
    match held.await.unwrap() {
        Err(WorkerError::Died { pid, exit }) => {
            assert_eq!(pid, victim);
            assert_eq!(exit.signal(), Some(libc::SIGKILL));
        }
        other => panic!("expected Died, got {other:?}"),
    }
    assert_eq!(
        queued.await.unwrap(),
        Ok(2),
        "the queued call went to the replacement"
    );
}

async fn a_full_queue_answers_busy_at_once(t: Transport) {
    let pool = builder(t, calc())
        .size(1)
        .queue_capacity(2)
        .start()
        .unwrap();
    pool.send(calc::Pid {}).await.unwrap().unwrap(); // worker is up
    let held = pool.send(calc::Sleep { ms: 300 });
    held_by_worker(&pool, 1).await;
    let q1 = pool.send(calc::Add { a: 1, b: 0 });
    let q2 = pool.send(calc::Add { a: 2, b: 0 });
    let started = std::time::Instant::now();
    let refused = pool.send(calc::Add { a: 3, b: 0 }).await.unwrap();
    assert!(
        matches!(refused, Err(WorkerError::Busy { queued: 2, .. })),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "Busy comes at once"
    );
    assert!(held.await.unwrap().is_ok());
    assert_eq!(q1.await.unwrap(), Ok(1), "nothing queued was dropped");
    assert_eq!(q2.await.unwrap(), Ok(2));
}

async fn an_oversized_payload_is_refused_before_sending(t: Transport) {
    let pool = builder(t, calc())
        .size(1)
        .max_payload(1024)
        .start()
        .unwrap();
    match pool
        .send(calc::Echo {
            bytes: vec![7; 4096],
        })
        .await
        .unwrap()
    {
        Err(WorkerError::TooLarge { size, max }) => {
            assert!(size > 4096);
            assert_eq!(max, 1024);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        pool.send(calc::Echo {
            bytes: vec![7; 100]
        })
        .await
        .unwrap(),
        Ok(100)
    );
}

async fn malformed_bytes_drop_the_link_and_the_parent_is_unharmed(t: Transport) {
    let pool = builder(t, calc()).size(1).start().unwrap();
    let before = pool.send(calc::Pid {}).await.unwrap().unwrap();
    match pool.send(calc::Corrupt {}).await.unwrap() {
        Err(WorkerError::Died { pid, .. }) => assert_eq!(pid, before),
        other => panic!("expected Died after the link was dropped, got {other:?}"),
    }
    assert_eq!(pool.send(calc::Add { a: 20, b: 22 }).await.unwrap(), Ok(42));
    assert_ne!(pool.send(calc::Pid {}).await.unwrap().unwrap(), before);
}

async fn a_restart_storm_fails_the_pool_instead_of_fork_bombing(t: Transport) {
    let events = Events::new();
    let failed = Arc::new(AtomicUsize::new(0));
    let seen = failed.clone();
    events.on(move |_: &mut WorkerPoolFailed| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let pool = builder(
        t,
        Calc {
            offset: 0,
            panic_in_started: true,
        },
    )
    .size(1)
    .restart_limit(3, Duration::from_secs(10))
    .events(events)
    .start()
    .unwrap();
    let result = pool.send(calc::Add { a: 1, b: 1 }).await.unwrap();
    assert!(
        matches!(result, Err(WorkerError::PoolFailed { .. })),
        "{result:?}"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        1,
        "the failure is announced once"
    );
    let later = pool.send(calc::Add { a: 1, b: 1 }).await.unwrap();
    assert!(matches!(later, Err(WorkerError::PoolFailed { .. })));
    let stats = pool.send(daemonic::worker::GetPoolStats).await.unwrap();
    assert!(stats.failed);
    assert!(
        stats.restarts <= 5,
        "no fork bomb: {} restarts",
        stats.restarts
    );
}

async fn shutdown_refuses_new_calls_and_lets_held_calls_finish(t: Transport) {
    let pool = builder(t, calc()).size(1).start().unwrap();
    pool.send(calc::Pid {}).await.unwrap().unwrap();
    let held = pool.send(calc::Sleep { ms: 200 });
    held_by_worker(&pool, 1).await;
    // `send` enqueues at once and a mailbox is FIFO: the call below reaches
    // the pool after the stop request.
    let stopping = pool.send(StopPool {
        grace: Duration::from_secs(5),
    });
    assert_eq!(
        pool.send(calc::Add { a: 1, b: 1 }).await.unwrap(),
        Err(WorkerError::ShuttingDown)
    );
    assert!(held.await.unwrap().is_ok(), "the held call finished");
    stopping.await.unwrap();
}

async fn recycling_after_max_calls_spreads_calls_over_fresh_workers(t: Transport) {
    let pool = builder(t, calc())
        .size(2)
        .max_calls_per_child(10)
        .start()
        .unwrap();
    let mut pids = HashSet::new();
    for _ in 0..100 {
        pids.insert(pool.send(calc::Pid {}).await.unwrap().unwrap());
    }
    assert!(
        pids.len() >= 10,
        "100 calls served by {} distinct workers",
        pids.len()
    );
}

/// A worker that exits because the pool asked it to (recycling) is neither
/// a death nor a restart, whichever the pool notices first: the end of its
/// link or its exit.
async fn a_recycled_worker_is_not_counted_as_a_failure(t: Transport) {
    let events = Events::new();
    let died = Arc::new(AtomicUsize::new(0));
    let counter = died.clone();
    events.on(move |_: &mut WorkerDied| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let pool = builder(t, calc())
        .size(1)
        .max_calls_per_child(1)
        .events(events)
        .start()
        .unwrap();
    let mut pids = HashSet::new();
    for _ in 0..20 {
        pids.insert(pool.send(calc::Pid {}).await.unwrap().unwrap());
    }
    assert_eq!(pids.len(), 20, "each call on a fresh worker");
    // The last recycled worker's exit may still be on its way.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pool.send(daemonic::worker::GetPoolStats).await.unwrap();
        if stats.recycled >= 20 {
            assert_eq!(stats.restarts, 0, "{stats:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats:?}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(died.load(Ordering::SeqCst), 0, "no WorkerDied event");
}

async fn inline_mode_runs_the_same_methods_in_process(t: Transport) {
    let pool = builder(t, calc()).inline().start().unwrap();
    assert_eq!(pool.send(calc::Add { a: 2, b: 2 }).await.unwrap(), Ok(4));
    assert_eq!(
        pool.send(calc::Pid {}).await.unwrap(),
        Ok(std::process::id() as i32)
    );
    assert_eq!(
        pool.send(calc::AddLater { a: 2, b: 5 }).await.unwrap(),
        Ok(7)
    );
    assert!(matches!(
        pool.send(calc::Boom {
            message: "x".into()
        })
        .await
        .unwrap(),
        Err(WorkerError::Panicked { .. })
    ));
}

over_transports!(
    methods_return_values_and_errs_exactly,
    a_panic_resolves_with_panicked_and_the_worker_is_replaced,
    a_call_over_the_timeout_resolves_with_timeout_and_the_worker_is_replaced,
    a_killed_worker_fails_its_call_with_died_and_queued_calls_go_to_the_replacement,
    a_full_queue_answers_busy_at_once,
    an_oversized_payload_is_refused_before_sending,
    a_restart_storm_fails_the_pool_instead_of_fork_bombing,
    shutdown_refuses_new_calls_and_lets_held_calls_finish,
    recycling_after_max_calls_spreads_calls_over_fresh_workers,
    a_recycled_worker_is_not_counted_as_a_failure,
    inline_mode_runs_the_same_methods_in_process,
);

/// Garbage on the socket transport's channel (the ipc-channel transport does
/// not read that channel after the bootstrap).
#[actix::test]
async fn malformed_bytes_on_the_socket_transport() {
    malformed_bytes_drop_the_link_and_the_parent_is_unharmed(Transport::Socket).await
}
