//! Calls to workers and replies from them.

use super::super::protocol::{self, Deadline, FromChild, Outcome, ToChild};
use super::super::{WorkerError, WorkerMethods};
use super::schedule;
use super::slot::{InFlight, SlotState};
use super::{PoolState, WorkerPool};
use crate::ipc::shared_bytes::Attachments;
use crate::ipc::shm::{self, Body, Encoded, Mapping};
use crate::ipc::Transport;
use actix::prelude::*;
use std::borrow::Cow;
use std::ops::{ControlFlow, Deref};
use std::os::fd::OwnedFd;
use std::time::Instant;

/// The method index of a spare's warm-up call (see `warm_up`): no worker has
/// that many methods, so it dispatches to none.
const WARM_UP_METHOD: u16 = u16::MAX;
/// Call ids start at 1: no caller's call has this one.
const WARM_UP_ID: u64 = 0;

impl<W: WorkerMethods> WorkerPool<W> {
    /// Hands queued calls to workers that can take them.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.state != PoolState::Running {
            return;
        }
        let max = self.config.max_in_flight;
        let threshold = self.shm_threshold();
        while !self.queue.is_empty() {
            let Some(index) = schedule::pick(self.slots.iter().map(|s| s.candidate()), max) else {
                return;
            };
            let Some(call) = self.pop_queue() else {
                return;
            };
            // Copies of its `SharedBytes`' descriptors; none to be had (this
            // process is out of descriptors) fails this call, not the worker.
            let attached = match call.attached.share() {
                Ok(fds) => fds,
                Err(e) => {
                    let error = WorkerError::Protocol(format!(
                        "cannot share the arguments' SharedBytes: {e}"
                    ));
                    let latency = call.accepted.elapsed();
                    self.finish(call.name, call.id, 0, latency, call.reply, Err(error));
                    continue;
                }
            };
            let slot = &mut self.slots[index];
            let deadline = self
                .config
                .call_timeout
                .and_then(|t| Instant::now().checked_add(t));
            // Arguments of the threshold's size or more travel in a sealed
            // memfd: the one they were encoded into, or (bytes from a raw
            // call) a new one. Their `SharedBytes`' memfds follow it.
            let sealed = match &call.args {
                Encoded::Shared(sealed) => sealed.share().ok(),
                Encoded::Inline(bytes) if threshold.is_some_and(|t| bytes.len() >= t) => {
                    shm::sealed(bytes).and_then(|s| s.share()).ok()
                }
                Encoded::Inline(_) => None,
            };
            let deadline_wire = deadline.map(Deadline::to_wire);
            let attach = call.attached.enabled();
            let sent = match (sealed, &call.args) {
                (Some(fd), args) => {
                    self.counters.shared_payloads += 1;
                    protocol::encode(&ToChild::CallShared {
                        id: call.id,
                        method: call.method,
                        len: args.len() as u64,
                        deadline: deadline_wire,
                        attach,
                    })
                    .map_err(std::io::Error::other)
                    .and_then(|bytes| {
                        let mut fds = Vec::with_capacity(1 + attached.len());
                        fds.push(fd);
                        fds.extend(attached);
                        slot.link.send_with_fds(bytes, fds)
                    })
                }
                (None, Encoded::Inline(bytes)) if attached.is_empty() => {
                    slot.link.send_with(&mut |out| {
                        let call = ToChild::Call {
                            id: call.id,
                            method: call.method,
                            args: Cow::Borrowed(bytes),
                            deadline: deadline_wire,
                            attach,
                        };
                        protocol::encode_into(out, &call).map_err(std::io::Error::other)
                    })
                }
                (None, Encoded::Inline(bytes)) => protocol::encode(&ToChild::Call {
                    id: call.id,
                    method: call.method,
                    args: Cow::Borrowed(bytes),
                    deadline: deadline_wire,
                    attach,
                })
                .map_err(std::io::Error::other)
                .and_then(|bytes| slot.link.send_with_fds(bytes, attached)),
                // No descriptor to be had (out of them): the link is as
                // good as broken.
                (None, Encoded::Shared(_)) => {
                    Err(std::io::Error::other("cannot share the arguments' memfd"))
                }
            };
            slot.sent += 1;
            slot.in_flight.push_back(InFlight {
                id: call.id,
                seq: slot.sent,
                method: call.method,
                name: call.name,
                args: call.args,
                attached: call.attached,
                accepted: call.accepted,
                deadline,
                reply: call.reply,
            });
            if sent.is_err() {
                // The link is gone: the worker is dying. The call is settled
                // with the others it held (it was never started: it runs
                // elsewhere); stop using the worker now.
                let key = slot.key;
                self.kill(key, "a broken link");
            }
        }
        let _ = ctx;
    }

    /// Sends a spare one throwaway call, so that its first real call, right
    /// after a worker died and it was promoted, is not also the first to
    /// run its call path: a new child faults in the code and memory of the
    /// path (reading a call, the progress word, encoding a reply), ~90 µs on
    /// these machines, while later calls take a few (BENCHMARKS.md,
    /// "Recovery"). The call names no method ([`WARM_UP_METHOD`]): the
    /// worker answers it `BadCall` without running any of the user's code.
    /// It counts in the worker's sequence (the worker counts it as started
    /// in its progress word), but no caller waits for it: its reply finds no
    /// held call and is dropped.
    pub(super) fn warm_up(&mut self, key: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let sent = protocol::encode(&ToChild::Call {
            id: WARM_UP_ID,
            method: WARM_UP_METHOD,
            args: Cow::Borrowed(&[]),
            deadline: None,
            attach: false,
        })
        .map_err(std::io::Error::other)
        .and_then(|bytes| slot.link.send(bytes));
        slot.sent += 1;
        if sent.is_err() {
            self.kill(key, "a broken link");
        }
    }

    pub(super) fn send_stop_if_drained(&mut self, key: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if let SlotState::Retiring {
            reason,
            stop_sent: false,
        } = slot.state
        {
            if slot.in_flight.is_empty() {
                slot.state = SlotState::Retiring {
                    reason,
                    stop_sent: true,
                };
                let stop = protocol::encode(&ToChild::Stop).map_err(std::io::Error::other);
                if stop.and_then(|bytes| slot.link.send(bytes)).is_err() {
                    self.kill(key, "a broken link");
                }
            }
        }
    }

    /// Large payloads travel in a sealed memfd, on the socket transport.
    pub(super) fn shm_threshold(&self) -> Option<usize> {
        self.config
            .shm_threshold
            .filter(|_| self.config.transport == Transport::Socket)
    }

    /// One frame from worker `key`, read in place at `read` (see
    /// `reader.rs`); `Break`: it was malformed, and the link is dropped.
    pub(super) fn on_frame(
        &mut self,
        key: u64,
        (bytes, fds): (&[u8], Vec<OwnedFd>),
        read: Instant,
        ctx: &mut Context<Self>,
    ) -> ControlFlow<()> {
        let message = protocol::decode::<FromChild>(bytes).map_err(|e| e.to_string());
        let reply = match (message, fds.is_empty()) {
            (Ok(FromChild::Ready), true) => {
                self.on_ready(key);
                return ControlFlow::Continue(());
            }
            (Ok(FromChild::Leaving), true) => {
                self.on_leaving(key);
                return ControlFlow::Continue(());
            }
            (Ok(FromChild::Reply { id, outcome }), _) => self
                .answer(key, id, outcome, fds)
                .map(|result| (id, result)),
            (Ok(_), false) => Err("a descriptor with a frame that takes none".into()),
            (Err(e), _) => Err(e),
        };
        match reply {
            Ok((id, Ok((returned, attached)))) => {
                self.on_reply(key, id, Ok((&returned[..], attached)), read, ctx)
            }
            Ok((id, Err(error))) => self.on_reply(key, id, Err(error), read, ctx),
            Err(why) => {
                self.on_link_closed(key, Some(why), ctx);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// After the frames of one read: workers may take calls again.
    pub(super) fn after_frames(&mut self, ctx: &mut Context<Self>) {
        self.promote(ctx);
        self.dispatch(ctx);
    }

    /// What a reply says, its large result checked and mapped, its
    /// `SharedBytes`' memfds checked; `Err`: the reply is malformed (the
    /// link is dropped).
    fn answer<'a>(
        &mut self,
        key: u64,
        id: u64,
        outcome: Outcome<'a>,
        fds: Vec<OwnedFd>,
    ) -> Result<Result<(Returned<'a>, Attachments), WorkerError>, String> {
        let max = self.config.max_payload;
        let mut fds = fds.into_iter();
        let payload_fd = match outcome {
            Outcome::Shared(_) => fds.next(),
            _ => None,
        };
        let fds: Vec<OwnedFd> = fds.collect();
        // A value without descriptors holds no reference to one: decoded
        // plain (the common case, with no search for the call).
        let attached = if fds.is_empty() {
            Attachments::plain()
        } else if self
            .slot_mut(key)
            .and_then(|slot| slot.in_flight.iter().find(|c| c.id == id))
            // Whether the call was sent to take `SharedBytes` as
            // descriptors (a reply to a call no longer held is dropped:
            // taken as it comes).
            .map_or(true, |call| call.attached.enabled())
        {
            let attached = Attachments::received(fds, self.config.max_shared_bytes);
            attached
                .check()
                .map_err(|e| format!("a reply's shared bytes: {e}"))?;
            attached
        } else {
            return Err("descriptors with a reply that takes none".into());
        };
        Ok(match outcome {
            Outcome::Shared(len) => {
                let fd = payload_fd.ok_or("a shared result without its memfd")?;
                let mapping = Mapping::open(fd, len, max).map_err(|e| e.to_string())?;
                self.counters.shared_payloads += 1;
                Ok((Returned::Received(Body::Mapped(mapping)), attached))
            }
            Outcome::Ok(Cow::Borrowed(bytes)) => Ok((Returned::InFrame(bytes), attached)),
            Outcome::Ok(Cow::Owned(bytes)) => {
                Ok((Returned::Received(Body::Inline(bytes)), attached))
            }
            _ if attached.len() > 0 => {
                return Err("descriptors with a reply that takes none".into())
            }
            Outcome::Panicked(message) => Err(WorkerError::Panicked { message }),
            Outcome::BadCall(message) => Err(WorkerError::Protocol(message)),
            Outcome::ReplyTooLarge(size) => Err(WorkerError::ReplyTooLarge { size, max }),
        })
    }

    fn on_reply(
        &mut self,
        key: u64,
        id: u64,
        result: super::reply::Answered<'_>,
        read: Instant,
        ctx: &mut Context<Self>,
    ) {
        let max_calls = self.config.max_calls_per_child;
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let Some(pos) = slot.in_flight.iter().position(|c| c.id == id) else {
            return; // already resolved (timed out), or a spare's warm-up (see `warm_up`)
        };
        let Some(call) = slot.in_flight.remove(pos) else {
            return;
        };
        slot.calls += 1;
        let pid = slot.pid;
        let by_calls = max_calls.is_some_and(|max| slot.calls >= max);
        let by_runtime = slot.recycle_at.is_some_and(|at| read >= at);
        let panicked = matches!(result, Err(WorkerError::Panicked { .. }));
        if panicked {
            // The worker exits after replying (its state may be poisoned);
            // it gets no new calls meanwhile and its end is no surprise.
            slot.state = SlotState::Retiring {
                reason: "panicked",
                stop_sent: true,
            };
        }
        let latency = read.saturating_duration_since(call.accepted);
        self.finish(call.name, call.id, pid, latency, call.reply, result);
        if panicked {
            self.promote(ctx);
        } else if by_calls {
            self.retire(key, "max calls", ctx);
        } else if by_runtime {
            self.retire(key, "max runtime", ctx);
        }
        self.send_stop_if_drained(key);
    }
}

/// A reply's result: in its frame, borrowed from the read buffer (as
/// decoding yields it), or received otherwise (in a mapped memfd).
enum Returned<'a> {
    InFrame(&'a [u8]),
    Received(Body),
}

impl Deref for Returned<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Returned::InFrame(bytes) => bytes,
            Returned::Received(payload) => payload,
        }
    }
}
