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
    // Conventional fields: durations in seconds, named so.
    assert!(value["uptime_seconds"].as_f64().is_some(), "{value}");
    assert!(
        value["main_loop"]["interval_seconds"].as_f64() == Some(0.05),
        "{value}"
    );
    assert!(!json.stdout.contains("nanos"), "{}", json.stdout);

    // `status --json | head -1`: a reader that leaves early is no error.
    for args in [&["status"][..], &["status", "--json"]] {
        let (exit, stderr) = into_closed_pipe(dir.path(), args);
        assert_eq!(exit.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }

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

/// Runs the control command with its stdout a pipe nobody reads (closed
/// before it writes): its exit status and stderr.
fn into_closed_pipe(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let mut child = Command::new(worker_bin())
        .current_dir(dir)
        .arg("--pidfile")
        .arg("w.pid")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(write)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the control command");
    let deadline = std::time::Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    };
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    (exit, stderr)
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

/// Sets the soft descriptor limit of process `pid` (the same user's); returns
/// the previous one.
fn set_nofile(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with no new value only writes the current one to `old`.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads one initialized rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

fn open_fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// A regression test: one failed `accept` (EMFILE) used to end the listener for
/// good, and `status`/`stop` then said "not running" while the daemon ran.
#[test]
fn the_control_channel_outlives_a_failed_accept() {
    let dir = tempfile::tempdir().unwrap();
    let bin = example_bin("hello_world");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(dir.path()).args([
        "--pidfile",
        "h.pid",
        "--log-file",
        "h.log",
        "--interval",
        "0.05",
    ]);
    let daemon = Daemon::spawn(cmd);
    let log = dir.path().join("h.log");
    let socket = dir.path().join(".hello_world.control/control.sock");
    let status = || {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(dir.path())
            .args(["--pidfile", "h.pid", "status"]);
        run_command(cmd)
    };
    wait_for(DEADLINE, "the daemon answers status", || {
        status().exit.code() == Some(0)
    });

    // Room for two more descriptors, then more clients than that.
    let limit = open_fds(daemon.pid()) + 2;
    let previous = set_nofile(daemon.pid(), limit);
    let connect = || std::os::unix::net::UnixStream::connect(&socket);
    let clients: Vec<_> = (0..6).filter_map(|_| connect().ok()).collect();
    // (Before the fix, the listener was gone at this point: refused.)
    wait_for(DEADLINE, "the daemon to run out of descriptors", || {
        open_fds(daemon.pid()) >= limit || connect().is_err()
    });
    drop(clients);
    set_nofile(daemon.pid(), previous);

    wait_for(
        DEADLINE,
        "status answers again after the descriptors are freed",
        || status().exit.code() == Some(0),
    );
    let out = status();
    assert!(out.stdout.starts_with("hello_world is running"), "{out:?}");
    // The failure was seen and reported, not avoided.
    assert!(
        read_lines(&log)
            .iter()
            .any(|l| l.contains("accept failed") && l.contains("Too many open files")),
        "no accept failure logged"
    );
}
