//! `DaemonBuilder::loop_priority`: the main loop's thread, and only it, runs
//! with the scheduling asked for; a setting the process may not use stops
//! the start with exit code 77, one that cannot apply with 78. The kernel's
//! view is read from `/proc` (`stat` fields 19, nice, and 41, policy).

use daemonic::{Daemon, DaemonBuilder, ExitCode, LoopContext, LoopPriority};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// (nice, policy) of a thread, from its `/proc/.../stat`.
fn sched_of(stat_path: &str) -> (i64, u32) {
    let stat = std::fs::read_to_string(stat_path).expect("read stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state).
    let nice = fields[19 - 3].parse().expect("nice");
    let policy = fields[41 - 3].parse().expect("policy");
    (nice, policy)
}

/// (nice, policy) of the loop's thread and of the supervisor's.
type Seen = Option<((i64, u32), (i64, u32))>;

/// Records how its own thread and the supervisor's thread (the one that
/// started the daemon) are scheduled.
struct Probe {
    supervisor_tid: i32,
    seen: Arc<Mutex<Seen>>,
}

impl Daemon for Probe {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let own = sched_of("/proc/thread-self/stat");
        let main = sched_of(&format!("/proc/self/task/{}/stat", self.supervisor_tid));
        *self.seen.lock() = Some((own, main));
        ctx.shutdown();
    }
}

fn run(priority: LoopPriority, interval: Duration) -> (ExitCode, Seen) {
    let seen = Arc::new(Mutex::new(None));
    let daemon = Probe {
        supervisor_tid: nix::unistd::gettid().as_raw(),
        seen: seen.clone(),
    };
    let system = actix::System::new();
    let code = system.block_on(async move {
        let handle = DaemonBuilder::new(daemon)
            .interval(interval)
            .loop_priority(priority)
            .handle_signals(false)
            .log_file("/dev/null")
            .start();
        match handle {
            Ok(handle) => handle.wait().await,
            Err(e) => e.exit_code(),
        }
    });
    let seen = *seen.lock();
    (code, seen)
}

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;

#[test]
fn only_the_loop_thread_gets_the_priority_asked_for() {
    let tick = Duration::from_millis(5);
    let (code, seen) = run(LoopPriority::Inherit, tick);
    assert_eq!(code, ExitCode::Ok);
    let ((nice, policy), _) = seen.expect("a tick ran");
    assert_eq!((nice, policy), (0, SCHED_OTHER));

    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: the favoured settings are checked in CI, which runs as root");
        return;
    }
    let (code, seen) = run(LoopPriority::Nice(-7), tick);
    assert_eq!(code, ExitCode::Ok);
    let (own, main) = seen.expect("a tick ran");
    assert_eq!(own, (-7, SCHED_OTHER), "the loop's thread");
    assert_eq!(
        main,
        (0, SCHED_OTHER),
        "the supervisor's thread is untouched"
    );

    let (code, seen) = run(LoopPriority::RealTime(10), tick);
    assert_eq!(code, ExitCode::Ok);
    let (own, main) = seen.expect("a tick ran");
    assert_eq!(own.1, SCHED_FIFO, "the loop's thread");
    assert_eq!(
        main,
        (0, SCHED_OTHER),
        "the supervisor's thread is untouched"
    );
}

#[test]
fn settings_that_cannot_apply_stop_the_start() {
    // A real-time loop that never sleeps would hold its core.
    let (code, seen) = run(LoopPriority::RealTime(10), Duration::ZERO);
    assert_eq!(code, ExitCode::Config);
    assert!(seen.is_none(), "no tick ran");
    let (code, _) = run(LoopPriority::Nice(40), Duration::from_millis(5));
    assert_eq!(code, ExitCode::Config);
}

/// Runs in a child process of the test (see below): drops root first, so
/// that the kernel refuses the real-time policy.
#[test]
fn refused_child() {
    if std::env::var_os("DAEMONIC_LOOP_PRIORITY_CHILD").is_none() {
        return;
    }
    // No RLIMIT_RTPRIO either: the refusal must not depend on the account.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_RTPRIO, 0, 0)
        .expect("lower RLIMIT_RTPRIO");
    if nix::unistd::geteuid().is_root() {
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).expect("become nobody");
    }
    let (code, seen) = run(LoopPriority::RealTime(10), Duration::from_millis(5));
    assert!(seen.is_none(), "no tick ran");
    std::process::exit(code as i32);
}

#[test]
fn a_priority_the_process_may_not_use_is_exit_77() {
    let child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "refused_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DAEMONIC_LOOP_PRIORITY_CHILD", "1")
        .output()
        .expect("run the child");
    assert_eq!(
        child.status.code(),
        Some(77),
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
}
