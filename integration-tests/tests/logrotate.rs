//! The shipped logrotate configurations (examples/logrotate/), run with the
//! real `logrotate -f` against a running daemon that logs every 10 ms.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The path the shipped configurations name.
const SHIPPED_PATH: &str = "/var/log/hello_world/hello_world.log";

fn logrotate() -> &'static str {
    let bin = "/usr/sbin/logrotate";
    assert!(
        Path::new(bin).is_file(),
        "{bin} is missing: `apt-get install logrotate` (.ci/run installs it)"
    );
    bin
}

/// The shipped configuration `name`, pointed at `log` and written to `dir`.
fn config(name: &str, dir: &Path, log: &Path) -> PathBuf {
    let shipped = workspace_root().join("examples/logrotate").join(name);
    let text = std::fs::read_to_string(&shipped).expect("the shipped configuration");
    assert!(text.contains(SHIPPED_PATH), "{}", shipped.display());
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, text.replace(SHIPPED_PATH, log.to_str().unwrap())).unwrap();
    path
}

fn run_logrotate(config: &Path, state: &Path) {
    let mut cmd = Command::new(logrotate());
    cmd.arg("-f").arg("-s").arg(state).arg(config);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(0), "logrotate failed: {out:?}");
}

fn start_hello(dir: &Path) -> Daemon {
    let mut cmd = Command::new(example_bin("hello_world"));
    cmd.current_dir(dir)
        .args(["--log-file", "hello_world.log", "--interval", "0.01"]);
    Daemon::spawn(cmd)
}

/// Every line of `path` is a whole log line (none torn, no NUL bytes).
#[track_caller]
fn assert_whole_lines(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(!bytes.contains(&0), "{} has NUL bytes", path.display());
    for line in read_lines(path) {
        assert!(parse_log_line(&line).is_some(), "torn line {line:?}");
    }
}

/// `numbers` are `from..=to` in order, none missing, none twice.
#[track_caller]
fn assert_contiguous(numbers: &[u64], from: u64, what: &str) {
    assert!(!numbers.is_empty(), "{what}: no loop lines");
    let expected: Vec<u64> = (from..from + numbers.len() as u64).collect();
    assert_eq!(
        numbers,
        expected.as_slice(),
        "{what}: lost or repeated lines"
    );
}

#[test]
fn rename_mode_loses_no_line_and_writes_none_to_the_old_file_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hello_world.log");
    let conf = config("hello_world", dir.path(), &log);
    let mut daemon = start_hello(dir.path());
    wait_for_loop(&log, 30);

    run_logrotate(&conf, &dir.path().join("state"));
    let rotated = dir.path().join("hello_world.log.1");
    assert!(rotated.is_file(), "logrotate renamed the file");
    // The daemon reopens on its own: lines keep coming in the new file.
    wait_for(DEADLINE, "20 loop lines in the new file", || {
        loop_numbers_in(&log).len() >= 20
    });
    daemon.signal(Sig::SIGTERM);
    daemon.expect_exit_code(0);

    let old = loop_numbers_in(&rotated);
    let new = loop_numbers_in(&log);
    assert_contiguous(&old, 1, "rotated file");
    // The new file starts right after the old one ends: no line lost, and no
    // line reached the old file once the new one was in use.
    assert_contiguous(&new, old[old.len() - 1] + 1, "new file");
    assert_whole_lines(&rotated);
    assert_whole_lines(&log);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640, "created as the configuration says");
}

#[test]
fn copytruncate_mode_keeps_writing_at_the_start_of_the_emptied_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hello_world.log");
    let conf = config("hello_world-copytruncate", dir.path(), &log);
    let mut daemon = start_hello(dir.path());
    wait_for_loop(&log, 30);
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());

    // copytruncate loses whatever is written between its copy and its
    // truncation, whoever the writer is (the shipped file says so). The
    // daemon is stopped for that moment so the test checks what the daemon
    // controls: every line before the copy is kept, and after the
    // truncation the daemon writes at the start of the emptied file.
    daemon.signal(Sig::SIGSTOP);
    run_logrotate(&conf, &dir.path().join("state"));
    daemon.signal(Sig::SIGCONT);

    let rotated = dir.path().join("hello_world.log.1");
    assert!(rotated.is_file(), "logrotate copied the file");
    wait_for(DEADLINE, "20 loop lines in the emptied file", || {
        loop_numbers_in(&log).len() >= 20
    });
    daemon.signal(Sig::SIGTERM);
    daemon.expect_exit_code(0);

    let inode_after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
    assert_eq!(inode, inode_after, "the same file, truncated in place");
    let old = loop_numbers_in(&rotated);
    let new = loop_numbers_in(&log);
    assert_contiguous(&old, 1, "copied file");
    assert_contiguous(&new, old[old.len() - 1] + 1, "truncated file");
    // O_APPEND: the first line after the truncation starts at offset 0.
    assert_whole_lines(&log);
    assert_whole_lines(&rotated);
}
