//! The serving side: an actor that takes calls from NATS for the local
//! pools it serves and sends their answers back unchanged.
//!
//! For each served pool it subscribes to the pool's subject in a queue
//! group (hosts share the calls), to its own direct subject (retries aimed
//! at it), and to the ping subject (callers looking for hosts).
//!
//! What a caller can rely on:
//! - A call beyond what the local pool can hold is answered `Busy` at once
//!   (it did not run), so a slow host does not collect a backlog.
//! - Every call held gets an answer, or the caller hears about it in the
//!   heartbeat sent to it every interval: which calls wait on the host
//!   (`queued`) and which may have started (`running`).
//! - A call once listed as queued is handed to the pool only after a
//!   "running" notice for it reached the server (the host publishes the
//!   notice, then a sync message to itself, and waits for it to come back:
//!   messages of one connection are handled in order). So if the host is
//!   lost, a call its caller last knew as queued never started, and runs
//!   elsewhere. The other calls resolve `HostLost`. A host that lost its
//!   connection meanwhile (its caller may have given it up) never starts
//!   such a call: it answers `Unavailable` (did not run) instead.

mod admission;

use super::options::ConnectionEvents;
use super::publisher::Publisher;
use super::stats::{HostStats, ServiceStats};
use super::wire::{self, Notice, Subjects};
use crate::log::Logger;
use crate::worker::{PoolLimits, RawCall, WorkerError};
use actix::prelude::*;
use admission::{HeldState, Limits, Release};
use async_nats::{Client, Message as NatsMessage};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A pool to serve, as `Nats::serve` hands it over.
pub(crate) struct ServeSpec {
    pub pool: String,
    pub worker: &'static str,
    pub schema: u64,
    pub raw: Recipient<RawCall>,
    pub limits: PoolLimits,
}

struct Service {
    spec: ServeSpec,
    subjects: Subjects,
    limits: Limits,
    /// Keys of calls waiting on the host, oldest first.
    queue: VecDeque<u64>,
    queued_bytes: usize,
    /// Calls handed to the pool or on their way to it.
    outstanding: usize,
    calls: u64,
    returned: u64,
    errors: BTreeMap<&'static str, u64>,
}

impl Service {
    fn held(&self) -> usize {
        self.queue.len() + self.outstanding
    }
}

struct Held {
    service: usize,
    /// The caller's inbox, where heartbeats and notices go.
    caller: Arc<str>,
    /// The caller's id of the attempt.
    id: u64,
    reply: String,
    method: u16,
    args: Vec<u8>,
    state: HeldState,
}

/// Calls whose "running" notice is on its way, and the sync that confirms it.
#[derive(Default)]
struct Sync {
    /// Waiting for the next sync.
    next: Vec<u64>,
    /// Confirmed by the sync message with this token when it comes back.
    in_flight: Option<(u64, Vec<u64>, Instant)>,
    tokens: u64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Call,
    Ping,
    Sync,
}

struct Incoming {
    service: usize,
    kind: Kind,
    message: NatsMessage,
}

pub(crate) struct Host {
    name: String,
    prefix: String,
    heartbeat: Duration,
    client: Client,
    out: Publisher,
    logger: Logger,
    services: Vec<Service>,
    calls: HashMap<u64, Held>,
    next_key: u64,
    sync: Sync,
    stopping: bool,
    /// Ends every subscription (dropping a subscriber unsubscribes).
    unsubscribe: watch::Sender<bool>,
    drained: Vec<oneshot::Sender<()>>,
}

impl Host {
    pub(crate) fn new(
        name: String,
        prefix: String,
        heartbeat: Duration,
        client: Client,
        events: Arc<ConnectionEvents>,
        logger: Logger,
    ) -> Self {
        let out = Publisher::start(client.clone(), events);
        Self {
            name,
            prefix,
            heartbeat,
            client,
            out,
            logger,
            services: Vec::new(),
            calls: HashMap::new(),
            next_key: 1,
            sync: Sync::default(),
            stopping: false,
            unsubscribe: watch::channel(false).0,
            drained: Vec::new(),
        }
    }

    fn subscribe(
        &self,
        subscriber: async_nats::Subscriber,
        service: usize,
        kind: Kind,
        ctx: &mut Context<Self>,
    ) {
        // On stop the subscription is drained, not dropped: calls the
        // server sent before it saw the unsubscribe still arrive (and are
        // answered `ShuttingDown`, so their callers send them elsewhere)
        // instead of being discarded unanswered.
        let stop = self.unsubscribe.subscribe();
        let messages = futures_util::stream::unfold(
            (subscriber, stop, false),
            |(mut subscriber, mut stop, draining)| async move {
                let mut draining = draining;
                if !draining {
                    let next = tokio::select! {
                        biased;
                        message = subscriber.next() => Some(message),
                        _ = stop.wait_for(|stopped| *stopped) => None,
                    };
                    match next {
                        Some(message) => {
                            return message.map(|m| (m, (subscriber, stop, false)));
                        }
                        None => {
                            let _ = subscriber.drain().await;
                            draining = true;
                        }
                    }
                }
                let message = subscriber.next().await;
                message.map(|m| (m, (subscriber, stop, draining)))
            },
        );
        ctx.add_stream(messages.map(move |message| Incoming {
            service,
            kind,
            message,
        }));
    }

    fn answer(&self, reply: &str, outcome: Result<Vec<u8>, WorkerError>) {
        let mut payload = wire::encode_answer(&self.name, &outcome);
        let max = self.client.max_payload();
        if payload.len() > max {
            let size = payload.len();
            payload =
                wire::encode_answer(&self.name, &Err(WorkerError::ReplyTooLarge { size, max }));
        }
        self.out.publish(reply.to_string(), None, payload);
    }

    fn refuse(&mut self, service: usize, reply: &str, error: WorkerError) {
        if let Some(s) = self.services.get_mut(service) {
            *s.errors.entry(error.kind()).or_default() += 1;
        }
        self.answer(reply, Err(error));
    }

    fn on_call(&mut self, service: usize, message: NatsMessage, ctx: &mut Context<Self>) {
        let Some(reply) = message.reply.map(|r| r.to_string()) else {
            self.logger
                .debug(1, "nats: a call without a reply subject was dropped");
            return;
        };
        let Some(s) = self.services.get_mut(service) else {
            return;
        };
        s.calls += 1;
        let Some((caller, id)) = wire::split_reply(&reply) else {
            let error = WorkerError::Protocol(format!(
                "reply subject {reply:?} is not a daemonic caller's"
            ));
            return self.refuse(service, &reply, error);
        };
        let (schema, method) = match wire::decode_call_head(&message.payload) {
            Ok(head) => head,
            Err(e) => return self.refuse(service, &reply, WorkerError::Protocol(e.to_string())),
        };
        if schema != s.spec.schema {
            let error = WorkerError::Protocol(format!(
                "the caller's {} has other methods than this host's (built from another version?)",
                s.spec.worker
            ));
            return self.refuse(service, &reply, error);
        }
        if self.stopping {
            return self.refuse(service, &reply, WorkerError::ShuttingDown);
        }
        if !s.limits.admits(s.held()) {
            let error = WorkerError::Busy {
                queued: s.queue.len(),
                queued_bytes: s.queued_bytes,
            };
            return self.refuse(service, &reply, error);
        }
        let key = self.next_key;
        self.next_key += 1;
        let args = message.payload[wire::CALL_HEAD..].to_vec();
        s.queued_bytes += args.len();
        s.queue.push_back(key);
        self.calls.insert(
            key,
            Held {
                service,
                caller: Arc::from(caller),
                id,
                reply,
                method,
                args,
                state: HeldState::Queued { mentioned: None },
            },
        );
        self.pump(service, ctx);
    }

    /// Hands waiting calls to the pool while its window has room.
    fn pump(&mut self, service: usize, ctx: &mut Context<Self>) {
        let epoch = self.epoch();
        loop {
            let Some(s) = self.services.get_mut(service) else {
                return;
            };
            if s.outstanding >= s.limits.window {
                break;
            }
            let Some(key) = s.queue.pop_front() else {
                break;
            };
            let Some(held) = self.calls.get_mut(&key) else {
                continue;
            };
            s.queued_bytes -= held.args.len();
            s.outstanding += 1;
            match (admission::release(held.state, epoch), held.state) {
                (Some(Release::Now), _) => self.release(key, ctx),
                (
                    Some(Release::AfterSync),
                    HeldState::Queued {
                        mentioned: Some(at),
                    },
                ) => {
                    held.state = HeldState::Releasing { mentioned: at };
                    self.sync.next.push(key);
                }
                (Some(Release::Refuse), _) => self.refuse_promised(key),
                _ => {}
            }
        }
        self.start_sync();
    }

    /// The connection's epoch: how many times it was established.
    fn epoch(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Relaxed)
    }

    /// A call promised as queued before the connection was lost: its
    /// caller may have run it elsewhere, so it must not start here.
    fn refuse_promised(&mut self, key: u64) {
        let Some(held) = self.calls.remove(&key) else {
            return;
        };
        if let Some(s) = self.services.get_mut(held.service) {
            s.outstanding -= 1;
        }
        let error = WorkerError::Unavailable {
            reason: format!(
                "host {} lost its NATS connection while the call waited; it did not run",
                self.name
            ),
        };
        self.refuse(held.service, &held.reply, error);
        self.notify_if_drained();
    }

    fn release(&mut self, key: u64, ctx: &mut Context<Self>) {
        let Some(held) = self.calls.get_mut(&key) else {
            return;
        };
        held.state = HeldState::Released;
        let call = RawCall {
            method: held.method,
            args: std::mem::take(&mut held.args),
        };
        let Some(s) = self.services.get(held.service) else {
            return;
        };
        let answer = s.spec.raw.send(call);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(answer)
                .map(move |result, act, ctx| act.on_answer(key, result, ctx)),
        );
    }

    fn on_answer(
        &mut self,
        key: u64,
        result: Result<Result<Vec<u8>, WorkerError>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(held) = self.calls.remove(&key) else {
            return;
        };
        let outcome = result.unwrap_or_else(|_| {
            Err(WorkerError::PoolFailed {
                reason: "the host's pool stopped".into(),
            })
        });
        if let Some(s) = self.services.get_mut(held.service) {
            s.outstanding -= 1;
            match &outcome {
                Ok(_) => s.returned += 1,
                Err(e) => *s.errors.entry(e.kind()).or_default() += 1,
            }
        }
        self.answer(&held.reply, outcome);
        self.pump(held.service, ctx);
        self.notify_if_drained();
    }

    /// Tells callers that the calls waiting for a sync may start, then asks
    /// the server to echo a sync message back.
    fn start_sync(&mut self) {
        if self.sync.in_flight.is_some() || self.sync.next.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.sync.next);
        self.send_sync(keys);
    }

    fn send_sync(&mut self, keys: Vec<u64>) {
        let mut by_caller: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        for key in &keys {
            if let Some(held) = self.calls.get(key) {
                by_caller
                    .entry(held.caller.clone())
                    .or_default()
                    .push(held.id);
            }
        }
        for (caller, ids) in by_caller {
            let notice = Notice::Running {
                host: self.name.clone(),
                ids,
            };
            self.out
                .publish(format!("{caller}.c"), None, wire::encode_notice(&notice));
        }
        self.sync.tokens += 1;
        let token = self.sync.tokens;
        self.out.publish(
            wire::sync_subject(&self.prefix, &self.name),
            None,
            token.to_le_bytes().to_vec(),
        );
        self.sync.in_flight = Some((token, keys, Instant::now()));
    }

    fn on_sync(&mut self, message: NatsMessage, ctx: &mut Context<Self>) {
        let Ok(token) = <[u8; 8]>::try_from(&message.payload[..]).map(u64::from_le_bytes) else {
            return;
        };
        if !matches!(&self.sync.in_flight, Some((t, _, _)) if *t == token) {
            return; // an older round, sent again since
        }
        let Some((_, keys, _)) = self.sync.in_flight.take() else {
            return;
        };
        let epoch = self.epoch();
        for key in keys {
            match self
                .calls
                .get(&key)
                .map(|h| admission::confirmed(h.state, epoch))
            {
                Some(Some(true)) => self.release(key, ctx),
                Some(Some(false)) => self.refuse_promised(key),
                _ => {}
            }
        }
        self.start_sync();
    }

    fn on_ping(&mut self, message: NatsMessage) {
        if let Some(reply) = message.reply {
            let notice = Notice::Presence {
                host: self.name.clone(),
            };
            self.out
                .publish(reply.to_string(), None, wire::encode_notice(&notice));
        }
    }

    /// Every interval: each caller hears which of its calls the host holds.
    fn beat(&mut self) {
        let epoch = self.epoch();
        let mut lists: HashMap<Arc<str>, (Vec<u64>, Vec<u64>)> = HashMap::new();
        for held in self.calls.values_mut() {
            let (queued, running) = lists.entry(held.caller.clone()).or_default();
            if admission::listed_as_queued(held.state) {
                queued.push(held.id);
                if held.state == (HeldState::Queued { mentioned: None }) {
                    held.state = HeldState::Queued {
                        mentioned: Some(epoch),
                    };
                }
            } else {
                running.push(held.id);
            }
        }
        let interval_ms = self.heartbeat.as_millis() as u64;
        for (caller, (queued, running)) in lists {
            let notice = Notice::Heartbeat {
                host: self.name.clone(),
                interval_ms,
                queued,
                running,
            };
            self.out
                .publish(format!("{caller}.c"), None, wire::encode_notice(&notice));
        }
        // A sync lost with a broken connection: send it again.
        let stale = self.heartbeat * 5;
        if let Some((_, keys, at)) = &self.sync.in_flight {
            if at.elapsed() > stale {
                let keys = keys.clone();
                self.send_sync(keys);
            }
        }
    }

    fn notify_if_drained(&mut self) {
        if self.stopping && self.calls.is_empty() {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn stats(&self) -> HostStats {
        let mut promised = vec![0; self.services.len()];
        for held in self.calls.values() {
            if matches!(
                held.state,
                HeldState::Queued { mentioned: Some(_) } | HeldState::Releasing { .. }
            ) {
                if let Some(n) = promised.get_mut(held.service) {
                    *n += 1;
                }
            }
        }
        HostStats {
            name: self.name.clone(),
            services: self
                .services
                .iter()
                .zip(promised)
                .map(|(s, promised)| ServiceStats {
                    pool: s.spec.pool.clone(),
                    subject: s.subjects.calls.clone(),
                    calls: s.calls,
                    returned: s.returned,
                    errors: s.errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
                    running: s.outstanding,
                    queued: s.queue.len(),
                    promised,
                })
                .collect(),
        }
    }
}

impl Actor for Host {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        let client = self.client.clone();
        let subject = wire::sync_subject(&self.prefix, &self.name);
        let subscribed = async move { client.subscribe(subject).await };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(subscribed).map(
            |result, act, ctx| match result {
                Ok(subscriber) => act.subscribe(subscriber, 0, Kind::Sync, ctx),
                Err(e) => act.logger.error(format_args!(
                    "nats: cannot subscribe to the sync subject: {e}"
                )),
            },
        ));
        ctx.run_interval(self.heartbeat, |act, _| act.beat());
    }
}

impl StreamHandler<Incoming> for Host {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item.kind {
            Kind::Call => self.on_call(item.service, item.message, ctx),
            Kind::Ping => self.on_ping(item.message),
            Kind::Sync => self.on_sync(item.message, ctx),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // One subscription ended (stop, or the client closed): the others
        // and the calls held go on.
    }
}

/// Serve one more pool.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Serve(pub ServeSpec);

impl Handler<Serve> for Host {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Serve(spec): Serve, _: &mut Context<Self>) -> Self::Result {
        let subjects = Subjects::new(&self.prefix, spec.worker);
        let direct = subjects.direct(&self.name);
        let client = self.client.clone();
        let (calls, ping) = (subjects.calls.clone(), subjects.ping.clone());
        let subscribe = async move {
            let shared = client.queue_subscribe(calls.clone(), calls).await?;
            let direct = client.subscribe(direct).await?;
            let ping = client.subscribe(ping).await?;
            Ok::<_, async_nats::SubscribeError>((shared, direct, ping))
        };
        Box::pin(
            actix::fut::wrap_future::<_, Self>(subscribe).map(
                move |result, act, ctx| match result {
                    Ok((shared, direct, ping)) => {
                        let index = act.services.len();
                        act.logger.log(format_args!(
                            "nats: host {} serves pool {} on {} (queue group), {}",
                            act.name,
                            spec.pool,
                            subjects.calls,
                            subjects.direct(&act.name)
                        ));
                        act.services.push(Service {
                            limits: Limits::of(spec.limits),
                            spec,
                            subjects,
                            queue: VecDeque::new(),
                            queued_bytes: 0,
                            outstanding: 0,
                            calls: 0,
                            returned: 0,
                            errors: BTreeMap::new(),
                        });
                        act.subscribe(shared, index, Kind::Call, ctx);
                        act.subscribe(direct, index, Kind::Call, ctx);
                        act.subscribe(ping, index, Kind::Ping, ctx);
                    }
                    Err(e) => act.logger.error(format_args!(
                        "nats: cannot serve pool {} on {}: {e}",
                        spec.pool, subjects.calls
                    )),
                },
            ),
        )
    }
}

/// The host's stats.
#[derive(Message)]
#[rtype(result = "HostStats")]
pub(crate) struct GetHostStats;

impl Handler<GetHostStats> for Host {
    type Result = MessageResult<GetHostStats>;

    fn handle(&mut self, _: GetHostStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

/// Stop taking calls: unsubscribe, answer the calls that wait on the host
/// `ShuttingDown` (they did not run: callers send them elsewhere), and
/// resolve once the calls handed to pools are answered.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopServing;

impl Handler<StopServing> for Host {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopServing, _: &mut Context<Self>) -> Self::Result {
        if !self.stopping {
            self.stopping = true;
            let _ = self.unsubscribe.send(true);
            let waiting: Vec<u64> = self
                .calls
                .iter()
                .filter(|(_, h)| h.state != HeldState::Released)
                .map(|(k, _)| *k)
                .collect();
            for key in waiting {
                if let Some(held) = self.calls.remove(&key) {
                    if let Some(s) = self.services.get_mut(held.service) {
                        match held.state {
                            HeldState::Queued { .. } => {
                                s.queue.retain(|k| *k != key);
                                s.queued_bytes -= held.args.len();
                            }
                            _ => s.outstanding -= 1,
                        }
                    }
                    self.refuse(held.service, &held.reply, WorkerError::ShuttingDown);
                }
            }
            self.sync = Sync::default();
        }
        if self.calls.is_empty() {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Waits until everything published so far was handed to the connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FlushHost;

impl Handler<FlushHost> for Host {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushHost, _: &mut Context<Self>) -> Self::Result {
        let flushed = self.out.flushed();
        Box::pin(async move {
            let _ = flushed.await;
        })
    }
}
