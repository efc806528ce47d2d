//! Pools a daemon starts with `ctx.workers(..)` are children of its root
//! supervisor: a pool that trips its own restart limit is restarted in
//! place (same address, `ChildRestarted` raised) instead of staying failed,
//! and a pool that keeps failing ends the daemon with exit code 70.

use daemonic::event::{ChildRestarted, WorkerPoolFailed};
use daemonic::prelude::*;
use daemonic::ExitCode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Fragile;

#[daemonic::worker]
impl Fragile {
    pub fn die(&mut self) -> u32 {
        std::process::exit(3)
    }

    pub fn pid(&mut self) -> u32 {
        std::process::id()
    }
}

#[derive(Debug, Default, Clone)]
struct Seen {
    pool_failures: usize,
    restarted: Vec<String>,
    /// Pids answered after the pool failed (it serves again).
    answered_after: Vec<u32>,
}

/// Kills its pool's only worker `kills` times, once per tick, then checks
/// the pool answers and stops.
struct Breaker {
    pool: Option<Addr<WorkerPool<Fragile>>>,
    kills: u64,
    seen: Arc<Mutex<Seen>>,
}

impl Daemon for Breaker {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        self.pool = Some(
            ctx.workers(Fragile)
                .name("fragile")
                .size(1)
                // The pool fails at its first worker death: one `die`, one
                // pool failure for the root to handle.
                .restart_limit(0, Duration::from_secs(60))
                .start()?,
        );
        Ok(())
    }

    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        if ctx.iteration() <= self.kills {
            pool.do_send(fragile::Die {});
            return;
        }
        ctx.spawn_then(pool.call(fragile::Pid {}), |daemon, ctx, result| {
            if let Ok(pid) = result {
                daemon.seen.lock().answered_after.push(pid);
                ctx.shutdown();
            }
        });
    }
}

fn run(kills: u64) -> (ExitCode, Seen) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (failed, restarted) = (seen.clone(), seen.clone());
    let daemon = Breaker {
        pool: None,
        kills,
        seen: seen.clone(),
    };
    let system = actix::System::new();
    let code = system.block_on(async move {
        let handle = DaemonBuilder::new(daemon)
            .interval(Duration::from_millis(300))
            .handle_signals(false)
            .log_file("/dev/null")
            .on(move |_: &mut WorkerPoolFailed| failed.lock().pool_failures += 1)
            .on(move |e: &mut ChildRestarted| restarted.lock().restarted.push(e.child.clone()))
            .start()
            .expect("start");
        // Bounded: a pool that stayed failed would never answer.
        match actix_rt::time::timeout(Duration::from_secs(30), handle.wait()).await {
            Ok(code) => code,
            Err(_) => panic!("the daemon neither answered nor stopped within 30 s"),
        }
    });
    let seen = seen.lock().clone();
    (code, seen)
}

#[test]
fn a_pool_that_trips_its_restart_limit_is_restarted_by_the_root() {
    let (code, seen) = run(1);
    assert_eq!(code, ExitCode::Ok, "{seen:?}");
    assert_eq!(seen.pool_failures, 1, "{seen:?}");
    assert_eq!(seen.restarted, vec!["fragile".to_string()], "{seen:?}");
    assert_eq!(
        seen.answered_after.len(),
        1,
        "the same address answers: {seen:?}"
    );
}

#[test]
fn a_pool_that_keeps_failing_ends_the_daemon_with_exit_code_70() {
    // The root allows 3 restarts in 5 s; the fourth failure within the
    // window is an escalation (ticks every 300 ms, backoff from 100 ms).
    let (code, seen) = run(u64::MAX);
    assert_eq!(code, ExitCode::Software, "{seen:?}");
    assert!(seen.pool_failures >= 4, "{seen:?}");
    assert!(seen.answered_after.is_empty(), "{seen:?}");
}
