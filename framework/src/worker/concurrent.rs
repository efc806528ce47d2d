//! A worker process that runs `async` methods concurrently (the pool's
//! `max_concurrent` > 1): I/O-bound calls overlap instead of queueing.
//!
//! The progress-word contract of `progress.rs` holds as in the sequential
//! worker of `child.rs`: calls start in the order they arrive, and the word
//! counts the calls started. A call starts when it reaches the head of the
//! arrivals and may run: an `async fn(&self)` method beside others of its
//! kind, up to `max_concurrent`; any other method alone (it takes
//! `&mut self`). Each reply leaves as soon as its call finishes; replies
//! are coalesced into one write only when they are ready at the same
//! moment.
//!
//! The calls run as futures on a single-threaded tokio runtime, which also
//! reads the link. Plain (non-`async`) methods run outside that runtime,
//! on the same thread, exactly as in the sequential worker (so they may
//! still use `ctx.block_on`).

use super::child::{
    run_started, run_stopping, Received, Request, Serving, EXIT_PANICKED, EXIT_PROTOCOL,
};
use super::protocol::{self, Deadline, FromChild};
use super::{DispatchError, MethodKind, WorkerContext, WorkerMethods};
use crate::ipc::frame::Decoder;
use crate::ipc::outbox::Outbox;
use crate::ipc::socket::read_into;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How often the worker looks whether SIGTERM or SIGINT arrived (their
/// handler only sets a flag, which nothing wakes this runtime for).
const TERMINATION_CHECK: Duration = Duration::from_millis(20);

/// A call received and not started yet.
type Arrived = Received;

type Running = Pin<Box<dyn Future<Output = (u64, CallResult)>>>;
type CallResult = std::thread::Result<Result<Vec<u8>, DispatchError>>;

/// What the worker is doing, beyond its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading and starting calls.
    Serving,
    /// The pool sent `Stop` (it holds no call here): run `stopping`, exit 0.
    Stopping,
    /// SIGTERM/SIGINT: start nothing more, finish the running calls, say
    /// `Leaving`, exit 0. Calls not started run elsewhere.
    Leaving,
    /// A method panicked: start nothing more, finish the running calls,
    /// exit [`EXIT_PANICKED`] (the state may be half-updated).
    Poisoned,
}

/// Why the runtime's part of the loop handed control back.
enum Step {
    /// A plain method's call is next and nothing else runs: run it on this
    /// thread, outside the runtime.
    RunPlain(Arrived),
    /// Done: exit with this code (after the mode's farewell, if any).
    Finish,
    /// Exit at once with this code (the daemon hung up, or the link broke).
    Exit(i32),
}

struct Worker<W> {
    serving: Serving,
    state: Rc<RefCell<W>>,
    ctx: WorkerContext,
    max: usize,
    mode: Mode,
    arrived: VecDeque<Arrived>,
    running: FuturesUnordered<Running>,
    /// The running call (then the only one) holds the state exclusively.
    exclusive: bool,
    /// Encoded replies not written yet.
    out: Outbox,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    decoder: Decoder,
}

/// Serves calls on `channel` (the socket transport), up to `max` `async`
/// calls at once.
pub(super) fn serve<W: WorkerMethods>(
    serving: Serving,
    mut state: W,
    mut ctx: WorkerContext,
    channel: StdUnixStream,
    max: usize,
) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Arc::new(runtime),
        Err(e) => {
            ctx.error(format_args!("cannot start the worker's async runtime: {e}"));
            return EXIT_PROTOCOL;
        }
    };
    ctx.set_runtime(runtime.clone());
    if let Err(code) = run_started(&mut state, &mut ctx) {
        return code;
    }
    let link = channel.set_nonblocking(true).and_then(|()| {
        let _entered = runtime.enter();
        tokio::net::UnixStream::from_std(channel)
    });
    let (reader, writer) = match link {
        Ok(stream) => stream.into_split(),
        Err(e) => {
            ctx.error(format_args!("cannot set up the worker's channel: {e}"));
            return EXIT_PROTOCOL;
        }
    };
    let mut worker = Worker {
        serving,
        state: Rc::new(RefCell::new(state)),
        ctx,
        max,
        mode: Mode::Serving,
        arrived: VecDeque::new(),
        running: FuturesUnordered::new(),
        exclusive: false,
        out: Outbox::default(),
        reader,
        writer,
        decoder: Decoder::new(),
    };
    worker.queue_reply(&FromChild::Ready);
    loop {
        match runtime.block_on(worker.step()) {
            Step::RunPlain(call) => worker.run_plain(call),
            Step::Exit(code) => return code,
            Step::Finish => {
                let code = worker.farewell();
                let _ = runtime.block_on(worker.write_out());
                return code;
            }
        }
    }
}

impl<W: WorkerMethods> Worker<W> {
    fn kind(method: u16) -> MethodKind {
        W::KINDS
            .get(usize::from(method))
            .copied()
            .unwrap_or(MethodKind::Sync)
    }

    fn queue_reply(&mut self, message: &FromChild) {
        self.queue_frame(message, Vec::new());
    }

    fn queue_frame(&mut self, message: &FromChild, fds: Vec<std::os::fd::OwnedFd>) {
        // A reply that cannot be encoded or framed cannot be sent at all;
        // the pool then settles the call when this worker ends.
        if let Ok(bytes) = protocol::encode(message) {
            let _ = self.out.push_with_fds(&bytes, fds);
        }
    }

    async fn write_out(&mut self) -> std::io::Result<()> {
        self.out.write_async(self.writer.as_ref()).await
    }

    /// Runs the runtime's part until a plain call must run, or the worker
    /// is done.
    async fn step(&mut self) -> Step {
        let mut check = tokio::time::interval(TERMINATION_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.write_out().await.is_err() {
                return Step::Exit(0); // the daemon is gone
            }
            if self.mode == Mode::Serving && crate::process::termination_requested() {
                self.mode = Mode::Leaving;
            }
            if let Some(plain) = self.start_arrived() {
                return Step::RunPlain(plain);
            }
            if self.mode != Mode::Serving && self.running.is_empty() {
                return Step::Finish;
            }
            let reading = self.mode == Mode::Serving;
            tokio::select! {
                biased;
                Some((id, result)) = self.running.next(), if !self.running.is_empty() => {
                    self.reply(id, result);
                    // Replies ready at this same moment leave in the same write.
                    while let Some(Some((id, result))) = self.running.next().now_or_never() {
                        self.reply(id, result);
                    }
                    if self.running.is_empty() {
                        self.exclusive = false;
                    }
                }
                read = read_into(&self.reader, &mut self.decoder), if reading => {
                    match read {
                        Ok(0) => return Step::Exit(0), // the daemon hung up
                        Ok(_) => {
                            if let Err(code) = self.receive() {
                                return Step::Exit(code);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            return Step::Exit(0)
                        }
                        Err(e) => {
                            self.ctx.error(format_args!("worker channel failed: {e}"));
                            return Step::Exit(EXIT_PROTOCOL);
                        }
                    }
                }
                _ = check.tick() => {}
            }
        }
    }

    /// Takes the frames read so far.
    fn receive(&mut self) -> Result<(), i32> {
        let frames = self.decoder.frames().map_err(|e| {
            self.ctx
                .error(format_args!("malformed request from the daemon: {e}"));
            EXIT_PROTOCOL
        })?;
        for frame in frames {
            match self.serving.request(frame) {
                Ok(Request::Call(call)) => self.arrived.push_back(call),
                Ok(Request::Stop) => self.mode = Mode::Stopping,
                Err(e) => {
                    self.ctx
                        .error(format_args!("malformed request from the daemon: {e}"));
                    return Err(EXIT_PROTOCOL);
                }
            }
        }
        Ok(())
    }

    /// Starts the calls at the head of the arrivals that may run now, in
    /// order; returns a plain call that must run next, on this thread.
    fn start_arrived(&mut self) -> Option<Arrived> {
        while matches!(self.mode, Mode::Serving | Mode::Stopping) {
            let next = self.arrived.front()?;
            let kind = Self::kind(next.method);
            let may_start = match kind {
                MethodKind::Shared => !self.exclusive && self.running.len() < self.max,
                MethodKind::Sync | MethodKind::Exclusive => self.running.is_empty(),
            };
            if !may_start {
                return None;
            }
            let mut call = self.arrived.pop_front()?;
            self.serving.start_call();
            if kind == MethodKind::Sync {
                return Some(call);
            }
            let ctx = self
                .ctx
                .for_call(call.id, call.deadline.map(Deadline::from_wire));
            let state = self.state.clone();
            call.attach();
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                W::dispatch_async(state, ctx, call.method, &call.args)
            }));
            super::detach_from_call();
            match started {
                Ok(Ok(mut future)) => {
                    let id = call.id;
                    let attach = call.attach;
                    self.exclusive = kind == MethodKind::Exclusive;
                    // Calls run interleaved: each sets, whenever it runs,
                    // how its own result is to be encoded.
                    let attaching = futures_util::future::poll_fn(move |cx| {
                        super::set_attach_result(attach);
                        future.as_mut().poll(cx)
                    });
                    self.running.push(Box::pin(
                        std::panic::AssertUnwindSafe(attaching)
                            .catch_unwind()
                            .map(move |result| (id, result)),
                    ));
                }
                Ok(Err(e)) => self.reply(call.id, Ok(Err(e))),
                Err(payload) => self.reply(call.id, Err(payload)),
            }
        }
        None
    }

    /// Runs a plain method's call (nothing else runs meanwhile).
    fn run_plain(&mut self, mut call: Arrived) {
        self.ctx
            .set_call(Some((call.id, call.deadline.map(Deadline::from_wire))));
        call.attach();
        let state = &self.state;
        let ctx = &mut self.ctx;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.borrow_mut().dispatch(ctx, call.method, &call.args)
        }));
        super::detach_from_call();
        self.ctx.set_call(None);
        self.reply(call.id, result);
    }

    fn reply(&mut self, id: u64, result: CallResult) {
        let (reply, fd, poisoned) = self.serving.outcome(&self.ctx, id, result);
        if poisoned {
            self.mode = Mode::Poisoned;
        }
        self.queue_frame(&reply, fd);
    }

    /// Ends the worker (nothing runs any more): its exit code. On this
    /// thread, outside the runtime, like the plain methods.
    fn farewell(&mut self) -> i32 {
        match self.mode {
            Mode::Poisoned => EXIT_PANICKED,
            Mode::Serving | Mode::Stopping => {
                run_stopping(&mut *self.state.borrow_mut(), &mut self.ctx);
                0
            }
            Mode::Leaving => {
                run_stopping(&mut *self.state.borrow_mut(), &mut self.ctx);
                self.queue_reply(&FromChild::Leaving);
                0
            }
        }
    }
}
