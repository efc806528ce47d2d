//! `pool.call(msg).await`: one level of result.
//!
//! `addr.send(msg).await` gives actix's three layers for a method returning
//! `Result<T, E>`: the mailbox, the worker, the method
//! (`Result<Result<Result<T, E>, WorkerError>, MailboxError>`). [`call`]
//! folds them into `Result<T, CallError<E>>`, as kameo's `ask` does.
//!
//! [`call`]: CallExt::call

use super::{Call, WorkerError, WorkerMethods, WorkerPool};
use actix::dev::{Request, ToEnvelope};
use actix::{Actor, Addr, Handler, MailboxError, Message};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why [`call`](CallExt::call) did not return the method's value: the
/// method's own error, the worker's, or the pool's mailbox.
///
/// `E` is the method's error type: a method returning `Result<T, E>` gives
/// `CallError<E>`; any other method gives `CallError` (`E` =
/// [`Infallible`], so [`Method`](Self::Method) cannot occur).
///
/// Its `Display` is a sentence a user can log as is:
///
/// ```
/// use daemonic::worker::{CallError, WorkerError};
///
/// let e: CallError<String> = CallError::Method("no such user".into());
/// assert_eq!(e.to_string(), "no such user");
/// let e: CallError = CallError::Worker(WorkerError::ShuttingDown);
/// assert_eq!(e.to_string(), "worker pool is shutting down");
/// let e: CallError = CallError::Mailbox(daemonic::actix::MailboxError::Closed);
/// assert_eq!(e.to_string(), "worker pool unavailable: Mailbox has closed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError<E = Infallible> {
    /// The method ran and returned `Err(e)`.
    Method(E),
    /// The worker did not return the method's value (it died, timed out,
    /// panicked, or the pool refused the call); see [`WorkerError`].
    Worker(WorkerError),
    /// The pool's actor is gone (stopped, or its `System` ended): the call
    /// was not run.
    Mailbox(MailboxError),
}

impl<E> CallError<E> {
    /// The method's own error, if that is what this is.
    pub fn method_error(&self) -> Option<&E> {
        match self {
            CallError::Method(e) => Some(e),
            _ => None,
        }
    }

    /// The worker's error, if that is what this is.
    pub fn worker_error(&self) -> Option<&WorkerError> {
        match self {
            CallError::Worker(e) => Some(e),
            _ => None,
        }
    }

    /// A short, stable name of what went wrong: `method` for the method's
    /// own error, `mailbox` for a pool that is gone, else the worker
    /// error's [`kind`](WorkerError::kind) (`died`, `timeout`, `busy`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Method(_) => "method",
            CallError::Worker(e) => e.kind(),
            CallError::Mailbox(_) => "mailbox",
        }
    }

    /// Changes the method's error with `f` (the other variants stay).
    pub fn map_method<F>(self, f: impl FnOnce(E) -> F) -> CallError<F> {
        match self {
            CallError::Method(e) => CallError::Method(f(e)),
            CallError::Worker(e) => CallError::Worker(e),
            CallError::Mailbox(e) => CallError::Mailbox(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Method(e) => e.fmt(f),
            CallError::Worker(e) => e.fmt(f),
            CallError::Mailbox(e) => write!(f, "worker pool unavailable: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Method(e) => e.source(),
            CallError::Worker(e) => e.source(),
            CallError::Mailbox(e) => Some(e),
        }
    }
}

impl<E> From<WorkerError> for CallError<E> {
    fn from(e: WorkerError) -> Self {
        CallError::Worker(e)
    }
}

impl<E> From<MailboxError> for CallError<E> {
    fn from(e: MailboxError) -> Self {
        CallError::Mailbox(e)
    }
}

/// A worker method's return value, split into the value `call` returns and
/// the method's own error. Generated code uses it for methods whose return
/// type is spelled `Result<..>`.
#[doc(hidden)]
pub trait MethodResult {
    type Value;
    type Error;
    fn into_result(self) -> Result<Self::Value, Self::Error>;
}

impl<T, E> MethodResult for Result<T, E> {
    type Value = T;
    type Error = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// An actor that runs the calls of one worker type: a [`WorkerPool`] (and
/// any other pool kind that handles the same generated messages).
///
/// Code generic over the kind of pool names it:
///
/// ```
/// use daemonic::worker::{Call, CallError, CallExt, PoolActor, WorkerError};
/// use daemonic::actix::{Addr, Handler, Message};
///
/// async fn call_twice<A, M>(pool: &Addr<A>, a: M, b: M) -> Result<(M::Value, M::Value), CallError<M::Error>>
/// where
///     A: PoolActor + Handler<M>,
///     M: Call<A::Worker> + Message<Result = Result<M::Output, WorkerError>>,
/// {
///     Ok((pool.call(a).await?, pool.call(b).await?))
/// }
/// ```
pub trait PoolActor: Actor<Context = actix::Context<Self>> {
    /// The worker type whose methods it runs.
    type Worker: WorkerMethods;
}

impl<W: WorkerMethods> PoolActor for WorkerPool<W> {
    type Worker = W;
}

/// Adds [`call`](Self::call) to a pool's address (`Addr<WorkerPool<W>>`).
///
/// ```no_run
/// use daemonic::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[daemonic::worker]
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Calc;
///
/// #[daemonic::worker]
/// impl Calc {
///     pub fn divide(&mut self, a: i64, b: i64) -> Result<i64, String> {
///         if b == 0 { Err("division by zero".into()) } else { Ok(a / b) }
///     }
/// }
///
/// async fn demo(pool: Addr<WorkerPool<Calc>>) {
///     match pool.call(calc::Divide { a: 7, b: 0 }).await {
///         Ok(q) => println!("7 / 0 = {q}"),
///         Err(CallError::Method(e)) => println!("refused: {e}"),
///         Err(e) => println!("call failed: {e}"),
///     }
/// }
/// # fn main() {}
/// ```
pub trait CallExt<A: PoolActor> {
    /// Sends `message` and folds the answer into one `Result`: the
    /// method's value, or a [`CallError`] saying whether the method
    /// returned an error, the worker failed the call, or the pool is gone.
    /// (`send` still gives actix's nested results.)
    fn call<M>(&self, message: M) -> CallFuture<A, M>
    where
        M: Call<A::Worker> + Message<Result = Result<M::Output, WorkerError>>,
        A: Handler<M>;
}

impl<A: PoolActor> CallExt<A> for Addr<A> {
    fn call<M>(&self, message: M) -> CallFuture<A, M>
    where
        M: Call<A::Worker> + Message<Result = Result<M::Output, WorkerError>>,
        A: Handler<M>,
    {
        CallFuture {
            request: self.send(message),
        }
    }
}

/// The future [`call`](CallExt::call) returns.
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
/// let pending = pool.call(calc::Add { a: 1, b: 2 }); // queued in the pool's mailbox now
/// // ... other work ...
/// assert_eq!(pending.await, Ok(3));
/// # }
/// ```
#[must_use = "a call is sent only when its future is awaited"]
pub struct CallFuture<A, M>
where
    A: PoolActor + Handler<M>,
    M: Call<A::Worker> + Message<Result = Result<M::Output, WorkerError>>,
{
    request: Request<A, M>,
}

impl<A, M> Future for CallFuture<A, M>
where
    A: PoolActor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Call<A::Worker> + Message<Result = Result<M::Output, WorkerError>>,
{
    type Output = Result<M::Value, CallError<M::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `request` is structurally pinned: it is never moved out of
        // `self`, and `CallFuture` has no `Drop` and no `Unpin` impl of its
        // own that could move it.
        let request = unsafe { self.map_unchecked_mut(|s| &mut s.request) };
        request.poll(cx).map(fold::<A::Worker, M>)
    }
}

/// The three layers of a `send` answer as one.
fn fold<W, M>(
    answer: Result<Result<M::Output, WorkerError>, MailboxError>,
) -> Result<M::Value, CallError<M::Error>>
where
    W: WorkerMethods,
    M: Call<W>,
{
    match answer {
        Ok(Ok(output)) => M::fold(output).map_err(CallError::Method),
        Ok(Err(e)) => Err(CallError::Worker(e)),
        Err(e) => Err(CallError::Mailbox(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_inner_message() {
        let e: CallError<std::io::Error> = CallError::Method(std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(e.kind(), "method");
        let e: CallError = CallError::Worker(WorkerError::Busy {
            queued: 3,
            queued_bytes: 30,
        });
        assert_eq!(e.kind(), "busy");
        assert_eq!(
            e.worker_error(),
            Some(&WorkerError::Busy {
                queued: 3,
                queued_bytes: 30
            })
        );
        let e: CallError<u8> = CallError::<u8>::Mailbox(MailboxError::Closed);
        assert_eq!(e.kind(), "mailbox");
        assert_eq!(
            CallError::<u8>::Method(7).map_method(|n| n * 2),
            CallError::Method(14)
        );
    }
}
