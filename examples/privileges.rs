//! Least privilege: start as root, then run as `--user` once the pid file,
//! log file and control socket are in place. The daemon, its worker and its
//! task each log the ids they run with and whether they can become root
//! again (they cannot).
//!
//! ```text
//! sudo mkdir -p /run/privileges && sudo chown nobody:nogroup /run/privileges
//! sudo cargo run --example privileges -- --user nobody \
//!     --pidfile /run/privileges/p.pid --interval 2
//! ```

use daemonic::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `uid R E S F, gid R E S F, groups G..` of this process, from
/// `/proc/self/status`.
fn ids() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    format!(
        "uid {}, gid {}, groups [{}]",
        field("Uid:"),
        field("Gid:"),
        field("Groups:")
    )
}

/// Tries `setuid(0)`.
fn regain_root() -> String {
    // SAFETY: setuid has no memory-safety preconditions; it only fails here.
    if unsafe { libc::setuid(0) } == 0 {
        "SUCCEEDED".into()
    } else {
        format!("refused ({})", std::io::Error::last_os_error())
    }
}

/// A worker that reports what it runs as.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Inspector {
    label: String,
}

#[daemonic::worker]
impl Inspector {
    pub fn credentials(&mut self) -> String {
        format!(
            "{} pid {}: {}; regain root: {}",
            self.label,
            std::process::id(),
            ids(),
            regain_root()
        )
    }
}

/// A task that reports what it runs as, then waits to be stopped.
#[derive(Serialize, Deserialize)]
struct Watcher;

#[daemonic::task]
impl Task for Watcher {
    fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError> {
        ctx.log(format_args!(
            "task pid {}: {}; regain root: {}",
            std::process::id(),
            ids(),
            regain_root()
        ));
        // Until the daemon stops it (SIGTERM at shutdown).
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

#[derive(Default)]
struct Privileges {
    pool: Option<Addr<WorkerPool<Inspector>>>,
}

impl Daemon for Privileges {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        ctx.log(format_args!(
            "main pid {}: {}; regain root: {}",
            std::process::id(),
            ids(),
            regain_root()
        ));
        self.pool = Some(
            ctx.workers(Inspector {
                label: "worker".into(),
            })
            .size(1)
            .start()?,
        );
        ctx.task(Watcher)?;
        Ok(())
    }

    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        ctx.spawn_then(
            pool.call(inspector::Credentials {}),
            |_, ctx, result| match result {
                Ok(report) => ctx.log(report),
                Err(e) => ctx.error(format_args!("worker call failed: {e}")),
            },
        );
    }
}

fn main() -> std::process::ExitCode {
    DaemonBuilder::new(Privileges::default())
        .name("privileges")
        .interval_secs(1.0)
        .main()
}
