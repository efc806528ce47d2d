//! 1,000 tasks in a burst: every status reported, no zombies, no leaked
//! descriptors. Alone in its binary so the descriptor count is not disturbed
//! by other tests.

mod common;

use common::{fd_count, wait_until, zombie_children, Behave, Probe};
use daemonic::task::{self, TaskStatus};
use std::time::Duration;

#[test]
fn a_thousand_tasks_leave_nothing_behind() {
    // Warm up: the fork server and its thread are started once and kept.
    task::spawn(&Probe(Behave::Succeed))
        .unwrap()
        .wait_blocking()
        .unwrap();
    let fds_before = fd_count();

    let mut children = Vec::with_capacity(1000);
    for i in 0..1000 {
        let behave = if i % 10 == 0 {
            Behave::Exit(i % 7)
        } else {
            Behave::Succeed
        };
        children.push((i, task::spawn(&Probe(behave)).expect("spawn")));
    }
    for (i, child) in &mut children {
        let expected = if *i % 10 == 0 { *i % 7 } else { 0 };
        assert_eq!(
            child.wait_blocking().unwrap(),
            TaskStatus::Exited(expected),
            "task {i}"
        );
    }
    drop(children);

    assert!(
        zombie_children().is_empty(),
        "zombies: {:?}",
        zombie_children()
    );
    assert!(
        wait_until(Duration::from_secs(5), || fd_count() == fds_before),
        "descriptors: {} before, {} after",
        fds_before,
        fd_count()
    );
}
