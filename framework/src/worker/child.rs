//! The worker process: receive calls, dispatch them on the worker's state,
//! send replies. One call at a time, in order (`concurrent.rs` runs `async`
//! methods side by side instead when the pool allows it); no actix System,
//! so a fresh worker is ready within microseconds of its fork.

use super::progress::ProgressWord;
use super::protocol::{self, Bootstrap, Deadline, FromChild, Outcome, ToChild};
use super::{DispatchError, WorkerContext, WorkerMethods};
use crate::ipc::ipc_channel::IpcChildLink;
use crate::ipc::shared_bytes::Attachments;
use crate::ipc::shm::{self, Encoded, Mapping};
use crate::ipc::socket::SocketChildLink;
use crate::ipc::{ChildLink, Frame};
use crate::process::ChildStart;
use std::borrow::Cow;
use std::os::fd::OwnedFd;

/// Exit code of a worker whose method panicked (it is replaced).
pub(crate) const EXIT_PANICKED: i32 = 101;
/// Exit code of a worker that received a malformed frame.
pub(crate) const EXIT_PROTOCOL: i32 = 76;

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
    let mut ctx = WorkerContext::new(logger, role);
    super::spill_results_at(bootstrap.shm_threshold);
    let mut serving = Serving {
        progress,
        started: 0,
        max_reply: bootstrap.max_reply,
        shm_threshold: bootstrap.shm_threshold,
    };
    if bootstrap.max_concurrent > 1 {
        // The pool allows this on the socket transport only.
        return super::concurrent::serve(
            serving,
            worker,
            ctx,
            start.into_channel(),
            bootstrap.max_concurrent,
        );
    }
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

fn send_reply(
    link: &mut impl ChildLink,
    (message, fds): (FromChild, Vec<OwnedFd>),
) -> std::io::Result<()> {
    let bytes = protocol::encode(&message).map_err(std::io::Error::other)?;
    link.send_with_fds(&bytes, fds)
}

/// SIGTERM/SIGINT: the current call is done; say goodbye and exit cleanly.
/// Calls already sent but not started stay unstarted (the progress word says
/// so) and the pool runs them elsewhere.
fn leave<W: WorkerMethods>(
    worker: &mut W,
    ctx: &mut WorkerContext,
    link: &mut impl ChildLink,
) -> i32 {
    run_stopping(worker, ctx);
    let _ = send(link, &FromChild::Leaving);
    let _ = link.flush();
    0
}

/// A worker's serving state.
pub(super) struct Serving {
    progress: ProgressWord,
    /// Calls started so far (mirrored in the progress word).
    started: u64,
    max_reply: usize,
    /// Results of at least this many bytes go back in a sealed memfd.
    shm_threshold: Option<usize>,
}

/// What the pool asked for.
pub(super) enum Request {
    Call(Received),
    /// Run `stopping` and exit 0.
    Stop,
}

/// A call as the worker received it.
pub(super) struct Received {
    pub id: u64,
    pub method: u16,
    pub args: Args,
    pub deadline: Option<u64>,
    /// The descriptors of the arguments' `SharedBytes`.
    pub attached: Attachments,
    /// Whether the result sends its `SharedBytes` as descriptors.
    pub attach: bool,
}

impl Received {
    /// Hands the call's descriptors to its dispatch (see `decode_args`).
    pub(super) fn attach(&mut self) {
        let attached = std::mem::take(&mut self.attached);
        super::attach_to_call(attached, self.attach);
    }
}

/// A call's encoded arguments: in the frame they came in, or in the sealed
/// memfd it carried, mapped read-only (decoded in place either way).
pub(super) enum Args {
    InFrame(Vec<u8>, std::ops::Range<usize>),
    Mapped(Mapping),
}

impl std::ops::Deref for Args {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Args::InFrame(frame, range) => &frame[range.clone()],
            Args::Mapped(mapping) => mapping,
        }
    }
}

/// Runs the `started` hook; `Err` is the exit code if it panicked.
pub(super) fn run_started<W: WorkerMethods>(
    worker: &mut W,
    ctx: &mut WorkerContext,
) -> Result<(), i32> {
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.started(ctx)));
    if let Err(payload) = started {
        let message =
            crate::panic_capture::take().unwrap_or_else(|| crate::panic_message(&*payload));
        ctx.error(format_args!("worker `started` panicked: {message}"));
        return Err(EXIT_PANICKED);
    }
    Ok(())
}

/// Runs the `stopping` hook (a panic there changes nothing: it is leaving).
pub(super) fn run_stopping<W: WorkerMethods>(worker: &mut W, ctx: &mut WorkerContext) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.stopping(ctx)));
}

impl Serving {
    /// Decodes a frame from the pool; `Err` says why it is malformed (the
    /// worker then exits: its link is broken).
    pub(super) fn request(&self, frame: Frame) -> Result<Request, String> {
        let Frame { bytes, fds } = frame;
        let request = protocol::decode::<ToChild>(&bytes).map_err(|e| e.to_string())?;
        let mut fds = fds.into_iter();
        let (id, method, deadline, args, attach) = match request {
            ToChild::Stop if fds.len() == 0 => return Ok(Request::Stop),
            ToChild::Stop => return Err("a descriptor with a frame that takes none".into()),
            ToChild::Call {
                id,
                method,
                args,
                deadline,
                attach,
            } => {
                // Where the decoder found the arguments in the frame, so
                // they are decoded from it without a copy.
                let range = match &args {
                    Cow::Borrowed(slice) => {
                        let start = (slice.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
                        let range = start..start.saturating_add(slice.len());
                        (range.end <= bytes.len()).then_some(range)
                    }
                    Cow::Owned(_) => None,
                };
                let args = match range {
                    Some(range) => Args::InFrame(bytes, range),
                    None => {
                        let owned = args.into_owned();
                        let len = owned.len();
                        Args::InFrame(owned, 0..len)
                    }
                };
                (id, method, deadline, args, attach)
            }
            ToChild::CallShared {
                id,
                method,
                len,
                deadline,
                attach,
            } => {
                let fd = fds.next().ok_or("shared arguments without their memfd")?;
                let mapping = Mapping::open(fd, len, self.max_reply).map_err(|e| e.to_string())?;
                (id, method, deadline, Args::Mapped(mapping), attach)
            }
        };
        let fds: Vec<OwnedFd> = fds.collect();
        // Arguments without descriptors hold no reference to one: decoded
        // plain (the common case).
        let attached = if fds.is_empty() {
            Attachments::plain()
        } else if attach {
            // The daemon is trusted: its `SharedBytes` have no limit.
            Attachments::received(fds, isize::MAX as usize)
        } else {
            return Err("descriptors with a call that takes none".into());
        };
        Ok(Request::Call(Received {
            id,
            method,
            args,
            deadline,
            attached,
            attach,
        }))
    }

    /// Counts one more call as started, before any of its code runs: from
    /// here on, the pool counts it as started (it may have run).
    pub(super) fn start_call(&mut self) {
        self.started += 1;
        self.progress.started(self.started);
    }

    /// The reply to call `id` for what its method did, with the memfd of a
    /// large result; `true` if the worker must exit after sending it (a
    /// panic may have left its state half-updated).
    pub(super) fn outcome(
        &self,
        ctx: &WorkerContext,
        id: u64,
        result: std::thread::Result<Result<Vec<u8>, DispatchError>>,
    ) -> (FromChild<'static>, Vec<OwnedFd>, bool) {
        let reply = |outcome| FromChild::Reply { id, outcome };
        // A large result was encoded straight into a memfd (see
        // `encode_output`); its bytes are left empty. The memfds of its
        // `SharedBytes` follow that one.
        let spilled = super::take_spilled();
        let attached = super::take_result_attached().into_fds();
        match result {
            Ok(Ok(bytes)) => {
                let result = match spilled {
                    Some(sealed) if bytes.is_empty() => Encoded::Shared(sealed),
                    _ => Encoded::Inline(bytes),
                };
                let len = result.len();
                if len + protocol::REPLY_OVERHEAD > self.max_reply {
                    ctx.error(format_args!(
                        "the result of call {id} is {len} bytes, over the pool's {}-byte limit; \
                         it is not sent",
                        self.max_reply
                    ));
                    return (reply(Outcome::ReplyTooLarge(len)), Vec::new(), false);
                }
                let shared = match result {
                    Encoded::Shared(sealed) => Some(sealed),
                    Encoded::Inline(bytes) if self.shm_threshold.is_some_and(|t| len >= t) => {
                        // Encoded elsewhere than by `encode_output`.
                        match shm::sealed(&bytes) {
                            Ok(sealed) => Some(sealed),
                            Err(_) => return (reply(Outcome::Ok(bytes.into())), attached, false),
                        }
                    }
                    Encoded::Inline(bytes) => {
                        return (reply(Outcome::Ok(bytes.into())), attached, false)
                    }
                };
                match shared.map(|s| s.share()) {
                    Some(Ok(fd)) => {
                        let mut fds = Vec::with_capacity(1 + attached.len());
                        fds.push(fd);
                        fds.extend(attached);
                        (reply(Outcome::Shared(len as u64)), fds, false)
                    }
                    _ => {
                        ctx.error(format_args!(
                            "cannot share the memfd of call {id}'s result; it is not sent"
                        ));
                        (
                            reply(Outcome::BadCall("cannot share the result's memfd".into())),
                            Vec::new(),
                            false,
                        )
                    }
                }
            }
            Ok(Err(e)) => (reply(Outcome::BadCall(e.to_string())), Vec::new(), false),
            Err(payload) => {
                let message =
                    crate::panic_capture::take().unwrap_or_else(|| crate::panic_message(&*payload));
                ctx.error(format_args!("worker method panicked: {message}"));
                (reply(Outcome::Panicked(message)), Vec::new(), true)
            }
        }
    }

    fn run<W: WorkerMethods>(
        &mut self,
        worker: &mut W,
        ctx: &mut WorkerContext,
        link: &mut impl ChildLink,
    ) -> i32 {
        if let Err(code) = run_started(worker, ctx) {
            return code;
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
            let call = match self.request(frame) {
                Ok(Request::Call(call)) => call,
                Ok(Request::Stop) => {
                    run_stopping(worker, ctx);
                    let _ = link.flush();
                    return 0;
                }
                Err(e) => {
                    ctx.error(format_args!("malformed request from the daemon: {e}"));
                    return EXIT_PROTOCOL;
                }
            };
            let mut call = call;
            call.attach();
            let Received {
                id,
                method,
                args,
                deadline,
                ..
            } = call;
            self.start_call();
            ctx.set_call(Some((id, deadline.map(Deadline::from_wire))));
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker.dispatch(ctx, method, &args)
            }));
            ctx.set_call(None);
            super::detach_from_call();
            drop(args);
            let (reply, fd, poisoned) = self.outcome(ctx, id, result);
            // A finished reply leaves at once: the next call, already
            // waiting, may take long, and this caller waits meanwhile.
            if send_reply(link, (reply, fd))
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
