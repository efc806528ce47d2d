//! Black-box tests of the `hello_world` example: the real binary, started as a
//! process, observed through its log file, pid file, exit code and `/proc`.

use integration_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NAME: &str = "hello_world";

fn bin() -> PathBuf {
    example_bin(NAME)
}

/// A hello_world in the foreground, with its files in a private directory.
struct Hello {
    /// Holds the files; removed when the test ends.
    _dir: tempfile::TempDir,
    log: PathBuf,
    pidfile: PathBuf,
    process: Daemon,
}

impl Hello {
    /// Starts `hello_world --interval 0.05 --log-file <dir>/hello.log
    /// --pidfile <dir>/hello.pid` plus `extra`, and waits until it is ready.
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hello.log");
        let pidfile = dir.path().join("hello.pid");
        let mut cmd = Command::new(bin());
        cmd.args(["--interval", "0.05", "--log-file"])
            .arg(&log)
            .arg("--pidfile")
            .arg(&pidfile)
            .args(extra);
        let mut process = Daemon::spawn(cmd);
        // Signal handlers are installed before this line is logged.
        let ready = format!("{NAME} started: pid {}", process.pid());
        wait_for(DEADLINE, &format!("{ready:?} in {}", log.display()), || {
            if let Some(exit) = process.try_exit() {
                panic!(
                    "{NAME} exited during start-up ({exit:?}); stderr:\n{}",
                    process.stderr()
                );
            }
            read_lines(&log).iter().any(|l| l.contains(&ready))
        });
        Self {
            _dir: dir,
            log,
            pidfile,
            process,
        }
    }

    fn pid(&self) -> i32 {
        self.process.pid()
    }

    fn lines(&self) -> Vec<String> {
        read_lines(&self.log)
    }

    fn wait_for_line(&self, needle: &str) -> String {
        wait_for_line(&self.log, needle)
    }

    /// SIGTERM, then asserts a clean exit (code 0, goodbye lines, pid file removed).
    fn stop(mut self) -> Self {
        self.process.signal(Sig::SIGTERM);
        self.process.expect_exit_code(0);
        let lines = self.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("shutting down: signal SIGTERM")),
            "no shutdown line:\n{}",
            lines.join("\n")
        );
        assert!(
            lines
                .last()
                .is_some_and(|l| l.ends_with(&format!("{NAME} stopped (exit code 0)"))),
            "the last line is not the stop line:\n{}",
            lines.join("\n")
        );
        assert!(
            !self.pidfile.exists(),
            "pid file left behind after a clean exit"
        );
        self
    }
}

/// Asserts `stderr` is exactly one line and that it contains every needle.
#[track_caller]
fn assert_one_line(stderr: &str, needles: &[&str]) {
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    assert!(
        stderr.ends_with('\n'),
        "stderr line is not terminated: {stderr:?}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not mention {needle:?}: {stderr}"
        );
    }
}

/// Asserts `numbers` (in any order) are exactly `1..=max`, each once.
#[track_caller]
fn assert_contiguous_from_one(numbers: &[u64]) {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    let expected: Vec<u64> = (1..=sorted.len() as u64).collect();
    assert_eq!(
        sorted, expected,
        "loop numbers missing or duplicated: {numbers:?}"
    );
}

// ---------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------

#[test]
fn logs_consecutive_loop_lines_in_the_documented_format() {
    let hello = Hello::start(&[]);
    wait_for_loop(&hello.log, 3);
    let pid = hello.pid();
    let lines = hello.lines();

    let parsed: Vec<LogLine> = lines
        .iter()
        .map(|l| parse_log_line(l).unwrap_or_else(|| panic!("malformed log line {l:?}")))
        .collect();
    for line in &parsed {
        assert_eq!((line.daemon_pid, line.pid), (pid, pid), "{line:?}");
        assert_eq!(line.role, "main", "{line:?}");
        assert_eq!(line.level, "INFO", "{line:?}");
    }
    assert!(
        lines[0].contains(&format!(
            " [{pid}/{pid} main] INFO  {NAME} started: pid {pid}, interval 50ms"
        )),
        "first line: {:?}",
        lines[0]
    );

    let loops: Vec<&LogLine> = parsed
        .iter()
        .filter(|l| l.message.starts_with("Hello World."))
        .collect();
    assert!(loops.len() >= 3, "{lines:?}");
    for (i, line) in loops.iter().enumerate() {
        assert_eq!(
            line.message,
            format!("Hello World. Loop {}", i + 1),
            "{lines:?}"
        );
    }
    // Nothing but the start line and loop lines so far.
    assert_eq!(loops.len() + 1, parsed.len(), "{lines:?}");
    hello.stop();
}

#[test]
fn verbose_copies_log_lines_to_stderr() {
    let hello = Hello::start(&["-v"]);
    wait_for(DEADLINE, "loop 2 on stderr", || {
        loop_numbers(
            &hello
                .process
                .stderr()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .contains(&2)
    });
    let hello = hello.stop();
    let stderr: Vec<String> = hello.process.stderr().lines().map(String::from).collect();
    // The same lines, in both places.
    assert_eq!(stderr, hello.lines());
}

#[test]
fn without_a_log_file_lines_go_to_stderr() {
    let mut process = Daemon::start(&bin(), ["--interval", "0.05"]);
    wait_for(DEADLINE, "loop 2 on stderr", || {
        process.stderr().contains("Hello World. Loop 2\n")
    });
    process.signal(Sig::SIGTERM);
    process.expect_exit_code(0);
    let stderr = process.stderr();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(parse_log_line(first).is_some(), "{stderr}");
    assert!(
        stderr.ends_with(&format!("{NAME} stopped (exit code 0)\n")),
        "{stderr}"
    );
    assert_eq!(process.stdout(), "");
}

// ---------------------------------------------------------------------------
// Signals and shutdown
// ---------------------------------------------------------------------------

#[test]
fn sigterm_stops_cleanly_and_removes_the_pid_file() {
    let hello = Hello::start(&[]);
    assert_eq!(
        std::fs::read_to_string(&hello.pidfile).unwrap(),
        format!("{}\n", hello.pid()),
        "pid file while running"
    );
    wait_for_loop(&hello.log, 1);
    let hello = hello.stop();
    let lines = hello.lines();
    let shutting = lines
        .iter()
        .position(|l| l.ends_with("shutting down: signal SIGTERM"))
        .unwrap();
    // The example's ShutdownStarted listener logs through the `log` crate bridge,
    // after the shutdown line and before the stop line (the last one).
    let goodbye = lines
        .iter()
        .position(|l| l.ends_with("goodbye (signal SIGTERM)"))
        .unwrap_or_else(|| panic!("no goodbye line:\n{}", lines.join("\n")));
    assert!(shutting < goodbye && goodbye < lines.len() - 1, "{lines:?}");
    assert_contiguous_from_one(&loop_numbers(&lines));
    assert_eq!(hello.process.stdout(), "");
    assert_eq!(hello.process.stderr(), "");
}

#[test]
fn sigint_stops_cleanly() {
    let mut hello = Hello::start(&[]);
    wait_for_loop(&hello.log, 1);
    hello.process.signal(Sig::SIGINT);
    hello.process.expect_exit_code(0);
    let lines = hello.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("shutting down: signal SIGINT")),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().ends_with("stopped (exit code 0)"),
        "{lines:?}"
    );
    assert!(!hello.pidfile.exists());
}

#[test]
fn sigusr1_dumps_stats_and_keeps_running() {
    let mut hello = Hello::start(&[]);
    wait_for_loop(&hello.log, 2);
    hello.process.signal(Sig::SIGUSR1);
    let stats = hello.wait_for_line("stats: loop: ");
    let message = parse_log_line(&stats).expect("stats line format").message;
    let iterations: u64 = message
        .split_once(" iterations ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no iteration count in {message:?}"));
    assert!(iterations >= 2, "{message}");
    assert!(message.contains("interval 50ms"), "{message}");
    hello.wait_for_line(&format!("stats: daemon: {NAME} pid {}", hello.pid()));
    hello.wait_for_line("stats: memory: rss ");
    // Still ticking.
    wait_for_loop(&hello.log, iterations + 2);
    assert!(hello.process.is_running());
    hello.stop();
}

#[test]
fn other_signals_are_caught_not_fatal() {
    // Each of these would terminate (or core-dump) a process that does not
    // handle it; the daemon logs them at debug level and carries on.
    let mut hello = Hello::start(&["--debug"]);
    for sig in [
        Sig::SIGUSR2,
        Sig::SIGQUIT,
        Sig::SIGALRM,
        Sig::SIGPWR,
        Sig::SIGVTALRM,
    ] {
        hello.process.signal(sig);
        let line = hello.wait_for_line(&format!("signal {sig} received"));
        assert_eq!(
            parse_log_line(&line).map(|l| l.level).as_deref(),
            Some("DEBUG"),
            "{line}"
        );
    }
    let now = max_loop(&hello.log);
    wait_for_loop(&hello.log, now + 2);
    assert!(hello.process.is_running());
    hello.stop();
}

#[test]

fn signals_blocked_by_the_parent_are_still_handled() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("blocked.log");
    let mut cmd = Command::new(bin());
    cmd.args(["--interval", "0.05", "--log-file"]).arg(&log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
                libc::sigaddset(&mut set, sig);
            }
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(()),
                e => Err(std::io::Error::from_raw_os_error(e)),
            }
        });
    }
    let mut process = Daemon::spawn(cmd);
    wait_for_line(&log, &format!("{NAME} started"));
    process.signal(Sig::SIGUSR1);
    wait_for_line(&log, "stats: loop: ");
    process.signal(Sig::SIGTERM);
    process.expect_exit_code(0);
}

// ---------------------------------------------------------------------------
// Log rotation
// ---------------------------------------------------------------------------

fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

#[test]
fn renamed_log_file_is_reopened_without_losing_lines() {
    let hello = Hello::start(&[]);
    wait_for_loop(&hello.log, 3);
    let old = rotated(&hello.log);
    std::fs::rename(&hello.log, &old).unwrap();
    // The watcher notices within ~250 ms; allow much more.
    wait_for(
        Duration::from_secs(3),
        "loop lines in the new log file",
        || !loop_numbers_in(&hello.log).is_empty(),
    );
    let before = max_loop(&hello.log);
    wait_for_loop(&hello.log, before + 2);
    let hello = hello.stop();

    let (old_numbers, new_numbers) = (loop_numbers_in(&old), loop_numbers_in(&hello.log));
    assert!(old_numbers.len() >= 3 && !new_numbers.is_empty());
    assert!(
        old_numbers.iter().max() < new_numbers.iter().min(),
        "old {old_numbers:?}, new {new_numbers:?}"
    );
    let all: Vec<u64> = old_numbers.iter().chain(&new_numbers).copied().collect();
    assert_contiguous_from_one(&all);
    assert!(read_lines(&old)[0].contains(&format!("{NAME} started")));
    // Every line in both files is well formed.
    for line in read_lines(&old).iter().chain(&hello.lines()) {
        assert!(parse_log_line(line).is_some(), "malformed {line:?}");
    }
}

#[test]
fn deleted_log_file_is_recreated() {
    let hello = Hello::start(&[]);
    wait_for_loop(&hello.log, 2);
    let last_before = max_loop(&hello.log);
    std::fs::remove_file(&hello.log).unwrap();
    wait_for(
        Duration::from_secs(3),
        "loop lines in a recreated log file",
        || !loop_numbers_in(&hello.log).is_empty(),
    );
    let hello = hello.stop();
    let numbers = loop_numbers_in(&hello.log);
    assert!(numbers[0] > last_before, "{numbers:?} after {last_before}");
    let expected: Vec<u64> = (numbers[0]..numbers[0] + numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "lines missing in the recreated file");
    let mode = std::fs::metadata(&hello.log).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & !0o640,
        0,
        "recreated log file mode {mode:o} is wider than 0640"
    );
}

#[test]
fn sighup_restarts_gracefully_into_a_fresh_log() {
    // SIGHUP is a graceful restart: in the foreground the program
    // re-execs itself in place, so the pid stays and the log file at the
    // configured path is opened afresh.
    let hello = Hello::start(&[]);
    wait_for_loop(&hello.log, 2);
    let old = rotated(&hello.log);
    std::fs::rename(&hello.log, &old).unwrap();
    let pid = hello.process.pid();
    hello.process.signal(Sig::SIGHUP);
    wait_for(
        Duration::from_secs(5),
        "loop lines in the new log file after SIGHUP",
        || loop_numbers_in(&hello.log).len() >= 2,
    );
    assert!(is_alive(pid), "the restarted daemon keeps its pid");
    let hello = hello.stop();

    let (old_lines, new_lines) = (read_lines(&old), hello.lines());
    assert!(
        old_lines
            .iter()
            .any(|l| l.ends_with("shutting down: restart (SIGHUP)")),
        "the old run logged its graceful stop: {old_lines:?}"
    );
    assert!(
        old_lines.last().unwrap().ends_with("stopped (exit code 0)"),
        "{old_lines:?}"
    );
    assert_contiguous_from_one(&loop_numbers(&old_lines));
    assert!(
        new_lines[0].contains(&format!("started: pid {pid},")),
        "the new run starts the new file: {new_lines:?}"
    );
    assert_contiguous_from_one(&loop_numbers(&new_lines));
}

// ---------------------------------------------------------------------------
// --daemon
// ---------------------------------------------------------------------------

/// Runs `hello_world --daemon ...` in `cwd`, expects the launcher to exit 0,
/// and returns the daemon's pid, guarded. The launcher must print that pid
/// and nothing else, and `pidfile` must hold it.
fn launch_daemon(cwd: &Path, args: &[&str], pidfile: &Path) -> KillOnDrop {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd).arg("--daemon").args(args);
    let launched = run_command(cmd);
    // Guard the daemon before asserting anything about the launcher.
    let printed = launched
        .stdout
        .strip_prefix(&format!("{NAME}: running in the background with pid "))
        .and_then(|rest| rest.trim_end().parse().ok());
    let guard = printed
        .or_else(|| pidfile_pid(pidfile))
        .map(KillOnDrop::new);
    assert_eq!(
        launched.exit,
        Exit::Code(0),
        "launcher failed; stdout {:?}, stderr {:?}",
        launched.stdout,
        launched.stderr
    );
    let guard = guard.unwrap_or_else(|| panic!("no daemon pid printed: {:?}", launched.stdout));
    assert_eq!(
        launched.stdout,
        format!(
            "{NAME}: running in the background with pid {}\n",
            guard.pid()
        )
    );
    assert_eq!(launched.stderr, "");
    assert_eq!(
        pidfile_pid(pidfile),
        Some(guard.pid()),
        "{} does not hold the daemon's pid",
        pidfile.display()
    );
    guard
}

/// Removes files when dropped.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A name unique to `dir` (for files, and to find processes by argument).
fn unique_name(dir: &tempfile::TempDir) -> String {
    dir.path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn pidfile_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn daemon_mode_detaches_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let pidfile = dir.path().join("d.pid");
    let log = dir.path().join("d.log");
    let daemon = launch_daemon(
        dir.path(),
        &[
            "--interval",
            "0.05",
            "--pidfile",
            pidfile.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        &pidfile,
    );
    let pid = daemon.pid();
    assert!(daemon.is_alive(), "the daemon is not running");

    // Detached: another session, no terminal, not our child, and (double
    // fork) not a session leader, so it can never acquire a terminal again.
    let stat = proc_stat(pid).unwrap();
    let own = proc_stat(own_pid()).unwrap();
    assert_ne!(stat.session, own.session, "{stat:?}");
    assert_eq!(stat.pgrp, stat.session, "{stat:?}");
    assert_ne!(
        stat.session, pid,
        "the daemon is a session leader: {stat:?}"
    );
    assert_eq!(stat.tty_nr, 0, "{stat:?}");
    assert_ne!(stat.ppid, own_pid(), "{stat:?}");
    // The intermediate process that called setsid was reaped (its pid stays
    // reserved as the session id, so this cannot see a recycled pid).
    assert!(
        proc_stat(stat.session).is_none(),
        "session leader {} still exists",
        stat.session
    );
    assert!(zombie_children(pid).is_empty());

    assert_eq!(proc_cwd(pid).as_deref(), Some(Path::new("/")));
    assert_eq!(proc_umask(pid), Some(0o027));
    for fd in 0..=2 {
        assert_eq!(
            proc_fd(pid, fd).as_deref(),
            Some(Path::new("/dev/null")),
            "fd {fd}"
        );
    }
    // Written after the umask: 0644 & !027.
    let mode = std::fs::metadata(&pidfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "pid file mode {mode:o}");

    wait_for_loop(&log, 3);
    let lines = read_lines(&log);
    assert!(
        lines[0].ends_with(&format!("{NAME} started: pid {pid}, interval 50ms")),
        "{lines:?}"
    );
    for line in &lines {
        let parsed = parse_log_line(line).unwrap_or_else(|| panic!("malformed {line:?}"));
        assert_eq!((parsed.daemon_pid, parsed.pid), (pid, pid), "{line}");
    }

    send_signal(pid, Sig::SIGTERM);
    wait_for(DEADLINE, "the daemon to exit after SIGTERM", || {
        !daemon.is_alive()
    });
    wait_for(DEADLINE, "the pid file to be removed", || !pidfile.exists());
    let lines = read_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("shutting down: signal SIGTERM")),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().ends_with("stopped (exit code 0)"),
        "{lines:?}"
    );
    assert_contiguous_from_one(&loop_numbers(&lines));
}

#[test]
fn daemon_mode_makes_relative_paths_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name(&dir);
    let _cleanup = KillByArg::new(&name);
    let (pid_arg, log_arg) = (format!("{name}.pid"), format!("{name}.log"));
    // Where the files would land if the paths were resolved after `chdir /`.
    let strays = RemoveOnDrop(vec![
        Path::new("/").join(&pid_arg),
        Path::new("/").join(&log_arg),
    ]);
    let pidfile = dir.path().join(&pid_arg);
    let daemon = launch_daemon(
        dir.path(),
        &[
            "--interval",
            "0.05",
            "--pidfile",
            &pid_arg,
            "--log-file",
            &log_arg,
        ],
        &pidfile,
    );
    let log = dir.path().join(&log_arg);
    wait_for_loop(&log, 2);
    assert_eq!(proc_cwd(daemon.pid()).as_deref(), Some(Path::new("/")));
    // SIGHUP restarts the daemon: a new process (new pid) with the same
    // arguments, resolved from the same directory (not `/rel.log`).
    send_signal(daemon.pid(), Sig::SIGHUP);
    wait_for_line(&log, "shutting down: restart (SIGHUP)");
    let restarted = wait_for_value(
        DEADLINE,
        "the restarted daemon's pid in the pid file",
        || pidfile_pid(&pidfile).filter(|p| *p != daemon.pid()),
    );
    let restarted = KillOnDrop::new(restarted);
    wait_for(DEADLINE, "the old daemon to exit", || !daemon.is_alive());
    wait_for_line(&log, &format!("started: pid {},", restarted.pid()));
    assert_eq!(proc_cwd(restarted.pid()).as_deref(), Some(Path::new("/")));
    send_signal(restarted.pid(), Sig::SIGTERM);
    wait_for(DEADLINE, "the restarted daemon to exit", || {
        !restarted.is_alive()
    });
    assert!(!pidfile.exists(), "pid file not removed");
    for stray in &strays.0 {
        assert!(!stray.exists(), "{} was created", stray.display());
    }
    assert!(read_lines(&log)
        .last()
        .unwrap()
        .ends_with("stopped (exit code 0)"));
}

#[test]
fn daemon_mode_reports_start_up_failure_to_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let log = dir.path().join("d.log");
    let mut cmd = Command::new(bin());
    cmd.args([
        "--daemon",
        "--pidfile",
        "/nonexistent-dir/d.pid",
        "--log-file",
    ])
    .arg(&log);
    let launched = run_command(cmd);
    assert_eq!(launched.exit, Exit::Code(73), "{launched:?}");
    assert_eq!(launched.stdout, "");
    assert_one_line(
        &launched.stderr,
        &[&format!("{NAME}: error:"), "/nonexistent-dir/d.pid"],
    );
    // The daemon that failed does not linger.
    let needle = dir.path().to_str().unwrap();
    wait_for(
        DEADLINE,
        "no process left running with the test's paths",
        || pids_with_arg(needle).is_empty(),
    );
}

// ---------------------------------------------------------------------------
// Start-up errors and the command line
// ---------------------------------------------------------------------------

#[test]
fn unwritable_log_file_exits_73() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("p.pid");
    let mut cmd = Command::new(bin());
    cmd.args(["--log-file", "/nonexistent-dir/x.log", "--pidfile"])
        .arg(&pidfile);
    let out = run_command(cmd);
    assert_eq!(out.exit, Exit::Code(73), "{out:?}");
    assert_one_line(
        &out.stderr,
        &[&format!("{NAME}: error:"), "/nonexistent-dir/x.log"],
    );
    assert_eq!(out.stdout, "");
    assert!(
        !pidfile.exists(),
        "pid file written although start-up failed"
    );
}

#[test]
fn unwritable_pid_file_exits_73() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["--pidfile", "/nonexistent-dir/x.pid", "--log-file"])
        .arg(dir.path().join("x.log"));
    let out = run_command(cmd);
    assert_eq!(out.exit, Exit::Code(73), "{out:?}");
    assert_one_line(
        &out.stderr,
        &[&format!("{NAME}: error:"), "/nonexistent-dir/x.pid"],
    );
}

#[test]
fn symlinked_log_and_pid_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for flag in ["--log-file", "--pidfile"] {
        let mut cmd = Command::new(bin());
        cmd.arg(flag).arg(&link);
        if flag == "--pidfile" {
            cmd.arg("--log-file").arg(dir.path().join("ok.log"));
        }
        let out = run_command(cmd);
        assert_eq!(out.exit, Exit::Code(73), "{flag}: {out:?}");
        assert_one_line(&out.stderr, &[link.to_str().unwrap()]);
        assert!(!target.exists(), "{flag} followed the symlink");
    }
}

#[test]
fn bad_command_line_exits_64() {
    for (args, needle) in [
        (&["--nope"][..], "--nope"),
        (&["--interval"], "--interval"),
        (&["--interval", "soon"], "soon"),
        (&["--debug", "3"], "3"),
        // Time options are checked when parsed: a bad value is a bad command line.
        (&["--interval=-1"], "--interval"),
        (&["--interval", "nan"], "--interval"),
        (&["--shutdown-timeout", "0"], "--shutdown-timeout"),
    ] {
        let out = run(&bin(), args);
        assert_eq!(out.exit, Exit::Code(64), "{args:?}: {out:?}");
        assert_one_line(&out.stderr, &["hello_world: error", needle]);
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn version_and_help_exit_0() {
    let out = run(&bin(), ["--version"]);
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert!(
        out.stdout.starts_with(&format!("{NAME} ")) && out.stdout.lines().count() == 1,
        "{out:?}"
    );
    assert_eq!(out.stderr, "");

    let out = run(&bin(), ["--help"]);
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    for flag in [
        "--daemon",
        "--pidfile",
        "--log-file",
        "--verbose",
        "--debug",
        "--interval",
        "--shutdown-timeout",
        "--version",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help does not mention {flag}:\n{}",
            out.stdout
        );
    }
}

// ---------------------------------------------------------------------------
// Process hygiene
// ---------------------------------------------------------------------------

#[test]
fn no_zombie_children_are_left() {
    // A foreground run...
    let hello = Hello::start(&[]);
    let foreground = hello.pid();
    let mut hello = hello.stop();
    assert_eq!(hello.process.reap(), Exit::Code(0));

    // ...and a --daemon run, whose launcher forks twice.
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let pidfile = dir.path().join("z.pid");
    let mut cmd = Command::new(bin());
    cmd.args(["--daemon", "--interval", "0.05", "--pidfile"])
        .arg(&pidfile)
        .arg("--log-file")
        .arg(dir.path().join("z.log"));
    let mut launcher = Daemon::spawn(cmd);
    let launcher_pid = launcher.pid();
    launcher.expect_exit_code(0);
    let daemon = KillOnDrop::new(pidfile_pid(&pidfile).expect("pid file"));
    assert!(zombie_children(daemon.pid()).is_empty());
    launcher.reap();
    send_signal(daemon.pid(), Sig::SIGTERM);
    wait_for(DEADLINE, "the daemon to exit", || !daemon.is_alive());

    // Other tests run in parallel in this process, so look only at ours.
    let zombies = zombie_children(own_pid());
    for pid in [foreground, launcher_pid, daemon.pid()] {
        assert!(
            !zombies.contains(&pid),
            "pid {pid} is a zombie child of the test"
        );
    }
    assert!(
        !children_of(own_pid()).iter().any(|c| c.pid == daemon.pid()),
        "the daemon was a child of the test process"
    );
    let needle = dir.path().to_str().unwrap();
    assert!(
        pids_with_arg(needle).is_empty(),
        "processes left: {:?}",
        pids_with_arg(needle)
    );
}
