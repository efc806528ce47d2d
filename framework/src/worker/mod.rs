//! Workers: actors whose methods run in child processes.
//!
//! ```no_run
//! use daemonic::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[daemonic::worker]
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Hasher { rounds: u32 }
//!
//! #[daemonic::worker]
//! impl Hasher {
//!     fn started(&mut self, ctx: &mut WorkerContext) {
//!         ctx.log("hasher ready"); // runs in the child: open connections here
//!     }
//!     pub fn digest(&mut self, input: String) -> String {
//!         (0..self.rounds).fold(input, |s, _| format!("{:x}", s.len()))
//!     }
//!     pub fn checked(&mut self, ctx: &mut WorkerContext, input: String) -> Result<String, String> {
//!         if input.is_empty() {
//!             return Err("empty input".into());
//!         }
//!         ctx.debug(1, format_args!("call {:?} in pid {}", ctx.call_id(), ctx.pid()));
//!         Ok(self.digest(input))
//!     }
//! }
//!
//! // anywhere in an actix System:
//! async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//!     let pool = WorkerPool::builder(Hasher { rounds: 3 }).size(4).start()?;
//!     let digest: String = pool.call(hasher::Digest { input: "abc".into() }).await?;
//!     match pool.call(hasher::Checked { input: String::new() }).await {
//!         Ok(digest) => println!("{digest}"),
//!         Err(CallError::Method(why)) => println!("refused: {why}"),
//!         Err(e) => println!("failed: {e}"),
//!     }
//!     // actix's `send` works too, with its nested results:
//!     let digest: Result<String, WorkerError> = pool.send(hasher::Digest { input: "abc".into() }).await?;
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! Every public method becomes a message type in a module named after the
//! worker (`Hasher::digest` → `hasher::Digest`). [`call`](CallExt::call)
//! returns `Result<T, CallError<E>>`: the method's value (the `Ok` of a
//! method returning `Result<T, E>`), or why not, in one level;
//! `addr.send(..)` returns actix's `Result<Result<R, WorkerError>,
//! MailboxError>` where `R` is the method's own return type. A call never
//! hangs: a worker that dies, times out or panics resolves every call it
//! held with an error, and the pool replaces it.
//!
//! A method may take a [`WorkerContext`] (`ctx: &mut WorkerContext`, in any
//! position; it is not a message field) for logging, its pid, and the call's
//! id and deadline. `async fn` methods taking `&self` run side by side in
//! one worker with [`max_concurrent`](WorkerPoolBuilder::max_concurrent).

mod call;
mod child;
mod concurrent;
mod context;
pub(crate) mod pool;
mod progress;
pub(crate) mod protocol;
mod stats;

pub use crate::ipc::shared_bytes::{
    SharedBytes, SharedBytesMut, MAX_SHARED_PER_VALUE, SHARED_NAME,
};
pub use crate::ipc::Transport;
#[doc(hidden)]
pub use call::MethodResult;
pub use call::{CallError, CallExt, CallFuture, PoolActor};
pub use child::run_in_child;
#[doc(hidden)]
pub use context::Executor;
pub use context::WorkerContext;
pub(crate) use pool::PoolRegistry;
pub use pool::{
    CallResponse, CallReturn, GetPoolStats, StopPool, WorkerPool, WorkerPoolBuilder,
    DEFAULT_MAX_SHARED_BYTES, DEFAULT_SHM_THRESHOLD, DEFAULT_START_TIMEOUT,
};
#[cfg_attr(not(feature = "nats"), allow(unused_imports))]
pub(crate) use pool::{GetPoolLimits, PoolLimits, RawCall};
pub(crate) use pool::{PoolReport, ResumePool, SuspendPool};
pub use stats::{ChildStats, PoolStats};

use crate::ipc::shared_bytes::Attachments;
use crate::process::ExitStatus;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// A worker type: its state is serialized into every child it starts.
/// Implemented by `#[daemonic::worker]` on the struct.
///
/// ```
/// use daemonic::worker::Worker;
///
/// #[daemonic::worker]
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Resizer {
///     quality: u8,
/// }
///
/// #[daemonic::worker]
/// impl Resizer {
///     pub fn resize(&mut self, width: u32) -> u32 {
///         width * u32::from(self.quality) / 100
///     }
/// }
///
/// assert!(<Resizer as Worker>::NAME.ends_with("::Resizer"));
/// ```
pub trait Worker: Serialize + DeserializeOwned + Send + 'static {
    /// Stable name (`module::path::Type`) by which children find it.
    const NAME: &'static str;
}

/// The child-side dispatcher. Implemented by `#[daemonic::worker]` on the
/// `impl` block.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no worker methods",
    label = "add `#[daemonic::worker]` to the `impl {Self}` block that defines its methods"
)]
///
/// ```
/// use daemonic::worker::WorkerMethods;
///
/// #[daemonic::worker]
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Db;
///
/// #[daemonic::worker]
/// impl Db {
///     fn started(&mut self, ctx: &mut daemonic::WorkerContext) {
///         ctx.log("connecting"); // in the worker process, before its first call
///     }
///     pub fn get(&mut self, key: String) -> Option<String> {
///         let _ = key;
///         None
///     }
/// }
///
/// assert_eq!(<Db as WorkerMethods>::METHODS, &["get"]);
/// ```
pub trait WorkerMethods: Worker {
    /// Method names, indexed by [`Call::METHOD`].
    const METHODS: &'static [&'static str];

    /// How each method runs, indexed like [`METHODS`](Self::METHODS).
    #[doc(hidden)]
    const KINDS: &'static [MethodKind] = &[];

    /// Decodes the arguments of method `method`, calls it, encodes the result.
    fn dispatch(
        &mut self,
        ctx: &mut WorkerContext,
        method: u16,
        args: &[u8],
    ) -> Result<Vec<u8>, DispatchError>;

    /// Decodes the arguments of `async` method `method` and returns its
    /// call as a future, for a worker that runs `async` methods
    /// concurrently (see [`MethodKind`]).
    #[doc(hidden)]
    fn dispatch_async(
        this: Rc<RefCell<Self>>,
        ctx: WorkerContext,
        method: u16,
        args: &[u8],
    ) -> Result<AsyncCall, DispatchError> {
        let _ = (this, ctx, args);
        Err(DispatchError::UnknownMethod(method))
    }

    /// Runs in the child before the first call.
    fn started(&mut self, ctx: &mut WorkerContext) {
        let _ = ctx;
    }

    /// Runs in the child when it is stopped gracefully (recycling, shutdown).
    fn stopping(&mut self, ctx: &mut WorkerContext) {
        let _ = ctx;
    }
}

/// How a worker method may run beside others in one worker process.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// A plain method: runs alone, on the worker's thread.
    Sync,
    /// An `async` method taking `&mut self`: runs alone, as a future.
    Exclusive,
    /// An `async` method taking `&self`: runs beside other `Shared` calls,
    /// up to the pool's `max_concurrent`.
    Shared,
}

/// An `async` method's call, ready to be polled (generated code returns it).
#[doc(hidden)]
pub type AsyncCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, DispatchError>>>>;

/// A message that calls one method of worker `W`. Generated by
/// `#[daemonic::worker]`. (The worker is a type parameter, not an associated
/// type, so a private worker type can have public message types.)
///
/// ```
/// use daemonic::worker::Call;
///
/// #[daemonic::worker]
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Parser;
///
/// #[daemonic::worker]
/// impl Parser {
///     pub fn number(&mut self, text: String) -> Result<i64, String> {
///         text.parse().map_err(|_| format!("not a number: {text}"))
///     }
/// }
///
/// // `call` returns `Result<i64, CallError<String>>` for this message:
/// fn value_type(_: <parser::Number as Call<Parser>>::Value) {}
/// value_type(7_i64);
/// assert_eq!(<parser::Number as Call<Parser>>::NAME, "number");
/// ```
pub trait Call<W: WorkerMethods>: Serialize + DeserializeOwned + Send + 'static {
    /// The method's return type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// What [`call`](CallExt::call) returns on success: the `Ok` value of a
    /// method returning `Result`, else the method's return value.
    type Value;
    /// The error of a method returning `Result` (else [`Infallible`](std::convert::Infallible)):
    /// [`call`](CallExt::call) returns it as [`CallError::Method`].
    type Error;
    /// Splits the method's return value into [`Value`](Self::Value) and
    /// [`Error`](Self::Error).
    fn fold(output: Self::Output) -> Result<Self::Value, Self::Error>;
    /// Index of the method in [`WorkerMethods::METHODS`].
    const METHOD: u16;
    /// The method's name.
    const NAME: &'static str;
}

/// Why a call did not return the method's value.
///
/// Each variant says whether the method may have run: only `Died`,
/// `Timeout`, `Panicked` and (for a remote pool) `HostLost` come from a call
/// a worker may have started. Every other error means the method never ran
/// for this call.
///
/// ```no_run
/// # use daemonic::prelude::*;
/// # #[daemonic::worker]
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// # struct Calc;
/// # #[daemonic::worker]
/// # impl Calc {
/// #     pub fn add(&mut self, a: i64, b: i64) -> i64 { a + b }
/// # }
/// # async fn demo(pool: Addr<WorkerPool<Calc>>) {
/// match pool.call(calc::Add { a: 1, b: 2 }).await {
///     Ok(sum) => println!("{sum}"),
///     Err(CallError::Worker(WorkerError::Busy { queued, .. })) => {
///         println!("{queued} calls waiting: try again later")
///     }
///     Err(CallError::Worker(e)) if e.kind() == "timeout" => println!("too slow: {e}"),
///     Err(e) => println!("failed: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker process died while running the call (it may have run in
    /// part). Calls it held but had not started are run by another worker
    /// instead.
    #[error("worker process {pid} died ({exit}) while running the call")]
    Died {
        /// The worker's pid.
        pid: i32,
        /// How it ended.
        exit: ExitStatus,
    },
    /// The call exceeded the pool's call timeout; the worker was killed and replaced.
    #[error("call timed out after {after:?}; worker process {pid} was killed")]
    Timeout {
        /// The worker's pid.
        pid: i32,
        /// The configured timeout.
        after: Duration,
    },
    /// The method panicked; the worker was replaced (its state may be poisoned).
    #[error("worker method panicked: {message}")]
    Panicked {
        /// The panic message and location.
        message: String,
    },
    /// The pool's queue is full, in calls or in bytes (back-pressure). The
    /// call was not queued.
    #[error("worker pool queue is full ({queued} calls, {queued_bytes} bytes waiting)")]
    Busy {
        /// Calls waiting.
        queued: usize,
        /// Bytes of arguments waiting.
        queued_bytes: usize,
    },
    /// The serialized call exceeds the pool's maximum payload; it was not sent.
    #[error("call payload of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size of the serialized arguments.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The method returned, but its serialized result exceeds the pool's
    /// maximum payload, so the worker did not send it. The worker lives on.
    #[error("result of {size} bytes exceeds the {max}-byte limit; it was not sent")]
    ReplyTooLarge {
        /// Size of the serialized result.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No worker became ready within the pool's start timeout (its `started`
    /// hook did not return), and none was ready to take the call.
    #[error("no worker became ready within {after:?} (its `started` hook did not return)")]
    StartTimeout {
        /// The configured start timeout.
        after: Duration,
    },
    /// The pool stopped respawning (restart limit reached).
    #[error("worker pool failed: {reason}")]
    PoolFailed {
        /// Why.
        reason: String,
    },
    /// The pool is shutting down.
    #[error("worker pool is shutting down")]
    ShuttingDown,
    /// Arguments or results could not be encoded or decoded.
    #[error("worker protocol error: {0}")]
    Protocol(String),
    /// A remote pool found no host to take the call: none serves its
    /// subject, or this process is not connected to NATS. The call did not
    /// run, so it is safe to retry.
    #[error("no host available: {reason}")]
    Unavailable {
        /// Why (which subject nobody serves, or the connection's state).
        reason: String,
    },
    /// A remote pool's host stopped answering while it held the call (its
    /// heartbeats stopped, or its answer was lost): the call may have run.
    #[error("host {host} went silent for {silent:?} while it held the call; it may have run")]
    HostLost {
        /// The host's name (`unknown` if no host had claimed the call).
        host: String,
        /// How long nothing was heard about the call.
        silent: Duration,
    },
}

impl WorkerError {
    /// A short, stable name of the variant (`died`, `timeout`, …), as used
    /// in stats and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerError::Died { .. } => "died",
            WorkerError::Timeout { .. } => "timeout",
            WorkerError::Panicked { .. } => "panicked",
            WorkerError::Busy { .. } => "busy",
            WorkerError::TooLarge { .. } => "too_large",
            WorkerError::ReplyTooLarge { .. } => "reply_too_large",
            WorkerError::StartTimeout { .. } => "start_timeout",
            WorkerError::PoolFailed { .. } => "pool_failed",
            WorkerError::ShuttingDown => "shutting_down",
            WorkerError::Protocol(_) => "protocol",
            WorkerError::Unavailable { .. } => "unavailable",
            WorkerError::HostLost { .. } => "host_lost",
        }
    }
}

/// A child-side dispatch failure (generated code returns it).
#[doc(hidden)]
#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    /// No method with this index.
    #[error("unknown method index {0}")]
    UnknownMethod(u16),
    /// Arguments did not decode.
    #[error("cannot decode arguments: {0}")]
    BadArgs(String),
    /// The result did not encode.
    #[error("cannot encode result: {0}")]
    Encode(String),
}

/// Decodes a call's arguments (generated code calls it), their
/// `SharedBytes` taken from the descriptors the call came with (see
/// [`attach_to_call`]).
#[doc(hidden)]
pub fn decode_args<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DispatchError> {
    let attached = CALL_ATTACHED.with(|a| a.borrow_mut().take());
    let decode = || {
        protocol::decode_at_most(bytes, protocol::MAX_PAYLOAD_DEPTH)
            .map_err(|e| DispatchError::BadArgs(e.to_string()))
    };
    match attached {
        Some(attached) => crate::ipc::shared_bytes::decode_attached(attached, decode),
        None => decode(),
    }
}

thread_local! {
    /// In a worker process: results of this many bytes or more are encoded
    /// straight into a sealed memfd (`None`: never; the pool's side).
    static SPILL_AT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// The memfd of the result `encode_output` just encoded, if it spilled.
    static SPILLED: RefCell<Option<crate::ipc::shm::Sealed>> = const { RefCell::new(None) };
    /// The descriptors the call being started came with, for its
    /// arguments' `SharedBytes` (`decode_args` takes them).
    static CALL_ATTACHED: RefCell<Option<Attachments>> = const { RefCell::new(None) };
    /// Whether the result of the call running now sends its `SharedBytes`
    /// as descriptors.
    static ATTACH_RESULT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The descriptors of the `SharedBytes` in the result `encode_output`
    /// just encoded.
    static RESULT_ATTACHED: RefCell<Attachments> = RefCell::new(Attachments::plain());
}

/// In a worker: the call about to be dispatched came with `attached` (its
/// arguments' `SharedBytes`), and its result sends its own as descriptors
/// if `attach`.
pub(crate) fn attach_to_call(attached: Attachments, attach: bool) {
    CALL_ATTACHED.with(|a| *a.borrow_mut() = Some(attached));
    ATTACH_RESULT.with(|a| a.set(attach));
}

/// In a worker: the call dispatched last is done with its descriptors
/// (those its arguments did not take are closed).
pub(crate) fn detach_from_call() {
    CALL_ATTACHED.with(|a| drop(a.borrow_mut().take()));
}

/// Whether the result of the call running now sends its `SharedBytes` as
/// descriptors; `set_attach_result` changes it (an `async` call's future
/// sets it each time it runs, see `concurrent.rs`).
pub(crate) fn attach_result() -> bool {
    ATTACH_RESULT.with(std::cell::Cell::get)
}

pub(crate) fn set_attach_result(attach: bool) {
    ATTACH_RESULT.with(|a| a.set(attach));
}

/// The descriptors of the `SharedBytes` in the result [`encode_output`]
/// encoded last.
pub(crate) fn take_result_attached() -> Attachments {
    RESULT_ATTACHED.with(|a| std::mem::take(&mut *a.borrow_mut()))
}

/// Makes [`encode_output`] encode results of `threshold` bytes or more
/// into a sealed memfd, on this thread (a worker's).
pub(crate) fn spill_results_at(threshold: Option<usize>) {
    SPILL_AT.with(|at| at.set(threshold));
}

/// The memfd of the result [`encode_output`] encoded last, if it spilled.
pub(crate) fn take_spilled() -> Option<crate::ipc::shm::Sealed> {
    SPILLED.with(|spilled| spilled.borrow_mut().take())
}

/// Encodes a method's result (generated code calls it). In a worker, a
/// result of the pool's `shm_threshold` or more goes straight into a
/// sealed memfd, which the worker sends with its reply; the bytes returned
/// are then empty (no encoding is empty: the reply tells them apart).
#[doc(hidden)]
pub fn encode_output<T: Serialize>(value: &T) -> Result<Vec<u8>, DispatchError> {
    use crate::ipc::shm::Encoded;
    let threshold = SPILL_AT.with(std::cell::Cell::get);
    let (encoded, attached) = crate::ipc::shm::encode(value, threshold, attach_result())
        .map_err(DispatchError::Encode)?;
    RESULT_ATTACHED.with(|a| *a.borrow_mut() = attached);
    match encoded {
        Encoded::Inline(bytes) => Ok(bytes),
        Encoded::Shared(sealed) => {
            SPILLED.with(|spilled| *spilled.borrow_mut() = Some(sealed));
            Ok(Vec::new())
        }
    }
}

pub(crate) fn short_name(name: &str) -> String {
    crate::task::short_name(name)
}
