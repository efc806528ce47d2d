//! The worker process: receive calls, dispatch them on the worker's state,
//! send replies. One call at a time, in order; no actix System, so a fresh
//! worker is ready within microseconds of its fork.

use super::progress::ProgressWord;
use super::protocol::{self, Bootstrap, FromChild, Outcome, ToChild};
use super::WorkerMethods;
use crate::ipc::ipc_channel::IpcChildLink;
use crate::ipc::socket::SocketChildLink;
use crate::ipc::ChildLink;
use crate::log::Logger;
use crate::process::ChildStart;
use std::fmt::Display;
use std::future::Future;

/// Exit code of a worker whose method panicked (it is replaced).
pub const EXIT_PANICKED: i32 = 101;
/// Exit code of a worker that received a malformed frame.
pub const EXIT_PROTOCOL: i32 = 76;

/// What worker methods and hooks get in the child.
pub struct WorkerContext {
    logger: Logger,
    role: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("role", &self.role)
            .finish()
    }
}

impl WorkerContext {
    /// A context for running a worker in-process (inline mode, tests).
    pub fn inline(logger: Logger, role: impl Into<String>) -> Self {
        Self {
            logger,
            role: role.into(),
            runtime: None,
        }
    }

    /// A logger whose lines reach the daemon's log with this worker's pid and role.
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// Logs an informational line.
    pub fn log(&self, message: impl Display) {
        self.logger.log(message);
    }

    /// Logs an error line.
    pub fn error(&self, message: impl Display) {
        self.logger.error(message);
    }

    /// The role (`worker:<name>`).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Runs a future to completion on this worker's single-threaded runtime
    /// (created on first use; used for `async` worker methods).
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inline mode inside an actix System: this thread already drives a
            // runtime and cannot block on another; poll the future directly
            // (enough for methods that do not wait on tokio timers or I/O).
            return park_on(future);
        }
        let runtime = self.runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start the worker's async runtime: {e}"))
        });
        runtime.block_on(future)
    }
}

/// Entry point of every registered worker (generated code refers to it).
#[doc(hidden)]
pub fn run_in_child<W: WorkerMethods>(mut start: ChildStart) -> i32 {
    let logger = start.logger();
    let role = start.role.clone();
    let (bootstrap, fds): (Bootstrap, _) = match start.read_payload_with_fds() {
        Ok(b) => b,
        // The pool let go of this worker before it started (it stopped or
        // failed meanwhile): nothing to say.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return 0,
        Err(e) => {
            logger.error(format_args!("cannot read the worker's bootstrap: {e}"));
            return crate::task::EXIT_BAD_PAYLOAD;
        }
    };
    let progress = match fds.into_iter().next().map(ProgressWord::map) {
        Some(Ok(word)) => word,
        Some(Err(e)) => {
            logger.error(format_args!("cannot map the worker's progress word: {e}"));
            return EXIT_PROTOCOL;
        }
        None => {
            logger.error("the worker's bootstrap carried no progress word");
            return EXIT_PROTOCOL;
        }
    };
    let mut worker: W = match start.read_payload() {
        Ok(w) => w,
        Err(e) => {
            logger.error(format_args!("cannot decode worker state: {e}"));
            return crate::task::EXIT_BAD_PAYLOAD;
        }
    };
    crate::panic_capture::install();
    crate::process::handle_termination_gracefully();
    let mut ctx = WorkerContext {
        logger,
        role,
        runtime: None,
    };
    let mut serving = Serving {
        progress,
        started: 0,
        max_reply: bootstrap.max_reply,
    };
    match bootstrap.ipc_server {
        None => match SocketChildLink::new(start.into_channel()) {
            Ok(mut link) => serving.run(&mut worker, &mut ctx, &mut link),
            Err(e) => {
                ctx.error(format_args!("cannot set up the worker's channel: {e}"));
                EXIT_PROTOCOL
            }
        },
        Some(server) => match IpcChildLink::connect(server) {
            Ok(mut link) => serving.run(&mut worker, &mut ctx, &mut link),
            Err(e) => {
                ctx.error(format_args!("cannot connect the worker's ipc channel: {e}"));
                EXIT_PROTOCOL
            }
        },
    }
}

fn send(link: &mut impl ChildLink, message: &FromChild) -> std::io::Result<()> {
    let bytes = protocol::encode(message).map_err(std::io::Error::other)?;
    link.send(&bytes)
}

/// SIGTERM/SIGINT: the current call is done; say goodbye and exit cleanly.
/// Calls already sent but not started stay unstarted (the progress word says
/// so) and the pool runs them elsewhere.
fn leave<W: WorkerMethods>(
    worker: &mut W,
    ctx: &mut WorkerContext,
    link: &mut impl ChildLink,
) -> i32 {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.stopping(ctx)));
    let _ = send(link, &FromChild::Leaving);
    let _ = link.flush();
    0
}

/// A worker's serving state.
struct Serving {
    progress: ProgressWord,
    /// Calls started so far (mirrored in the progress word).
    started: u64,
    max_reply: usize,
}

impl Serving {
    fn run<W: WorkerMethods>(
        &mut self,
        worker: &mut W,
        ctx: &mut WorkerContext,
        link: &mut impl ChildLink,
    ) -> i32 {
        let started =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.started(ctx)));
        if let Err(payload) = started {
            let message =
                crate::panic_capture::take().unwrap_or_else(|| crate::panic_message(&*payload));
            ctx.error(format_args!("worker `started` panicked: {message}"));
            return EXIT_PANICKED;
        }
        if send(link, &FromChild::Ready)
            .and_then(|()| link.flush())
            .is_err()
        {
            return 0; // the daemon is gone
        }
        self.serve(worker, ctx, link)
    }

    fn serve<W: WorkerMethods>(
        &mut self,
        worker: &mut W,
        ctx: &mut WorkerContext,
        link: &mut impl ChildLink,
    ) -> i32 {
        loop {
            if crate::process::termination_requested() {
                return leave(worker, ctx, link);
            }
            let frame = match link.recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => return 0, // the daemon hung up
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return 0,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    return leave(worker, ctx, link)
                }
                Err(e) => {
                    ctx.error(format_args!("worker channel failed: {e}"));
                    return EXIT_PROTOCOL;
                }
            };
            let request = match protocol::decode::<ToChild>(&frame) {
                Ok(r) => r,
                Err(e) => {
                    ctx.error(format_args!("malformed request from the daemon: {e}"));
                    return EXIT_PROTOCOL;
                }
            };
            let (id, method, args) = match request {
                ToChild::Call { id, method, args } => (id, method, args),
                ToChild::Stop => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker.stopping(ctx)
                    }));
                    let _ = link.flush();
                    return 0;
                }
            };
            // Before any of the method's code runs: from here on, the pool
            // counts this call as started (it may have run).
            self.started += 1;
            self.progress.started(self.started);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker.dispatch(ctx, method, &args)
            }));
            drop(args);
            let (outcome, poisoned) = match result {
                Ok(Ok(bytes)) if bytes.len() + protocol::REPLY_OVERHEAD > self.max_reply => {
                    ctx.error(format_args!(
                        "the result of call {id} is {} bytes, over the pool's {}-byte limit; \
                         it is not sent",
                        bytes.len(),
                        self.max_reply
                    ));
                    (Outcome::ReplyTooLarge(bytes.len()), false)
                }
                Ok(Ok(bytes)) => (Outcome::Ok(bytes), false),
                Ok(Err(e)) => (Outcome::BadCall(e.to_string()), false),
                Err(payload) => {
                    let message = crate::panic_capture::take()
                        .unwrap_or_else(|| crate::panic_message(&*payload));
                    ctx.error(format_args!("worker method panicked: {message}"));
                    (Outcome::Panicked(message), true)
                }
            };
            // A finished reply leaves at once: the next call, already
            // waiting, may take long, and this caller waits meanwhile.
            if send(link, &FromChild::Reply { id, outcome })
                .and_then(|()| link.flush())
                .is_err()
            {
                return 0;
            }
            if poisoned {
                // The state may be half-updated: let the pool start a fresh one.
                return EXIT_PANICKED;
            }
        }
    }
}

/// A minimal executor: polls `future`, parking the thread between wake-ups.
fn park_on<F: Future>(future: F) -> F::Output {
    use std::sync::Arc;
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
