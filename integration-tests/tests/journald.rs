//! Syslog priority prefixes on stderr when it is the journal
//! (`JOURNAL_STREAM`), seen from outside with the `ops` example.

use integration_tests::*;
use std::process::Command;

#[test]
fn stderr_lines_carry_syslog_priorities_when_it_is_the_journal() {
    // What systemd does for a service whose stderr is the journal: name the
    // stream's device and inode in JOURNAL_STREAM. Here the stream is the
    // file the harness gives the daemon as stderr.
    let start = |journal: bool, extra: &[&str]| {
        let mut cmd = Command::new("sh");
        let set = if journal {
            "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); export JOURNAL_STREAM; "
        } else {
            "JOURNAL_STREAM=1:1; export JOURNAL_STREAM; "
        };
        cmd.arg("-c")
            .arg(format!("{set}exec \"$0\" \"$@\""))
            .arg(example_bin("ops"))
            .args([
                "--interval",
                "0.05",
                "--crash-every",
                "4",
                "--fail-every",
                "3",
            ])
            .args(extra);
        Daemon::spawn(cmd)
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ops.log");
    let file_arg = file.to_str().unwrap();
    let mut journal = start(true, &["--log-file", file_arg, "-v"]);
    let mut plain = start(false, &[]);
    let wanted = ["<3>", "<4>", "<6>"];
    wait_for(DEADLINE, "error, warning and info lines on stderr", || {
        let err = journal.stderr();
        wanted.iter().all(|p| err.lines().any(|l| l.starts_with(p)))
            && plain.stderr().contains("job refused")
    });
    journal.signal(Sig::SIGTERM);
    journal.expect_exit_code(0);
    plain.signal(Sig::SIGTERM);
    plain.expect_exit_code(0);

    let stderr = journal.stderr();
    let mut worker_lines = 0;
    for line in stderr.lines() {
        let (prefix, rest) = line.split_at(3);
        let parsed = parse_log_line(rest).unwrap_or_else(|| panic!("not a log line: {line:?}"));
        let expected = match parsed.level.as_str() {
            "ERROR" => "<3>",
            "WARN" => "<4>",
            "INFO" => "<6>",
            _ => "<7>",
        };
        assert_eq!(prefix, expected, "{line}");
        worker_lines += usize::from(parsed.role.starts_with("worker:"));
    }
    assert!(
        worker_lines > 0,
        "workers' lines are prefixed too:\n{stderr}"
    );
    assert!(stderr.contains("ERROR job failed"), "{stderr}");
    // The log file and a stderr that is not the journal get no prefixes.
    let plain_lines: Vec<String> = plain.stderr().lines().map(str::to_string).collect();
    for line in read_lines(&file).iter().chain(&plain_lines) {
        assert!(parse_log_line(line).is_some(), "unprefixed: {line:?}");
    }
    assert!(!read_lines(&file).is_empty());
}
