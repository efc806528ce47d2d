//! The worker pool: the proxy actor in the daemon that owns a set of worker
//! processes, queues calls, and survives every way a worker can fail.
//!
//! The promise it keeps: every call is answered exactly once, with the
//! truth. A call the worker started and did not finish resolves `Died` (or
//! `Timeout`, `Panicked`); a call it held but never started runs elsewhere;
//! a call no worker could take resolves with why (`Busy`, `StartTimeout`,
//! `PoolFailed`, `ShuttingDown`). Nothing on the pool's thread waits on
//! another process: spawns, sends and reaping are all asynchronous.
//!
//! - `builder.rs`: settings and start;
//! - `slot.rs`: one worker's state and the calls it holds;
//! - `lifecycle.rs`: spawning, readiness, promotion, recycling, timeouts;
//! - `ending.rs`: a worker's end (exit and link), its calls, the restart limit;
//! - `traffic.rs`: handing calls to workers and reading their replies;
//! - `schedule.rs`: the pure decisions, unit-tested (the restart limit is
//!   `supervision/budget.rs`, shared with supervisors);
//! - `reply.rs`: how an answer reaches its caller; `inline.rs`: inline mode;
//! - `raw.rs`: calls as bytes, for transports of their own (NATS hosts).

mod builder;
mod ending;
mod inline;
#[cfg(feature = "testing")]
mod kill;
mod lifecycle;
mod raw;
mod reader;
mod reply;
mod schedule;
mod slot;
mod supervised;
mod traffic;

pub(crate) use builder::PoolRegistry;
pub use builder::{
    CallReturn, WorkerPoolBuilder, DEFAULT_MAX_SHARED_BYTES, DEFAULT_SHM_THRESHOLD,
    DEFAULT_START_TIMEOUT,
};
#[cfg(feature = "testing")]
pub use kill::KillWorker;
pub(crate) use raw::{GetPoolLimits, PoolLimits, RawCall};
pub use reply::CallResponse;
pub(crate) use supervised::{PoolReport, ResumePool, SuspendPool};

use super::stats::{ChildStats, Latencies, PoolStats};
use super::{Call, WorkerError, WorkerMethods};
use crate::event::{CachedListeners, WorkerReturned};
use crate::ipc::shared_bytes::Attachments;
use crate::ipc::shm::Encoded;
use crate::supervision::budget::RestartBudget;
use actix::prelude::*;
use builder::PoolConfig;
use slot::{Queued, Slot};
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolState {
    Running,
    Failed,
    Stopping,
    /// A supervised pool that failed, or that its supervisor stopped to
    /// restart it: calls queue (up to `start_timeout`) for the restart.
    Restarting,
}

#[derive(Default)]
struct Counters {
    calls: u64,
    returned: u64,
    errors: BTreeMap<&'static str, u64>,
    restarts: u64,
    recycled: u64,
    requeued: u64,
    shared_payloads: u64,
    latencies: Latencies,
}

/// The proxy actor of a pool of worker processes. Send it the message types
/// `#[daemonic::worker]` generates.
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
/// # fn main() -> Result<(), daemonic::Error> {
/// daemonic::actix::System::new().block_on(async {
///     let pool: Addr<WorkerPool<Calc>> = WorkerPool::builder(Calc).size(2).start()?;
///     assert_eq!(pool.call(calc::Add { a: 2, b: 3 }).await, Ok(5));
///     // actix's own idiom works too: mailbox, then worker, then the method's value.
///     assert_eq!(pool.send(calc::Add { a: 2, b: 3 }).await, Ok(Ok(5)));
///     Ok(())
/// })
/// # }
/// ```
pub struct WorkerPool<W: WorkerMethods> {
    config: PoolConfig,
    template: Arc<Vec<u8>>,
    inline: Option<inline::Inline>,
    slots: Vec<Slot>,
    /// Spawns on their way (no process yet), by key.
    spawning: Vec<(u64, slot::Role)>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    next_id: u64,
    next_key: u64,
    budget: RestartBudget,
    state: PoolState,
    counters: Counters,
    stop_waiters: Vec<oneshot::Sender<()>>,
    rng: u64,
    spawn_retry_pending: bool,
    spare_refill_pending: bool,
    returned_listeners: CachedListeners<WorkerReturned>,
    /// What each worker gives up before user code runs.
    confinement: Option<crate::process::Confinement>,
    /// Set when a supervisor runs the pool: told instead of giving up.
    supervisor: Option<PoolReport>,
    /// Why the pool last gave up (what queued calls get if it stays down).
    failure: Option<String>,
    _worker: PhantomData<fn() -> W>,
}

impl<W: WorkerMethods> WorkerPool<W> {
    /// A builder for a pool of `worker`s; each child gets a copy of its state.
    pub fn builder(worker: W) -> WorkerPoolBuilder<W> {
        WorkerPoolBuilder::new(worker)
    }

    fn new(
        config: PoolConfig,
        template: Vec<u8>,
        inline: Option<inline::Inline>,
        confinement: Option<crate::process::Confinement>,
    ) -> Self {
        let seed = ((std::process::id() as u64) << 32)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
            ^ 0x9E37_79B9_7F4A_7C15;
        let returned_listeners = config.events.cached();
        let budget = RestartBudget::new(config.restart_limit.0, config.restart_limit.1);
        Self {
            config,
            template: Arc::new(template),
            inline,
            slots: Vec::new(),
            spawning: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_id: 1,
            next_key: 1,
            budget,
            state: PoolState::Running,
            counters: Counters::default(),
            stop_waiters: Vec::new(),
            rng: seed | 1,
            spawn_retry_pending: false,
            spare_refill_pending: false,
            returned_listeners,
            confinement,
            supervisor: None,
            failure: None,
            _worker: PhantomData,
        }
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64: jitter only, not security.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn error(&mut self, kind: &'static str) {
        *self.counters.errors.entry(kind).or_default() += 1;
    }

    /// Accounts for a finished call and hands its outcome to the caller.
    fn finish(
        &mut self,
        name: &'static str,
        id: u64,
        pid: i32,
        latency: Duration,
        reply: reply::Reply,
        result: reply::Answered<'_>,
    ) {
        self.counters.latencies.record(latency);
        let error = result.as_ref().err();
        match error {
            None => self.counters.returned += 1,
            Some(e) => self.error(e.kind()),
        }
        if let Some(callback) = &self.config.on_return {
            callback(&CallReturn {
                pool: &self.config.name,
                method: name,
                call_id: id,
                pid,
                latency,
                error,
            });
        }
        if self.returned_listeners.active() {
            self.returned_listeners.dispatch(&mut WorkerReturned {
                pool: self.config.name.clone(),
                pid,
                method: name,
                latency,
                error: error.cloned(),
            });
        }
        reply.answer(result);
    }

    fn push_queue(&mut self, call: Queued) {
        self.queued_bytes += call.args.len();
        self.queue.push_back(call);
    }

    fn pop_queue(&mut self) -> Option<Queued> {
        let call = self.queue.pop_front()?;
        self.queued_bytes -= call.args.len();
        Some(call)
    }

    /// Resolves every queued call with `error`.
    fn fail_queue(&mut self, error: WorkerError) {
        while let Some(call) = self.pop_queue() {
            self.finish(
                call.name,
                call.id,
                0,
                call.accepted.elapsed(),
                call.reply,
                Err(error.clone()),
            );
        }
    }

    /// Accepts a call: the generated `Handler` impls call this.
    #[doc(hidden)]
    pub fn handle_call<M: Call<W>>(
        &mut self,
        message: M,
        ctx: &mut Context<Self>,
    ) -> CallResponse<M::Output> {
        let accepted = Instant::now();
        self.counters.calls += 1;
        // Large arguments go straight into a sealed memfd (see `ipc/shm.rs`).
        let threshold = if self.inline.is_some() {
            None
        } else {
            self.shm_threshold()
        };
        // Its `SharedBytes` go as descriptors where the link carries them,
        // whatever the threshold.
        let attach =
            self.inline.is_none() && self.config.transport == crate::ipc::Transport::Socket;
        let args = match crate::ipc::shm::encode(&message, threshold, attach) {
            Ok(a) => a,
            Err(e) => {
                self.error("protocol");
                return CallResponse::ready(Err(WorkerError::Protocol(format!(
                    "cannot encode arguments: {e}"
                ))));
            }
        };
        self.accept(
            M::METHOD,
            M::NAME,
            args,
            accepted,
            decode_output::<M::Output>,
            ctx,
        )
    }

    /// Queues a call whose arguments are encoded (typed calls, and raw ones
    /// from `raw.rs`), or refuses it at once.
    fn accept<T: 'static>(
        &mut self,
        method: u16,
        name: &'static str,
        (args, attached): (Encoded, Attachments),
        accepted: Instant,
        decode: fn(&[u8]) -> std::result::Result<T, WorkerError>,
        ctx: &mut Context<Self>,
    ) -> CallResponse<T> {
        if args.len() > self.config.max_payload {
            self.error("too_large");
            return CallResponse::ready(Err(WorkerError::TooLarge {
                size: args.len(),
                max: self.config.max_payload,
            }));
        }
        let refused = match self.state {
            PoolState::Failed => Some(WorkerError::PoolFailed {
                reason: self
                    .failure
                    .clone()
                    .unwrap_or_else(|| "restart limit reached".into()),
            }),
            PoolState::Stopping => Some(WorkerError::ShuttingDown),
            PoolState::Running | PoolState::Restarting
                if self.queue.len() >= self.config.queue_capacity
                    || (!self.queue.is_empty()
                        && self.queued_bytes + args.len() > self.config.max_queued_bytes) =>
            {
                Some(WorkerError::Busy {
                    queued: self.queue.len(),
                    queued_bytes: self.queued_bytes,
                })
            }
            PoolState::Running | PoolState::Restarting => None,
        };
        if let Some(error) = refused {
            self.error(error.kind());
            return CallResponse::ready(Err(error));
        }
        let (response, reply) = CallResponse::pending(decode);
        let id = self.next_id;
        self.next_id += 1;
        if let Some(inline) = &self.inline {
            let args = match args {
                Encoded::Inline(bytes) => Ok(bytes),
                Encoded::Shared(sealed) => sealed.to_vec(),
            };
            let answer = match args {
                Ok(args) => inline.call(id, method, args),
                Err(e) => {
                    self.error("protocol");
                    return CallResponse::ready(Err(WorkerError::Protocol(format!(
                        "cannot read the arguments back: {e}"
                    ))));
                }
            };
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(answer).map(move |result, act, _| {
                    let result = result.unwrap_or(Err(WorkerError::ShuttingDown));
                    let bytes;
                    let result = match result {
                        Ok(answer) => {
                            bytes = answer;
                            Ok((&bytes[..], Attachments::plain()))
                        }
                        Err(e) => Err(e),
                    };
                    act.finish(name, id, 0, accepted.elapsed(), reply, result);
                }),
            );
            return response;
        }
        self.push_queue(Queued {
            id,
            method,
            name,
            args,
            attached,
            accepted,
            reply,
        });
        self.dispatch(ctx);
        response
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            name: self.config.name.clone(),
            size: self.config.size,
            calls: self.counters.calls,
            returned: self.counters.returned,
            in_flight: self.slots.iter().map(|s| s.in_flight.len()).sum(),
            queued: self.queue.len(),
            errors: self
                .counters
                .errors
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            restarts: self.counters.restarts,
            recycled: self.counters.recycled,
            requeued: self.counters.requeued,
            shared_payloads: self.counters.shared_payloads,
            latency: self.counters.latencies.percentiles(),
            children: self
                .slots
                .iter()
                .map(|s| ChildStats {
                    pid: s.pid,
                    uptime: s.started.elapsed(),
                    calls: s.calls,
                    state: s.state.name().to_string(),
                })
                .collect(),
            failed: self.state == PoolState::Failed,
        }
    }
}

fn decode_output<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<T, WorkerError> {
    super::protocol::decode_at_most(bytes, super::protocol::MAX_PAYLOAD_DEPTH)
        .map_err(|e| WorkerError::Protocol(format!("cannot decode the result: {e}")))
}

impl<W: WorkerMethods> Actor for WorkerPool<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        if self.inline.is_some() {
            return;
        }
        self.promote(ctx);
        let period = match self.config.call_timeout {
            Some(t) => (t / 4).clamp(Duration::from_millis(1), Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        let period = period.min(
            (self.config.start_timeout / 4)
                .clamp(Duration::from_millis(1), Duration::from_millis(100)),
        );
        ctx.run_interval(period, |act, ctx| act.sweep(ctx));
    }
}

/// Current stats of the pool.
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
/// # async fn demo(pool: Addr<WorkerPool<Calc>>) -> Result<(), daemonic::actix::MailboxError> {
/// use daemonic::worker::GetPoolStats;
///
/// let stats = pool.send(GetPoolStats).await?;
/// println!("{} calls, {} queued, {} restarts", stats.calls, stats.queued, stats.restarts);
/// # Ok(()) }
/// ```
#[derive(Message)]
#[rtype(result = "PoolStats")]
pub struct GetPoolStats;

impl<W: WorkerMethods> Handler<GetPoolStats> for WorkerPool<W> {
    type Result = MessageResult<GetPoolStats>;

    fn handle(&mut self, _: GetPoolStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

/// Graceful stop: new calls get `ShuttingDown`, queued ones too; calls
/// already held by workers get until `grace`, then workers are killed.
/// Resolves when every worker has exited.
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
/// use daemonic::worker::StopPool;
/// use std::time::Duration;
///
/// // Calls held by workers get 5 s to finish; every worker has exited after.
/// let _ = pool.send(StopPool { grace: Duration::from_secs(5) }).await;
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopPool {
    /// How long held calls may take.
    pub grace: Duration,
}

impl<W: WorkerMethods> Handler<StopPool> for WorkerPool<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopPool, ctx: &mut Context<Self>) -> Self::Result {
        // Stopped for good: nothing will take the calls waiting for a
        // restart, and a supervisor no longer hears of this pool.
        self.supervisor = None;
        if self.state == PoolState::Restarting && self.failure.is_some() {
            self.state = PoolState::Failed;
        }
        if self.state != PoolState::Failed {
            self.state = PoolState::Stopping;
        }
        match self.state {
            PoolState::Failed => self.fail_queue(WorkerError::PoolFailed {
                reason: self.failure.clone().unwrap_or_default(),
            }),
            _ => self.fail_queue(WorkerError::ShuttingDown),
        }
        self.wind_down(msg.grace, ctx)
    }
}

impl<W: WorkerMethods> WorkerPool<W> {
    /// Retires every worker: held calls get until `grace`, then workers are
    /// killed. Resolves when every worker has exited.
    pub(super) fn wind_down(
        &mut self,
        grace: Duration,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<()> {
        let keys: Vec<u64> = self.slots.iter().map(|s| s.key).collect();
        for key in keys {
            self.retire(key, "shutdown", ctx);
        }
        if self.all_gone() {
            return Box::pin(async {});
        }
        ctx.run_later(grace, |act, _| {
            let keys: Vec<u64> = act.slots.iter().map(|s| s.key).collect();
            for key in keys {
                act.kill(key, "shutdown grace over");
            }
        });
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
