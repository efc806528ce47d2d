//! Auto-restart, from outside: after a runtime, on SIGHUP, after a fatal
//! error — and the restart-loop guard.

use integration_tests::*;
use nix::sys::signal::Signal as Sig;
use std::path::{Path, PathBuf};
use std::process::Command;

fn crashy() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crashy"))
}

fn pidfile_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn count(path: &Path, needle: &str) -> usize {
    read_lines(path)
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn a_daemon_restarts_after_its_runtime_with_a_new_pid_and_nothing_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let (pidfile, log) = (dir.path().join("w.pid"), dir.path().join("w.log"));
    let mut cmd = Command::new(example_bin("simple_worker"));
    cmd.current_dir(dir.path()).args([
        "--daemon",
        "--pidfile",
        "w.pid",
        "--log-file",
        "w.log",
        "--interval",
        "0.1",
        "--restart-after",
        "1",
    ]);
    let launched = run_command(cmd);
    assert_eq!(launched.exit.code(), Some(0), "{launched:?}");
    let first = KillOnDrop::new(pidfile_pid(&pidfile).expect("pid file written"));
    wait_for(DEADLINE, "the first run's workers", || {
        children_of(first.pid())
            .iter()
            .filter(|c| c.comm.starts_with("worker:"))
            .count()
            >= 2
    });
    let old_children = children_of(first.pid());
    let old_args = proc_cmdline(first.pid()).unwrap();

    let second = wait_for_value(
        DEADLINE,
        "the pid file to name the restarted daemon",
        || pidfile_pid(&pidfile).filter(|p| *p != first.pid() && is_alive(*p)),
    );
    let second = KillOnDrop::new(second);
    wait_for(DEADLINE, "the old daemon to be gone", || !first.is_alive());
    wait_for(
        DEADLINE,
        "the old daemon's workers and fork server to be gone",
        || old_children.iter().all(|c| !still_running(c)),
    );
    assert_eq!(
        proc_cmdline(second.pid()).unwrap(),
        old_args,
        "same arguments"
    );
    wait_for(DEADLINE, "the restarted daemon to serve calls", || {
        count(
            &log,
            &format!(
                "[{}/{} main] INFO  random string",
                second.pid(),
                second.pid()
            ),
        ) >= 1
    });
    let lines = read_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutting down: restart (ran for 1s)")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains(&format!("simple_worker started: pid {}", second.pid()))));

    send_signal(second.pid(), Sig::SIGTERM);
    wait_for(DEADLINE, "the restarted daemon to stop", || {
        !second.is_alive()
    });
    assert!(!pidfile.exists());
}

#[test]
fn sighup_restarts_in_place_in_the_foreground() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    let daemon = Daemon::start(
        &crashy(),
        ["--interval", "0.05", "--log-file", log.to_str().unwrap()],
    );
    wait_for(DEADLINE, "first ticks", || count(&log, "tick 3") >= 1);
    daemon.signal(Sig::SIGHUP);
    wait_for(DEADLINE, "a second start", || {
        count(&log, "crashy started") >= 2
    });
    wait_for(DEADLINE, "ticks after the restart", || {
        count(&log, "tick 3") >= 2
    });
    let pid = daemon.pid();
    assert!(
        read_lines(&log)
            .iter()
            .all(|l| l.contains(&format!("[{pid}/{pid} main]"))),
        "the pid is kept in the foreground"
    );
}

#[test]
fn a_fatal_error_after_the_minimum_runtime_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    let daemon = Daemon::start(
        &crashy(),
        [
            "--interval",
            "0.05",
            "--panic-at",
            "10",
            "--min-runtime",
            "0.2",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    wait_for(DEADLINE, "a restart after the panic", || {
        count(&log, "crashy started") >= 2
    });
    let lines = read_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("execute panicked: crashy panics at tick 10")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutting down: restart (fatal error: ")),
        "{lines:?}"
    );
    drop(daemon);
}

#[test]
fn a_fatal_error_within_the_minimum_runtime_exits_instead_of_looping() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    let mut daemon = Daemon::start(
        &crashy(),
        [
            "--interval",
            "0.01",
            "--panic-at",
            "3",
            "--min-runtime",
            "30",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    daemon.expect_exit_code(70);
    let lines = read_lines(&log);
    assert_eq!(count(&log, "crashy started"), 1, "no restart: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("within the minimum runtime")),
        "{lines:?}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("crashy stopped (exit code 70)"),
        "{lines:?}"
    );
}

#[test]
fn a_listener_cancels_one_restart_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    let daemon = Daemon::start(
        &crashy(),
        [
            "--interval",
            "0.05",
            "--cancel-first-restart",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    wait_for(DEADLINE, "first ticks", || count(&log, "tick 3") >= 1);
    daemon.signal(Sig::SIGHUP);
    wait_for(DEADLINE, "the cancellation", || {
        count(&log, "restart (SIGHUP) cancelled by a listener") == 1
    });
    // The loop goes on, no shutdown event was raised, nothing restarted.
    let ticks = loop_count(&log);
    wait_for(DEADLINE, "ticks after the cancelled restart", || {
        loop_count(&log) >= ticks + 3
    });
    assert_eq!(count(&log, "crashy started"), 1);
    assert_eq!(count(&log, "shutdown event"), 0);
    // The next restart is not cancelled.
    daemon.signal(Sig::SIGHUP);
    wait_for(DEADLINE, "the second SIGHUP to restart", || {
        count(&log, "crashy started") == 2
    });
    assert_eq!(count(&log, "shutdown event: restart (SIGHUP)"), 1);
}

fn loop_count(path: &Path) -> usize {
    count(path, "] INFO  tick ")
}
