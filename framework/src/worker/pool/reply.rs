//! A call's answer on its way to the caller.

use super::super::{WorkerError, WorkerMethods};
use super::WorkerPool;
use crate::ipc::shm::Payload;
use actix::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

/// Where a call's outcome goes: decodes the bytes (from a frame, or from
/// a mapped memfd, in place) and answers the caller.
pub(super) type Reply = Box<dyn FnOnce(std::result::Result<Payload, WorkerError>)>;

/// A call's answer as the pool hands it to actix (the `Handler::Result` of
/// generated handlers; not for users to name): resolved straight from
/// the worker's reply on the pool's thread (no task or extra channel per
/// call, which mattered for pipelined throughput).
#[doc(hidden)]
pub struct CallResponse<T> {
    inner: CallResponseInner<T>,
}

enum CallResponseInner<T> {
    Ready(std::result::Result<T, WorkerError>),
    Pending(Rc<RefCell<ReplySlot<T>>>),
}

enum ReplySlot<T> {
    Waiting,
    Caller(actix::dev::OneshotSender<std::result::Result<T, WorkerError>>),
    Answered(std::result::Result<T, WorkerError>),
    Done,
}

impl<T: 'static> CallResponse<T> {
    pub(super) fn ready(result: std::result::Result<T, WorkerError>) -> Self {
        Self {
            inner: CallResponseInner::Ready(result),
        }
    }

    /// A pending answer and the reply closure that completes it.
    pub(super) fn pending(
        decode: fn(&[u8]) -> std::result::Result<T, WorkerError>,
    ) -> (Self, Reply) {
        let slot = Rc::new(RefCell::new(ReplySlot::Waiting));
        let answer = slot.clone();
        let reply: Reply = Box::new(move |outcome| {
            let result = outcome.and_then(|payload| payload.decode(decode));
            let mut slot = answer.borrow_mut();
            match std::mem::replace(&mut *slot, ReplySlot::Done) {
                ReplySlot::Caller(tx) => {
                    let _ = tx.send(result);
                }
                ReplySlot::Waiting => *slot = ReplySlot::Answered(result),
                other => *slot = other,
            }
        });
        (
            Self {
                inner: CallResponseInner::Pending(slot),
            },
            reply,
        )
    }
}

impl<W, M, T> actix::dev::MessageResponse<WorkerPool<W>, M> for CallResponse<T>
where
    W: WorkerMethods,
    M: Message<Result = std::result::Result<T, WorkerError>>,
    T: 'static,
{
    fn handle(
        self,
        _: &mut Context<WorkerPool<W>>,
        tx: Option<actix::dev::OneshotSender<M::Result>>,
    ) {
        let Some(tx) = tx else { return }; // do_send: nobody waits
        match self.inner {
            CallResponseInner::Ready(result) => {
                let _ = tx.send(result);
            }
            CallResponseInner::Pending(slot) => {
                let mut slot = slot.borrow_mut();
                match std::mem::replace(&mut *slot, ReplySlot::Done) {
                    ReplySlot::Answered(result) => {
                        let _ = tx.send(result);
                    }
                    _ => *slot = ReplySlot::Caller(tx),
                }
            }
        }
    }
}
