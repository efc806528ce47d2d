//! Black-box tests of the `plugins` example: the single-instance locks
//! (`FileLock` on a pid file, `ShmLock` on a POSIX shared-memory object) and
//! the example's MemoryPlugin, observed through exit codes, log lines, the
//! lock itself and `/proc`.
//!
//! Every test has a lock of its own (a file in a private temporary directory,
//! or a shared-memory name `it-<pid>-<n>`), so tests running in parallel never
//! meet. Processes are killed by the harness's guards and shared-memory
//! objects removed by [`ShmGuard`], even when a test fails.

use integration_tests::*;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const NAME: &str = "plugins";

fn bin() -> PathBuf {
    example_bin(NAME)
}

/// Which lock the example takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--lock PATH`: a FileLock.
    File,
    /// `--shm NAME`: a ShmLock on `/dev/shm/daemonic.NAME`.
    Shm,
}

/// A test's private directory and lock.
struct Setup {
    dir: tempfile::TempDir,
    /// The lock file or the shared-memory object.
    lock: PathBuf,
    /// The `--lock` path. Passed in shm mode too, where it must never be
    /// created.
    lock_arg: PathBuf,
    /// The `--shm` name and the guard that removes its object.
    shm: Option<(String, ShmGuard)>,
}

impl Setup {
    fn new(kind: Kind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("daemonic-it-plugins")
            .tempdir()
            .unwrap();
        let lock_arg = dir.path().join("plugins.lock");
        let (lock, shm) = match kind {
            Kind::File => (lock_arg.clone(), None),
            Kind::Shm => {
                let name = unique_shm_name();
                let guard = ShmGuard::new(&name);
                assert!(
                    !guard.path().exists(),
                    "{} exists before the test",
                    guard.path().display()
                );
                (guard.path().to_path_buf(), Some((name, guard)))
            }
        };
        Self {
            dir,
            lock,
            lock_arg,
            shm,
        }
    }

    fn kind(&self) -> Kind {
        if self.shm.is_some() {
            Kind::Shm
        } else {
            Kind::File
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--lock <dir>/plugins.lock [--shm NAME] --interval 0.05`.
    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--lock".into(), self.lock_arg.clone().into()];
        if let Some((name, _)) = &self.shm {
            args.extend(["--shm".into(), name.into()]);
        }
        args.extend(["--interval".into(), "0.05".into()]);
        args
    }

    /// The example with this setup's lock, plus `extra`. Its control
    /// socket goes under the test's directory: without a pid file it would
    /// be `/tmp/daemonic-<uid>/plugins/control.sock`, shared by every test.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env("XDG_RUNTIME_DIR", self.dir.path())
            .args(self.args())
            .args(extra);
        cmd
    }

    /// Starts an instance logging to `<dir>/<log_name>` and waits until it is
    /// ready (lock taken, signal handlers installed); panics if it exits.
    fn start(&self, log_name: &str, extra: &[&str]) -> Instance {
        let log = self.path(log_name);
        let mut cmd = self.command(extra);
        cmd.arg("--log-file").arg(&log);
        let mut process = Daemon::spawn(cmd);
        let ready = format!("{NAME} started: pid {}, interval 50ms", process.pid());
        wait_for(DEADLINE, &format!("{ready:?} in {}", log.display()), || {
            if let Some(exit) = process.try_exit() {
                panic!(
                    "{NAME} exited during start-up ({exit:?}); log:\n{}\nstderr:\n{}",
                    read_lines(&log).join("\n"),
                    process.stderr()
                );
            }
            read_lines(&log).iter().any(|l| l.ends_with(&ready))
        });
        Instance { process, log }
    }

    /// Asserts the lock holds exactly `pid` and a newline.
    #[track_caller]
    fn assert_lock_holds(&self, pid: i32) {
        assert_eq!(
            std::fs::read_to_string(&self.lock).ok(),
            Some(format!("{pid}\n")),
            "{} does not hold pid {pid}",
            self.lock.display()
        );
    }

    /// In shm mode the `--lock` file must never be created.
    #[track_caller]
    fn assert_no_stray_lock_file(&self) {
        if self.kind() == Kind::Shm {
            assert!(
                !self.lock_arg.exists(),
                "shm mode created the lock file {}",
                self.lock_arg.display()
            );
        }
    }
}

/// A foreground instance with a log file.
struct Instance {
    process: Daemon,
    log: PathBuf,
}

impl Instance {
    fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Its log, parsed; panics on a malformed line.
    fn lines(&self) -> Vec<LogLine> {
        parse_all(&read_lines(&self.log))
    }

    /// The highest `loop N` debug line so far (0 if none).
    fn max_loop(&self) -> u64 {
        self.lines()
            .iter()
            .filter_map(|l| l.message.strip_prefix("loop ")?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// SIGTERM, then asserts a clean exit: code 0, the stop line last.
    fn stop(mut self) {
        self.process.signal(Sig::SIGTERM);
        self.process.expect_exit_code(0);
        let lines = read_lines(&self.log);
        assert!(
            lines
                .last()
                .is_some_and(|l| l.ends_with(&format!("{NAME} stopped (exit code 0)"))),
            "the last line is not the stop line:\n{}",
            lines.join("\n")
        );
        self.process.reap();
    }
}

#[track_caller]
fn parse_all(lines: &[String]) -> Vec<LogLine> {
    lines
        .iter()
        .map(|l| parse_log_line(l).unwrap_or_else(|| panic!("malformed log line {l:?}")))
        .collect()
}

/// What a refused instance says.
fn already_running(pid: i32, lock: &Path) -> String {
    format!("already running with pid {pid} (lock {})", lock.display())
}

/// Asserts `lines` are the log of an instance refused because `pid` holds
/// `lock`: the error, then the shutdown and stop lines with code 75, and
/// never a `started` line.
#[track_caller]
fn assert_refused_log(lines: &[String], pid: i32, lock: &Path) {
    let parsed = parse_all(lines);
    let expected = already_running(pid, lock);
    let messages: Vec<(String, String)> = parsed
        .iter()
        .map(|l| (l.level.clone(), l.message.clone()))
        .collect();
    let want = |level: &str, message: String| (level.to_string(), message);
    assert_eq!(
        messages,
        [
            want("ERROR", expected.clone()),
            want("INFO", format!("shutting down: error: {expected}")),
            want("INFO", format!("{NAME} stopped (exit code 75)")),
        ],
        "log of the refused instance:\n{}",
        lines.join("\n")
    );
    assert!(parsed.iter().all(|l| l.pid != pid && l.daemon_pid != pid));
}

// ---------------------------------------------------------------------------
// A second instance is refused
// ---------------------------------------------------------------------------

fn second_instance_is_refused(kind: Kind) {
    let setup = Setup::new(kind);
    let first = setup.start("first.log", &["--debug"]);
    setup.assert_lock_holds(first.pid());
    let mode = std::fs::metadata(&setup.lock).unwrap().permissions().mode() & 0o777;
    match kind {
        // Private to the daemon's user.
        Kind::Shm => assert_eq!(mode, 0o600, "shm object mode {mode:o}"),
        // Created 0644, less the umask.
        Kind::File => {
            let umask = proc_umask(own_pid()).expect("own umask");
            assert_eq!(mode, 0o644 & !umask, "lock file mode {mode:o}");
        }
    }
    setup.assert_no_stray_lock_file();

    // Without a log file the refusal goes to stderr, as log lines.
    let out = run_command(setup.command(&[]));
    assert_eq!(out.exit, Exit::Code(75), "{out:?}");
    assert_eq!(out.stdout, "");
    let stderr: Vec<String> = out.stderr.lines().map(str::to_string).collect();
    assert_refused_log(&stderr, first.pid(), &setup.lock);

    // With a log file, to the log file.
    let second_log = setup.path("second.log");
    let mut cmd = setup.command(&[]);
    cmd.arg("--log-file").arg(&second_log);
    let out = run_command(cmd);
    assert_eq!(out.exit, Exit::Code(75), "{out:?}");
    assert_refused_log(&read_lines(&second_log), first.pid(), &setup.lock);

    // The first is unaffected: running, still ticking, still the holder.
    let mut first = first;
    assert!(first.process.is_running(), "the first instance exited");
    let seen = first.max_loop();
    wait_for(DEADLINE, "the first instance to keep looping", || {
        first.max_loop() >= seen + 2
    });
    setup.assert_lock_holds(first.pid());
    let complaints: Vec<LogLine> = first
        .lines()
        .into_iter()
        .filter(|l| l.level == "WARN" || l.level == "ERROR")
        .collect();
    assert!(
        complaints.is_empty(),
        "the first instance complained: {complaints:?}"
    );

    // A clean exit removes the lock...
    first.stop();
    assert!(
        !setup.lock.exists(),
        "{} left behind after a clean exit",
        setup.lock.display()
    );
    // ...and the next instance starts without a takeover.
    let next = setup.start("next.log", &[]);
    setup.assert_lock_holds(next.pid());
    let lines = next.lines();
    assert!(
        lines.iter().all(|l| l.level == "INFO"),
        "unexpected lines: {lines:?}"
    );
    next.stop();
    assert!(!setup.lock.exists());
    setup.assert_no_stray_lock_file();
}

#[test]
fn file_lock_refuses_a_second_instance() {
    second_instance_is_refused(Kind::File);
}

#[test]
fn shm_lock_refuses_a_second_instance() {
    second_instance_is_refused(Kind::Shm);
}

// ---------------------------------------------------------------------------
// A lock left by a killed instance is taken over
// ---------------------------------------------------------------------------

fn killed_instances_lock_is_taken_over(kind: Kind) {
    let setup = Setup::new(kind);
    let mut first = setup.start("first.log", &[]);
    let dead = first.pid();
    first.process.signal(Sig::SIGKILL);
    assert_eq!(
        first.process.wait_exit(DEADLINE),
        Exit::Signaled(Sig::SIGKILL)
    );
    // Not reaped until the test ends: the zombie keeps its pid reserved, so
    // the next instance cannot get it (and then rightly not warn).
    // No teardown ran: the lock is left behind, naming the dead holder.
    setup.assert_lock_holds(dead);

    let next = setup.start("next.log", &[]);
    let lines = next.lines();
    let warn = format!(
        "lock {}: taking over from pid {dead}, which is no longer running",
        setup.lock.display()
    );
    let at = lines
        .iter()
        .position(|l| l.level == "WARN" && l.message == warn)
        .unwrap_or_else(|| panic!("no WARN {warn:?} in {lines:#?}"));
    let started = lines
        .iter()
        .position(|l| l.message.starts_with(&format!("{NAME} started")))
        .expect("started line");
    assert!(at < started, "takeover logged after start-up: {lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.level != "INFO").count(),
        1,
        "{lines:#?}"
    );
    setup.assert_lock_holds(next.pid());
    next.stop();
    assert!(!setup.lock.exists());
    setup.assert_no_stray_lock_file();
}

#[test]
fn file_lock_left_by_a_killed_instance_is_taken_over() {
    killed_instances_lock_is_taken_over(Kind::File);
}

#[test]
fn shm_lock_left_by_a_killed_instance_is_taken_over() {
    killed_instances_lock_is_taken_over(Kind::Shm);
}

// ---------------------------------------------------------------------------
// Symlinks
// ---------------------------------------------------------------------------

#[test]
fn a_symlinked_lock_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A dangling link (the target must not be created) and a link to an
    // existing file (which must not be written).
    for existing in [false, true] {
        let target = dir.path().join(format!("target-{existing}"));
        let link = dir.path().join(format!("link-{existing}.lock"));
        if existing {
            std::fs::write(&target, "precious\n").unwrap();
        }
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("--lock").arg(&link).args(["--interval", "0.05"]);
        let out = run_command(cmd);
        assert_eq!(out.exit, Exit::Code(73), "{out:?}");
        let lines = parse_all(&out.stderr.lines().map(str::to_string).collect::<Vec<_>>());
        let error = format!("cannot open lock file {}: ", link.display());
        assert!(
            lines
                .first()
                .is_some_and(|l| l.level == "ERROR" && l.message.starts_with(&error)),
            "expected an ERROR line starting with {error:?}:\n{}",
            out.stderr
        );
        assert!(
            lines
                .last()
                .is_some_and(|l| l.message == format!("{NAME} stopped (exit code 73)")),
            "{}",
            out.stderr
        );
        if existing {
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        } else {
            assert!(!target.exists(), "the symlink's target was created");
        }
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the symlink was replaced"
        );
    }
}

#[test]
fn an_invalid_shm_name_exits_78() {
    for name in ["../etc/passwd", "a/b", ""] {
        let out = run(&bin(), ["--shm", name]);
        assert_eq!(out.exit, Exit::Code(78), "{name:?}: {out:?}");
        assert_eq!(
            out.stderr,
            format!(
                "{NAME}: error: invalid configuration: shared-memory lock name `{name}` \
                 must be 1-200 letters, digits, `-`, `_` or `.`\n"
            )
        );
        assert_eq!(out.stdout, "");
    }
}

// ---------------------------------------------------------------------------
// --daemon
// ---------------------------------------------------------------------------

fn daemon_launcher_reports_already_running(kind: Kind) {
    let setup = Setup::new(kind);
    let _cleanup = KillByArg::new(setup.dir.path().to_str().unwrap());
    let (first_pidfile, first_log) = (setup.path("first.pid"), setup.path("first.log"));
    let mut cmd = setup.command(&["--daemon"]);
    cmd.arg("--pidfile")
        .arg(&first_pidfile)
        .arg("--log-file")
        .arg(&first_log);
    let launched = run_command(cmd);
    let printed: Option<i32> = launched
        .stdout
        .strip_prefix(&format!("{NAME}: running in the background with pid "))
        .and_then(|rest| rest.trim_end().parse().ok());
    let first = KillOnDrop::new(printed.unwrap_or_else(|| panic!("{launched:?}")));
    assert_eq!(launched.exit, Exit::Code(0), "{launched:?}");
    wait_for_line(&first_log, &format!("{NAME} started: pid {}", first.pid()));
    setup.assert_lock_holds(first.pid());

    let second_log = setup.path("second.log");
    let mut cmd = setup.command(&["--daemon"]);
    cmd.arg("--pidfile")
        .arg(setup.path("second.pid"))
        .arg("--log-file")
        .arg(&second_log);
    let launched = run_command(cmd);
    assert_eq!(launched.exit, Exit::Code(75), "{launched:?}");
    assert_eq!(launched.stdout, "");
    assert_eq!(
        launched.stderr,
        format!(
            "{NAME}: error: {}\n",
            already_running(first.pid(), &setup.lock)
        )
    );
    // The refused daemon is gone, its log says why, it left no pid file.
    let needle = second_log.to_str().unwrap();
    wait_for(DEADLINE, "the refused daemon to be gone", || {
        pids_with_arg(needle).is_empty()
    });
    assert_refused_log(&read_lines(&second_log), first.pid(), &setup.lock);
    assert!(!setup.path("second.pid").exists());

    // The first is unaffected.
    assert!(first.is_alive());
    setup.assert_lock_holds(first.pid());
    send_signal(first.pid(), Sig::SIGTERM);
    wait_for(DEADLINE, "the first daemon to exit", || !first.is_alive());
    assert!(
        read_lines(&first_log)
            .last()
            .is_some_and(|l| l.ends_with(&format!("{NAME} stopped (exit code 0)"))),
        "{:?}",
        read_lines(&first_log)
    );
    assert!(!setup.lock.exists(), "lock left behind after a clean exit");
    assert!(!first_pidfile.exists(), "pid file left behind");
    setup.assert_no_stray_lock_file();
}

#[test]
fn daemon_launcher_reports_already_running_file_lock() {
    daemon_launcher_reports_already_running(Kind::File);
}

#[test]
fn daemon_launcher_reports_already_running_shm_lock() {
    daemon_launcher_reports_already_running(Kind::Shm);
}

// ---------------------------------------------------------------------------
// Known framework bugs (see the tests' ignore reasons)
// ---------------------------------------------------------------------------

#[test]
fn a_refused_instance_leaves_the_running_instances_pid_file_alone() {
    let setup = Setup::new(Kind::File);
    let pidfile = setup.path("shared.pid");
    let first = setup.start("first.log", &["--pidfile", pidfile.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&pidfile).ok(),
        Some(format!("{}\n", first.pid()))
    );
    let mut cmd = setup.command(&["--pidfile", pidfile.to_str().unwrap()]);
    cmd.arg("--log-file").arg(setup.path("second.log"));
    let out = run_command(cmd);
    assert_eq!(out.exit, Exit::Code(75), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&pidfile).ok(),
        Some(format!("{}\n", first.pid())),
        "the running instance's pid file was overwritten or removed"
    );
    first.stop();
    assert!(!pidfile.exists());
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

#[test]
fn daemon_mode_resolves_a_relative_lock_path() {
    let setup = Setup::new(Kind::File);
    let _cleanup = KillByArg::new(setup.dir.path().to_str().unwrap());
    let unique = setup
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let lock_arg = format!("{unique}.lock");
    // Where the lock lands if resolved after `chdir /`.
    let stray = RemoveOnDrop(vec![Path::new("/").join(&lock_arg)]);
    let log = setup.path("d.log");
    let mut cmd = Command::new(bin());
    cmd.env("XDG_RUNTIME_DIR", setup.dir.path())
        .current_dir(setup.dir.path())
        .args(["--daemon", "--interval", "0.05", "--lock", &lock_arg])
        .arg("--log-file")
        .arg(&log);
    let launched = run_command(cmd);
    let printed: Option<i32> = launched
        .stdout
        .strip_prefix(&format!("{NAME}: running in the background with pid "))
        .and_then(|rest| rest.trim_end().parse().ok());
    let daemon = KillOnDrop::new(printed.unwrap_or_else(|| panic!("{launched:?}")));
    wait_for_line(&log, &format!("{NAME} started: pid {}", daemon.pid()));
    let lock = setup.path(&lock_arg);
    assert_eq!(
        std::fs::read_to_string(&lock).ok(),
        Some(format!("{}\n", daemon.pid())),
        "the lock is not at {}",
        lock.display()
    );
    assert!(!stray.0[0].exists(), "{} was created", stray.0[0].display());
    send_signal(daemon.pid(), Sig::SIGTERM);
    wait_for(DEADLINE, "the daemon to exit", || !daemon.is_alive());
    assert!(!lock.exists());
}

// ---------------------------------------------------------------------------
// MemoryPlugin
// ---------------------------------------------------------------------------

/// The two numbers of `memory: rss X MiB, private Y MiB`.
fn memory_numbers(message: &str) -> Option<(f64, f64)> {
    let rest = message.strip_prefix("memory: rss ")?;
    let (rss, rest) = rest.split_once(" MiB, private ")?;
    let private = rest.strip_suffix(" MiB")?;
    Some((rss.parse().ok()?, private.parse().ok()?))
}

#[test]
fn memory_plugin_logs_memory_use() {
    let setup = Setup::new(Kind::File);
    let instance = setup.start("memory.log", &["--memory-every", "0.2"]);
    let memory_lines = || -> Vec<LogLine> {
        instance
            .lines()
            .into_iter()
            .filter(|l| l.message.starts_with("memory: "))
            .collect()
    };
    // It repeats: at least two lines.
    wait_for(DEADLINE, "two `memory: rss` lines", || {
        memory_lines().len() >= 2
    });
    for line in memory_lines() {
        let (rss, private) = memory_numbers(&line.message)
            .unwrap_or_else(|| panic!("malformed memory line {:?}", line.message));
        assert!(rss > 0.0 && private > 0.0, "{line:?}");
        assert_eq!(line.level, "INFO");
        assert_eq!((line.pid, line.role.as_str()), (instance.pid(), "main"));
        // One decimal.
        assert!(line
            .message
            .split(' ')
            .filter(|w| w.contains('.'))
            .all(|w| w.split('.').nth(1).is_some_and(|d| d.len() == 1)));
    }
    instance.stop();
    assert_eq!(
        memory_numbers("memory: rss 6.2 MiB, private 1.5 MiB"),
        Some((6.2, 1.5))
    );
}
