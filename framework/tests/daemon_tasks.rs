//! Tasks through a running daemon (supervisor, task manager, events), in an
//! actix System inside the test process. Alone in its binary so descriptor
//! counts are not disturbed by other tests.

mod common;

use common::{fd_count, wait_until, zombie_children, Behave, Probe};
use daemonic::event::TaskExited;
use daemonic::task::TaskStatus;
use daemonic::{Daemon, DaemonBuilder, Error, LoopContext};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

struct Idle;

impl Daemon for Idle {
    fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Limited;

#[daemonic::task]
impl daemonic::Task for Limited {
    const MAX_CONCURRENT: Option<usize> = Some(2);

    fn run(self, _: &mut daemonic::TaskContext) -> Result<(), daemonic::BoxError> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

fn run_empty_daemon() {
    let system = actix::System::new();
    system.block_on(async {
        let handle = DaemonBuilder::new(Idle)
            .handle_signals(false)
            .log_file("/dev/null")
            .start()
            .unwrap();
        handle.shutdown();
        handle.wait().await;
    });
}

#[test]
fn a_daemon_reports_every_task_exit_and_leaks_nothing() {
    // Warm up: the fork server and tokio's process-wide signal driver are
    // created once per process and kept; they are not per-daemon leaks.
    daemonic::testing::fork_server().prestart().unwrap();
    run_empty_daemon();
    let fds_before = fd_count();
    let exits: Arc<Mutex<HashMap<i32, TaskStatus>>> = Arc::default();
    let seen = exits.clone();

    let system = actix::System::new();
    system.block_on(async move {
        let handle = DaemonBuilder::new(Idle)
            .name("burst")
            .interval(Duration::from_millis(50))
            .handle_signals(false)
            .log_file("/dev/null")
            .on(move |e: &mut TaskExited| {
                seen.lock().insert(e.pid, e.status.clone());
            })
            .start()
            .unwrap();

        let mut expected = HashMap::new();
        for i in 0..1000 {
            let (behave, status) = match i % 50 {
                0 => (Behave::Exit(3), TaskStatus::Exited(3)),
                1 => (
                    Behave::Panic("boom".into()),
                    TaskStatus::Panicked(String::new()),
                ),
                _ => (Behave::Succeed, TaskStatus::Exited(0)),
            };
            let h = handle.task(Probe(behave)).unwrap();
            expected.insert(h.pid, status);
        }

        // The limit: two run, the third is refused at once.
        let a = handle.task(Limited).unwrap();
        let b = handle.task(Limited).unwrap();
        assert!(matches!(handle.task(Limited), Err(Error::Busy(_))));
        expected.insert(a.pid, TaskStatus::Exited(0));
        expected.insert(b.pid, TaskStatus::Exited(0));

        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while exits.lock().len() < expected.len() && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        let got = exits.lock().clone();
        assert_eq!(
            got.len(),
            expected.len(),
            "every task's exit is reported once"
        );
        for (pid, want) in &expected {
            match (want, &got[pid]) {
                (TaskStatus::Panicked(_), TaskStatus::Panicked(msg)) => {
                    assert!(msg.contains("boom"))
                }
                (w, g) => assert_eq!(w, g, "pid {pid}"),
            }
        }
        // Limits free up as tasks exit.
        let again = handle.task(Limited).unwrap();
        assert!(again.pid > 0);

        handle.shutdown();
        assert_eq!(handle.wait().await, daemonic::ExitCode::Ok);
    });

    drop(system);
    assert!(
        zombie_children().is_empty(),
        "zombies: {:?}",
        zombie_children()
    );
    assert!(
        wait_until(Duration::from_secs(5), || fd_count() == fds_before),
        "descriptors: {fds_before} before, {} after",
        fd_count()
    );
}
