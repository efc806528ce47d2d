//! The calling side: [`RemotePool`], an actor that answers the message
//! types `#[daemonic::worker]` generates by sending them to serving hosts.
//!
//! - `tracker.rs`: what is known of each call, and the verdicts (pure);
//! - `builder.rs`: its settings; `response.rs`: how an answer reaches its
//!   caller.

mod builder;
mod response;
mod tracker;

pub use builder::RemotePoolBuilder;
pub use response::RemoteResponse;

use super::options::ConnectionEvents;
use super::publisher::Publisher;
use super::stats::{LatencyHistogram, RemotePoolStats};
use super::wire::{self, InboxTail, Notice, Subjects};
use crate::worker::{Call, WorkerError, WorkerMethods};
use actix::prelude::*;
use async_nats::connection::State;
use async_nats::{Client, Message as NatsMessage, StatusCode};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tracker::{HostName, Tracked, Tracker, Verdict, Where};

/// How often a remote pool asks who serves its subject.
const PING_EVERY: Duration = Duration::from_secs(2);

type Answer = Result<Bytes, WorkerError>;

/// A call waiting for its answer.
struct Pending {
    /// The call's payload, kept to send it again.
    payload: Bytes,
    deliver: response::Deliver,
    accepted: Instant,
}

#[derive(Default)]
struct Counters {
    calls: u64,
    returned: u64,
    errors: BTreeMap<&'static str, u64>,
    retries: u64,
    late: u64,
    hosts: BTreeMap<HostName, u64>,
    latency: LatencyHistogram,
}

pub(super) struct Settings {
    pub name: String,
    pub host_timeout: Duration,
    pub max_attempts: u32,
    pub idempotent: bool,
    pub idempotent_methods: Vec<u16>,
}

/// A pool of workers served by other hosts through NATS. Send it the
/// message types `#[daemonic::worker]` generates, as to a local
/// [`WorkerPool`](crate::worker::WorkerPool): the answers are the same
/// `Result<R, WorkerError>`, with what a network adds:
///
/// - [`WorkerError::Unavailable`]: no host serves the subject, or this
///   process is not connected. The call did not run.
/// - [`WorkerError::Busy`]: every host tried was full. The call did not
///   run (a `Busy` host is retried elsewhere first, a bounded number of
///   times: [`retries`](RemotePoolBuilder::retries)).
/// - [`WorkerError::HostLost`]: the host holding the call went silent, or
///   its answer was lost. The call may have run. It is sent again only if
///   it was marked idempotent.
///
/// Every other error comes from the host's own pool, unchanged.
pub struct RemotePool<W: WorkerMethods> {
    settings: Settings,
    subjects: Subjects,
    schema: u64,
    client: Client,
    out: Publisher,
    inbox: String,
    tracker: Tracker<Pending>,
    next_id: u64,
    counters: Counters,
    stopping: bool,
    unsubscribe: watch::Sender<bool>,
    drained: Vec<oneshot::Sender<()>>,
    _worker: PhantomData<fn() -> W>,
}

impl<W: WorkerMethods> RemotePool<W> {
    fn new(
        settings: Settings,
        prefix: &str,
        client: Client,
        events: Arc<ConnectionEvents>,
    ) -> Self {
        let tracker = Tracker::new(settings.host_timeout, settings.max_attempts);
        Self {
            subjects: Subjects::new(prefix, W::NAME),
            schema: wire::schema::<W>(),
            out: Publisher::start(client.clone(), events),
            inbox: client.new_inbox(),
            client,
            tracker,
            settings,
            next_id: 1,
            counters: Counters::default(),
            stopping: false,
            unsubscribe: watch::channel(false).0,
            drained: Vec::new(),
            _worker: PhantomData,
        }
    }

    /// Takes a call: refuses it at once, or sends it and returns where its
    /// answer will arrive.
    fn call(
        &mut self,
        method: u16,
        args: Result<Vec<u8>, rmp_serde::encode::Error>,
        deliver: response::Deliver,
    ) -> Result<(), WorkerError> {
        self.counters.calls += 1;
        let refused = |act: &mut Self, e: WorkerError| {
            *act.counters.errors.entry(e.kind()).or_default() += 1;
            Err(e)
        };
        if self.stopping {
            return refused(self, WorkerError::ShuttingDown);
        }
        let args = match args {
            Ok(args) => args,
            Err(e) => {
                let e = WorkerError::Protocol(format!("cannot encode arguments: {e}"));
                return refused(self, e);
            }
        };
        let max = self.client.max_payload();
        if args.len() + wire::CALL_HEAD > max {
            let e = WorkerError::TooLarge {
                size: args.len(),
                max: max.saturating_sub(wire::CALL_HEAD),
            };
            return refused(self, e);
        }
        let state = self.client.connection_state();
        if state != State::Connected {
            let e = WorkerError::Unavailable {
                reason: format!(
                    "not connected to NATS ({})",
                    super::options::state_name(&state)
                ),
            };
            return refused(self, e);
        }
        let payload = Bytes::from(wire::encode_call(self.schema, method, &args));
        let pending = Pending {
            payload,
            deliver,
            accepted: Instant::now(),
        };
        let may_repeat =
            self.settings.idempotent || self.settings.idempotent_methods.contains(&method);
        self.send(Tracked {
            at: Where::Sent {
                at: Instant::now(),
                to: None,
            },
            attempts: 0,
            avoid: Vec::new(),
            may_repeat,
            data: pending,
        });
        Ok(())
    }

    /// Sends an attempt: the first to the queue group, a retry to a live
    /// host not tried yet (or the queue group if none is known).
    fn send(&mut self, mut call: Tracked<Pending>) {
        let now = Instant::now();
        let to = if call.attempts == 0 {
            None
        } else {
            self.counters.retries += 1;
            self.tracker.pick(&call.avoid, now)
        };
        call.attempts += 1;
        let subject = match &to {
            Some(host) => self.subjects.direct(host),
            None => self.subjects.calls.clone(),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.out.publish(
            subject,
            Some(format!("{}.{id}", self.inbox)),
            call.data.payload.clone(),
        );
        call.at = Where::Sent { at: now, to };
        self.tracker.insert(id, call);
    }

    fn settle(&mut self, call: Tracked<Pending>, answer: Answer, host: Option<&HostName>) {
        match &answer {
            Ok(_) => {
                self.counters.returned += 1;
                self.counters.latency.record(call.data.accepted.elapsed());
            }
            Err(e) => *self.counters.errors.entry(e.kind()).or_default() += 1,
        }
        if let Some(host) = host {
            *self.counters.hosts.entry(host.clone()).or_default() += 1;
        }
        (call.data.deliver)(answer);
        if self.stopping && self.tracker.len() == 0 {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn apply(&mut self, call: Tracked<Pending>, verdict: Verdict) {
        match verdict {
            Verdict::Retry => self.send(call),
            Verdict::Fail(e) => self.settle(call, Err(e), None),
        }
    }

    fn on_answer(&mut self, id: u64, message: NatsMessage) {
        let Some(mut call) = self.tracker.remove(id) else {
            self.counters.late += 1;
            return;
        };
        let now = Instant::now();
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return match &call.at {
                // The host it was aimed at is gone: try another.
                Where::Sent { to: Some(host), .. } => {
                    self.tracker.forget(host);
                    let host = host.clone();
                    call.avoid.push(host);
                    let max = self.tracker.max_attempts();
                    let verdict = if call.attempts < max {
                        Verdict::Retry
                    } else {
                        Verdict::Fail(self.unavailable())
                    };
                    self.apply(call, verdict)
                }
                _ => {
                    let e = self.unavailable();
                    self.settle(call, Err(e), None)
                }
            };
        }
        let payload = message.payload;
        let (host, outcome) = match wire::decode_answer(&payload) {
            Ok((host, outcome)) => (self.tracker.intern(host), outcome),
            Err(e) => return self.settle(call, Err(WorkerError::Protocol(e.to_string())), None),
        };
        self.tracker.heard(&host, now, None);
        match outcome {
            Ok(range) => self.settle(call, Ok(payload.slice(range)), Some(&host)),
            Err(error) => {
                match tracker::after_error(&error, call.attempts, self.tracker.max_attempts()) {
                    Verdict::Retry => {
                        call.avoid.push(host);
                        self.send(call)
                    }
                    Verdict::Fail(e) => self.settle(call, Err(e), Some(&host)),
                }
            }
        }
    }

    fn unavailable(&self) -> WorkerError {
        WorkerError::Unavailable {
            reason: format!("no host serves {}", self.subjects.calls),
        }
    }

    fn on_notice(&mut self, message: NatsMessage) {
        let Ok(notice) = wire::decode_notice(&message.payload) else {
            return;
        };
        let now = Instant::now();
        match notice {
            Notice::Heartbeat {
                host,
                interval_ms,
                queued,
                running,
            } => {
                let host = self.tracker.intern(&host);
                let interval = Duration::from_millis(interval_ms);
                for (call, verdict) in self
                    .tracker
                    .heartbeat(&host, interval, &queued, &running, now)
                {
                    self.apply(call, verdict);
                }
            }
            Notice::Running { host, ids } => {
                let host = self.tracker.intern(&host);
                self.tracker.running(&host, &ids, now);
            }
            Notice::Presence { host } => {
                let host = self.tracker.intern(&host);
                self.tracker.heard(&host, now, None);
            }
        }
    }

    fn sweep(&mut self) {
        for (call, verdict) in self.tracker.expired(Instant::now()) {
            self.apply(call, verdict);
        }
    }

    fn ping(&self) {
        if self.client.connection_state() == State::Connected {
            self.out.publish(
                self.subjects.ping.clone(),
                Some(format!("{}.p", self.inbox)),
                Vec::new(),
            );
        }
    }

    fn stats(&self) -> RemotePoolStats {
        RemotePoolStats {
            name: self.settings.name.clone(),
            subject: self.subjects.calls.clone(),
            calls: self.counters.calls,
            returned: self.counters.returned,
            in_flight: self.tracker.len(),
            errors: self
                .counters
                .errors
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            retries: self.counters.retries,
            late_answers: self.counters.late,
            hosts: self
                .counters
                .hosts
                .iter()
                .map(|(h, n)| (h.to_string(), *n))
                .collect(),
            live_hosts: self.tracker.live_hosts(Instant::now()),
            latency: self.counters.latency.percentiles(),
        }
    }
}

/// `pool.call(msg)` ([`CallExt`](crate::worker::CallExt)) works on a remote
/// pool as on a local one.
impl<W: WorkerMethods> crate::worker::PoolActor for RemotePool<W> {
    type Worker = W;
}

impl<W: WorkerMethods> Actor for RemotePool<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        // Through the publisher, so the subscription reaches the server
        // before any call that expects an answer on it.
        let subscribed = self.out.subscribe(format!("{}.>", self.inbox));
        let mut stop = self.unsubscribe.subscribe();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(subscribed).map(move |result, _, ctx| {
                if let Ok(Ok(subscriber)) = result {
                    let until = async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    };
                    use futures_util::StreamExt;
                    ctx.add_stream(subscriber.take_until(until));
                }
            }),
        );
        self.ping();
        ctx.run_interval(PING_EVERY, |act, _| act.ping());
        let sweep = (self.settings.host_timeout / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(100));
        ctx.run_interval(sweep, |act, _| act.sweep());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Dropped without a stop: nobody waits for the calls any more, but
        // each still gets the truth.
        for call in self.tracker.drain() {
            let host = match &call.at {
                Where::Queued { host, .. } | Where::Running { host, .. } => host.to_string(),
                Where::Sent { .. } => "unknown".into(),
            };
            (call.data.deliver)(Err(WorkerError::HostLost {
                host,
                silent: Duration::ZERO,
            }));
        }
    }
}

impl<W: WorkerMethods> StreamHandler<NatsMessage> for RemotePool<W> {
    fn handle(&mut self, message: NatsMessage, _: &mut Context<Self>) {
        match wire::inbox_tail(&message.subject) {
            InboxTail::Answer(id) => self.on_answer(id, message),
            InboxTail::Notice | InboxTail::Presence => self.on_notice(message),
            InboxTail::Other => {}
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The inbox ends when the pool stops or the client closes; calls
        // still waiting are settled by the sweep.
    }
}

impl<W, M> Handler<M> for RemotePool<W>
where
    W: WorkerMethods,
    M: Call<W> + Message<Result = Result<<M as Call<W>>::Output, WorkerError>>,
{
    type Result = RemoteResponse<M::Output>;

    fn handle(&mut self, message: M, _: &mut Context<Self>) -> Self::Result {
        let (response, deliver) = RemoteResponse::pending();
        match self.call(M::METHOD, rmp_serde::to_vec(&message), deliver) {
            Ok(()) => response,
            Err(e) => RemoteResponse::ready(Err(e)),
        }
    }
}

/// Current stats of a remote pool.
#[derive(Message)]
#[rtype(result = "RemotePoolStats")]
pub struct GetRemotePoolStats;

impl<W: WorkerMethods> Handler<GetRemotePoolStats> for RemotePool<W> {
    type Result = MessageResult<GetRemotePoolStats>;

    fn handle(&mut self, _: GetRemotePoolStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

/// Graceful stop: new calls get `ShuttingDown`; calls in flight get until
/// `grace` for their answers, then resolve `HostLost` (they may have run).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRemotePool {
    /// How long calls in flight may take.
    pub grace: Duration,
}

impl<W: WorkerMethods> Handler<StopRemotePool> for RemotePool<W> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StopRemotePool, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let (tx, rx) = oneshot::channel();
        if self.tracker.len() == 0 {
            let _ = tx.send(());
        } else {
            self.drained.push(tx);
        }
        let waited = async move {
            let _ = actix_rt::time::timeout(msg.grace, rx).await;
        };
        Box::pin(
            actix::fut::wrap_future::<_, Self>(waited).map(|_, act, ctx| {
                let now = Instant::now();
                for call in act.tracker.drain() {
                    let (host, since) = match &call.at {
                        Where::Queued { host, since } | Where::Running { host, since } => {
                            (host.to_string(), *since)
                        }
                        Where::Sent { at, .. } => ("unknown".into(), *at),
                    };
                    let e = WorkerError::HostLost {
                        host,
                        silent: now.saturating_duration_since(since),
                    };
                    act.settle(call, Err(e), None);
                }
                let _ = act.unsubscribe.send(true);
                ctx.stop();
            }),
        )
    }
}

/// `call` folds a remote pool's answers as it does a local pool's (checked
/// by the compiler: this function is not run).
#[cfg(test)]
#[allow(dead_code)]
async fn remote_pools_answer_call<W, M>(
    pool: Addr<RemotePool<W>>,
    message: M,
) -> Result<M::Value, crate::worker::CallError<M::Error>>
where
    W: WorkerMethods,
    M: Call<W> + Message<Result = Result<<M as Call<W>>::Output, WorkerError>>,
{
    use crate::worker::CallExt;
    pool.call(message).await
}
