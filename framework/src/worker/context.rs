//! What a worker method sees of its process and of the call it runs.

use crate::log::Logger;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The context of a worker method or hook, in the worker process: logging,
/// the worker's pid, and the call being run (its id and deadline).
///
/// A method takes it by naming an argument `&mut WorkerContext` (or any
/// reference argument `ctx`), in any position; it is not part of the
/// message:
///
/// ```no_run
/// use daemonic::WorkerContext;
/// use serde::{Deserialize, Serialize};
///
/// #[daemonic::worker]
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Crawler;
///
/// #[daemonic::worker]
/// impl Crawler {
///     pub fn crawl(&mut self, ctx: &mut WorkerContext, pages: Vec<String>) -> usize {
///         let mut done = 0;
///         for page in pages {
///             if ctx.deadline_passed() {
///                 ctx.warn(format_args!("call {:?}: out of time after {done} pages", ctx.call_id()));
///                 break; // the caller gets a partial answer instead of a Timeout
///             }
///             ctx.log(format_args!("worker {} crawls {page}", ctx.pid()));
///             done += 1;
///         }
///         done
///     }
/// }
/// # fn main() {
/// // the message has only the `pages` field:
/// let _ = crawler::Crawl { pages: vec!["https://example.com".into()] };
/// # }
/// ```
pub struct WorkerContext {
    logger: Logger,
    role: Arc<str>,
    pid: u32,
    call: Option<CallInfo>,
    runtime: Option<Arc<tokio::runtime::Runtime>>,
}

/// The call a method runs.
#[derive(Debug, Clone, Copy)]
struct CallInfo {
    id: u64,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("role", &self.role)
            .field("pid", &self.pid)
            .field("call", &self.call)
            .finish()
    }
}

impl WorkerContext {
    pub(crate) fn new(logger: Logger, role: impl Into<Arc<str>>) -> Self {
        Self {
            logger,
            role: role.into(),
            pid: std::process::id(),
            call: None,
            runtime: None,
        }
    }

    /// A context for one call, run concurrently with others: the worker's
    /// logger, role and runtime, and this call's id and deadline.
    pub(crate) fn for_call(&self, id: u64, deadline: Option<Instant>) -> Self {
        Self {
            logger: self.logger.clone(),
            role: self.role.clone(),
            pid: self.pid,
            call: Some(CallInfo { id, deadline }),
            runtime: self.runtime.clone(),
        }
    }

    /// Sets (or clears) the call being run.
    pub(crate) fn set_call(&mut self, call: Option<(u64, Option<Instant>)>) {
        self.call = call.map(|(id, deadline)| CallInfo { id, deadline });
    }

    /// Uses `runtime` for `async` methods (a worker that runs them
    /// concurrently has one already).
    pub(crate) fn set_runtime(&mut self, runtime: Arc<tokio::runtime::Runtime>) {
        self.runtime = Some(runtime);
    }

    /// A logger whose lines reach the daemon's log with this worker's pid
    /// and role.
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// Logs an informational line.
    pub fn log(&self, message: impl Display) {
        self.logger.log(message);
    }

    /// Logs a warning.
    pub fn warn(&self, message: impl Display) {
        self.logger.warn(message);
    }

    /// Logs an error line.
    pub fn error(&self, message: impl Display) {
        self.logger.error(message);
    }

    /// Logs a debug line if the daemon runs with `--debug=LEVEL`,
    /// `level <= LEVEL`.
    pub fn debug(&self, level: u8, message: impl Display) {
        self.logger.debug(level, message);
    }

    /// The role (`worker:<pool name>`), as the daemon's log shows it.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The pid of the process running the method (the daemon's own in
    /// inline mode).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The id of the call being run (unique within its pool, as the pool's
    /// [`on_return`](crate::worker::WorkerPoolBuilder::on_return) callback
    /// sees it); `None` in the `started` and `stopping` hooks.
    pub fn call_id(&self) -> Option<u64> {
        self.call.map(|c| c.id)
    }

    /// When the pool will give up on the call being run (its
    /// [`call_timeout`](crate::worker::WorkerPoolBuilder::call_timeout)),
    /// kill this worker and answer [`Timeout`](crate::WorkerError::Timeout).
    /// A method that can stop early should, before then. `None` without a
    /// call timeout, and outside a call.
    pub fn deadline(&self) -> Option<Instant> {
        self.call.and_then(|c| c.deadline)
    }

    /// Time left until [`deadline`](Self::deadline) (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the call's deadline has passed.
    pub fn deadline_passed(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Runs a future to completion on this worker's single-threaded runtime
    /// (created on first use; `async` methods run on it too). Not for use
    /// inside an `async` method: await the future there.
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        Executor::of(self).block_on(future)
    }
}

/// Where a worker's `async` methods run when the worker runs one call at a
/// time: its runtime (generated code uses it).
#[doc(hidden)]
pub struct Executor(Option<Arc<tokio::runtime::Runtime>>);

impl Executor {
    /// The executor of `ctx`'s worker.
    pub fn of(ctx: &mut WorkerContext) -> Self {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inline mode inside an actix System: this thread already drives
            // a runtime and cannot block on another; poll the future
            // directly (enough for methods that do not wait on tokio timers
            // or I/O).
            return Self(None);
        }
        let runtime = ctx.runtime.get_or_insert_with(|| {
            Arc::new(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("cannot start the worker's async runtime: {e}")),
            )
        });
        Self(Some(runtime.clone()))
    }

    /// Runs `future` to completion.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match &self.0 {
            Some(runtime) => runtime.block_on(future),
            None => park_on(future),
        }
    }
}

/// A minimal executor: polls `future`, parking the thread between wake-ups.
fn park_on<F: Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_info_is_per_call() {
        let mut ctx = WorkerContext::new(Logger::discard(), "worker:test");
        assert_eq!((ctx.call_id(), ctx.deadline()), (None, None));
        assert!(!ctx.deadline_passed());
        let deadline = Instant::now() + Duration::from_secs(60);
        ctx.set_call(Some((7, Some(deadline))));
        assert_eq!(ctx.call_id(), Some(7));
        assert!(ctx.remaining().is_some_and(|r| r > Duration::from_secs(50)));
        let other = ctx.for_call(8, Some(Instant::now()));
        assert!(other.deadline_passed());
        assert_eq!(other.call_id(), Some(8));
        assert_eq!(ctx.call_id(), Some(7), "each call has its own");
        assert_eq!(other.pid(), std::process::id());
        ctx.set_call(None);
        assert_eq!(ctx.call_id(), None);
    }
}
