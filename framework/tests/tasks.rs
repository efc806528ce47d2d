//! Tasks through the fork server, under the multithreaded test harness
//! (which proves the constructor path: the harness has threads, the fork
//! server does not).

mod common;

use common::{Behave, Probe};

use daemonic::task::{self, TaskStatus};
use std::time::Duration;

fn run(behave: Behave) -> TaskStatus {
    let mut child = task::spawn(&Probe(behave)).expect("spawn");
    child.wait_blocking().expect("wait")
}

#[test]
fn each_exit_status_is_reported_exactly() {
    assert_eq!(run(Behave::Succeed), TaskStatus::Exited(0));
    assert_eq!(run(Behave::Exit(3)), TaskStatus::Exited(3));
    match run(Behave::Panic("kaboom".into())) {
        TaskStatus::Panicked(msg) => assert!(msg.contains("kaboom"), "{msg}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(
        run(Behave::Fail("no route".into())),
        TaskStatus::Failed("no route".into())
    );
}

#[test]
fn sigkill_is_reported_as_a_signal() {
    let mut child = task::spawn(&Probe(Behave::Sleep(30_000))).unwrap();
    assert!(child.signal(libc::SIGKILL).unwrap());
    assert_eq!(
        child.wait_blocking().unwrap(),
        TaskStatus::Signaled(libc::SIGKILL)
    );
}

#[actix::test]
async fn async_wait_sees_the_exit() {
    let mut child = task::spawn(&Probe(Behave::Exit(9))).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, TaskStatus::Exited(9));
}

#[test]
fn user_children_keep_their_exit_status() {
    // Our children have no exit signal and are reaped by pidfd only, so
    // neither side can steal the other's status.
    let mut tasks: Vec<_> = (0..20)
        .map(|_| task::spawn(&Probe(Behave::Sleep(20))).unwrap())
        .collect();
    let mut user: Vec<_> = (0..5)
        .map(|i| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exit {}", 10 + i))
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in user.iter_mut().enumerate() {
        assert_eq!(child.wait().unwrap().code(), Some(10 + i as i32));
    }
    for t in &mut tasks {
        assert_eq!(t.wait_blocking().unwrap(), TaskStatus::Exited(0));
    }
}

#[test]
fn threads_spawn_concurrently() {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..25 {
                    assert_eq!(run(Behave::Succeed), TaskStatus::Exited(0));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn unknown_entry_point_is_a_clear_error() {
    let err = daemonic::testing::fork_server()
        .spawn(&daemonic::testing::SpawnOptions {
            entry: "no::such::Task".into(),
            role: "task:none".into(),
            ..Default::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unknown entry point `no::such::Task`"),
        "{msg}"
    );
}

#[test]
fn children_show_their_role_and_die_with_the_fork_server_gone() {
    let child = task::spawn(&Probe(Behave::Sleep(30_000))).unwrap();
    let pid = child.pid();
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        common::wait_until(Duration::from_secs(5), || comm().trim() == "task:probe"),
        "comm is {:?}",
        comm()
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(": task:probe"),
        "{cmdline:?}"
    );
    // The child is this process's own child (CLONE_PARENT), not the fork server's.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.pid())).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, std::process::id() as i32);
    drop(child); // kills and reaps
}
