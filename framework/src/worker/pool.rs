//! The worker pool: the proxy actor in the daemon that owns a set of worker
//! processes, queues calls, and survives every way a worker can fail.

use super::protocol::{self, Bootstrap, FromChild, Outcome, ToChild};
use super::stats::{ChildStats, Latencies, PoolStats};
use super::{short_name, Call, WorkerContext, WorkerError, WorkerMethods};
use crate::error::{Error, Result};
use crate::event::{
    Events, WorkerDied, WorkerPoolFailed, WorkerRecycled, WorkerReturned, WorkerSpawned,
    WorkerTimedOut,
};
use crate::ipc::ipc_channel::IpcHostLink;
use crate::ipc::socket::SocketHostLink;
use crate::ipc::{HostLink, Transport};
use crate::log::Logger;
use crate::process::{fork_server, ExitStatus, Signaller, SpawnOptions};
use actix::prelude::*;
use futures_util::StreamExt;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a call's outcome goes: decodes the bytes and answers the caller.
type Reply = Box<dyn FnOnce(std::result::Result<Vec<u8>, WorkerError>)>;

/// A call's answer as the pool hands it to actix: resolved straight from
/// the worker's reply on the pool's thread (no task or extra channel per
/// call, which mattered for pipelined throughput).
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
    fn ready(result: std::result::Result<T, WorkerError>) -> Self {
        Self {
            inner: CallResponseInner::Ready(result),
        }
    }

    /// A pending answer and the reply closure that completes it.
    fn pending(decode: fn(&[u8]) -> std::result::Result<T, WorkerError>) -> (Self, Reply) {
        let slot = Rc::new(RefCell::new(ReplySlot::Waiting));
        let answer = slot.clone();
        let reply: Reply = Box::new(move |outcome| {
            let result = outcome.and_then(|bytes| decode(&bytes));
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

/// What the `on_return` callback sees for every finished call.
#[derive(Debug)]
pub struct CallReturn<'a> {
    /// The pool's name.
    pub pool: &'a str,
    /// The method called.
    pub method: &'static str,
    /// The worker's pid (0 in inline mode).
    pub pid: i32,
    /// Time from `send` to the reply.
    pub latency: Duration,
    /// `None` if the method returned, else why not.
    pub error: Option<&'a WorkerError>,
}

type OnReturn = Arc<dyn Fn(&CallReturn<'_>) + Send + Sync>;

/// Pools started through a daemon: stopped at its shutdown, included in its stats.
#[derive(Default)]
pub(crate) struct PoolRegistry {
    pools: parking_lot::Mutex<Vec<RegisteredPool>>,
}

#[derive(Clone)]
pub(crate) struct RegisteredPool {
    pub stop: Recipient<StopPool>,
    pub stats: Recipient<GetPoolStats>,
}

impl PoolRegistry {
    pub(crate) fn add(&self, pool: RegisteredPool) {
        self.pools.lock().push(pool);
    }

    pub(crate) fn all(&self) -> Vec<RegisteredPool> {
        self.pools.lock().clone()
    }
}

/// Configures a [`WorkerPool`].
pub struct WorkerPoolBuilder<W: WorkerMethods> {
    worker: W,
    name: String,
    size: usize,
    call_timeout: Option<Duration>,
    queue_capacity: usize,
    max_calls_per_child: Option<u64>,
    max_runtime_per_child: Option<Duration>,
    runtime_jitter: f64,
    restart_limit: (usize, Duration),
    max_payload: usize,
    max_in_flight: usize,
    warm_spares: usize,
    transport: Transport,
    inline: bool,
    events: Events,
    logger: Logger,
    on_return: Option<OnReturn>,
    arbiter: Option<ArbiterHandle>,
    registry: Option<Arc<PoolRegistry>>,
}

impl<W: WorkerMethods> WorkerPoolBuilder<W> {
    /// Wires the builder to a daemon (its events, logger, thread and shutdown).
    pub(crate) fn for_daemon(
        mut self,
        events: Events,
        logger: Logger,
        arbiter: ArbiterHandle,
        registry: Arc<PoolRegistry>,
    ) -> Self {
        self.events = events;
        self.logger = logger;
        self.arbiter = Some(arbiter);
        self.registry = Some(registry);
        self
    }

    pub(crate) fn new(worker: W) -> Self {
        Self {
            worker,
            name: short_name(W::NAME),
            size: 2,
            call_timeout: None,
            queue_capacity: 1024,
            max_calls_per_child: None,
            max_runtime_per_child: None,
            runtime_jitter: 0.1,
            restart_limit: (10, Duration::from_secs(10)),
            max_payload: 16 * 1024 * 1024,
            max_in_flight: 1,
            warm_spares: 1,
            transport: Transport::default(),
            inline: false,
            events: Events::new(),
            logger: Logger::discard(),
            on_return: None,
            arbiter: None,
            registry: None,
        }
    }

    /// Number of worker processes serving calls (default 2).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Pool name in logs, events and stats (default: the type's name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A call held longer than this resolves with [`WorkerError::Timeout`];
    /// its worker is killed and replaced.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Calls waiting for a worker beyond this are refused with
    /// [`WorkerError::Busy`] at once (default 1024).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Replace a worker after it served this many calls.
    pub fn max_calls_per_child(mut self, calls: u64) -> Self {
        self.max_calls_per_child = Some(calls);
        self
    }

    /// Replace a worker after it ran this long (minus up to 10% jitter, so
    /// workers started together do not all recycle at once).
    pub fn max_runtime_per_child(mut self, runtime: Duration) -> Self {
        self.max_runtime_per_child = Some(runtime);
        self
    }

    /// At most `restarts` unexpected worker exits within `within`; one more
    /// and the pool stops respawning and fails its calls with
    /// [`WorkerError::PoolFailed`] (default 10 in 10 s).
    pub fn restart_limit(mut self, restarts: usize, within: Duration) -> Self {
        self.restart_limit = (restarts, within);
        self
    }

    /// Largest serialized call accepted; bigger ones get
    /// [`WorkerError::TooLarge`] before anything is sent (default 16 MiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Calls sent ahead to one worker (pipelining; default 1). A worker
    /// still runs them one at a time, but the next call is already waiting
    /// when it finishes. If it dies, every call it held fails with `Died`.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// Started, idle workers kept ready to replace a dead one at once
    /// (default 1).
    pub fn warm_spares(mut self, spares: usize) -> Self {
        self.warm_spares = spares;
        self
    }

    /// How calls travel between the pool and its workers (default
    /// [`Transport::Socket`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Run the methods in this process instead of in children (tests,
    /// debugging). Calls still go through serialization; timeouts and
    /// recycling do not apply.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Raise worker events on this bus (a daemon's, say).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Log through this logger (a daemon's, say).
    pub fn logger(mut self, logger: Logger) -> Self {
        self.logger = logger;
        self
    }

    /// Called in the daemon for every finished call, with its method, worker,
    /// latency and error (for metrics or tracing).
    pub fn on_return(mut self, callback: impl Fn(&CallReturn<'_>) + Send + Sync + 'static) -> Self {
        self.on_return = Some(Arc::new(callback));
        self
    }

    /// Run the pool actor on this arbiter instead of the current one.
    pub fn arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// Starts the pool (inside an actix `System`) and returns its address.
    pub fn start(self) -> Result<Addr<WorkerPool<W>>> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoSystem);
        }
        if self.size == 0 {
            return Err(Error::Config("a worker pool needs size >= 1".into()));
        }
        if self.restart_limit.1.is_zero() {
            return Err(Error::Config("restart_limit window must be > 0".into()));
        }
        let template = protocol::encode(&self.worker)
            .map_err(|e| Error::Config(format!("cannot serialize the worker's state: {e}")))?;
        let inline = self.inline.then(|| {
            Box::new((
                self.worker,
                WorkerContext::inline(self.logger.clone(), "inline"),
            ))
        });
        let config = PoolConfig {
            name: self.name,
            size: self.size,
            call_timeout: self.call_timeout,
            queue_capacity: self.queue_capacity,
            max_calls_per_child: self.max_calls_per_child,
            max_runtime_per_child: self.max_runtime_per_child,
            runtime_jitter: self.runtime_jitter.clamp(0.0, 0.9),
            restart_limit: self.restart_limit,
            max_payload: self.max_payload,
            max_in_flight: self.max_in_flight,
            warm_spares: self.warm_spares,
            transport: self.transport,
            events: self.events,
            logger: self.logger,
            on_return: self.on_return,
        };
        let pool = move || WorkerPool::<W>::new(config, template, inline);
        let addr = match self.arbiter {
            Some(arbiter) => WorkerPool::start_in_arbiter(&arbiter, move |_| pool()),
            None => pool().start(),
        };
        if let Some(registry) = self.registry {
            registry.add(RegisteredPool {
                stop: addr.clone().recipient(),
                stats: addr.clone().recipient(),
            });
        }
        Ok(addr)
    }
}

struct PoolConfig {
    name: String,
    size: usize,
    call_timeout: Option<Duration>,
    queue_capacity: usize,
    max_calls_per_child: Option<u64>,
    max_runtime_per_child: Option<Duration>,
    runtime_jitter: f64,
    restart_limit: (usize, Duration),
    max_payload: usize,
    max_in_flight: usize,
    warm_spares: usize,
    transport: Transport,
    events: Events,
    logger: Logger,
    on_return: Option<OnReturn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolState {
    Running,
    Failed,
    Stopping,
}

struct InFlight {
    id: u64,
    method: &'static str,
    accepted: Instant,
    deadline: Option<Instant>,
    reply: Reply,
}

struct Queued {
    id: u64,
    method: u16,
    name: &'static str,
    args: Vec<u8>,
    accepted: Instant,
    reply: Reply,
}

struct Slot {
    key: u64,
    pid: i32,
    link: Box<dyn HostLink>,
    signaller: Option<Signaller>,
    started: Instant,
    ready: bool,
    spare: bool,
    calls: u64,
    in_flight: Vec<InFlight>,
    /// Why it is being replaced (it gets no new calls; `Stop` once drained).
    retiring: Option<&'static str>,
    stop_sent: bool,
    recycle_at: Option<Instant>,
    /// We killed it (timeout, malformed frame); it gets no new calls.
    killed: bool,
}

impl Slot {
    fn accepts_calls(&self, max_in_flight: usize) -> bool {
        self.ready
            && !self.spare
            && self.retiring.is_none()
            && !self.killed
            && self.in_flight.len() < max_in_flight
    }

    fn state(&self) -> &'static str {
        if self.killed {
            "killed"
        } else if self.retiring.is_some() {
            "retiring"
        } else if !self.ready {
            "starting"
        } else if self.spare {
            "spare"
        } else {
            "ready"
        }
    }
}

#[derive(Default)]
struct Counters {
    calls: u64,
    returned: u64,
    errors: BTreeMap<&'static str, u64>,
    restarts: u64,
    recycled: u64,
    latencies: Latencies,
}

/// The proxy actor of a pool of worker processes. Send it the message types
/// `#[daemonic::worker]` generates.
pub struct WorkerPool<W: WorkerMethods> {
    config: PoolConfig,
    template: Arc<Vec<u8>>,
    // Boxed so the actor is `Unpin` whatever `W` is.
    inline: Option<Box<(W, WorkerContext)>>,
    slots: Vec<Slot>,
    queue: VecDeque<Queued>,
    next_id: u64,
    next_key: u64,
    restarts: VecDeque<Instant>,
    state: PoolState,
    counters: Counters,
    stop_waiters: Vec<oneshot::Sender<()>>,
    rng: u64,
    spawn_retry_pending: bool,
    spare_refill_pending: bool,
    returned_listeners: crate::event::CachedListeners<WorkerReturned>,
    _worker: PhantomData<fn() -> W>,
}

impl<W: WorkerMethods> WorkerPool<W> {
    /// A builder for a pool of `worker`s; each child gets a copy of its state.
    pub fn builder(worker: W) -> WorkerPoolBuilder<W> {
        WorkerPoolBuilder::new(worker)
    }

    fn new(config: PoolConfig, template: Vec<u8>, inline: Option<Box<(W, WorkerContext)>>) -> Self {
        let seed = (std::process::id() as u64) << 32
            ^ Instant::now().elapsed().as_nanos() as u64
            ^ 0x9E37_79B9_7F4A_7C15;
        let returned_listeners = config.events.cached();
        Self {
            config,
            template: Arc::new(template),
            inline,
            slots: Vec::new(),
            queue: VecDeque::new(),
            next_id: 1,
            next_key: 1,
            restarts: VecDeque::new(),
            state: PoolState::Running,
            counters: Counters::default(),
            stop_waiters: Vec::new(),
            rng: seed | 1,
            spawn_retry_pending: false,
            spare_refill_pending: false,
            returned_listeners,
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

    fn finish_call(
        &mut self,
        method: &'static str,
        pid: i32,
        accepted: Instant,
        result: &std::result::Result<Vec<u8>, WorkerError>,
    ) {
        let latency = accepted.elapsed();
        self.counters.latencies.record(latency);
        let error = result.as_ref().err();
        match error {
            None => self.counters.returned += 1,
            Some(e) => {
                let kind = error_kind(e);
                self.error(kind);
            }
        }
        if let Some(callback) = &self.config.on_return {
            callback(&CallReturn {
                pool: &self.config.name,
                method,
                pid,
                latency,
                error,
            });
        }
        if self.returned_listeners.active() {
            self.returned_listeners.dispatch(&mut WorkerReturned {
                pool: self.config.name.clone(),
                pid,
                method,
                latency,
                error: error.cloned(),
            });
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
        let args = match rmp_serde::to_vec(&message) {
            Ok(a) => a,
            Err(e) => {
                self.error("protocol");
                return CallResponse::ready(Err(WorkerError::Protocol(format!(
                    "cannot encode arguments: {e}"
                ))));
            }
        };
        if args.len() > self.config.max_payload {
            self.error("too_large");
            return CallResponse::ready(Err(WorkerError::TooLarge {
                size: args.len(),
                max: self.config.max_payload,
            }));
        }
        if let Some(inline) = &mut self.inline {
            let (worker, wctx) = &mut **inline;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker.dispatch(wctx, M::METHOD, &args)
            }));
            let result = match outcome {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(e)) => Err(WorkerError::Protocol(e.to_string())),
                Err(payload) => Err(WorkerError::Panicked {
                    message: crate::panic_message(&*payload),
                }),
            };
            self.finish_call(M::NAME, 0, accepted, &result);
            return CallResponse::ready(
                result.and_then(|bytes| decode_output::<M::Output>(&bytes)),
            );
        }
        let refused = match self.state {
            PoolState::Failed => Some((
                "pool_failed",
                WorkerError::PoolFailed {
                    reason: "restart limit reached".into(),
                },
            )),
            PoolState::Stopping => Some(("shutting_down", WorkerError::ShuttingDown)),
            PoolState::Running if self.queue.len() >= self.config.queue_capacity => Some((
                "busy",
                WorkerError::Busy {
                    capacity: self.config.queue_capacity,
                },
            )),
            PoolState::Running => None,
        };
        if let Some((kind, error)) = refused {
            self.error(kind);
            return CallResponse::ready(Err(error));
        }
        let (response, reply) = CallResponse::pending(decode_output::<M::Output>);
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Queued {
            id,
            method: M::METHOD,
            name: M::NAME,
            args,
            accepted,
            reply,
        });
        self.dispatch(ctx);
        response
    }

    /// Hands queued calls to workers that can take them.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        self.promote_spares(ctx);
        while !self.queue.is_empty() {
            let max = self.config.max_in_flight;
            let Some(slot) = self
                .slots
                .iter_mut()
                .filter(|s| s.accepts_calls(max))
                .min_by_key(|s| s.in_flight.len())
            else {
                return;
            };
            let Some(call) = self.queue.pop_front() else {
                return;
            };
            let frame = ToChild::Call {
                id: call.id,
                method: call.method,
                args: call.args,
            };
            let sent = protocol::encode(&frame)
                .map_err(std::io::Error::other)
                .and_then(|bytes| slot.link.send(bytes));
            let deadline = self.config.call_timeout.map(|t| Instant::now() + t);
            slot.in_flight.push(InFlight {
                id: call.id,
                method: call.name,
                accepted: call.accepted,
                deadline,
                reply: call.reply,
            });
            if sent.is_err() {
                // The link is gone: the child is dying. Its calls resolve
                // when its death is reaped; stop using it now.
                slot.killed = true;
                if let Some(s) = &slot.signaller {
                    s.signal(libc::SIGKILL);
                }
            }
        }
    }

    fn active_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.spare && s.retiring.is_none() && !s.killed)
            .count()
    }

    /// Keeps `size` active workers (promoting ready spares first) and
    /// `warm_spares` spares.
    fn promote_spares(&mut self, ctx: &mut Context<Self>) {
        if self.state != PoolState::Running {
            return;
        }
        while self.active_count() < self.config.size {
            if let Some(spare) = self.slots.iter_mut().find(|s| s.spare && s.ready) {
                spare.spare = false;
                continue;
            }
            if let Some(spare) = self.slots.iter_mut().find(|s| s.spare) {
                spare.spare = false; // starting; takes calls once ready
                continue;
            }
            if !self.spawn(ctx, false) {
                return;
            }
        }
        self.schedule_spare_refill(ctx);
    }

    /// Spares are refilled shortly after, not inline: a fork-server round
    /// trip on this thread would delay the `Died` replies and the promoted
    /// spare's first calls right when a worker was just lost.
    fn schedule_spare_refill(&mut self, ctx: &mut Context<Self>) {
        let spares = self.slots.iter().filter(|s| s.spare).count();
        if spares >= self.config.warm_spares || self.spare_refill_pending {
            return;
        }
        self.spare_refill_pending = true;
        ctx.run_later(Duration::from_millis(2), |act, ctx| {
            act.spare_refill_pending = false;
            if act.state != PoolState::Running {
                return;
            }
            let spares = act.slots.iter().filter(|s| s.spare).count();
            for _ in spares..act.config.warm_spares {
                if !act.spawn(ctx, true) {
                    return;
                }
            }
        });
    }

    fn spawn(&mut self, ctx: &mut Context<Self>, spare: bool) -> bool {
        match self.try_spawn(ctx, spare) {
            Ok(()) => true,
            Err(e) => {
                self.config.logger.error(format_args!(
                    "pool {}: cannot start a worker: {e}",
                    self.config.name
                ));
                self.record_restart(ctx, &format!("spawn failed: {e}"));
                if self.state == PoolState::Running && !self.spawn_retry_pending {
                    self.spawn_retry_pending = true;
                    ctx.run_later(Duration::from_millis(100), |act, ctx| {
                        act.spawn_retry_pending = false;
                        act.dispatch(ctx);
                    });
                }
                false
            }
        }
    }

    fn try_spawn(&mut self, ctx: &mut Context<Self>, spare: bool) -> std::io::Result<()> {
        let spawned = fork_server()
            .spawn(&SpawnOptions {
                entry: W::NAME.to_string(),
                role: format!("worker:{}", self.config.name),
            })
            .map_err(std::io::Error::other)?;
        let mut channel = spawned.channel;
        let ipc = match self.config.transport {
            Transport::Socket => None,
            Transport::IpcChannel => Some(IpcHostLink::new(&self.config.name)?),
        };
        let bootstrap = Bootstrap {
            ipc_server: ipc.as_ref().map(|l| l.server_name().to_string()),
        };
        // The child reads how to reach us, then its state, first thing.
        let bootstrap = protocol::encode(&bootstrap).map_err(std::io::Error::other)?;
        let mut frames = Vec::with_capacity(8 + bootstrap.len() + self.template.len());
        for frame in [&bootstrap[..], &self.template[..]] {
            frames.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            frames.extend_from_slice(frame);
        }
        channel.write_all(&frames)?;
        let mut link: Box<dyn HostLink> = match ipc {
            None => Box::new(SocketHostLink::new(channel)?),
            Some(ipc) => Box::new(ipc),
        };
        let process = spawned.process;
        let pid = process.pid();
        let key = self.next_key;
        self.next_key += 1;
        if let Some(frames) = link.incoming() {
            ctx.add_stream(frames.map(move |batch| ChildFrames { key, batch }));
        }
        let signaller = process.signaller();
        let mut process = process;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move { process.wait().await }).map(
                move |status, act, ctx| {
                    let status = status.unwrap_or(ExitStatus::Exited(-1));
                    act.on_exit(key, status, ctx);
                },
            ),
        );
        let recycle_at = self.config.max_runtime_per_child.map(|max| {
            let jitter = 1.0 - self.config.runtime_jitter * self.random_unit();
            Instant::now() + max.mul_f64(jitter)
        });
        self.slots.push(Slot {
            key,
            pid,
            link,
            signaller,
            started: Instant::now(),
            ready: false,
            spare,
            calls: 0,
            in_flight: Vec::new(),
            retiring: None,
            stop_sent: false,
            recycle_at,
            killed: false,
        });
        self.config.events.dispatch(&mut WorkerSpawned {
            pool: self.config.name.clone(),
            pid,
        });
        self.config.logger.debug(
            1,
            format_args!(
                "pool {}: worker pid {pid} spawned{}",
                self.config.name,
                if spare { " (spare)" } else { "" }
            ),
        );
        Ok(())
    }

    fn slot_mut(&mut self, key: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.key == key)
    }

    fn kill(&mut self, key: u64) {
        if let Some(slot) = self.slot_mut(key) {
            slot.killed = true;
            if let Some(s) = &slot.signaller {
                s.signal(libc::SIGKILL);
            }
        }
    }

    /// Stops sending calls to a worker and replaces it; it gets `Stop` once
    /// its calls are done.
    fn retire(&mut self, key: u64, reason: &'static str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if slot.retiring.is_some() || slot.killed {
            return;
        }
        slot.retiring = Some(reason);
        let pid = slot.pid;
        self.counters.recycled += 1;
        self.config.events.dispatch(&mut WorkerRecycled {
            pool: self.config.name.clone(),
            pid,
            reason,
        });
        self.config.logger.debug(
            1,
            format_args!(
                "pool {}: recycling worker pid {pid} ({reason})",
                self.config.name
            ),
        );
        self.send_stop_if_drained(key);
        self.dispatch(ctx);
    }

    fn send_stop_if_drained(&mut self, key: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if slot.retiring.is_some() && slot.in_flight.is_empty() && !slot.stop_sent {
            slot.stop_sent = true;
            if let Ok(bytes) = protocol::encode(&ToChild::Stop) {
                if slot.link.send(bytes).is_err() {
                    if let Some(s) = &slot.signaller {
                        s.signal(libc::SIGKILL);
                    }
                }
            }
        }
    }

    fn on_frames(
        &mut self,
        key: u64,
        batch: std::io::Result<Vec<Vec<u8>>>,
        ctx: &mut Context<Self>,
    ) {
        let frames = match batch {
            Ok(frames) => frames,
            Err(e) => return self.malformed(key, &e.to_string()),
        };
        for frame in frames {
            match protocol::decode::<FromChild>(&frame) {
                Ok(FromChild::Ready) => {
                    if let Some(slot) = self.slot_mut(key) {
                        slot.ready = true;
                    }
                }
                Ok(FromChild::Reply { id, outcome }) => self.on_reply(key, id, outcome, ctx),
                Ok(FromChild::Leaving) => {
                    // Asked to terminate (a signal to the process group, an
                    // operator): an orderly exit, replaced but not a failure.
                    if let Some(slot) = self.slot_mut(key) {
                        slot.stop_sent = true;
                        if slot.retiring.is_none() {
                            slot.retiring = Some("terminated");
                            let pid = slot.pid;
                            self.counters.recycled += 1;
                            self.config.events.dispatch(&mut WorkerRecycled {
                                pool: self.config.name.clone(),
                                pid,
                                reason: "terminated",
                            });
                        }
                    }
                }
                Err(e) => return self.malformed(key, &e.to_string()),
            }
        }
        self.dispatch(ctx);
    }

    /// Malformed bytes: drop the link (kill the child); the parent is unharmed
    /// and the calls it held resolve as `Died` when it is reaped.
    fn malformed(&mut self, key: u64, why: &str) {
        let pid = self.slot_mut(key).map(|s| s.pid).unwrap_or(0);
        self.error("protocol");
        self.config.logger.error(format_args!(
            "pool {}: malformed data from worker pid {pid} ({why}); dropping its link",
            self.config.name
        ));
        self.kill(key);
    }

    fn on_reply(&mut self, key: u64, id: u64, outcome: Outcome, ctx: &mut Context<Self>) {
        let max_calls = self.config.max_calls_per_child;
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let Some(pos) = slot.in_flight.iter().position(|c| c.id == id) else {
            return; // already resolved (timed out)
        };
        let call = slot.in_flight.swap_remove(pos);
        slot.calls += 1;
        let pid = slot.pid;
        let recycle = max_calls.is_some_and(|max| slot.calls >= max)
            || slot.recycle_at.is_some_and(|at| Instant::now() >= at);
        let panicked = matches!(outcome, Outcome::Panicked(_));
        if panicked {
            // The child exits after replying; no new calls meanwhile.
            slot.killed = true;
        }
        let result = match outcome {
            Outcome::Ok(bytes) => Ok(bytes),
            Outcome::Panicked(message) => Err(WorkerError::Panicked { message }),
            Outcome::BadCall(message) => Err(WorkerError::Protocol(message)),
        };
        self.finish_call(call.method, pid, call.accepted, &result);
        (call.reply)(result);
        if recycle && !panicked {
            let reason = if max_calls
                .is_some_and(|max| self.slot_mut(key).is_some_and(|s| s.calls >= max))
            {
                "max calls"
            } else {
                "max runtime"
            };
            self.retire(key, reason, ctx);
        }
        self.send_stop_if_drained(key);
    }

    fn on_exit(&mut self, key: u64, status: ExitStatus, ctx: &mut Context<Self>) {
        let Some(pos) = self.slots.iter().position(|s| s.key == key) else {
            return;
        };
        let slot = self.slots.swap_remove(pos);
        let pid = slot.pid;
        let expected = slot.retiring.is_some() && slot.stop_sent && status.success();
        let held = slot.in_flight.len();
        for call in slot.in_flight {
            let result = Err(WorkerError::Died {
                pid,
                exit: status.clone(),
            });
            self.finish_call(call.method, pid, call.accepted, &result);
            (call.reply)(result);
        }
        if !expected {
            self.config.events.dispatch(&mut WorkerDied {
                pool: self.config.name.clone(),
                pid,
                exit: status.clone(),
                calls_failed: held,
            });
            if self.state == PoolState::Running {
                self.config.logger.warn(format_args!(
                    "pool {}: worker pid {pid} exited unexpectedly ({status}); {held} call(s) failed; replacing it",
                    self.config.name
                ));
                self.record_restart(ctx, &format!("worker pid {pid} exited ({status})"));
            }
        }
        match self.state {
            PoolState::Running => self.dispatch(ctx),
            PoolState::Stopping | PoolState::Failed => {
                if self.slots.is_empty() {
                    for waiter in self.stop_waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
            }
        }
    }

    /// OTP-style restart intensity: more than `n` restarts within the window
    /// and the pool gives up instead of fork-bombing.
    fn record_restart(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.state != PoolState::Running {
            return;
        }
        self.counters.restarts += 1;
        let now = Instant::now();
        let (limit, window) = self.config.restart_limit;
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() > limit {
            self.fail(
                ctx,
                format!(
                    "{} restarts within {window:?} (last: {why})",
                    self.restarts.len()
                ),
            );
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.state = PoolState::Failed;
        self.config.logger.error(format_args!(
            "pool {}: giving up: {reason}; pending calls fail with PoolFailed",
            self.config.name
        ));
        for call in std::mem::take(&mut self.queue) {
            let result = Err(WorkerError::PoolFailed {
                reason: reason.clone(),
            });
            self.finish_call(call.name, 0, call.accepted, &result);
            (call.reply)(result);
        }
        let keys: Vec<u64> = self.slots.iter().map(|s| s.key).collect();
        for key in keys {
            self.kill(key);
        }
        self.config.events.dispatch(&mut WorkerPoolFailed {
            pool: self.config.name.clone(),
            reason,
        });
        let _ = ctx;
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let timeout = self.config.call_timeout;
        let mut timed_out = Vec::new();
        let mut to_retire = Vec::new();
        for slot in &mut self.slots {
            if slot.killed {
                continue;
            }
            if let Some(pos) = slot
                .in_flight
                .iter()
                .position(|c| c.deadline.is_some_and(|d| now >= d))
            {
                let call = slot.in_flight.swap_remove(pos);
                timed_out.push((slot.key, slot.pid, call));
            } else if slot.recycle_at.is_some_and(|at| now >= at)
                && slot.retiring.is_none()
                && !slot.spare
            {
                to_retire.push(slot.key);
            }
        }
        for (key, pid, call) in timed_out {
            let after = timeout.unwrap_or_default();
            let result = Err(WorkerError::Timeout { pid, after });
            self.finish_call(call.method, pid, call.accepted, &result);
            (call.reply)(result);
            self.config.events.dispatch(&mut WorkerTimedOut {
                pool: self.config.name.clone(),
                pid,
                method: call.method,
                after,
            });
            self.config.logger.warn(format_args!(
                "pool {}: call {} timed out after {after:?}; killing worker pid {pid}",
                self.config.name, call.method
            ));
            self.kill(key);
        }
        for key in to_retire {
            self.retire(key, "max runtime", ctx);
        }
        if self.state == PoolState::Running {
            self.dispatch(ctx);
        }
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
            latency: self.counters.latencies.percentiles(),
            children: self
                .slots
                .iter()
                .map(|s| ChildStats {
                    pid: s.pid,
                    uptime: s.started.elapsed(),
                    calls: s.calls,
                    state: s.state().to_string(),
                })
                .collect(),
            failed: self.state == PoolState::Failed,
        }
    }
}

fn decode_output<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<T, WorkerError> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| WorkerError::Protocol(format!("cannot decode the result: {e}")))
}

fn error_kind(e: &WorkerError) -> &'static str {
    match e {
        WorkerError::Died { .. } => "died",
        WorkerError::Timeout { .. } => "timeout",
        WorkerError::Panicked { .. } => "panicked",
        WorkerError::Busy { .. } => "busy",
        WorkerError::TooLarge { .. } => "too_large",
        WorkerError::PoolFailed { .. } => "pool_failed",
        WorkerError::ShuttingDown => "shutting_down",
        WorkerError::Protocol(_) => "protocol",
    }
}

impl<W: WorkerMethods> Actor for WorkerPool<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        if self.inline.is_some() {
            return;
        }
        self.promote_spares(ctx);
        let period = match self.config.call_timeout {
            Some(t) => (t / 4).clamp(Duration::from_millis(1), Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        ctx.run_interval(period, |act, ctx| act.sweep(ctx));
    }
}

/// Frames from one worker.
struct ChildFrames {
    key: u64,
    batch: std::io::Result<Vec<Vec<u8>>>,
}

impl<W: WorkerMethods> StreamHandler<ChildFrames> for WorkerPool<W> {
    fn handle(&mut self, item: ChildFrames, ctx: &mut Context<Self>) {
        self.on_frames(item.key, item.batch, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // One worker's hang-up is handled when its pidfd reports the exit.
    }
}

/// Current stats of the pool.
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
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopPool {
    /// How long held calls may take.
    pub grace: Duration,
}

impl<W: WorkerMethods> Handler<StopPool> for WorkerPool<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopPool, ctx: &mut Context<Self>) -> Self::Result {
        if self.state != PoolState::Failed {
            self.state = PoolState::Stopping;
        }
        for call in std::mem::take(&mut self.queue) {
            let result = Err(WorkerError::ShuttingDown);
            self.finish_call(call.name, 0, call.accepted, &result);
            (call.reply)(result);
        }
        let keys: Vec<u64> = self.slots.iter().map(|s| s.key).collect();
        for key in keys {
            if let Some(slot) = self.slot_mut(key) {
                slot.retiring.get_or_insert("shutdown");
            }
            self.send_stop_if_drained(key);
        }
        if self.slots.is_empty() {
            return Box::pin(async {});
        }
        ctx.run_later(msg.grace, |act, _| {
            let keys: Vec<u64> = act.slots.iter().map(|s| s.key).collect();
            for key in keys {
                act.kill(key);
            }
        });
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Kills one worker with `signal` (tests, chaos drills). Returns its pid.
#[derive(Message)]
#[rtype(result = "Option<i32>")]
pub struct KillWorker {
    /// Which active worker (index among active workers, wrapping).
    pub index: usize,
    /// The signal.
    pub signal: i32,
}

impl<W: WorkerMethods> Handler<KillWorker> for WorkerPool<W> {
    type Result = Option<i32>;

    fn handle(&mut self, msg: KillWorker, _: &mut Context<Self>) -> Option<i32> {
        let active: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| !s.spare && !s.killed)
            .collect();
        if active.is_empty() {
            return None;
        }
        let slot = active[msg.index % active.len()];
        slot.signaller.as_ref()?.signal(msg.signal);
        Some(slot.pid)
    }
}
