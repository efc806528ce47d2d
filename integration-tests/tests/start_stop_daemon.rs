//! `--daemon --pidfile` under the real `start-stop-daemon` (Debian's dpkg),
//! directly and through the shipped init script (examples/init.d/).

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ssd() -> &'static str {
    ["/sbin/start-stop-daemon", "/usr/sbin/start-stop-daemon"]
        .into_iter()
        .find(|bin| Path::new(bin).is_file())
        .expect("start-stop-daemon is missing: `apt-get install dpkg` (.ci/run installs it)")
}

struct Setup {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
    // Kills a daemon a failing test leaves behind (its arguments name the dir).
    _guard: KillByArg,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("daemonic-ssd")
            .tempdir()
            .unwrap();
        let guard = KillByArg::new(dir.path().to_str().unwrap());
        Self {
            bin: example_bin("hello_world"),
            pidfile: dir.path().join("hello_world.pid"),
            log: dir.path().join("hello_world.log"),
            dir,
            _guard: guard,
        }
    }

    fn ssd(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(ssd());
        cmd.current_dir(self.dir.path()).args(args);
        run_command(cmd)
    }

    /// `start-stop-daemon --start` of `--daemon --pidfile` with `log_file`.
    fn start(&self, log_file: &str) -> Finished {
        let (bin, pidfile) = (self.bin.to_str().unwrap(), self.pidfile.to_str().unwrap());
        self.ssd(&[
            "--start",
            "--pidfile",
            pidfile,
            "--exec",
            bin,
            "--",
            "--daemon",
            "--pidfile",
            pidfile,
            "--log-file",
            log_file,
            "--interval",
            "0.05",
        ])
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(&self.pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}", self.pidfile.display()))
            .trim()
            .parse()
            .expect("a pid")
    }

    fn started_lines(&self) -> usize {
        read_lines(&self.log)
            .iter()
            .filter(|l| l.contains("hello_world started: pid"))
            .count()
    }
}

#[test]
fn start_refuse_status_and_stop_with_retry() {
    let s = Setup::new();
    let (bin, pidfile, log) = (
        s.bin.to_str().unwrap(),
        s.pidfile.to_str().unwrap(),
        s.log.to_str().unwrap(),
    );

    let ssd_status = |s: &Setup| s.ssd(&["--status", "--pidfile", pidfile, "--exec", bin]);
    // --stop --retry TERM/5: SIGTERM, then up to 5 s for the daemon to go.
    let ssd_stop = |s: &Setup| {
        s.ssd(&[
            "--stop",
            "--retry",
            "TERM/5",
            "--pidfile",
            pidfile,
            "--exec",
            bin,
        ])
    };

    // --start: the launcher returns once the daemon is ready.
    let out = s.start(log);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
    let pid = s.pid();
    let _daemon = KillOnDrop::new(pid);
    assert!(is_alive(pid));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        std::fs::canonicalize(&s.bin).unwrap()
    );
    wait_for_loop(&s.log, 2);

    // A second --start finds the process of the pid file and refuses.
    let again = s.start(log);
    assert_eq!(again.exit.code(), Some(1), "{again:?}");
    assert!(again.stdout.contains("already running"), "{again:?}");
    assert_eq!(s.pid(), pid);
    assert_eq!(s.started_lines(), 1, "no second daemon started");

    let status = ssd_status(&s);
    assert_eq!(status.exit.code(), Some(0), "running: {status:?}");

    let stop = ssd_stop(&s);
    assert_eq!(stop.exit.code(), Some(0), "{stop:?}");
    assert!(!is_alive(pid));
    assert!(!s.pidfile.exists(), "the daemon removed its pid file");
    let last = read_lines(&s.log).pop().unwrap_or_default();
    assert!(last.contains("hello_world stopped (exit code 0)"), "{last}");

    let status = ssd_status(&s);
    assert_eq!(status.exit.code(), Some(3), "not running: {status:?}");
    let stop = ssd_stop(&s);
    assert_eq!(stop.exit.code(), Some(1), "nothing to stop: {stop:?}");
}

#[test]
fn a_start_that_fails_is_reported_by_start_stop_daemon() {
    let s = Setup::new();
    let out = s.start("/nonexistent-dir/x.log");
    assert_eq!(
        out.exit.code(),
        Some(73),
        "the daemon's own exit code: {out:?}"
    );
    assert!(out.stderr.contains("/nonexistent-dir/x.log"), "{out:?}");
    assert!(!s.pidfile.exists());
}

#[test]
fn the_shipped_init_script_starts_reports_and_stops_the_daemon() {
    let s = Setup::new();
    let script = workspace_root().join("examples/init.d/hello_world");
    let run = |action: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg(&script)
            .arg(action)
            .env("DAEMON", &s.bin)
            .env("PIDFILE", &s.pidfile)
            .env("LOGFILE", &s.log)
            .env("DAEMON_ARGS", "--interval 0.05")
            .env("STOP_RETRY", "TERM/5/KILL/1");
        run_command(cmd)
    };

    let start = run("start");
    assert_eq!(start.exit.code(), Some(0), "{start:?}");
    let pid = s.pid();
    assert_eq!(
        start.stdout,
        format!("hello_world: running in the background with pid {pid}\nhello_world started\n")
    );
    let _daemon = KillOnDrop::new(pid);
    wait_for_loop(&s.log, 2);

    let again = run("start");
    assert_eq!(
        again.exit.code(),
        Some(0),
        "LSB: start when running succeeds"
    );
    assert_eq!(again.stdout, "hello_world is already running\n");
    assert_eq!(s.started_lines(), 1);

    let status = run("status");
    assert_eq!(status.exit.code(), Some(0), "{status:?}");
    assert_eq!(
        status.stdout,
        format!("hello_world is running (pid {pid})\n")
    );

    let restart = run("restart");
    assert_eq!(restart.exit.code(), Some(0), "{restart:?}");
    let new_pid = s.pid();
    let _restarted = KillOnDrop::new(new_pid);
    assert_ne!(new_pid, pid);
    assert!(!is_alive(pid));

    let stop = run("stop");
    assert_eq!(stop.exit.code(), Some(0), "{stop:?}");
    assert_eq!(stop.stdout, "hello_world stopped\n");
    assert!(!is_alive(new_pid));

    let status = run("status");
    assert_eq!(status.exit.code(), Some(3), "{status:?}");
    assert_eq!(status.stdout, "hello_world is not running\n");
    let stop = run("stop");
    assert_eq!(stop.exit.code(), Some(0), "LSB: stop when stopped succeeds");
    assert_eq!(stop.stdout, "hello_world was not running\n");
}
