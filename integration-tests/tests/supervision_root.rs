//! The daemon's root supervisor from outside: its own actors started in
//! order and stopped in reverse through it, the tree in `status`, `status
//! --json` and the SIGUSR1 dump, and an escalation reaching the root ending
//! the daemon with exit code 70.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn treed() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_treed"))
}

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(treed());
    cmd.current_dir(dir)
        .args([
            "--pidfile",
            "t.pid",
            "--log-file",
            "t.log",
            "--interval",
            "0.05",
        ])
        .args(extra);
    Daemon::spawn(cmd)
}

/// The children of treed's root, in start order.
const FIXED: [&str; 7] = [
    "log-watcher",
    "signals",
    "pid-file",
    "control",
    "tasks",
    "app",
    "main-loop",
];

#[test]
fn the_daemons_own_actors_start_in_order_and_stop_in_reverse_through_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path(), &["--debug=2"]);
    let log = dir.path().join("t.log");
    wait_for_line(&log, "treed started");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.expect_exit_code(0);
    let lines = read_lines(&log);
    let children = |verb: &str| -> Vec<String> {
        let prefix = format!("supervisor treed: {verb} child ");
        lines
            .iter()
            .filter_map(|l| l.split_once(&prefix).map(|(_, name)| name.to_string()))
            .collect()
    };
    assert_eq!(children("starting"), FIXED, "{lines:#?}");
    let mut reverse = FIXED;
    reverse.reverse();
    assert_eq!(children("stopping"), reverse, "{lines:#?}");
    // Each stop did its work in that order: the pool's workers were gone
    // before the pid file, and the pid file before the daemon's last line.
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
    };
    assert!(at("stopping child app") < at("stopping child pid-file"));
    assert!(at("shutting down") < at("stopping child main-loop"));
    assert!(at("stopping child log-watcher") < at("treed stopped (exit code 0)"));
    assert!(!dir.path().join("t.pid").exists());
}

#[test]
fn status_json_the_table_and_sigusr1_show_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path(), &[]);
    let log = dir.path().join("t.log");
    wait_for_line(&log, "treed started");
    let status = |args: &[&str]| {
        let mut cmd = Command::new(treed());
        cmd.current_dir(dir.path())
            .args(["--pidfile", "t.pid"])
            .args(args);
        run_command(cmd)
    };
    let json = status(&["status", "--json"]);
    assert_eq!(json.exit.code(), Some(0), "{json:?}");
    let stats: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    // The daemon's root: its fixed actors, in start order, with the
    // application's tree among them; any failure under it is fatal.
    let tree = &stats["tree"];
    assert_eq!(tree["name"], "treed", "{tree}");
    assert_eq!(tree["strategy"], "one_for_one");
    assert_eq!(tree["state"], "running");
    assert_eq!(tree["intensity"], 0);
    assert_eq!(tree["period_seconds"], 5.0);
    let children = tree["children"].as_array().expect("children");
    let names: Vec<_> = children.iter().map(|c| c["name"].as_str()).collect();
    assert_eq!(names, FIXED.map(Some), "{tree}");
    assert!(children.iter().all(|c| c["state"] == "running"), "{tree}");
    let app = &children[FIXED.iter().position(|n| *n == "app").unwrap()];
    assert_eq!(app["kind"], "supervisor");
    assert_eq!(app["tree"]["intensity"], 3, "{app}");
    let work = &app["tree"]["children"][0];
    assert_eq!(work["name"], "work");
    assert_eq!(work["kind"], "supervisor");
    assert_eq!(work["restart"], "permanent");
    assert_eq!(work["restarts"], 0);
    let flaky = &work["tree"]["children"][0];
    assert_eq!(flaky["name"], "flaky", "{work}");
    assert_eq!(flaky["kind"], "pool");
    assert_eq!(flaky["state"], "running");
    assert!(flaky["last_failure"].is_null());
    // The tree's pools are listed with the daemon's, workers and all.
    let pool = stats["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "flaky"))
        .unwrap_or_else(|| panic!("no pool flaky in {}", stats["pools"]));
    assert_eq!(pool["size"], 1);

    let table = status(&["status"]);
    for line in [
        "tree      treed (one_for_one, running, 0/0 restarts in 5s)",
        "tree        signals: actor permanent running",
        "tree        app: supervisor permanent running",
        "tree          app (one_for_one, running, 0/3 restarts in 5s)",
        "tree                flaky: pool permanent running",
    ] {
        assert!(table.stdout.contains(line), "{line:?} in {}", table.stdout);
    }

    daemon.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for_line(&log, "stats: tree: treed (one_for_one");
    wait_for_line(&log, "stats: tree:         work (one_for_one");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.expect_exit_code(0);
}

#[test]
fn an_escalation_reaching_the_root_ends_the_daemon_with_exit_code_70() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path(), &["--crash-loop"]);
    daemon.expect_exit_code(70);
    let log = dir.path().join("t.log");
    let lines = read_lines(&log);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("supervisor work: giving up"), "{lines:#?}");
    assert!(has("supervisor treed: giving up"), "{lines:#?}");
    assert!(has("the supervision tree gave up"), "{lines:#?}");
    assert!(has("treed stopped (exit code 70)"), "{lines:#?}");
    assert!(
        !dir.path().join("t.pid").exists(),
        "the pid file is removed"
    );
}

#[test]
fn an_escalation_reaching_the_root_restarts_a_daemon_that_restarts_on_fatal_errors() {
    let dir = tempfile::tempdir().unwrap();
    // The crash loop starts after the minimum runtime: the restart-loop
    // guard lets the restart through.
    let daemon = start(
        dir.path(),
        &["--crash-loop", "--crash-from", "10", "--min-runtime", "0.2"],
    );
    let log = dir.path().join("t.log");
    wait_for(DEADLINE, "a restart after the root gave up", || {
        read_lines(&log)
            .iter()
            .filter(|l| l.contains("treed started"))
            .count()
            >= 2
    });
    let lines = read_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fatal error: the supervision tree gave up")),
        "{lines:#?}"
    );
    drop(daemon);
}
