//! How the main loop's thread is scheduled (`DaemonBuilder::loop_priority`).
//!
//! A loop that must tick on time beside CPU-bound work (its own workers,
//! other services) can ask the kernel to favour its thread. Only the loop's
//! thread changes: the supervisor's thread, the fork server and every child
//! keep the process's scheduling (`SCHED_RESET_ON_FORK` is set with a
//! real-time policy, so nothing forked from the thread inherits it either).
//! `framework/benches/main_loop.rs` measures each choice beside a CPU hog.

use crate::error::Error;

/// How the main loop's thread is scheduled.
///
/// ```no_run
/// # use daemonic::{Daemon, DaemonBuilder, LoopContext, LoopPriority};
/// # use std::time::Duration;
/// # struct Meter;
/// # impl Daemon for Meter { fn execute(&mut self, _: &mut LoopContext<'_, Self>) {} }
/// DaemonBuilder::new(Meter)
///     .interval(Duration::from_millis(10))
///     // Ticks on time even with every core busy (needs CAP_SYS_NICE).
///     .loop_priority(LoopPriority::RealTime(10))
///     .main();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopPriority {
    /// The process's own scheduling (the default).
    #[default]
    Inherit,
    /// A niceness for the loop's thread, from -20 (most favoured) to 19.
    /// Below the process's niceness it needs `CAP_SYS_NICE` or a high
    /// enough `RLIMIT_NICE`. The thread still shares its core fairly, only
    /// with a larger share.
    Nice(i32),
    /// `SCHED_FIFO` at this priority, from 1 to 99: whenever the loop's
    /// thread is ready to run it runs before every normal thread of its
    /// core. Needs `CAP_SYS_NICE` or `RLIMIT_RTPRIO`. Refused with interval
    /// zero: a loop that never sleeps would hold its core (the kernel's
    /// real-time throttling leaves others 5% of it).
    RealTime(u8),
}

impl LoopPriority {
    /// Whether the setting can apply to a loop ticking every `interval`;
    /// `Err` is a configuration message.
    pub(crate) fn check(self, interval: std::time::Duration) -> Result<(), String> {
        match self {
            LoopPriority::Inherit => Ok(()),
            LoopPriority::Nice(n) if !(-20..=19).contains(&n) => Err(format!(
                "loop priority Nice({n}) is out of range (-20 to 19)"
            )),
            LoopPriority::Nice(_) => Ok(()),
            LoopPriority::RealTime(p) if !(1..=99).contains(&p) => Err(format!(
                "loop priority RealTime({p}) is out of range (1 to 99)"
            )),
            LoopPriority::RealTime(_) if interval.is_zero() => Err(
                "loop priority RealTime needs an interval above zero: a loop that never sleeps \
                 would hold its core"
                    .into(),
            ),
            LoopPriority::RealTime(_) => Ok(()),
        }
    }

    /// Applies the setting to the calling thread.
    pub(crate) fn apply_to_current_thread(self) -> Result<(), Error> {
        let (what, result) = match self {
            LoopPriority::Inherit => return Ok(()),
            LoopPriority::Nice(n) => {
                // Linux keeps a niceness per thread: PRIO_PROCESS with a tid.
                let tid = nix::unistd::gettid().as_raw() as libc::id_t;
                // SAFETY: plain system call on this thread's id.
                let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, n) };
                (format!("niceness {n}"), rc)
            }
            LoopPriority::RealTime(p) => {
                let param = libc::sched_param {
                    sched_priority: i32::from(p),
                };
                // SAFETY: pid 0 is the calling thread; `param` outlives the call.
                let rc = unsafe {
                    libc::sched_setscheduler(
                        0,
                        libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
                        &param,
                    )
                };
                (format!("SCHED_FIFO priority {p}"), rc)
            }
        };
        if result == 0 {
            return Ok(());
        }
        let source = std::io::Error::last_os_error();
        let context = format!("cannot give the main loop's thread {what}");
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Err(Error::Privileges(format!(
                "{context}: {source} (it needs CAP_SYS_NICE, or RLIMIT_RTPRIO / RLIMIT_NICE)"
            ))),
            _ => Err(Error::Os { context, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LoopPriority;
    use std::time::Duration;

    #[test]
    fn settings_are_checked_against_their_ranges_and_the_interval() {
        let tick = Duration::from_millis(10);
        assert!(LoopPriority::Inherit.check(Duration::ZERO).is_ok());
        assert!(LoopPriority::Nice(-20).check(tick).is_ok());
        assert!(LoopPriority::Nice(19).check(Duration::ZERO).is_ok());
        assert!(LoopPriority::Nice(20).check(tick).is_err());
        assert!(LoopPriority::Nice(-21).check(tick).is_err());
        assert!(LoopPriority::RealTime(1).check(tick).is_ok());
        assert!(LoopPriority::RealTime(99).check(tick).is_ok());
        assert!(LoopPriority::RealTime(0).check(tick).is_err());
        assert!(LoopPriority::RealTime(100).check(tick).is_err());
        let busy = LoopPriority::RealTime(10)
            .check(Duration::ZERO)
            .unwrap_err();
        assert!(busy.contains("interval above zero"), "{busy}");
    }
}
