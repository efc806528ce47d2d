//! Black-box tests of the command line: `DaemonBuilder::main` and a daemon
//! that parses its own flags with `Program::parse` print the same `--help`,
//! `--version` and errors, and time options take durations.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cli_paths() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cli_paths"))
}

/// Runs `bin` with `args` and `CLI_PATH=path` to completion.
fn run_path(bin: &Path, path: &str, args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin);
    cmd.env("CLI_PATH", path).args(args);
    run_command(cmd)
}

/// The standard flags every daemon's `--help` lists.
const STANDARD: &[&str] = &[
    "status",
    "stop",
    "--daemon",
    "--pidfile <PATH>",
    "--log-file <PATH>",
    "--verbose",
    "--debug",
    "--interval <DURATION>",
    "--shutdown-timeout <DURATION>",
    "--restart-after <DURATION>",
    "--min-runtime <DURATION>",
    "-h, --help",
];

/// Asserts that `help` (a `--help` run) succeeded, starts with `start` and
/// names every flag in `flags`.
#[track_caller]
fn assert_help(help: &Finished, start: &str, flags: &[&str]) {
    assert_eq!(help.exit, Exit::Code(0), "{help:?}");
    assert!(help.stdout.starts_with(start), "{}", help.stdout);
    for flag in STANDARD.iter().chain(flags) {
        assert!(help.stdout.contains(flag), "no {flag} in:\n{}", help.stdout);
    }
}

#[test]
fn help_is_the_same_on_both_paths() {
    let bin = cli_paths();
    assert_help(
        &run_path(&bin, "main", &["--help"]),
        "Ticks; parses its command line one of two ways.\n\nUsage: cli_paths ",
        &["-V, --version"],
    );
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["stop", "--help"],
        &["--version"],
        &["--nope"],
        &["--interval=-1"],
        &["--shutdown-timeout", "0"],
        &["stop", "--timeout", "soon"],
    ] {
        let main = run_path(&bin, "main", args);
        let program = run_path(&bin, "program", args);
        assert_eq!(main.exit, program.exit, "{args:?}");
        assert_eq!(main.stdout, program.stdout, "{args:?}");
        assert_eq!(main.stderr, program.stderr, "{args:?}");
    }
}

/// `main` after `args` runs with the flags `args` got, instead of parsing
/// the command line again without the daemon's own flags.
#[test]
fn main_after_args_keeps_the_parsed_command_line() {
    let out = run_path(
        &cli_paths(),
        "args_then_main",
        &["--once", "--interval", "0.01"],
    );
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert!(out.stderr.contains("INFO  tick 1"), "{out:?}");
}

#[test]
fn version_and_errors_name_the_program_on_both_paths() {
    let bin = cli_paths();
    for path in ["main", "program"] {
        let out = run_path(&bin, path, &["--version"]);
        assert_eq!(out.exit, Exit::Code(0), "{path}: {out:?}");
        assert_eq!(
            out.stdout,
            format!("cli_paths {}\n", env!("CARGO_PKG_VERSION")),
            "{path}"
        );
        let out = run_path(&bin, path, &["--interval", "soon"]);
        assert_eq!(out.exit, Exit::Code(64), "{path}: {out:?}");
        assert!(
            out.stderr.starts_with("cli_paths: error: ") && out.stderr.lines().count() == 1,
            "{path}: {out:?}"
        );
    }
}

/// A daemon with flags of its own (`simple_task`) keeps its name, version
/// and description, and lists every standard flag next to its own.
#[test]
fn own_flags_join_the_standard_help() {
    let bin = example_bin("simple_task");
    assert_help(
        &run(&bin, ["--help"]),
        "Starts a background task (a child process) every few loops.\n",
        &[
            "--every <N>",
            "--task-secs <DURATION>",
            "--stubborn",
            "-V, --version",
        ],
    );
    let out = run(&bin, ["--version"]);
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert!(out.stdout.starts_with("simple_task "), "{out:?}");
    let out = run(&bin, ["--nope"]);
    assert_eq!(out.exit, Exit::Code(64), "{out:?}");
    assert!(out.stderr.starts_with("simple_task: error: "), "{out:?}");
}

/// Time options take seconds or a number with a unit; the daemon reports
/// the interval it got.
#[test]
fn time_options_take_units() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ticks.log");
    let mut cmd = Command::new(cli_paths());
    cmd.env("CLI_PATH", "program")
        .args([
            "--interval",
            "50ms",
            "--shutdown-timeout",
            "2s",
            "--log-file",
        ])
        .arg(&log);
    let mut daemon = Daemon::spawn(cmd);
    wait_for(DEADLINE, "the started line", || {
        read_lines(&log)
            .iter()
            .any(|l| l.contains("cli_paths started: pid") && l.contains("interval 50ms"))
    });
    wait_for(DEADLINE, "tick 3", || {
        read_lines(&log).iter().any(|l| l.contains("tick 3"))
    });
    daemon.signal(Sig::SIGTERM);
    daemon.expect_exit_code(0);
}
