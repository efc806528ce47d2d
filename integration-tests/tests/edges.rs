//! The failure edges of a whole daemon, from outside: a stopped fork server
//! blocks neither signals, `status` nor calls; `--daemon` keeps the
//! program's own descriptors; a restart after an upgrade runs the new binary.

use integration_tests::*;
use nix::sys::signal::Signal as Sig;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fd_keeper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fd_keeper"))
}

fn pidfile_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn a_stopped_fork_server_blocks_neither_status_nor_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let (pidfile, log) = (dir.path().join("w.pid"), dir.path().join("w.log"));
    let mut daemon = Daemon::start(
        &example_bin("simple_worker"),
        [
            "--pidfile".as_ref(),
            pidfile.as_os_str(),
            "--log-file".as_ref(),
            log.as_os_str(),
            "--interval".as_ref(),
            "0.05".as_ref(),
        ],
    );
    let pid = daemon.pid();
    let workers = || {
        children_of(pid)
            .into_iter()
            .filter(|c| c.comm.starts_with("worker:"))
            .collect::<Vec<_>>()
    };
    wait_for(DEADLINE, "two workers", || workers().len() >= 2);
    let server = wait_for_value(DEADLINE, "the fork server", || {
        children_of(pid)
            .into_iter()
            .find(|c| c.comm == "fork-server")
            .map(|c| c.pid)
    });
    send_signal(server, Sig::SIGSTOP);
    let _continue = KillOnDrop::new(server); // never left stopped
                                             // A worker dies: its replacement is asked of the stopped fork server.
    send_signal(workers()[0].pid, Sig::SIGKILL);
    wait_for(DEADLINE, "the daemon to notice the death", || {
        read_lines(&log)
            .iter()
            .any(|l| l.contains("exited (killed by SIGKILL)"))
    });

    let began = Instant::now();
    let status = run(
        &example_bin("simple_worker"),
        ["--pidfile".as_ref(), pidfile.as_os_str(), "status".as_ref()],
    );
    let answered = began.elapsed();
    eprintln!("status with a stopped fork server answered in {answered:?}");
    assert_eq!(status.exit.code(), Some(0), "{status:?}");
    assert!(status.stdout.contains("pool"), "{}", status.stdout);
    assert!(
        answered < Duration::from_secs(2),
        "status waited: {answered:?}"
    );
    // The loop keeps calling, and the healthy worker answers, meanwhile.
    let answers = || {
        read_lines(&log)
            .iter()
            .filter(|l| l.contains("random string:"))
            .count()
    };
    let before = answers();
    wait_for(DEADLINE, "answers with the fork server stopped", || {
        answers() >= before + 3
    });

    let began = Instant::now();
    daemon.signal(Sig::SIGTERM);
    wait_for(Duration::from_secs(2), "the shutdown to start", || {
        read_lines(&log).iter().any(|l| l.contains("shutting down"))
    });
    eprintln!("shutdown started {:?} after SIGTERM", began.elapsed());
    daemon.expect_exit_code(0);
    assert!(
        poll_until(DEADLINE, || !is_alive(server)),
        "the fork server went with the daemon"
    );
    assert!(pidfile_pid(&pidfile).is_none(), "pid file removed");
}

/// A pipe whose write end the daemon inherits at fd 7; returns both ends
/// (drop the write end once the command started).
fn inherited_pipe(cmd: &mut Command) -> (OwnedFd, OwnedFd) {
    let (read, write) = nix::unistd::pipe().unwrap();
    let raw = write.as_raw_fd();
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (read, write)
}

#[test]
fn daemon_mode_keeps_the_programs_own_descriptors_and_closes_inherited_ones() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let (pidfile, log, journal) = (
        dir.path().join("k.pid"),
        dir.path().join("k.log"),
        dir.path().join("journal"),
    );
    let mut cmd = Command::new(fd_keeper());
    cmd.args([
        "--daemon".as_ref(),
        "--pidfile".as_ref(),
        pidfile.as_os_str(),
        "--log-file".as_ref(),
        log.as_os_str(),
        "--journal".as_ref(),
        journal.as_os_str(),
    ]);
    let (read, write) = inherited_pipe(&mut cmd);
    let launched = run_command(cmd);
    drop(write);
    assert_eq!(launched.exit.code(), Some(0), "{launched:?}");
    let daemon = KillOnDrop::new(pidfile_pid(&pidfile).expect("pid file written"));
    // The file opened before run() is still the program's: ticks reach it.
    wait_for(DEADLINE, "ticks in the journal", || {
        std::fs::read_to_string(&journal).is_ok_and(|t| t.lines().count() >= 5)
    });
    assert!(
        !read_lines(&log).iter().any(|l| l.contains("cannot write")),
        "{:?}",
        read_lines(&log)
    );
    // The inherited pipe was closed: with the launcher gone too, its reader
    // sees the end of the stream.
    let mut file = std::fs::File::from(read);
    let fd = file.as_raw_fd();
    // SAFETY: making our own pipe end non-blocking.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    wait_for(DEADLINE, "the inherited pipe to be closed", || {
        let mut buf = [0u8; 1];
        matches!(std::io::Read::read(&mut file, &mut buf), Ok(0))
    });
    send_signal(daemon.pid(), Sig::SIGTERM);
    assert!(poll_until(DEADLINE, || !daemon.is_alive()));
}

#[test]
fn a_restart_after_an_upgrade_runs_the_new_binary() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillByArg::new(dir.path().to_str().unwrap());
    let log = dir.path().join("app.log");
    let app = dir.path().join("app");
    std::fs::copy(example_bin("hello_world"), &app).unwrap();
    let mut cmd = Command::new(&app);
    cmd.args(["--log-file".as_ref(), log.as_os_str()])
        .stdin(Stdio::null());
    let mut daemon = Daemon::spawn(cmd);
    wait_for_line(&log, "hello_world started");
    // What a package manager does: write the new version beside the old
    // one, then rename it over it.
    let staged = dir.path().join("app.new");
    std::fs::copy(example_bin("simple_task"), &staged).unwrap();
    std::fs::rename(&staged, &app).unwrap();
    daemon.signal(Sig::SIGHUP);
    let line = wait_for_line(&log, "simple_task started");
    assert!(line.contains(&format!("pid {}", daemon.pid())), "{line}");
    daemon.signal(Sig::SIGTERM);
    daemon.expect_exit_code(0);
}
