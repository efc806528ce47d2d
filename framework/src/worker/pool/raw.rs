//! Calls as bytes: a method's index and its serialized arguments, answered
//! with the serialized result. For transports that carry calls between
//! processes of their own (the NATS host in `remote/host/`): the call goes
//! through the same queue, back-pressure and failure handling as a typed
//! one, and its answer, typed errors included, comes back unchanged.

use super::super::{WorkerError, WorkerMethods};
use super::{CallResponse, WorkerPool};
use crate::ipc::shared_bytes::Attachments;
use crate::ipc::shm::Encoded;
use actix::prelude::*;
use std::time::Instant;

/// One call as bytes, as a transport received it.
pub(crate) struct RawCall {
    /// Index of the method in [`WorkerMethods::METHODS`].
    pub method: u16,
    /// The arguments, encoded as the generated message type encodes them.
    pub args: Vec<u8>,
}

impl Message for RawCall {
    type Result = std::result::Result<Vec<u8>, WorkerError>;
}

impl<W: WorkerMethods> Handler<RawCall> for WorkerPool<W> {
    type Result = CallResponse<Vec<u8>>;

    fn handle(&mut self, call: RawCall, ctx: &mut Context<Self>) -> Self::Result {
        let accepted = Instant::now();
        self.counters.calls += 1;
        let Some(name) = W::METHODS.get(usize::from(call.method)) else {
            self.error("protocol");
            return CallResponse::ready(Err(WorkerError::Protocol(format!(
                "unknown method index {}",
                call.method
            ))));
        };
        self.accept(
            call.method,
            name,
            (Encoded::Inline(call.args), Attachments::plain()),
            accepted,
            bytes,
            ctx,
        )
    }
}

fn bytes(result: &[u8]) -> std::result::Result<Vec<u8>, WorkerError> {
    Ok(result.to_vec())
}

/// What a pool can hold, so a transport can refuse what it could not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    /// Worker processes serving calls.
    pub size: usize,
    /// Calls sent ahead to one worker.
    pub max_in_flight: usize,
    /// Calls that may wait for a worker.
    pub queue_capacity: usize,
    /// Largest serialized call or result.
    pub max_payload: usize,
}

/// Asks a pool for its [`PoolLimits`].
#[derive(Message)]
#[rtype(result = "PoolLimits")]
pub(crate) struct GetPoolLimits;

impl<W: WorkerMethods> Handler<GetPoolLimits> for WorkerPool<W> {
    type Result = MessageResult<GetPoolLimits>;

    fn handle(&mut self, _: GetPoolLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(PoolLimits {
            size: self.config.size,
            max_in_flight: self.config.max_in_flight,
            queue_capacity: self.config.queue_capacity,
            max_payload: self.config.max_payload,
        })
    }
}
