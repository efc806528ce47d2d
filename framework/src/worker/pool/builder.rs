//! Configuring and starting a [`WorkerPool`].

use super::super::{short_name, WorkerContext, WorkerError, WorkerMethods};
use super::{GetPoolStats, StopPool, WorkerPool};
use crate::error::{Error, Result};
use crate::event::Events;
use crate::ipc::{Transport, MAX_FRAME};
use crate::log::Logger;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// What the `on_return` callback sees for every finished call.
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
/// # fn demo() -> Result<(), daemonic::Error> {
/// let pool = WorkerPool::builder(Calc)
///     .on_return(|r| {
///         if r.latency.as_millis() > 100 {
///             log::warn!("{}::{} call {} took {:?} (pid {})", r.pool, r.method, r.call_id, r.latency, r.pid);
///         }
///     })
///     .start()?;
/// # let _ = pool; Ok(()) }
/// ```
#[derive(Debug)]
pub struct CallReturn<'a> {
    /// The pool's name.
    pub pool: &'a str,
    /// The method called.
    pub method: &'static str,
    /// The call's id (as the method saw it in
    /// [`WorkerContext::call_id`](crate::WorkerContext::call_id)).
    pub call_id: u64,
    /// The worker's pid (0 in inline mode).
    pub pid: i32,
    /// Time from `send` to the reply.
    pub latency: Duration,
    /// `None` if the method returned, else why not.
    pub error: Option<&'a WorkerError>,
}

pub(super) type OnReturn = Arc<dyn Fn(&CallReturn<'_>) + Send + Sync>;

/// Pools started through a daemon: stopped at its shutdown, included in its stats.
#[derive(Default)]
pub(crate) struct PoolRegistry {
    pools: parking_lot::Mutex<Vec<RegisteredPool>>,
}

#[derive(Clone)]
pub(crate) struct RegisteredPool {
    pub stop: Recipient<StopPool>,
    pub stats: Recipient<GetPoolStats>,
    /// Its supervisor stops it (in its tree's order), not the daemon.
    pub supervised: bool,
}

impl PoolRegistry {
    pub(crate) fn add(&self, pool: RegisteredPool) {
        self.pools.lock().push(pool);
    }

    pub(crate) fn all(&self) -> Vec<RegisteredPool> {
        self.pools.lock().clone()
    }
}

/// A pool's settings, as the builder collects them and the pool keeps them.
pub(super) struct PoolConfig {
    pub name: String,
    pub size: usize,
    pub call_timeout: Option<Duration>,
    pub start_timeout: Duration,
    pub queue_capacity: usize,
    pub max_queued_bytes: usize,
    pub max_calls_per_child: Option<u64>,
    pub max_runtime_per_child: Option<Duration>,
    pub runtime_jitter: f64,
    pub restart_limit: (usize, Duration),
    pub max_payload: usize,
    /// Largest `SharedBytes` a worker may hand back.
    pub max_shared_bytes: usize,
    pub max_in_flight: usize,
    pub max_concurrent: usize,
    pub warm_spares: usize,
    pub transport: Transport,
    /// Arguments and results of at least this many bytes travel in a
    /// sealed memfd (socket transport); `None`: never.
    pub shm_threshold: Option<usize>,
    pub events: Events,
    pub logger: Logger,
    pub on_return: Option<OnReturn>,
    /// The pool's own least privilege, before it is resolved at start.
    pub privileges: PoolPrivileges,
}

/// What a pool's workers give up, as configured (see the builder's `user`,
/// `group`, `no_new_privs` and `limit_*` methods).
#[derive(Debug, Clone, Default)]
pub(super) struct PoolPrivileges {
    pub user: Option<String>,
    pub group: Option<String>,
    pub no_new_privs: bool,
    pub limits: Vec<crate::process::Limit>,
    pub nice: Option<i32>,
}

impl PoolPrivileges {
    /// Resolves names into what each child applies (`None`: nothing).
    fn confinement(&self) -> Result<Option<crate::process::Confinement>> {
        let identity =
            crate::daemon::privilege::pool_identity(self.user.as_deref(), self.group.as_deref())?;
        if let Some(nice) = self.nice {
            if !(-20..=19).contains(&nice) {
                return Err(Error::Config(format!("nice must be -20 to 19, got {nice}")));
            }
        }
        let confinement = crate::process::Confinement {
            limits: self.limits.clone(),
            nice: self.nice,
            identity,
            no_new_privs: self.no_new_privs,
        };
        Ok((!confinement.is_empty()).then_some(confinement))
    }
}

/// Default [`WorkerPoolBuilder::start_timeout`].
///
/// ```
/// assert_eq!(daemonic::worker::DEFAULT_START_TIMEOUT.as_secs(), 30);
/// ```
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`WorkerPoolBuilder::shm_threshold`]: 256 KiB, chosen from the
/// `workers` benchmark (see BENCHMARKS.md): from there up, a memfd is
/// faster than the socket.
///
/// ```
/// assert_eq!(daemonic::worker::DEFAULT_SHM_THRESHOLD, 256 * 1024);
/// ```
pub const DEFAULT_SHM_THRESHOLD: usize = 256 * 1024;

/// The default of [`WorkerPoolBuilder::max_shared_bytes`]: 4 GiB.
pub const DEFAULT_MAX_SHARED_BYTES: usize = 4 << 30;

/// Configures a [`WorkerPool`].
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
/// use std::time::Duration;
/// # fn demo() -> Result<(), daemonic::Error> {
/// let pool = WorkerPool::builder(Calc)
///     .name("calculator")
///     .size(4)
///     .call_timeout(Duration::from_secs(5))
///     .queue_capacity(256)
///     .max_calls_per_child(10_000)
///     .restart_limit(5, Duration::from_secs(60))
///     .start()?; // inside an actix System
/// # let _ = pool; Ok(()) }
/// ```
pub struct WorkerPoolBuilder<W: WorkerMethods> {
    worker: W,
    config: PoolConfig,
    inline: bool,
    arbiter: Option<ArbiterHandle>,
    registry: Option<Arc<PoolRegistry>>,
    /// A daemon's application tree: `start` hands the pool to it as a child.
    root: Option<actix::Addr<crate::supervision::Supervisor>>,
    /// Events and logger given explicitly (a supervisor does not replace them).
    wired: bool,
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
        self.config.events = events;
        self.config.logger = logger;
        self.arbiter = Some(arbiter);
        self.registry = Some(registry);
        self.wired = true;
        self
    }

    /// Started as a child of a daemon's application tree (see `start`).
    pub(crate) fn under(
        mut self,
        root: Option<actix::Addr<crate::supervision::Supervisor>>,
    ) -> Self {
        self.root = root;
        self
    }

    /// Listed in a daemon's stats (a pool in the daemon's supervision tree).
    pub(crate) fn in_registry(mut self, registry: Arc<PoolRegistry>) -> Self {
        self.registry.get_or_insert(registry);
        self
    }

    /// A supervisor's events and logger, unless the pool has its own.
    pub(crate) fn inherit(mut self, events: Events, logger: Logger) -> Self {
        if !self.wired {
            self.config.events = events;
            self.config.logger = logger;
        }
        self
    }

    pub(crate) fn new(worker: W) -> Self {
        Self {
            worker,
            config: PoolConfig {
                name: short_name(W::NAME),
                size: 2,
                call_timeout: None,
                start_timeout: DEFAULT_START_TIMEOUT,
                queue_capacity: 1024,
                max_queued_bytes: 128 * 1024 * 1024,
                max_calls_per_child: None,
                max_runtime_per_child: None,
                runtime_jitter: 0.1,
                restart_limit: (10, Duration::from_secs(10)),
                max_payload: 16 * 1024 * 1024,
                max_shared_bytes: DEFAULT_MAX_SHARED_BYTES,
                max_in_flight: 1,
                max_concurrent: 1,
                warm_spares: 1,
                transport: Transport::default(),
                shm_threshold: Some(DEFAULT_SHM_THRESHOLD),
                events: Events::new(),
                logger: Logger::discard(),
                on_return: None,
                privileges: PoolPrivileges::default(),
            },
            inline: false,
            arbiter: None,
            registry: None,
            root: None,
            wired: false,
        }
    }

    /// Number of worker processes serving calls (default 2).
    pub fn size(mut self, size: usize) -> Self {
        self.config.size = size;
        self
    }

    /// Pool name in logs, events and stats (default: the type's name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// A call held by a worker longer than this resolves with
    /// [`WorkerError::Timeout`]; its worker is killed and replaced. Without
    /// it, a call waits as long as its method runs: a method that never
    /// returns holds its call (and its worker) forever. `Duration::MAX`
    /// means no timeout.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = Some(timeout);
        self
    }

    /// A worker whose `started` hook has not returned after this long is
    /// killed and replaced (it counts toward the restart limit); if no
    /// worker is ready at that moment, the calls waiting resolve with
    /// [`WorkerError::StartTimeout`]. Default 30 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.config.start_timeout = timeout;
        self
    }

    /// Calls waiting for a worker beyond this are refused with
    /// [`WorkerError::Busy`] at once (default 1024).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.config.queue_capacity = capacity;
        self
    }

    /// Bytes of arguments waiting for a worker beyond this are refused with
    /// [`WorkerError::Busy`] at once (default 128 MiB), so a burst of large
    /// calls cannot exhaust the daemon's memory.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.config.max_queued_bytes = bytes;
        self
    }

    /// Replace a worker after it served this many calls.
    pub fn max_calls_per_child(mut self, calls: u64) -> Self {
        self.config.max_calls_per_child = Some(calls);
        self
    }

    /// Replace a worker after it ran this long (minus up to 10% jitter, so
    /// workers started together do not all recycle at once).
    pub fn max_runtime_per_child(mut self, runtime: Duration) -> Self {
        self.config.max_runtime_per_child = Some(runtime);
        self
    }

    /// At most `restarts` unexpected worker exits within `within`; one more
    /// and the pool stops respawning and fails its calls with
    /// [`WorkerError::PoolFailed`] (default 10 in 10 s).
    pub fn restart_limit(mut self, restarts: usize, within: Duration) -> Self {
        self.config.restart_limit = (restarts, within);
        self
    }

    /// Largest serialized call accepted, and largest result a worker sends
    /// back: bigger calls get [`WorkerError::TooLarge`] before anything is
    /// sent, bigger results [`WorkerError::ReplyTooLarge`] (default 16 MiB;
    /// at most 64 MiB, the frame limit of every link).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.config.max_payload = bytes;
        self
    }

    /// Largest [`SharedBytes`](crate::worker::SharedBytes) a worker may
    /// hand back in a result (default [`DEFAULT_MAX_SHARED_BYTES`], 4 GiB).
    /// A bigger one fails its call with [`WorkerError::Protocol`] and is
    /// never mapped. Its memory is the worker's, but the daemon's reading
    /// it may allocate pages a sparse memfd did not have: this bounds what
    /// a worker can make the daemon hold. `SharedBytes` do not count toward
    /// [`max_payload`](Self::max_payload).
    pub fn max_shared_bytes(mut self, bytes: usize) -> Self {
        self.config.max_shared_bytes = bytes;
        self
    }

    /// Calls sent ahead to one worker (pipelining; default 1). A worker
    /// still runs them one at a time (but see
    /// [`max_concurrent`](Self::max_concurrent)), and the next call is
    /// already waiting when it finishes. If it dies, the call it was
    /// running fails with `Died`, and the calls it had not started run on
    /// another worker.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls.max(1);
        self
    }

    /// `async` methods taking `&self` that one worker runs at once (default
    /// 1: one call at a time). I/O-bound workers (an HTTP fetcher, a
    /// database client) then overlap their calls' waits instead of queueing
    /// them: with `max_concurrent(100)`, 100 calls that each await 50 ms
    /// take about 50 ms on one worker, not 5 s.
    ///
    /// Calls still start in the order they arrive. An `async` method
    /// taking `&mut self`, and any plain method, runs alone: it starts once
    /// the calls before it have finished, and the ones after it wait for
    /// it. A worker that dies fails every call it had started with `Died`;
    /// the calls it had received but not started run on another worker.
    /// Each worker gets up to `max(max_in_flight, max_concurrent)` calls.
    /// Needs the socket transport (the default).
    ///
    /// ```no_run
    /// use daemonic::prelude::*;
    /// use serde::{Deserialize, Serialize};
    /// use std::time::Duration;
    ///
    /// #[daemonic::worker]
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Fetcher;
    ///
    /// #[daemonic::worker]
    /// impl Fetcher {
    ///     // `&self`: calls may overlap.
    ///     pub async fn fetch(&self, ctx: &mut WorkerContext, url: String) -> usize {
    ///         ctx.debug(1, format_args!("fetching {url}"));
    ///         tokio::time::sleep(Duration::from_millis(50)).await; // the request
    ///         url.len()
    ///     }
    /// }
    ///
    /// # fn main() -> Result<(), daemonic::Error> {
    /// # daemonic::actix::System::new().block_on(async {
    /// let pool = WorkerPool::builder(Fetcher).size(1).max_concurrent(100).start()?;
    /// # let _ = pool;
    /// # Ok(())
    /// # })
    /// # }
    /// ```
    pub fn max_concurrent(mut self, calls: usize) -> Self {
        self.config.max_concurrent = calls.max(1);
        self
    }

    /// Started, idle workers kept ready to replace a dead one at once
    /// (default 1).
    pub fn warm_spares(mut self, spares: usize) -> Self {
        self.config.warm_spares = spares;
        self
    }

    /// How calls travel between the pool and its workers (default
    /// [`Transport::Socket`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.config.transport = transport;
        self
    }

    /// Call arguments and results of at least `bytes` (encoded) travel in
    /// shared memory instead of through the socket (default
    /// [`DEFAULT_SHM_THRESHOLD`]; `usize::MAX`: never). The sender writes
    /// them into a sealed memfd and passes its descriptor with the call's
    /// frame; the receiver checks the seals and the size and maps it
    /// read-only, so the bytes are copied once instead of through the
    /// kernel's socket buffers. Failures are those of any call: a worker
    /// that dies mid-transfer fails its call with [`WorkerError::Died`], and
    /// its memory goes with it (a memfd is freed with its last descriptor;
    /// nothing is left in `/dev/shm`). The [`Transport::IpcChannel`]
    /// transport always sends bytes.
    ///
    /// Values that are large by nature are better sent as
    /// [`SharedBytes`](crate::worker::SharedBytes): never encoded nor
    /// copied, whatever the threshold (they do not count toward
    /// [`max_payload`](Self::max_payload) either: their memory is the
    /// sender's).
    ///
    /// ```no_run
    /// # use daemonic::prelude::*;
    /// # #[daemonic::worker]
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// # struct Thumbnailer;
    /// # #[daemonic::worker]
    /// # impl Thumbnailer {
    /// #     pub fn shrink(&mut self, image: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf { image }
    /// # }
    /// # fn demo() -> Result<(), daemonic::Error> {
    /// let pool = WorkerPool::builder(Thumbnailer)
    ///     .max_payload(48 * 1024 * 1024) // images up to 48 MiB
    ///     .shm_threshold(1024 * 1024) // from 1 MiB up, through shared memory
    ///     .start()?;
    /// # let _ = pool; Ok(()) }
    /// ```
    pub fn shm_threshold(mut self, bytes: usize) -> Self {
        self.config.shm_threshold = (bytes != usize::MAX).then_some(bytes);
        self
    }

    /// Run the methods in this process instead of in children (tests,
    /// debugging), on a thread of the pool's own, one call at a time. Calls
    /// still go through serialization; timeouts and recycling do not apply.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Raise worker events on this bus (a daemon's, say).
    pub fn events(mut self, events: Events) -> Self {
        self.config.events = events;
        self.wired = true;
        self
    }

    /// Log through this logger (a daemon's, say).
    pub fn logger(mut self, logger: Logger) -> Self {
        self.config.logger = logger;
        self.wired = true;
        self
    }

    /// Called in the daemon for every finished call, with its method, worker,
    /// latency and error (for metrics or tracing).
    pub fn on_return(mut self, callback: impl Fn(&CallReturn<'_>) + Send + Sync + 'static) -> Self {
        self.config.on_return = Some(Arc::new(callback));
        self
    }

    /// The pool's workers run as `user` (a name or a uid), with its
    /// supplementary groups and its primary group unless
    /// [`group`](Self::group) is given: a root daemon can hand hostile input
    /// to workers that run as `nobody`. Needs a daemon running as root (not
    /// one that dropped to `--user`). Check from outside: `/proc/<pid>/status`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.privileges.user = Some(user.into());
        self
    }

    /// The pool's workers run with `group` (a name or a gid).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.config.privileges.group = Some(group.into());
        self
    }

    /// The pool's workers, and every program they run, can never gain
    /// privileges (`PR_SET_NO_NEW_PRIVS`: setuid bits and file capabilities
    /// are ignored).
    pub fn no_new_privs(mut self) -> Self {
        self.config.privileges.no_new_privs = true;
        self
    }

    /// Each worker may map at most `bytes` of address space (`RLIMIT_AS`):
    /// an allocation beyond it fails, and a Rust worker aborts, which
    /// resolves its call with [`WorkerError::Died`] (SIGABRT) and replaces it.
    pub fn limit_memory(mut self, bytes: u64) -> Self {
        self.set_limit(crate::process::Limit::AddressSpace(bytes));
        self
    }

    /// Each worker may use at most this much CPU time over its life
    /// (`RLIMIT_CPU`, rounded up to whole seconds): beyond it the kernel
    /// sends SIGXCPU, and the call resolves with [`WorkerError::Died`].
    pub fn limit_cpu(mut self, time: Duration) -> Self {
        let secs = time.as_secs() + u64::from(time.subsec_nanos() > 0);
        self.set_limit(crate::process::Limit::CpuSeconds(secs.max(1)));
        self
    }

    /// Each worker may hold at most `files` open descriptors (`RLIMIT_NOFILE`).
    pub fn limit_open_files(mut self, files: u64) -> Self {
        self.set_limit(crate::process::Limit::OpenFiles(files));
        self
    }

    /// The pool's workers run at this niceness (-20 to 19; higher is
    /// kinder to the rest of the machine).
    pub fn nice(mut self, nice: i32) -> Self {
        self.config.privileges.nice = Some(nice);
        self
    }

    fn set_limit(&mut self, limit: crate::process::Limit) {
        let limits = &mut self.config.privileges.limits;
        limits.retain(|l| std::mem::discriminant(l) != std::mem::discriminant(&limit));
        limits.push(limit);
    }

    /// Run the pool actor on this arbiter instead of the current one.
    pub fn arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    fn validate(&mut self) -> Result<()> {
        let c = &mut self.config;
        if c.size == 0 {
            return Err(Error::Config("a worker pool needs size >= 1".into()));
        }
        if c.restart_limit.1.is_zero() {
            return Err(Error::Config("restart_limit window must be > 0".into()));
        }
        if c.start_timeout.is_zero() {
            return Err(Error::Config("start_timeout must be > 0".into()));
        }
        if c.max_payload > MAX_FRAME - 1024 {
            return Err(Error::Config(format!(
                "max_payload of {} bytes exceeds the {}-byte frame limit",
                c.max_payload,
                MAX_FRAME - 1024
            )));
        }
        if c.max_concurrent > 1 && c.transport != Transport::Socket {
            return Err(Error::Config(
                "max_concurrent > 1 needs the socket transport".into(),
            ));
        }
        c.max_in_flight = c.max_in_flight.max(c.max_concurrent);
        if c.call_timeout == Some(Duration::MAX) {
            c.call_timeout = None;
        }
        c.runtime_jitter = c.runtime_jitter.clamp(0.0, 0.9);
        Ok(())
    }

    /// Starts the pool (inside an actix `System`) and returns its address.
    ///
    /// A pool made with a daemon's `ctx.workers(..)` starts as a child of the
    /// daemon's application tree, `app`: when it trips its own restart
    /// limit, `app` restarts it in place (the address stays valid, calls
    /// wait for it), and a pool that keeps failing ends the daemon (exit
    /// code 70, or a restart), as any escalation reaching the daemon's root
    /// does. Configuration errors are still returned here.
    pub fn start(mut self) -> Result<Addr<WorkerPool<W>>> {
        if let Some(root) = self.root.take() {
            self.preflight()?;
            self.config.privileges.confinement()?;
            let spec = crate::supervision::PoolSpec::new(self);
            let addr = spec.addr();
            use crate::supervision::IntoChild;
            root.do_send(crate::supervision::AddChild(spec.into_child()));
            return Ok(addr);
        }
        // actix's default capacity; the pool raises it once it runs.
        let (tx, rx) = actix::dev::channel::channel(16);
        let addr = Addr::new(tx);
        self.start_with(rx, addr.clone(), None)?;
        Ok(addr)
    }

    /// Checks what can be checked before the pool runs; the worker's
    /// serialized state, sent to every worker.
    fn preflight(&mut self) -> Result<Vec<u8>> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoSystem);
        }
        self.validate()?;
        let template = super::super::protocol::encode(&self.worker)
            .map_err(|e| Error::Config(format!("cannot serialize the worker's state: {e}")))?;
        if template.len() > MAX_FRAME {
            return Err(Error::Config(format!(
                "the worker's serialized state is {} bytes, over the {MAX_FRAME}-byte frame limit",
                template.len()
            )));
        }
        Ok(template)
    }

    /// The pool's name as configured.
    pub(crate) fn pool_name(&self) -> &str {
        &self.config.name
    }

    /// Starts the pool on a mailbox made beforehand (a supervised pool's
    /// address exists before it starts), telling `supervisor` if it fails.
    pub(crate) fn start_with(
        mut self,
        mailbox: actix::dev::channel::AddressReceiver<WorkerPool<W>>,
        addr: Addr<WorkerPool<W>>,
        supervisor: Option<super::PoolReport>,
    ) -> Result<()> {
        let template = self.preflight()?;
        let inline = if self.inline {
            let context = WorkerContext::new(self.config.logger.clone(), "inline");
            Some(super::inline::Inline::start(
                self.worker,
                context,
                &self.config.name,
            )?)
        } else {
            None
        };
        let confinement = self.config.privileges.confinement()?;
        let config = self.config;
        let supervised = supervisor.is_some();
        let pool = move || {
            let mut pool = WorkerPool::<W>::new(config, template, inline, confinement);
            pool.supervisor = supervisor;
            pool
        };
        let run = move || {
            Context::with_receiver(mailbox).run(pool());
        };
        match self.arbiter {
            Some(arbiter) => {
                if !arbiter.spawn_fn(run) {
                    return Err(Error::Config("the pool's arbiter has stopped".into()));
                }
            }
            None => run(),
        }
        if let Some(registry) = self.registry {
            registry.add(RegisteredPool {
                stop: addr.clone().recipient(),
                stats: addr.recipient(),
                supervised,
            });
        }
        Ok(())
    }
}
