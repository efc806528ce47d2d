//! A task's `log` records and `tracing` events reach the daemon's log at the
//! daemon's level. The fork server registers both bridges once, before it
//! forks, and prepares them for the level each spawn request carries (see
//! `log::prepare_bridges_for_children`); a child only points them at its own
//! logger. Two daemons in turn, at `--debug` 0 and 1, through one fork server:
//! the second must not inherit the first one's level.

mod common;

use common::wait_until;
use daemonic::event::TaskExited;
use daemonic::{BoxError, Daemon, DaemonBuilder, LoopContext, Task, TaskContext};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(serde::Serialize, serde::Deserialize)]
struct Chatty {
    tag: String,
}

#[daemonic::task]
impl Task for Chatty {
    fn run(self, _: &mut TaskContext) -> Result<(), BoxError> {
        log::info!("log info {}", self.tag);
        log::debug!("log debug {}", self.tag);
        tracing::info!("tracing info {}", self.tag);
        tracing::debug!("tracing debug {}", self.tag);
        Ok(())
    }
}

struct StartOne {
    tag: &'static str,
    started: bool,
}

impl Daemon for StartOne {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        if !self.started {
            self.started = true;
            ctx.task(Chatty {
                tag: self.tag.into(),
            })
            .expect("start the task");
        }
    }
}

/// Runs a daemon at `debug_level` that starts one [`Chatty`] task, and
/// returns its log once the task exited.
fn run(tag: &'static str, debug_level: u8) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("d.log");
    let exited = Arc::new(AtomicUsize::new(0));
    let seen = exited.clone();
    let system = actix::System::new();
    system.block_on({
        let log = log.clone();
        async move {
            let handle = DaemonBuilder::new(StartOne {
                tag,
                started: false,
            })
            .name("bridges")
            .interval(Duration::from_millis(10))
            .handle_signals(false)
            .debug_level(debug_level)
            .log_file(log)
            .on(move |_: &mut TaskExited| {
                seen.fetch_add(1, Ordering::SeqCst);
            })
            .start()
            .expect("start");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while exited.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            handle.shutdown();
            handle.wait().await;
        }
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // The child's lines reach the file through the daemon's writer thread,
    // drained at shutdown.
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&format!("tracing info {tag}")))
        }),
        "the task's lines never reached the log: {text}"
    );
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn a_tasks_log_and_tracing_records_follow_the_daemons_level() {
    let quiet = run("quiet", 0);
    for line in ["log info quiet", "tracing info quiet"] {
        assert!(quiet.contains(line), "missing {line:?}: {quiet}");
    }
    for line in ["log debug quiet", "tracing debug quiet"] {
        assert!(!quiet.contains(line), "above the level: {line:?}: {quiet}");
    }
    let verbose = run("verbose", 1);
    for line in [
        "log info verbose",
        "log debug verbose",
        "tracing info verbose",
        "tracing debug verbose",
    ] {
        assert!(verbose.contains(line), "missing {line:?}: {verbose}");
    }
    let quiet_again = run("again", 0);
    assert!(quiet_again.contains("tracing info again"), "{quiet_again}");
    assert!(
        !quiet_again.contains("tracing debug again") && !quiet_again.contains("log debug again"),
        "the previous daemon's level leaked: {quiet_again}"
    );
}
