//! Security from outside (SECURITY.md): the control channel's directory and peer
//! checks, pid and lock file ownership, and the privilege drop. Most cases
//! need root (to plant files owned by another user, or to drop to `nobody`);
//! CI runs as root, and they say so and pass trivially elsewhere.

use integration_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The uid and gid of `nobody`.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (CI runs as root)");
            return;
        }
    };
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn hello() -> std::path::PathBuf {
    example_bin("hello_world")
}

/// hello_world in `dir` with `h.pid` and `h.log` there, and `extra` flags.
fn hello_in(dir: &Path, extra: &[&std::ffi::OsStr]) -> Daemon {
    let mut cmd = Command::new(hello());
    cmd.current_dir(dir)
        .args([
            "--pidfile",
            "h.pid",
            "--log-file",
            "h.log",
            "--interval",
            "0.05",
        ])
        .args(extra);
    Daemon::spawn(cmd)
}

#[test]
fn a_planted_control_directory_is_refused() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o700);

    // Another user's directory where ours would be created.
    let planted = runtime.join("daemonic");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&planted, 0o755);
    let mut cmd = Command::new(hello());
    cmd.env("XDG_RUNTIME_DIR", &runtime)
        .args(["--interval", "0.05"]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "refusing control directory {}: it is owned by uid {NOBODY}",
            planted.display()
        )),
        "{out:?}"
    );
    assert!(
        !planted.join("hello_world").exists(),
        "nothing created in it"
    );

    // A symlink to a directory of ours is refused too.
    std::fs::remove_dir(&planted).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &planted).unwrap();
    let mut cmd = Command::new(hello());
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(out.stderr.contains("it is a symlink"), "{out:?}");
    assert!(!elsewhere.join("hello_world").exists());

    // And so is one of ours that others can write to.
    std::fs::remove_file(&planted).unwrap();
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o777);
    let mut cmd = Command::new(hello());
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(
        out.stderr.contains("it is writable by group or other"),
        "{out:?}"
    );
}

#[test]
fn a_control_peer_with_another_uid_is_refused() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = hello_in(dir.path(), &[]);
    let log = dir.path().join("h.log");
    let control = dir.path().join(".hello_world.control");
    let socket = control.join("control.sock");
    wait_for(DEADLINE, "the control socket", || socket.exists());
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);

    // An operator loosens the permissions by hand: only the daemon's own
    // check is left between another user and `stop`.
    chmod(dir.path(), 0o711);
    chmod(&control, 0o711);
    chmod(&socket, 0o666);
    for request in ["status", "stop"] {
        let mut cmd = Command::new(hello());
        cmd.current_dir(dir.path())
            .args(["--pidfile", "h.pid", request])
            .uid(NOBODY)
            .gid(NOBODY);
        let out = run_command(cmd);
        assert_eq!(out.exit.code(), Some(77), "{request}: {out:?}");
        assert!(
            out.stderr
                .contains("refused: uid 65534 may not use this daemon's control channel"),
            "{request}: {out:?}"
        );
    }
    wait_for_line(&log, "control channel: refused a connection from uid 65534");
    assert!(
        !read_lines(&log)
            .iter()
            .any(|l| l.contains("stop requested")),
        "the refused stop did nothing"
    );
    // Root still gets an answer.
    let mut cmd = Command::new(hello());
    cmd.current_dir(dir.path())
        .args(["--pidfile", "h.pid", "status"]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
}

/// A field of `/proc/<pid>/status` (`Uid:`, `Gid:`, `Groups:`, `Umask:`).
fn status_field(path: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// Every id of every thread of `pid` is `id` (real, effective, saved, fs),
/// and root's group is not among its groups.
fn assert_runs_as(pid: i32, id: u32, what: &str) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("{what} (pid {pid}) is gone: {e}"));
    let want = format!("{id}\t{id}\t{id}\t{id}");
    for task in tasks.flatten() {
        let status = task.path().join("status");
        for field in ["Uid:", "Gid:"] {
            let value = status_field(&status, field).unwrap_or_default();
            assert_eq!(value, want, "{what} {}: {field}", task.path().display());
        }
        let groups = status_field(&status, "Groups:").unwrap_or_default();
        assert!(
            groups.split_whitespace().all(|g| g != "0"),
            "{what}: groups {groups:?}"
        );
    }
}

fn core_limit(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .map(|l| {
            l.split_whitespace()
                .skip(4)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `--user nobody`: the daemon, its fork server, its worker and its task all
/// run as nobody (every thread, every id), none can become root again, core
/// dumps are off, and the dropped daemon still reopens its log after a
/// rotation, answers `status`, and removes its pid file and socket.
#[test]
fn user_nobody_runs_the_daemon_workers_and_tasks_as_nobody() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    // The directory the operator gives the daemon's user (systemd's
    // RuntimeDirectory= does the same).
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(dir.path(), 0o755);
    let bin = example_bin("privileges");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(dir.path()).args([
        "--user",
        "nobody",
        "--pidfile",
        "p.pid",
        "--log-file",
        "p.log",
        "--interval",
        "0.1",
    ]);
    let mut daemon = Daemon::spawn(cmd);
    let log = dir.path().join("p.log");
    let worker_line = wait_for_line(&log, "worker pid ");
    let task_line = wait_for_line(&log, "task pid ");
    let main_line = wait_for_line(&log, "main pid ");
    let pid_in = |line: &str, after: &str| -> i32 {
        let rest = &line[line.find(after).unwrap() + after.len()..];
        rest[..rest.find(':').unwrap()].parse().unwrap()
    };
    let worker = pid_in(&worker_line, "worker pid ");
    let task = pid_in(&task_line, "task pid ");
    assert_eq!(pid_in(&main_line, "main pid "), daemon.pid());

    assert_runs_as(daemon.pid(), NOBODY, "the daemon");
    assert_runs_as(worker, NOBODY, "the worker");
    assert_runs_as(task, NOBODY, "the task");
    let fork_servers: Vec<i32> = live_in_group(daemon.pid())
        .into_iter()
        .filter(|p| proc_cmdline(p.pid).is_some_and(|c| c.contains("fork-server")))
        .map(|p| p.pid)
        .collect();
    assert_eq!(fork_servers.len(), 1, "one fork server");
    assert_runs_as(fork_servers[0], NOBODY, "the fork server");
    for line in [&main_line, &worker_line, &task_line] {
        assert!(line.contains("regain root: refused"), "{line}");
    }
    assert!(
        !read_lines(&log)
            .iter()
            .any(|l| l.contains("regain root: SUCCEEDED")),
        "something became root again"
    );
    for (pid, what) in [(daemon.pid(), "daemon"), (worker, "worker"), (task, "task")] {
        assert_eq!(core_limit(pid), "0 0", "core dumps of the {what}");
    }

    // The dropped daemon answers to root only when told whom to expect.
    let control = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(dir.path())
            .args(["--pidfile", "p.pid"])
            .args(args);
        run_command(cmd)
    };
    let out = control(&["status"]);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(
        out.stderr.contains("uid 65534") && out.stderr.contains("give the same --user"),
        "{out:?}"
    );
    let out = control(&["--user", "nobody", "status"]);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
    assert!(out.stdout.starts_with("privileges is running"), "{out:?}");

    // The log file it created is the user's: SIGHUP can reopen it.
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), NOBODY);
    // Rotation: the dropped daemon creates the new log file itself.
    std::fs::rename(&log, dir.path().join("p.log.1")).unwrap();
    daemon.signal(Sig::SIGHUP);
    wait_for_line(&log, "worker pid ");
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), NOBODY);
    assert!(
        daemon.is_running(),
        "SIGHUP reopened the log, it did not restart"
    );

    let out = control(&["--user", "nobody", "stop"]);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
    daemon.expect_exit_code(0);
    assert!(!dir.path().join("p.pid").exists(), "pid file removed");
    assert!(
        !dir.path().join(".privileges.control").exists(),
        "control socket removed"
    );
}

/// `--umask 000` widens what the daemon creates, never its control socket;
/// `--chdir` moves the working directory once started.
#[test]
fn umask_and_chdir_apply_and_the_socket_stays_private() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let daemon = hello_in(
        dir.path(),
        &[
            "--umask".as_ref(),
            "000".as_ref(),
            "--chdir".as_ref(),
            elsewhere.path().as_os_str(),
        ],
    );
    let log = dir.path().join("h.log");
    wait_for_line(&log, "Hello World");
    let status = format!("/proc/{}/status", daemon.pid());
    assert_eq!(
        status_field(Path::new(&status), "Umask:").as_deref(),
        Some("0000")
    );
    assert_eq!(proc_cwd(daemon.pid()).as_deref(), Some(elsewhere.path()));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(
        mode(&log),
        0o640,
        "the log file's own mode, umask 000 removes nothing"
    );
    let control = dir.path().join(".hello_world.control");
    assert_eq!(mode(&control), 0o700);
    assert_eq!(mode(&control.join("control.sock")), 0o600);
}

/// `--chroot`: the daemon's root directory changes once started (files it
/// opened before stay open).
#[test]
fn chroot_changes_the_root_directory() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let jail = tempfile::tempdir().unwrap();
    let mut daemon = hello_in(dir.path(), &["--chroot".as_ref(), jail.path().as_os_str()]);
    let log = dir.path().join("h.log");
    wait_for_line(&log, &format!("root directory {}", jail.path().display()));
    wait_for_loop(&log, 3);
    let root = std::fs::read_link(format!("/proc/{}/root", daemon.pid())).unwrap();
    assert_eq!(root, jail.path());
    daemon.signal(Sig::SIGTERM);
    daemon.expect_exit_code(0);
    assert!(
        !dir.path().join("h.pid").exists(),
        "the pid file is removed through the directory opened before the chroot"
    );
    assert!(
        !dir.path().join(".hello_world.control").exists(),
        "so is the control socket and its directory"
    );
}
