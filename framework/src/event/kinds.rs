//! The events the daemon raises. Each is a plain struct; cancellable ones carry
//! their flag in the value, so cancelling affects only that one dispatch.

use crate::daemon::stats::Stats;
use crate::log::Level;
use crate::process::ExitStatus;
use crate::task::TaskStatus;
use crate::worker::WorkerError;
use std::time::Duration;

macro_rules! event {
    ($($ty:ty),* $(,)?) => {$(
        impl actix::Message for $ty {
            type Result = ();
        }
        impl super::Event for $ty {}
    )*};
}

event!(
    DaemonStarted,
    TickStarting,
    TickFinished,
    IdleStarted,
    SignalReceived,
    ShutdownStarted,
    ErrorOccurred,
    LogWriting,
    StatsCollecting,
    PidChanged,
    TaskExited,
    WorkerSpawned,
    WorkerReturned,
    WorkerDied,
    WorkerTimedOut,
    WorkerRecycled,
    WorkerPoolFailed,
    RestartStarting,
    ChildRestarted,
    SupervisorEscalated,
);

/// Old names of the events, for one release.
macro_rules! renamed {
    ($($old:ident => $new:ident: $note:literal),* $(,)?) => {$(
        #[doc(hidden)]
        #[deprecated(note = $note)]
        pub type $old = $new;
    )*};
}

renamed!(
    Init => DaemonStarted: "renamed to `DaemonStarted`",
    PreExecute => TickStarting: "renamed to `TickStarting`",
    PostExecute => TickFinished: "renamed to `TickFinished`",
    Idle => IdleStarted: "renamed to `IdleStarted`",
    SignalEvent => SignalReceived: "renamed to `SignalReceived`",
    Shutdown => ShutdownStarted: "renamed to `ShutdownStarted`",
    ErrorEvent => ErrorOccurred: "renamed to `ErrorOccurred`",
    LogEvent => LogWriting: "renamed to `LogWriting`",
    StatsEvent => StatsCollecting: "renamed to `StatsCollecting`",
    PidChange => PidChanged: "renamed to `PidChanged`",
    AutoRestart => RestartStarting: "renamed to `RestartStarting`",
);

/// The daemon finished initializing and is about to run its first tick.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::DaemonStarted| log::info!("up with pid {}", e.pid));
/// ```
#[derive(Debug, Clone)]
pub struct DaemonStarted {
    /// Pid of the daemon process.
    pub pid: i32,
}

/// Raised before every call of `execute`. A listener may [`skip`](Self::skip)
/// this one tick; the next tick raises a fresh, unskipped event.
///
/// ```
/// use daemonic::event::TickStarting;
///
/// let events = daemonic::Events::new();
/// events.on(|e: &mut TickStarting| {
///     if std::path::Path::new("/run/myapp/paused").exists() {
///         e.skip(); // this tick only
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct TickStarting {
    /// 1-based number of the tick about to run.
    pub iteration: u64,
    skipped: bool,
}

impl TickStarting {
    /// A fresh event for tick `iteration`.
    pub fn new(iteration: u64) -> Self {
        Self {
            iteration,
            skipped: false,
        }
    }

    /// Do not call `execute` on this tick.
    pub fn skip(&mut self) {
        self.skipped = true;
    }

    /// Whether a listener skipped this tick.
    pub fn is_skipped(&self) -> bool {
        self.skipped
    }
}

/// Raised after `execute` returned.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::TickFinished| {
///     if e.duration.as_millis() > 100 {
///         log::warn!("tick {} took {:?}", e.iteration, e.duration);
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct TickFinished {
    /// Number of the tick that ran.
    pub iteration: u64,
    /// How long `execute` took.
    pub duration: Duration,
}

/// Raised when a tick finished early and the loop has time to spare before the
/// next one: the place for housekeeping.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::IdleStarted| {
///     if e.available.as_millis() > 50 {
///         // time for housekeeping before the next tick
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct IdleStarted {
    /// Number of the tick that just finished.
    pub iteration: u64,
    /// Time left until the next tick.
    pub available: Duration,
}

/// A signal that the framework does not handle itself arrived (SIGUSR2,
/// SIGALRM, SIGWINCH, real-time signals...), or one it handles (also raised
/// for those, before the framework acts).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::SignalReceived| {
///     if e.signal == libc::SIGUSR2 {
///         log::info!("{} received: rotating the cache", e.name);
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct SignalReceived {
    /// Signal number.
    pub signal: i32,
    /// Signal name, e.g. `"SIGUSR2"`.
    pub name: &'static str,
}

/// Why the daemon is stopping.
///
/// ```
/// use daemonic::ShutdownReason;
///
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::ShutdownStarted| {
///     if let ShutdownReason::Error(why) = &e.reason {
///         log::error!("stopping after an error: {why}");
///     }
/// });
/// assert_eq!(ShutdownReason::Signal("SIGTERM").to_string(), "signal SIGTERM");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    /// A signal asked for it (SIGTERM, SIGINT).
    Signal(&'static str),
    /// User code asked for it (`ctx.shutdown()`, a `DaemonHandle`).
    Requested,
    /// A fatal error.
    Error(String),
    /// A graceful restart (max runtime, SIGHUP, fatal error).
    Restart(String),
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShutdownReason::Signal(name) => write!(f, "signal {name}"),
            ShutdownReason::Requested => f.write_str("requested"),
            ShutdownReason::Error(e) => write!(f, "error: {e}"),
            ShutdownReason::Restart(why) => write!(f, "restart ({why})"),
        }
    }
}

/// The daemon began its graceful shutdown.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::ShutdownStarted| log::info!("goodbye ({})", e.reason));
/// ```
#[derive(Debug, Clone)]
pub struct ShutdownStarted {
    /// Why.
    pub reason: ShutdownReason,
}

/// Something failed that the daemon survived (or is about to stop for).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::ErrorOccurred| {
///     eprintln!("alert: {}: {}", e.context, e.message);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct ErrorOccurred {
    /// Where it happened ("initialize", "log file", ...).
    pub context: String,
    /// The error message.
    pub message: String,
}

/// A log line is about to be written. A listener may rewrite the message or
/// [`suppress`](Self::suppress) this one line.
///
/// ```
/// use daemonic::event::LogWriting;
///
/// let events = daemonic::Events::new();
/// events.on(|e: &mut LogWriting| {
///     if e.message.contains("password=") {
///         e.suppress();
///     } else {
///         e.message = e.message.replace("secret", "[redacted]");
///     }
/// });
/// let mut line = LogWriting::new(daemonic::Level::Info, "the secret is 42".into());
/// events.dispatch(&mut line);
/// assert_eq!(line.message, "the [redacted] is 42");
/// ```
#[derive(Debug, Clone)]
pub struct LogWriting {
    /// Severity.
    pub level: Level,
    /// The message (without timestamp and prefix); listeners may change it.
    pub message: String,
    suppressed: bool,
}

impl LogWriting {
    /// A fresh event for one line.
    pub fn new(level: Level, message: String) -> Self {
        Self {
            level,
            message,
            suppressed: false,
        }
    }

    /// Do not write this line.
    pub fn suppress(&mut self) {
        self.suppressed = true;
    }

    /// Whether a listener suppressed this line.
    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }
}

/// Stats are being collected (SIGUSR1 dump, `status`). Listeners may add fields.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::StatsCollecting| e.add("queue depth", 42));
/// ```
#[derive(Debug, Clone)]
pub struct StatsCollecting {
    /// The stats collected by the framework.
    pub stats: Stats,
}

impl StatsCollecting {
    /// Adds a `key = value` line to this report.
    pub fn add(&mut self, key: impl Into<String>, value: impl ToString) {
        self.stats.extra.push((key.into(), value.to_string()));
    }
}

/// A task process ended.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::TaskExited| {
///     if !e.status.success() {
///         log::warn!("task {} (pid {}) after {:?}: {}", e.name, e.pid, e.runtime, e.status);
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct TaskExited {
    /// The task's registered name.
    pub name: &'static str,
    /// Its pid.
    pub pid: i32,
    /// How it ended.
    pub status: TaskStatus,
    /// How long it ran.
    pub runtime: Duration,
}

/// A worker process was started.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::WorkerSpawned| log::debug!("{}: worker {}", e.pool, e.pid));
/// ```
#[derive(Debug, Clone)]
pub struct WorkerSpawned {
    /// The pool's name.
    pub pool: String,
    /// The worker's pid.
    pub pid: i32,
}

/// A worker call finished (only raised when something listens: it is per call).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::WorkerReturned| {
///     if let Some(error) = &e.error {
///         log::warn!("{}::{} failed after {:?}: {error}", e.pool, e.method, e.latency);
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct WorkerReturned {
    /// The pool's name.
    pub pool: String,
    /// The worker's pid (0 inline or when the call never reached a worker).
    pub pid: i32,
    /// The method.
    pub method: &'static str,
    /// Time from `send` to the reply.
    pub latency: Duration,
    /// `None` if the method returned, else why not.
    pub error: Option<WorkerError>,
}

/// A worker process exited unexpectedly (crash, kill, OOM, timeout).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::WorkerDied| {
///     log::error!("{}: worker {} died ({}), {} call(s) failed", e.pool, e.pid, e.exit, e.calls_failed);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct WorkerDied {
    /// The pool's name.
    pub pool: String,
    /// The worker's pid.
    pub pid: i32,
    /// How it ended.
    pub exit: ExitStatus,
    /// Calls it held, which resolved with `Died`.
    pub calls_failed: usize,
}

/// A call exceeded the pool's call timeout; its worker is being killed.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::WorkerTimedOut| {
///     log::warn!("{}::{} ran over {:?}", e.pool, e.method, e.after);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct WorkerTimedOut {
    /// The pool's name.
    pub pool: String,
    /// The worker's pid.
    pub pid: i32,
    /// The method.
    pub method: &'static str,
    /// The timeout.
    pub after: Duration,
}

/// A worker is being replaced on purpose (max calls, max runtime, shutdown).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::WorkerRecycled| log::debug!("{} recycled ({})", e.pid, e.reason));
/// ```
#[derive(Debug, Clone)]
pub struct WorkerRecycled {
    /// The pool's name.
    pub pool: String,
    /// The worker's pid.
    pub pid: i32,
    /// Why.
    pub reason: &'static str,
}

/// A pool exceeded its restart limit and stopped respawning.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::WorkerPoolFailed| {
///     log::error!("pool {} gave up: {}", e.pool, e.reason);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct WorkerPoolFailed {
    /// The pool's name.
    pub pool: String,
    /// Why.
    pub reason: String,
}

/// The daemon is about to restart itself (max runtime, SIGHUP, fatal error).
/// A listener may [`cancel`](Self::cancel) this one restart.
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::RestartStarting| {
///     if std::path::Path::new("/run/myapp/no-restart").exists() {
///         e.cancel();
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct RestartStarting {
    /// Why.
    pub reason: String,
    cancelled: bool,
}

impl RestartStarting {
    /// A fresh event.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            cancelled: false,
        }
    }

    /// Do not restart this time.
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// Whether a listener cancelled it.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }
}

/// The daemon's pid changed (daemonized, restarted).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::PidChanged| log::info!("pid {} is now {}", e.old, e.new));
/// ```
#[derive(Debug, Clone)]
pub struct PidChanged {
    /// The previous pid.
    pub old: i32,
    /// The new pid.
    pub new: i32,
}

#[cfg(test)]
mod tests {
    use super::super::Events;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_cancelled_dispatch_does_not_leak_into_the_next() {
        let events = Events::new();
        events.on(|e: &mut TickStarting| {
            if e.iteration == 2 {
                e.skip();
            }
        });
        let skipped: Vec<bool> = (1..=4)
            .map(|i| {
                let mut ev = TickStarting::new(i);
                events.dispatch(&mut ev);
                ev.is_skipped()
            })
            .collect();
        assert_eq!(skipped, [false, true, false, false]);
    }

    #[test]
    fn cancelling_one_event_type_does_not_affect_another() {
        let events = Events::new();
        events.on(|e: &mut TickStarting| e.skip());
        events.on(|e: &mut LogWriting| e.message.push('!'));
        let mut log = LogWriting::new(Level::Info, "hi".into());
        events.dispatch(&mut log);
        assert!(!log.is_suppressed());
        assert_eq!(log.message, "hi!");
    }

    #[test]
    fn closures_run_in_order_and_unsubscribe_works() {
        let events = Events::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let first = events.on(move |_: &mut IdleStarted| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        events.on(|e: &mut LogWriting| e.message = format!("[{}]", e.message));
        events.on(|e: &mut LogWriting| e.message.push('x'));
        let mut log = LogWriting::new(Level::Info, "m".into());
        events.dispatch(&mut log);
        assert_eq!(log.message, "[m]x");

        let mut idle = IdleStarted {
            iteration: 1,
            available: Duration::ZERO,
        };
        events.dispatch(&mut idle);
        assert!(events.unsubscribe(first));
        assert!(!events.unsubscribe(first));
        events.dispatch(&mut idle);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!events.has_listeners::<IdleStarted>());
    }

    #[test]
    fn cached_listeners_see_new_subscriptions() {
        let events = Events::new();
        let mut cache = events.cached::<TickStarting>();
        assert!(!cache.active());
        events.on(|e: &mut TickStarting| e.skip());
        let mut ev = TickStarting::new(1);
        cache.dispatch(&mut ev);
        assert!(ev.is_skipped());
    }

    #[actix::test]
    async fn recipients_observe_the_final_value() {
        use actix::prelude::*;
        struct Sink(Arc<parking_lot::Mutex<Vec<String>>>);
        impl Actor for Sink {
            type Context = Context<Self>;
        }
        impl Handler<LogWriting> for Sink {
            type Result = ();
            fn handle(&mut self, msg: LogWriting, _: &mut Context<Self>) {
                self.0.lock().push(msg.message);
            }
        }
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let addr = Sink(seen.clone()).start();
        let events = Events::new();
        events.subscribe(addr.recipient::<LogWriting>());
        events.on(|e: &mut LogWriting| e.message.make_ascii_uppercase());
        events.dispatch(&mut LogWriting::new(Level::Info, "abc".into()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seen.lock().is_empty() && std::time::Instant::now() < deadline {
            actix_rt::task::yield_now().await;
        }
        assert_eq!(*seen.lock(), vec!["ABC".to_string()]);
    }
}

/// A supervisor restarted one of its children (after the child, or a
/// sibling its strategy ties it to, failed).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::ChildRestarted| {
///     log::warn!("{}/{} restarted ({} so far): {}", e.supervisor, e.child, e.restarts, e.reason);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct ChildRestarted {
    /// The supervisor's name.
    pub supervisor: String,
    /// The child's name.
    pub child: String,
    /// Times this supervisor restarted it, this one included.
    pub restarts: u64,
    /// Why: which child failed, and how.
    pub reason: String,
}

/// A supervisor went over its restart intensity: it stopped its children
/// and failed upward to its own supervisor (or, at the top, to whatever
/// runs it: a daemon ends with exit code 70, or restarts).
///
/// ```
/// let events = daemonic::Events::new();
/// events.on(|e: &mut daemonic::event::SupervisorEscalated| {
///     log::error!("supervisor {} gave up: {}", e.supervisor, e.reason);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct SupervisorEscalated {
    /// The supervisor's name.
    pub supervisor: String,
    /// Why.
    pub reason: String,
}
