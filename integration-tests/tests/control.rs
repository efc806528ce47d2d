//! The control channel from outside: `status` (table and JSON) and `stop`.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn worker_bin() -> PathBuf {
    example_bin("simple_worker")
}

fn control(dir: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(worker_bin());
    cmd.current_dir(dir)
        .arg("--pidfile")
        .arg("w.pid")
        .args(args);
    run_command(cmd)
}

#[test]
fn status_prints_the_table_and_json_and_stop_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(worker_bin());
    cmd.current_dir(dir.path()).args([
        "--pidfile",
        "w.pid",
        "--log-file",
        "w.log",
        "--interval",
        "0.05",
    ]);
    let mut daemon = Daemon::spawn(cmd);
    let log = dir.path().join("w.log");
    wait_for(DEADLINE, "a few worker calls", || {
        read_lines(&log)
            .iter()
            .filter(|l| l.contains("random string"))
            .count()
            >= 2
    });

    // The socket is private.
    let socket_dir = dir.path().join(".simple_worker.control");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&socket_dir), 0o700);
    assert_eq!(mode(&socket_dir.join("control.sock")), 0o600);

    let table = control(dir.path(), &["status"]);
    assert_eq!(table.exit.code(), Some(0), "{table:?}");
    let out = &table.stdout;
    assert!(
        out.starts_with(&format!("simple_worker is running: pid {},", daemon.pid())),
        "{out}"
    );
    for needle in [
        "loop ",
        "memory ",
        "pool      generator: size 2",
        "PID",
        "ready",
        "spare",
        "tasks ",
    ] {
        assert!(
            out.contains(needle),
            "status table lacks {needle:?}:\n{out}"
        );
    }

    let json = control(dir.path(), &["status", "--json"]);
    assert_eq!(json.exit.code(), Some(0), "{json:?}");
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    assert_eq!(value["pid"], daemon.pid());
    assert_eq!(value["name"], "simple_worker");
    assert_eq!(value["pools"][0]["size"], 2);
    assert!(value["pools"][0]["children"].as_array().unwrap().len() >= 2);

    let stop = control(dir.path(), &["stop"]);
    assert_eq!(stop.exit.code(), Some(0), "{stop:?}");
    assert_eq!(
        stop.stdout.trim(),
        format!("simple_worker: stopped (pid {})", daemon.pid())
    );
    daemon.expect_exit_code(0);
    assert!(!socket_dir.exists(), "control socket removed on exit");
    assert!(!dir.path().join("w.pid").exists());
    assert!(read_lines(&log)
        .iter()
        .any(|l| l.contains("stop requested through the control channel")));
}

#[test]
fn status_and_stop_without_a_daemon_exit_3_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["stop"]] {
        let out = control(dir.path(), args);
        assert_eq!(out.exit.code(), Some(3), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert!(
            out.stderr.starts_with("simple_worker: not running: "),
            "{out:?}"
        );
        assert!(
            out.stderr.contains(".simple_worker.control/control.sock"),
            "{out:?}"
        );
    }
}
