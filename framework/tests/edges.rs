//! The failure edges of the worker and task layers: each test reproduces a
//! way the promise "every call is answered exactly once, with the truth"
//! once broke, and fails if it breaks again.

#[macro_use]
mod common;

use common::{wait_until, zombie_children, Behave, Probe};
use daemonic::actix::Addr;
use daemonic::task::{self, TaskStatus};
use daemonic::testing::KillWorker;
use daemonic::worker::Transport;
use daemonic::worker::{GetPoolStats, PoolStats, WorkerContext, WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Edge {
    /// `started` sleeps this long (a database connect without a timeout).
    block_in_started_ms: u64,
}

#[daemonic::worker]
impl Edge {
    fn started(&mut self, _: &mut WorkerContext) {
        std::thread::sleep(Duration::from_millis(self.block_in_started_ms));
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

    pub fn zeros(&mut self, len: usize) -> Vec<u8> {
        vec![0; len]
    }

    pub fn len(&mut self, bytes: Vec<u8>) -> usize {
        bytes.len()
    }

    pub async fn nap(&mut self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

fn edge() -> Edge {
    Edge {
        block_in_started_ms: 0,
    }
}

/// Waits (with a deadline) until workers hold `calls` calls.
async fn held_by_workers(pool: &Addr<WorkerPool<Edge>>, calls: usize) {
    wait_for_stats(pool, |s| s.in_flight >= calls).await;
}

/// Waits (with a deadline) until the pool's stats satisfy `done`.
async fn wait_for_stats(
    pool: &Addr<WorkerPool<Edge>>,
    done: impl Fn(&PoolStats) -> bool,
) -> PoolStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pool.send(GetPoolStats).await.unwrap();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never got there: {stats:?}");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn a_finished_reply_never_waits_behind_the_next_call(t: Transport) {
    // Pipelined: the quick call and the slow one are both sent to the one
    // worker. The quick call's reply must leave as soon as it is done, not
    // when the slow call finishes (by then the quick call timed out and the
    // worker was killed, losing both results).
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .max_in_flight(2)
        .call_timeout(Duration::from_millis(1500))
        .start()
        .unwrap();
    let pid = pool.send(edge::Pid {}).await.unwrap().unwrap();
    let quick = pool.send(edge::Sleep { ms: 1 });
    let slow = pool.send(edge::Sleep { ms: 2500 });
    assert_eq!(
        quick.await.unwrap(),
        Ok(pid),
        "the quick call's reply left at once"
    );
    match slow.await.unwrap() {
        Err(WorkerError::Timeout { pid: p, .. }) => assert_eq!(p, pid),
        other => panic!("expected the slow call to time out, got {other:?}"),
    }
}

async fn calls_a_leaving_worker_never_started_run_elsewhere(t: Transport) {
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .max_in_flight(4)
        .start()
        .unwrap();
    let victim = pool.send(edge::Pid {}).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("running");
    let running = pool.send(edge::SleepFlagged {
        flag: flag.to_string_lossy().into_owned(),
        ms: 300,
    });
    let waiting: Vec<_> = (0..3).map(|_| pool.send(edge::Pid {})).collect();
    held_by_workers(&pool, 4).await;
    // Signalled before it read the first call, it would start none (and
    // all four would run elsewhere): wait until it runs the slow one.
    assert!(
        wait_until(Duration::from_secs(10), || flag.exists()),
        "the slow call started"
    );
    // An operator (or `systemctl stop` to the whole cgroup) asks it to leave.
    assert_eq!(
        pool.send(KillWorker {
            index: 0,
            signal: libc::SIGTERM
        })
        .await
        .unwrap(),
        Some(victim)
    );
    assert_eq!(
        running.await.unwrap(),
        Ok(victim),
        "the call it was running finished"
    );
    for call in waiting {
        match call.await.unwrap() {
            Ok(pid) => assert_ne!(pid, victim, "ran on the replacement"),
            Err(e) => panic!("a call that never started was reported {e:?}"),
        }
    }
}

async fn a_killed_worker_fails_only_the_call_it_was_running(t: Transport) {
    killed_with_calls_behind(t, Behind::WithIt).await;
}

/// A pool of 1 whose worker is killed running a call with three behind it
/// (see `kill_while_running`): three requeued, one `died`, no other error.
async fn killed_with_calls_behind(t: Transport, behind: Behind) {
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .max_in_flight(4)
        .start()
        .unwrap();
    let victim = pool.send(edge::Pid {}).await.unwrap().unwrap();
    kill_while_running(&pool, victim, behind).await;
    let stats = pool.send(GetPoolStats).await.unwrap();
    assert_eq!(stats.requeued, 3, "{stats:?}");
    let errors: Vec<_> = stats.errors.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(errors, [("died", 1)], "{stats:?}");
}

/// A promoted spare was warmed up with a throwaway call while it waited
/// (`worker/pool/traffic.rs`, `warm_up`), which its progress word counts:
/// when it dies, the calls it never started must still run elsewhere, and
/// the warm-up shows nowhere (no call, no error).
async fn a_killed_promoted_spare_fails_only_the_call_it_was_running(t: Transport) {
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .warm_spares(1)
        .max_in_flight(4)
        .start()
        .unwrap();
    let first = pool.send(edge::Pid {}).await.unwrap().unwrap();
    let spare = wait_for_stats(&pool, |s| s.children.iter().any(|c| c.state == "spare"))
        .await
        .children
        .into_iter()
        .find(|c| c.state == "spare")
        .map(|c| c.pid)
        .unwrap();
    let kill = KillWorker {
        index: 0,
        signal: libc::SIGKILL,
    };
    assert_eq!(pool.send(kill).await.unwrap(), Some(first));
    wait_for_stats(&pool, |s| {
        s.children
            .iter()
            .any(|c| c.pid == spare && c.state == "ready")
            && !s.children.iter().any(|c| c.pid == first)
    })
    .await;
    assert_eq!(pool.send(edge::Pid {}).await.unwrap(), Ok(spare));
    kill_while_running(&pool, spare, Behind::WithIt).await;
    let stats = pool.send(GetPoolStats).await.unwrap();
    assert_eq!(stats.requeued, 3, "{stats:?}");
    assert_eq!(stats.calls, 2 + 4, "{stats:?}");
    let errors: Vec<_> = stats.errors.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(errors, [("died", 1)], "{stats:?}");
}

/// Calls handed to a worker while it runs a long one wait unread in its
/// socket; killed then, it leaves them there, and the pool's next read of
/// its link fails with `ECONNRESET` after the last byte it wrote. That is
/// the link's end, not malformed data: only the running call fails
/// (`Died`), the others run on the replacement, and no `protocol` error is
/// counted.
async fn calls_left_unread_by_a_killed_worker_are_no_protocol_error(t: Transport) {
    killed_with_calls_behind(t, Behind::OnceItRuns).await;
}

/// When the three calls behind the running one are sent.
#[derive(PartialEq)]
enum Behind {
    /// With it, in one turn of the pool (written together).
    WithIt,
    /// Once it runs: written while the worker is busy, never read.
    OnceItRuns,
}

/// Has the active worker `victim` run one call and hold three behind it,
/// SIGKILLs it, and checks that only the running call failed (`Died`) and
/// the three others ran on its replacement.
async fn kill_while_running(pool: &Addr<WorkerPool<Edge>>, victim: i32, behind: Behind) {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("running");
    let running = pool.send(edge::SleepFlagged {
        flag: flag.to_string_lossy().into_owned(),
        ms: 10_000,
    });
    let mut waiting = Vec::new();
    if behind == Behind::OnceItRuns {
        held_by_workers(pool, 1).await;
        assert!(wait_until(Duration::from_secs(10), || flag.exists()));
    }
    waiting.extend((0..3).map(|_| pool.send(edge::Pid {})));
    held_by_workers(pool, 4).await;
    assert!(wait_until(Duration::from_secs(10), || flag.exists()));
    let kill = KillWorker {
        index: 0,
        signal: libc::SIGKILL,
    };
    assert_eq!(pool.send(kill).await.unwrap(), Some(victim));
    match running.await.unwrap() {
        Err(WorkerError::Died { pid, exit }) => {
            assert_eq!(pid, victim);
            assert_eq!(exit.signal(), Some(libc::SIGKILL));
        }
        other => panic!("expected Died, got {other:?}"),
    }
    for call in waiting {
        match call.await.unwrap() {
            Ok(pid) => assert_ne!(pid, victim, "ran on the replacement"),
            Err(e) => panic!("a call that never started was reported {e:?}"),
        }
    }
}

async fn a_blocked_started_hook_does_not_hang_queued_calls(t: Transport) {
    let pool = WorkerPool::builder(Edge {
        block_in_started_ms: 60_000,
    })
    .transport(t)
    .size(1)
    .warm_spares(0)
    .call_timeout(Duration::from_millis(200))
    .start_timeout(Duration::from_millis(300))
    .restart_limit(100, Duration::from_secs(10))
    .start()
    .unwrap();
    let began = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), pool.send(edge::Pid {}))
        .await
        .expect("the call resolved instead of hanging")
        .unwrap();
    match result {
        Err(WorkerError::StartTimeout { after }) => {
            assert_eq!(after, Duration::from_millis(300))
        }
        other => panic!("expected StartTimeout, got {other:?}"),
    }
    assert!(began.elapsed() >= Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.send(GetPoolStats).await.unwrap().restarts == 0 {
        assert!(
            Instant::now() < deadline,
            "a start timeout counts as a restart"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_reply_over_the_limit_is_a_typed_error_and_the_worker_lives(t: Transport) {
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .max_payload(64 * 1024)
        .start()
        .unwrap();
    let pid = pool.send(edge::Pid {}).await.unwrap().unwrap();
    match pool.send(edge::Zeros { len: 200_000 }).await.unwrap() {
        Err(WorkerError::ReplyTooLarge { size, max }) => {
            assert!(size > 200_000, "{size}");
            assert_eq!(max, 64 * 1024);
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    assert_eq!(
        pool.send(edge::Pid {}).await.unwrap(),
        Ok(pid),
        "same worker"
    );
    let stats = pool.send(GetPoolStats).await.unwrap();
    assert_eq!(stats.restarts, 0, "no restart counted");
}

async fn signals_aimed_at_workers_leave_the_pool_serving(t: Transport) {
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .start()
        .unwrap();
    let pid = pool.send(edge::Pid {}).await.unwrap().unwrap();
    // What `pkill -USR1 -f <daemon>` or Ctrl-\ in a terminal sends.
    for signal in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGQUIT] {
        for _ in 0..20 {
            // SAFETY: signalling our own worker.
            unsafe { libc::kill(pid, signal) };
        }
        assert_eq!(
            pool.send(edge::Pid {}).await.unwrap(),
            Ok(pid),
            "the worker survived signal {signal}"
        );
    }
    let stats = pool.send(GetPoolStats).await.unwrap();
    assert_eq!(stats.restarts, 0);
}

async fn a_bytes_bound_on_the_queue_answers_busy(t: Transport) {
    let pool = WorkerPool::builder(edge())
        .transport(t)
        .size(1)
        .queue_capacity(1000)
        .max_queued_bytes(4 * 1024 * 1024)
        .start()
        .unwrap();
    pool.send(edge::Pid {}).await.unwrap().unwrap();
    let held = pool.send(edge::Sleep { ms: 300 });
    held_by_workers(&pool, 1).await;
    // Each call carries a little over 1 MiB: the fourth no longer fits.
    let mib = || edge::Len {
        bytes: vec![1; 1024 * 1024],
    };
    let queued: Vec<_> = (0..3).map(|_| pool.send(mib())).collect();
    match pool.send(mib()).await.unwrap() {
        Err(WorkerError::Busy { queued_bytes, .. }) => {
            assert!(queued_bytes >= 3 * 1024 * 1024, "{queued_bytes}")
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(held.await.unwrap().is_ok());
    for call in queued {
        assert_eq!(
            call.await.unwrap(),
            Ok(1024 * 1024),
            "nothing queued was dropped"
        );
    }
}

over_transports!(
    a_finished_reply_never_waits_behind_the_next_call,
    calls_a_leaving_worker_never_started_run_elsewhere,
    a_killed_worker_fails_only_the_call_it_was_running,
    a_killed_promoted_spare_fails_only_the_call_it_was_running,
    calls_left_unread_by_a_killed_worker_are_no_protocol_error,
    a_blocked_started_hook_does_not_hang_queued_calls,
    a_reply_over_the_limit_is_a_typed_error_and_the_worker_lives,
    signals_aimed_at_workers_leave_the_pool_serving,
    a_bytes_bound_on_the_queue_answers_busy,
);

#[actix::test]
async fn dropping_a_wait_future_keeps_the_child_reapable() {
    let mut child = task::spawn(&Probe(Behave::Sleep(300))).unwrap();
    let pid = child.pid();
    // A caller gives up waiting (a `select!` or `timeout` drops the future).
    assert!(
        tokio::time::timeout(Duration::from_millis(20), child.wait())
            .await
            .is_err()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the second wait completes")
        .expect("the pidfd was kept");
    assert_eq!(status, TaskStatus::Exited(0));
    assert!(
        wait_until(Duration::from_secs(5), || !zombie_children().contains(&pid)),
        "pid {pid} left as a zombie"
    );
}

#[test]
fn dropping_a_running_task_child_kills_and_reaps_it() {
    let child = task::spawn(&Probe(Behave::Sleep(60_000))).unwrap();
    let pid = child.pid();
    drop(child);
    assert!(
        wait_until(Duration::from_secs(5), || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }),
        "pid {pid} still exists (alive or zombie)"
    );
}

#[test]
fn a_huge_task_failure_report_never_blocks_the_task() {
    let message = "x".repeat(8 * 1024 * 1024);
    let mut child = task::spawn(&Probe(Behave::Fail(message))).unwrap();
    let pid = child.pid();
    // The host reads the report only after the exit: a task that blocks
    // writing it never exits.
    let exited = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
    if !exited {
        let _ = child.signal(libc::SIGKILL);
    }
    assert!(exited, "the task blocked writing its failure report");
    match child.wait_blocking().unwrap() {
        TaskStatus::Failed(msg) => assert!(msg.starts_with("xxxx"), "{}", &msg[..20]),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[actix::test]
async fn a_call_timeout_of_duration_max_means_no_timeout() {
    let pool = WorkerPool::builder(edge())
        .size(1)
        .call_timeout(Duration::MAX)
        .start()
        .unwrap();
    assert!(pool.send(edge::Sleep { ms: 1 }).await.unwrap().is_ok());
}

#[actix::test]
async fn inline_async_methods_may_await_timers() {
    let pool = WorkerPool::builder(edge()).inline().start().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), pool.send(edge::Nap { ms: 10 }))
        .await
        .expect("an inline async method awaiting a timer returned");
    assert_eq!(result.unwrap(), Ok(10));
}
