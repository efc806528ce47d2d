//! A call's answer on its way to the caller.

use super::super::{WorkerError, WorkerMethods};
use super::WorkerPool;
use crate::ipc::shared_bytes::{decode_attached, Attachments};
use actix::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

/// Where a call's outcome goes: decodes the bytes (borrowed from the frame
/// they came in, or from a mapped memfd, in place) and answers the caller.
/// One allocation per call, shared with the caller's [`CallResponse`].
pub(super) type Reply = Rc<dyn Answer>;

/// What a call came to: its encoded result (borrowed) and the descriptors
/// of the `SharedBytes` in it, or why it failed.
pub(super) type Answered<'a> = std::result::Result<(&'a [u8], Attachments), WorkerError>;

/// Takes a call's outcome (once; later ones are ignored).
pub(super) trait Answer {
    fn answer(&self, outcome: Answered<'_>);
}

/// A pending call's answer: how to decode its result, and where it goes.
struct Pending<T> {
    decode: fn(&[u8]) -> std::result::Result<T, WorkerError>,
    slot: RefCell<ReplySlot<T>>,
}

impl<T> Answer for Pending<T> {
    fn answer(&self, outcome: Answered<'_>) {
        let decode = self.decode;
        let result =
            outcome.and_then(|(bytes, attached)| decode_attached(attached, || decode(bytes)));
        let mut slot = self.slot.borrow_mut();
        match std::mem::replace(&mut *slot, ReplySlot::Done) {
            ReplySlot::Caller(tx) => {
                let _ = tx.send(result);
            }
            ReplySlot::Waiting => *slot = ReplySlot::Answered(result),
            other => *slot = other,
        }
    }
}

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
    Pending(Rc<Pending<T>>),
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

    /// A pending answer and the reply that completes it.
    pub(super) fn pending(
        decode: fn(&[u8]) -> std::result::Result<T, WorkerError>,
    ) -> (Self, Reply) {
        let pending = Rc::new(Pending {
            decode,
            slot: RefCell::new(ReplySlot::Waiting),
        });
        let reply: Reply = pending.clone();
        (
            Self {
                inner: CallResponseInner::Pending(pending),
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
            CallResponseInner::Pending(pending) => {
                let mut slot = pending.slot.borrow_mut();
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
