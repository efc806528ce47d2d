//! `LoopContext::spawn_then`: a worker's reply reaches the daemon's own
//! state (`&mut self`), in a daemon running in this test's actix System.

use daemonic::prelude::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Squarer;

#[daemonic::worker]
impl Squarer {
    pub fn square(&mut self, n: u64) -> Result<u64, String> {
        if n == 3 {
            Err("three is unlucky".into())
        } else {
            Ok(n * n)
        }
    }
}

const CALLS: u64 = 5;

/// What the daemon had in its state when it stopped.
#[derive(Debug, Default, Clone, PartialEq)]
struct Final {
    squares: Vec<u64>,
    errors: Vec<String>,
    sent: u64,
    local: Vec<&'static str>,
}

struct Counter {
    pool: Option<Addr<WorkerPool<Squarer>>>,
    state: Final,
    report: Arc<Mutex<Option<Final>>>,
}

impl Daemon for Counter {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        self.pool = Some(ctx.workers(Squarer).size(2).start()?);
        // Any future, not only a call.
        ctx.spawn_then(async { "ready" }, |daemon, _, word| {
            daemon.state.local.push(word);
        });
        Ok(())
    }

    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let Some(pool) = &self.pool else { return };
        if self.state.sent == CALLS {
            return;
        }
        self.state.sent += 1;
        let n = self.state.sent;
        ctx.spawn_then(pool.call(squarer::Square { n }), |daemon, ctx, result| {
            match result {
                Ok(square) => daemon.state.squares.push(square),
                Err(e) => daemon.state.errors.push(e.to_string()),
            }
            // The callback sees what `execute` did meanwhile, and acts on it.
            if (daemon.state.squares.len() + daemon.state.errors.len()) as u64 == CALLS {
                assert_eq!(daemon.state.sent, CALLS);
                ctx.shutdown();
            }
        });
    }

    fn shutdown(&mut self, _: &mut LoopContext<'_, Self>, _: &daemonic::ShutdownReason) {
        *self.report.lock() = Some(self.state.clone());
    }
}

#[test]
fn spawn_then_puts_replies_into_the_daemons_state() {
    let report = Arc::new(Mutex::new(None));
    let daemon = Counter {
        pool: None,
        state: Final::default(),
        report: report.clone(),
    };
    let system = actix::System::new();
    let code = system.block_on(async move {
        let handle = DaemonBuilder::new(daemon)
            .interval(Duration::from_millis(5))
            .handle_signals(false)
            .log_file("/dev/null")
            .start()
            .unwrap();
        // A bound in case the callbacks never run: the daemon would never
        // ask to stop.
        let stopped = actix_rt::time::timeout(Duration::from_secs(30), handle.wait()).await;
        stopped.expect("the daemon stopped itself once every reply was in")
    });
    assert_eq!(code, daemonic::ExitCode::Ok);
    let mut state = report.lock().clone().expect("the shutdown hook ran");
    state.squares.sort_unstable();
    assert_eq!(
        state,
        Final {
            squares: vec![1, 4, 16, 25],
            errors: vec!["three is unlucky".into()],
            sent: CALLS,
            local: vec!["ready"],
        }
    );
}
