//! A remote call's answer as the remote pool hands it to actix: resolved
//! from the pool's inbox handler on the pool's thread, without a task per
//! call (a `ResponseFuture` costs a spawned task and a second channel; the
//! same finding as for local pools in `worker/pool/reply.rs`, whose type is
//! tied to `WorkerPool`).

use super::{Answer, RemotePool};
use crate::worker::{WorkerError, WorkerMethods};
use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::rc::Rc;

/// Where an attempt's outcome goes: decodes it and answers the caller.
pub(super) type Deliver = Box<dyn FnOnce(Answer)>;

/// The answer to one call sent to a [`RemotePool`].
pub struct RemoteResponse<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Ready(Result<T, WorkerError>),
    Pending(Rc<RefCell<Slot<T>>>),
}

enum Slot<T> {
    Waiting,
    Caller(OneshotSender<Result<T, WorkerError>>),
    Answered(Result<T, WorkerError>),
    Done,
}

impl<T: DeserializeOwned + 'static> RemoteResponse<T> {
    pub(super) fn ready(result: Result<T, WorkerError>) -> Self {
        Self {
            inner: Inner::Ready(result),
        }
    }

    /// A pending answer and what completes it.
    pub(super) fn pending() -> (Self, Deliver) {
        let slot = Rc::new(RefCell::new(Slot::Waiting));
        let answer = slot.clone();
        let deliver: Deliver = Box::new(move |outcome: Answer| {
            let result = outcome.and_then(|bytes| {
                rmp_serde::from_slice(&bytes)
                    .map_err(|e| WorkerError::Protocol(format!("cannot decode the result: {e}")))
            });
            let mut slot = answer.borrow_mut();
            match std::mem::replace(&mut *slot, Slot::Done) {
                Slot::Caller(tx) => {
                    let _ = tx.send(result);
                }
                Slot::Waiting => *slot = Slot::Answered(result),
                other => *slot = other,
            }
        });
        (
            Self {
                inner: Inner::Pending(slot),
            },
            deliver,
        )
    }
}

impl<W, M, T> MessageResponse<RemotePool<W>, M> for RemoteResponse<T>
where
    W: WorkerMethods,
    M: Message<Result = Result<T, WorkerError>>,
    T: 'static,
{
    fn handle(self, _: &mut Context<RemotePool<W>>, tx: Option<OneshotSender<M::Result>>) {
        let Some(tx) = tx else { return }; // do_send: nobody waits
        match self.inner {
            Inner::Ready(result) => {
                let _ = tx.send(result);
            }
            Inner::Pending(slot) => {
                let mut slot = slot.borrow_mut();
                match std::mem::replace(&mut *slot, Slot::Done) {
                    Slot::Answered(result) => {
                        let _ = tx.send(result);
                    }
                    _ => *slot = Slot::Caller(tx),
                }
            }
        }
    }
}
