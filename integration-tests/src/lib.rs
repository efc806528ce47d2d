//! A small harness for black-box tests that run the workspace's example
//! binaries as real processes and look at them from outside: their log files,
//! pid files, exit codes and `/proc`.
//!
//! Everything here is bounded: waits poll with a deadline and panic with a
//! message naming what did not happen, and every process a test starts is
//! killed (with its whole process group) and reaped when its guard drops, even
//! when the test panics.
//!
//! The example binaries are brought up to date on first use, once per test
//! process, so the tests never run a stale binary: `cargo build --workspace
//! --examples`, the same package selection (and so the same features and the
//! same compiled `daemonic`) as the workspace build `.ci/run` makes first, so
//! after it this is a check that compiles nothing. Building one example
//! with `-p daemonic-examples` instead resolves features for that package
//! alone, compiles `daemonic` a second time and replaces the workspace
//! build's binaries. Set `DAEMONIC_IT_NO_BUILD=1` to use existing binaries
//! as they are.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal as Sig;

/// Deadline for anything that should happen "soon" (start-up, a signal being
/// handled, an exit). Generous: the success path does not wait for it.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often [`wait_for`] and friends look again.
pub const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Locating (and building) the example binaries
// ---------------------------------------------------------------------------

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("integration-tests lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the
/// workspace root when relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Path of the debug build of example `name`, the examples built first if
/// needed (see the crate docs). Panics with cargo's output if the build
/// fails.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let path = target_dir().join("debug").join("examples").join(name);
    let skip_build =
        std::env::var_os("DAEMONIC_IT_NO_BUILD").is_some_and(|v| !v.is_empty() && v != "0");
    if !(skip_build && path.is_file()) {
        BUILT.get_or_init(build_examples);
    }
    assert!(
        path.is_file(),
        "example binary {} does not exist after building the examples",
        path.display()
    );
    path
}

fn build_examples() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = ["build", "--quiet", "--workspace", "--examples"];
    let output = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(
        output.status.success(),
        "`cargo {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `cond` every [`POLL`] until it holds (`true`) or `timeout` passed
/// (`false`). The condition is always checked once more at the deadline.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`poll_until`] but panics naming `what` on timeout.
#[track_caller]
pub fn wait_for(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `f` until it returns `Some`, and returns that value; panics naming
/// `what` on timeout.
#[track_caller]
pub fn wait_for_value<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut value = None;
    if !poll_until(timeout, || {
        value = f();
        value.is_some()
    }) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
    value.expect("poll_until returned true")
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signaled(Signal),
}

impl Exit {
    /// The exit code, if it exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signaled(_) => None,
        }
    }
}

/// A process started by a test, in a process group of its own.
///
/// Its stdout and stderr go to files in a private temporary directory (so a
/// chatty process can never block on a full pipe). On drop the whole process
/// group is killed with SIGKILL and the process is reaped.
///
/// [`wait_exit`](Self::wait_exit) observes the exit *without* reaping
/// (`waitid(WNOWAIT)`): the zombie keeps the pid and the process group id
/// reserved, so killing the group later can never hit an unrelated process
/// that got a recycled pid. Use [`reap`](Self::reap) to kill the group and
/// reap explicitly.
#[derive(Debug)]
pub struct Daemon {
    pid: Pid,
    exit: Option<Exit>,
    reaped: bool,
    out_dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `bin` with `args` in the current directory.
    pub fn start<I, S>(bin: &Path, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Self::spawn(cmd)
    }

    /// Starts `cmd` (its stdio and process group are set here).
    pub fn spawn(mut cmd: Command) -> Self {
        use std::os::unix::process::CommandExt;
        let out_dir = tempfile::Builder::new()
            .prefix("daemonic-it-out")
            .tempdir()
            .expect("create output directory");
        let stdout = File::create(out_dir.path().join("stdout")).expect("create stdout file");
        let stderr = File::create(out_dir.path().join("stderr")).expect("create stderr file");
        // Each daemon gets its own runtime directory, so daemons started
        // without --pidfile never share a control socket (nor touch the
        // user's real one), unless the test chose one.
        if !cmd.get_envs().any(|(k, _)| k == "XDG_RUNTIME_DIR") {
            cmd.env("XDG_RUNTIME_DIR", out_dir.path());
        }
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Not under systemd, whatever the environment of the test says.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        // The harness waits for the process itself (see the type's docs);
        // std's `Child` neither kills nor waits when dropped.
        let pid = Pid::from_raw(child.id() as i32);
        drop(child);
        Self {
            pid,
            exit: None,
            reaped: false,
            out_dir,
        }
    }

    /// The process's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `signal` to the process (not to its group).
    #[track_caller]
    pub fn signal(&self, signal: Signal) {
        assert!(
            self.exit.is_none(),
            "signal {signal} sent to pid {} after it exited",
            self.pid
        );
        kill(self.pid, signal).unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.pid));
    }

    /// Whether it exited, without blocking and without reaping it.
    pub fn try_exit(&mut self) -> Option<Exit> {
        if self.exit.is_some() {
            return self.exit;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let status = loop {
            match waitid(Id::Pid(self.pid), flags) {
                Err(Errno::EINTR) => continue,
                other => break other.unwrap_or_else(|e| panic!("waitid({}): {e}", self.pid)),
            }
        };
        self.exit = match status {
            WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
            WaitStatus::Signaled(_, sig, _) => Some(Exit::Signaled(sig)),
            _ => None,
        };
        self.exit
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit; panics if it does not.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> Exit {
        let pid = self.pid;
        wait_for_value(timeout, &format!("pid {pid} to exit"), || self.try_exit())
    }

    /// Waits for the exit and asserts it was with `code`.
    #[track_caller]
    pub fn expect_exit_code(&mut self, code: i32) {
        let exit = self.wait_exit(DEADLINE);
        assert_eq!(
            exit,
            Exit::Code(code),
            "unexpected exit of pid {}; stderr:\n{}",
            self.pid,
            self.stderr()
        );
    }

    /// Kills what is left of the process group and reaps the process. Returns
    /// how the process ended (SIGKILL if it was still running).
    pub fn reap(&mut self) -> Exit {
        if !self.reaped {
            // The process is not reaped yet, so its pid (= the group id) is
            // still ours even if it is a zombie.
            match kill(Pid::from_raw(-self.pid.as_raw()), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => panic!("killpg({}): {e}", self.pid),
            }
            let status = loop {
                match waitpid(self.pid, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            self.reaped = true;
            let exit = match status {
                Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => Exit::Signaled(sig),
                other => panic!("waitpid({}): {other:?}", self.pid),
            };
            self.exit.get_or_insert(exit);
        }
        self.exit.expect("set when reaped")
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.out_dir.path().join("stdout")).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.out_dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(Pid::from_raw(-self.pid.as_raw()), Signal::SIGKILL);
            while let Err(Errno::EINTR) = waitpid(self.pid, None) {}
            self.reaped = true;
        }
    }
}

/// A finished short run of a binary.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub exit: Exit,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `bin` with `args` to completion (at most [`DEADLINE`]) and reaps it.
#[track_caller]
pub fn run<I, S>(bin: &Path, args: I) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin);
    cmd.args(args);
    run_command(cmd)
}

/// Runs `cmd` to completion (at most [`DEADLINE`]) and reaps it.
#[track_caller]
pub fn run_command(cmd: Command) -> Finished {
    let mut process = Daemon::spawn(cmd);
    let exit = process.wait_exit(DEADLINE);
    process.reap();
    Finished {
        exit,
        stdout: process.stdout(),
        stderr: process.stderr(),
    }
}

/// Kills a process that is not our child (a daemonized process, which left
/// our process group with `setsid`) when dropped, together with its process
/// group. The process's start time is recorded so that a recycled pid is
/// never killed.
#[derive(Debug)]
pub struct KillOnDrop {
    pid: i32,
    start_time: Option<u64>,
}

impl KillOnDrop {
    /// Guards `pid` (which should be alive now).
    pub fn new(pid: i32) -> Self {
        Self {
            pid,
            start_time: proc_stat(pid).map(|s| s.start_time),
        }
    }

    /// The guarded pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the guarded process (not a recycled pid) still runs.
    pub fn is_alive(&self) -> bool {
        match (proc_stat(self.pid), self.start_time) {
            (Some(stat), Some(start)) => stat.start_time == start && stat.state != 'Z',
            _ => false,
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(stat) = proc_stat(self.pid) else {
            return;
        };
        if Some(stat.start_time) != self.start_time || stat.state == 'Z' {
            return;
        }
        // While the process lives its group id cannot be recycled either.
        if stat.pgrp > 1 && stat.pgrp != own_pgrp() {
            let _ = kill(Pid::from_raw(-stat.pgrp), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        // Not our child: whoever it was reparented to reaps it.
        poll_until(DEADLINE, || !self.is_alive());
    }
}

/// Kills, when dropped, every live process that has an argument containing
/// `needle`: the catch-all for daemonized processes whose pid a failing test
/// never learnt. Give it a needle unique to the test (its temporary
/// directory's path or name).
#[derive(Debug)]
pub struct KillByArg(String);

impl KillByArg {
    /// Guards the processes mentioning `needle`.
    pub fn new(needle: impl Into<String>) -> Self {
        let needle = needle.into();
        assert!(
            needle.len() >= 8,
            "needle {needle:?} is not specific enough"
        );
        Self(needle)
    }
}

impl Drop for KillByArg {
    fn drop(&mut self) {
        for pid in pids_with_arg(&self.0) {
            if pid != own_pid() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn own_pgrp() -> i32 {
    nix::unistd::getpgrp().as_raw()
}

/// Sends `signal` to `pid`.
#[track_caller]
pub fn send_signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("kill({pid}, {signal}): {e}"));
}

/// Kills process group `pgid` with SIGKILL (no error if it is gone).
pub fn kill_group(pgid: i32) {
    assert!(
        pgid > 1 && pgid != own_pgrp(),
        "refusing to kill process group {pgid}"
    );
    let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok() && proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// Fields of `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1.
    pub pid: i32,
    /// Field 2, without the parentheses.
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, ...
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 6: session id.
    pub session: i32,
    /// Field 7: controlling terminal (0 = none).
    pub tty_nr: i32,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`; `None` if the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// Parses the text of a `/proc/<pid>/stat` file.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    // comm may contain spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3.
    let field = |n: usize| rest.get(n - 3).copied();
    Some(ProcStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        tty_nr: field(7)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Field `n` (1-based, as in `proc(5)`) of `/proc/<pid>/stat`, as text;
/// `None` if the process does not exist or has no such field. Fields 1 and 2
/// are the pid and the command name (without parentheses).
pub fn proc_stat_field(pid: i32, n: usize) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&text, n)
}

fn stat_field(text: &str, n: usize) -> Option<String> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    match n {
        0 => None,
        1 => Some(text[..open].trim().to_string()),
        2 => Some(text[open + 1..close].to_string()),
        _ => text[close + 1..]
            .split_whitespace()
            .nth(n - 3)
            .map(str::to_string),
    }
}

/// The arguments of `/proc/<pid>/cmdline` joined with spaces (empty
/// arguments, such as a rewritten process title's padding, dropped); `None`
/// if the process does not exist.
pub fn proc_cmdline(pid: i32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .filter(|arg| !arg.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Every process in process group `pgid`, zombies included.
pub fn group_members(pgid: i32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .filter(|s| s.pgrp == pgid)
        .collect()
}

/// The live (non-zombie) processes in process group `pgid`.
pub fn live_in_group(pgid: i32) -> Vec<ProcStat> {
    group_members(pgid)
        .into_iter()
        .filter(|s| s.state != 'Z')
        .collect()
}

/// Whether the process described by `stat` (as seen earlier) still runs: the
/// same pid with the same start time, not a zombie. A recycled pid is not it.
pub fn still_running(stat: &ProcStat) -> bool {
    proc_stat(stat.pid).is_some_and(|now| now.start_time == stat.start_time && now.state != 'Z')
}

/// Target of `/proc/<pid>/cwd`.
pub fn proc_cwd(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Target of `/proc/<pid>/fd/<fd>`.
pub fn proc_fd(pid: i32, fd: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

/// The `Umask:` of `/proc/<pid>/status`.
pub fn proc_umask(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// All processes whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .filter(|s| s.ppid == ppid)
        .collect()
}

/// Pids of the zombie children of `ppid`.
pub fn zombie_children(ppid: i32) -> Vec<i32> {
    children_of(ppid)
        .into_iter()
        .filter(|s| s.state == 'Z')
        .map(|s| s.pid)
        .collect()
}

/// Pids of the live (non-zombie) processes, other than this one, with an
/// argument containing `needle` (give each test unique paths to find its
/// processes by).
pub fn pids_with_arg(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
        })
        .filter(|&pid| pid != own_pid() && is_alive(pid))
        .collect()
}

/// This test process's pid.
pub fn own_pid() -> i32 {
    std::process::id() as i32
}

// ---------------------------------------------------------------------------
// Log files
// ---------------------------------------------------------------------------

/// The complete lines of `path` (a missing file has none; a last line still
/// being written, without its newline, is left out).
pub fn read_lines(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete.split('\n').map(str::to_string).collect()
}

/// One parsed log line:
/// `2026-11-24T19:24:23.661Z [<daemon pid>/<pid> <role>] INFO  message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 UTC timestamp with milliseconds.
    pub timestamp: String,
    /// Pid of the daemon's main process.
    pub daemon_pid: i32,
    /// Pid of the process that logged the line.
    pub pid: i32,
    /// `main`, `worker:..`, ...
    pub role: String,
    /// `INFO`, `WARN`, `ERROR`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The message.
    pub message: String,
}

fn is_timestamp(s: &str) -> bool {
    // 2026-11-24T19:24:23.661Z
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Parses a log line, `None` if it is not in the documented format.
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let (timestamp, rest) = line.split_once(' ')?;
    if !is_timestamp(timestamp) {
        return None;
    }
    let rest = rest.strip_prefix('[')?;
    let (tag, rest) = rest.split_once("] ")?;
    let (pids, role) = tag.split_once(' ')?;
    let (daemon_pid, pid) = pids.split_once('/')?;
    // The level is padded to five characters, then one space.
    let level = rest.get(..5)?;
    let message = rest.get(5..)?.strip_prefix(' ')?;
    let level = level.trim_end();
    if !["INFO", "WARN", "ERROR", "DEBUG", "TRACE"].contains(&level) || role.is_empty() {
        return None;
    }
    Some(LogLine {
        timestamp: timestamp.to_string(),
        daemon_pid: daemon_pid.parse().ok()?,
        pid: pid.parse().ok()?,
        role: role.to_string(),
        level: level.to_string(),
        message: message.to_string(),
    })
}

/// The `N` of a `Hello World. Loop N` line (any line whose message ends in
/// `Loop N`).
pub fn loop_number(line: &str) -> Option<u64> {
    let message = parse_log_line(line).map_or_else(|| line.to_string(), |l| l.message);
    let (_, n) = message.rsplit_once("Loop ")?;
    n.parse().ok()
}

/// The loop numbers in `lines`, in file order.
pub fn loop_numbers(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| loop_number(l)).collect()
}

/// The loop numbers logged to `path` so far.
pub fn loop_numbers_in(path: &Path) -> Vec<u64> {
    loop_numbers(&read_lines(path))
}

/// The highest loop number logged to `path` so far (0 if none).
pub fn max_loop(path: &Path) -> u64 {
    loop_numbers_in(path).into_iter().max().unwrap_or(0)
}

/// Waits until `path` has a line containing `needle`; returns that line.
#[track_caller]
pub fn wait_for_line(path: &Path, needle: &str) -> String {
    wait_for_value(
        DEADLINE,
        &format!("a line containing {needle:?} in {}", path.display()),
        || read_lines(path).into_iter().find(|l| l.contains(needle)),
    )
}

/// Waits until `path` has logged loop `n` (or a later one).
#[track_caller]
pub fn wait_for_loop(path: &Path, n: u64) {
    wait_for(DEADLINE, &format!("loop {n} in {}", path.display()), || {
        max_loop(path) >= n
    });
}

// ---------------------------------------------------------------------------
// POSIX shared memory
// ---------------------------------------------------------------------------

/// Where Linux exposes POSIX shared-memory objects.
pub const SHM_DIR: &str = "/dev/shm";

/// Prefix of the shared-memory lock names the tests use: `it-<pid>-<n>`.
pub const SHM_TEST_PREFIX: &str = "it-";

/// A shared-memory lock name unique to this test process and call:
/// `it-<pid>-<n>` (so tests running in parallel, in this process or in
/// another, never share one).
pub fn unique_shm_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{SHM_TEST_PREFIX}{}-{n}", own_pid())
}

/// The object behind daemonic's `ShmLock::new(name)`:
/// `/dev/shm/daemonic.<name>`.
pub fn shm_lock_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("daemonic.{name}"))
}

/// Removes the shared-memory lock object of `name` when dropped (a daemon
/// killed with SIGKILL leaves it behind). Created, it also removes the
/// `daemonic.it-<pid>-*` objects left by test processes that no longer run;
/// those of live test processes (tests running in parallel) are left alone.
#[derive(Debug)]
pub struct ShmGuard {
    path: PathBuf,
}

impl ShmGuard {
    /// Guards `name`'s object (see [`shm_lock_path`]).
    pub fn new(name: &str) -> Self {
        remove_stale_test_shm();
        Self {
            path: shm_lock_path(name),
        }
    }

    /// The guarded object's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes `daemonic.it-<pid>-*` shared-memory objects whose `<pid>` is not a
/// live process (left by an earlier test run that was killed).
pub fn remove_stale_test_shm() {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return;
    };
    let prefix = format!("daemonic.{SHM_TEST_PREFIX}");
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if owner.is_some_and(|pid| pid != own_pid() && !is_alive(pid)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_log_line() {
        let line = "2026-11-24T19:24:23.661Z [812/813 main] INFO  Hello World. Loop 17";
        let parsed = parse_log_line(line).unwrap();
        assert_eq!(parsed.daemon_pid, 812);
        assert_eq!(parsed.pid, 813);
        assert_eq!(parsed.role, "main");
        assert_eq!(parsed.level, "INFO");
        assert_eq!(parsed.message, "Hello World. Loop 17");
        assert_eq!(loop_number(line), Some(17));
        let error = "2026-11-24T19:24:23.661Z [1/1 main] ERROR boom";
        assert_eq!(parse_log_line(error).unwrap().message, "boom");
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "",
            "Hello World. Loop 1",
            "2026-11-24 19:24:23 [1/1 main] INFO  x",
            "2026-11-24T19:24:23.661Z 1/1 main INFO  x",
            "2026-11-24T19:24:23.661Z [1/1 main] INFO x",
            "2026-11-24T19:24:23.661Z [1/1 main] NOTE  x",
            "2026-11-24T19:24:23.661Z [x/1 main] INFO  x",
        ] {
            assert_eq!(parse_log_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_proc_stat_with_odd_comm() {
        let text = "42 (a (b) c) S 1 40 39 0 -1 4194368 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse_proc_stat(text).unwrap();
        assert_eq!((s.pid, s.comm.as_str(), s.state), (42, "a (b) c", 'S'));
        assert_eq!(
            (s.ppid, s.pgrp, s.session, s.tty_nr, s.start_time),
            (1, 40, 39, 0, 12345)
        );
        let me = proc_stat(own_pid()).unwrap();
        assert_eq!(me.pid, own_pid());
        assert_eq!(me.pgrp, own_pgrp());
    }

    #[test]
    fn stat_fields_by_number() {
        let text = "42 (a (b) c) S 1 40 39 0 -1 4194368 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(stat_field(text, 1).as_deref(), Some("42"));
        assert_eq!(stat_field(text, 2).as_deref(), Some("a (b) c"));
        assert_eq!(stat_field(text, 3).as_deref(), Some("S"));
        assert_eq!(stat_field(text, 22).as_deref(), Some("12345"));
        assert_eq!(stat_field(text, 99), None);
        assert_eq!(stat_field(text, 0), None);
        assert_eq!(proc_stat_field(own_pid(), 1), Some(own_pid().to_string()));
        let me = proc_stat(own_pid()).unwrap();
        assert!(still_running(&me));
        assert!(proc_cmdline(own_pid()).is_some_and(|c| !c.is_empty()));
    }

    #[test]
    fn read_lines_skips_an_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        assert!(read_lines(&path).is_empty());
        std::fs::write(&path, "a\nb\nhalf").unwrap();
        assert_eq!(read_lines(&path), ["a", "b"]);
    }

    #[test]
    fn shm_names_are_unique_and_guarded() {
        let (a, b) = (unique_shm_name(), unique_shm_name());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("it-{}-", own_pid())), "{a}");
        assert_eq!(
            shm_lock_path(&a),
            Path::new(&format!("/dev/shm/daemonic.{a}"))
        );
        if Path::new(SHM_DIR).is_dir() {
            let guard = ShmGuard::new(&a);
            std::fs::write(guard.path(), "1\n").unwrap();
            drop(guard);
            assert!(!shm_lock_path(&a).exists());
        }
    }

    #[test]
    fn poll_until_times_out() {
        let start = Instant::now();
        assert!(!poll_until(Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
        let mut n = 0;
        assert!(poll_until(DEADLINE, || {
            n += 1;
            n == 3
        }));
    }
}
