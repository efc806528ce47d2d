//! The supervisor actor: runs its children's starts and stops one at a time
//! (a queue of operations), and decides what a child's exit means (see
//! `decide.rs`).

use super::backoff::Backoff;
use super::budget::RestartBudget;
use super::child::{ChildExited, ChildLink, ChildSpec, StopMode};
use super::strategy::{Exit, Restart, Strategy};
use super::tree::{ChildStats, TreeStats};
use crate::event::{ChildRestarted, Events};
use crate::log::Logger;
use actix::prelude::*;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long past a child's shutdown timeout the supervisor waits for the
/// forced stop (a killed worker's exit) before moving on.
const FORCE_MARGIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChildState {
    /// Not running; started by the next `StartAll`.
    Stopped,
    Starting,
    Running,
    /// Ended by itself; the supervisor has not yet acted on it.
    Failed,
    Stopping,
    /// Not restarted (temporary, a transient's normal exit, a final stop).
    Terminated,
}

impl ChildState {
    fn name(self) -> &'static str {
        match self {
            ChildState::Stopped => "stopped",
            ChildState::Starting => "starting",
            ChildState::Running => "running",
            ChildState::Failed => "failed",
            ChildState::Stopping => "stopping",
            ChildState::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TreeState {
    Starting,
    Running,
    Restarting,
    Stopping,
    Stopped,
    /// Over its intensity: escalated.
    Failed,
}

impl TreeState {
    pub(super) fn name(self) -> &'static str {
        match self {
            TreeState::Starting => "starting",
            TreeState::Running => "running",
            TreeState::Restarting => "restarting",
            TreeState::Stopping => "stopping",
            TreeState::Stopped => "stopped",
            TreeState::Failed => "failed",
        }
    }

    /// Children's exits are acted on (not while stopping or given up).
    pub(super) fn supervising(self) -> bool {
        matches!(
            self,
            TreeState::Starting | TreeState::Running | TreeState::Restarting
        )
    }
}

pub(super) struct Slot {
    /// Stable while siblings are added and removed (positions are not).
    pub id: u64,
    pub spec: ChildSpec,
    pub state: ChildState,
    /// Incarnation: reports from older ones are stale.
    pub generation: u64,
    pub restarts: u64,
    pub last_failure: Option<String>,
    /// Set when it is to restart, with why (raised as `ChildRestarted`).
    pub restart_reason: Option<String>,
    /// `RemoveChild` asked for it: never started again.
    pub leaving: bool,
}

impl Slot {
    /// The child with this id, if it is still there.
    pub(super) fn find(children: &mut [Slot], id: u64) -> Option<&mut Slot> {
        children.iter_mut().find(|s| s.id == id)
    }

    pub(super) fn new(id: u64, spec: ChildSpec) -> Self {
        Self {
            id,
            spec,
            state: ChildState::Stopped,
            generation: 0,
            restarts: 0,
            last_failure: None,
            restart_reason: None,
            leaving: false,
        }
    }
}

/// One step of the supervisor's work, run in order.
pub(super) enum Op {
    Stop {
        id: u64,
        mode: StopMode,
    },
    /// Forgets a (stopped) child and answers its `RemoveChild`.
    Remove {
        id: u64,
        done: oneshot::Sender<()>,
    },
    Delay(Duration),
    /// Starts every `Stopped` child, in order, one at a time.
    StartAll,
    /// Stopped for good (`StopChildren`): tell the waiters.
    Stopped,
    /// The children are stopped after going over the intensity: fail upward.
    Escalate(String),
}

/// Called when an escalation reaches a supervisor with no parent.
pub(super) type OnEscalation = Box<dyn FnOnce(String) + Send>;

/// A supervisor: starts its children in order, restarts them by its
/// [`Strategy`] within its restart intensity, and stops them in reverse
/// order. Build one with [`Supervisor::builder`](super::Supervisor::builder).
pub struct Supervisor {
    pub(super) name: String,
    pub(super) strategy: Strategy,
    pub(super) budget: RestartBudget,
    pub(super) backoff: Backoff,
    pub(super) events: Events,
    pub(super) logger: Logger,
    pub(super) children: Vec<Slot>,
    /// The id of the next child added.
    pub(super) next_id: u64,
    pub(super) state: TreeState,
    pub(super) ops: VecDeque<Op>,
    pub(super) busy: bool,
    /// Exits that came while an operation ran.
    pub(super) pending: Vec<ChildExited>,
    /// The parent supervisor, for a nested one.
    pub(super) parent: Option<ChildLink>,
    pub(super) on_escalation: Option<OnEscalation>,
    pub(super) start_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    pub(super) stop_waiters: Vec<oneshot::Sender<()>>,
    /// A daemon's pool list (see `ChildLink::pools`).
    pub(super) pools: Option<std::sync::Arc<crate::worker::PoolRegistry>>,
    /// See `SupervisorBuilder::hand_over_escalation`.
    pub(super) hand_over: bool,
}

impl Supervisor {
    pub(super) fn new(
        name: String,
        strategy: Strategy,
        budget: RestartBudget,
        backoff: Backoff,
        events: Events,
        logger: Logger,
        children: Vec<ChildSpec>,
    ) -> Self {
        Self {
            name,
            strategy,
            budget,
            backoff,
            events,
            logger,
            next_id: children.len() as u64,
            children: (0..)
                .zip(children)
                .map(|(id, spec)| Slot::new(id, spec))
                .collect(),
            state: TreeState::Starting,
            ops: VecDeque::from([Op::StartAll]),
            busy: false,
            pending: Vec::new(),
            parent: None,
            on_escalation: None,
            start_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            pools: None,
            hand_over: false,
        }
    }

    /// Runs the queued operations, one at a time, until one waits.
    pub(super) fn advance(&mut self, ctx: &mut Context<Self>) {
        while !self.busy {
            let Some(op) = self.ops.pop_front() else {
                if !self.idle() {
                    return;
                }
                continue;
            };
            match op {
                Op::Stop { id, mode } => self.stop_child(id, mode, ctx),
                Op::Remove { id, done } => {
                    self.children.retain(|s| s.id != id);
                    let _ = done.send(());
                }
                Op::Delay(delay) if delay.is_zero() => {}
                Op::Delay(delay) => {
                    self.busy = true;
                    ctx.run_later(delay, |act, ctx| {
                        act.busy = false;
                        act.advance(ctx);
                    });
                }
                Op::StartAll => self.start_next(ctx),
                Op::Stopped => {
                    if self.state == TreeState::Stopping {
                        self.state = TreeState::Stopped;
                    }
                    for waiter in self.stop_waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
                Op::Escalate(reason) => self.escalated(reason),
            }
        }
    }

    /// Nothing queued: act on exits that came meanwhile, or settle. Returns
    /// whether there is work again.
    fn idle(&mut self) -> bool {
        if !self.pending.is_empty() {
            for exited in std::mem::take(&mut self.pending) {
                self.on_exit(exited);
            }
            return !self.ops.is_empty();
        }
        if matches!(self.state, TreeState::Starting | TreeState::Restarting) {
            self.state = TreeState::Running;
            for waiter in self.start_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        false
    }

    fn stop_child(&mut self, id: u64, mode: StopMode, ctx: &mut Context<Self>) {
        let Some(slot) = Slot::find(&mut self.children, id) else {
            return;
        };
        if slot.state == ChildState::Terminated {
            return;
        }
        let mode = match slot.spec.restart {
            Restart::Temporary => StopMode::Final,
            _ => mode,
        };
        slot.state = ChildState::Stopping;
        self.logger.debug(
            2,
            format_args!(
                "supervisor {}: stopping child {}",
                self.name, slot.spec.name
            ),
        );
        let timeout = slot.spec.shutdown;
        let stopping = slot.spec.kind.stop(mode, timeout);
        let bounded = async move {
            match timeout.and_then(|t| t.checked_add(FORCE_MARGIN)) {
                Some(limit) => actix_rt::time::timeout(limit, stopping).await.is_ok(),
                None => {
                    stopping.await;
                    true
                }
            }
        };
        self.busy = true;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(bounded.boxed_local()).map(
                move |in_time, act, ctx| {
                    act.busy = false;
                    let name = act.name.clone();
                    if let Some(slot) = Slot::find(&mut act.children, id) {
                        if !in_time {
                            act.logger.warn(format_args!(
                                "supervisor {name}: child {} did not stop within {:?}; moving on",
                                slot.spec.name,
                                timeout.unwrap_or_default()
                            ));
                        }
                        slot.state = match mode {
                            StopMode::Final => ChildState::Terminated,
                            StopMode::Restart => ChildState::Stopped,
                        };
                    }
                    act.advance(ctx);
                },
            ),
        );
    }

    /// Starts the first child waiting to run; `StartAll` comes again after.
    fn start_next(&mut self, ctx: &mut Context<Self>) {
        if !self.state.supervising() {
            return;
        }
        let Some(index) = self
            .children
            .iter()
            .position(|s| s.state == ChildState::Stopped && !s.leaving)
        else {
            return;
        };
        let id = self.children[index].id;
        let link = ChildLink {
            supervisor: ctx.address().recipient(),
            id,
            generation: 0,
            events: self.events.clone(),
            logger: self.logger.clone(),
            pools: self.pools.clone(),
        };
        let slot = &mut self.children[index];
        self.logger.debug(
            2,
            format_args!(
                "supervisor {}: starting child {}",
                self.name, slot.spec.name
            ),
        );
        slot.generation += 1;
        slot.state = ChildState::Starting;
        let generation = slot.generation;
        let starting = slot.spec.kind.start(ChildLink { generation, ..link });
        self.busy = true;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(starting).map(move |result, act, ctx| {
                act.busy = false;
                act.started_child(id, generation, result);
                act.ops.push_front(Op::StartAll);
                act.advance(ctx);
            }),
        );
    }

    fn started_child(&mut self, id: u64, generation: u64, result: Result<(), String>) {
        let supervisor = self.name.clone();
        let Some(slot) = Slot::find(&mut self.children, id) else {
            return;
        };
        if slot.generation != generation || slot.state != ChildState::Starting {
            return;
        }
        match result {
            Ok(()) => {
                slot.state = ChildState::Running;
                if let Some(reason) = slot.restart_reason.take() {
                    slot.restarts += 1;
                    self.logger.log(format_args!(
                        "supervisor {supervisor}: restarted {} ({reason})",
                        slot.spec.name
                    ));
                    let mut event = ChildRestarted {
                        supervisor,
                        child: slot.spec.name.clone(),
                        restarts: slot.restarts,
                        reason,
                    };
                    self.events.dispatch(&mut event);
                }
            }
            Err(e) => {
                // Handled like any failure, once this round of starts is done.
                slot.state = ChildState::Failed;
                self.pending.push(ChildExited {
                    id,
                    generation,
                    exit: Exit::Failed(format!("could not start: {e}")),
                });
            }
        }
    }

    pub(super) fn stats(&self) -> TreeStats {
        TreeStats {
            name: self.name.clone(),
            strategy: self.strategy.name().into(),
            state: self.state.name().into(),
            intensity: self.budget.limit(),
            period: self.budget.window(),
            recent_restarts: self.budget.recent(),
            children: self
                .children
                .iter()
                .map(|s| ChildStats {
                    name: s.spec.name.clone(),
                    kind: s.spec.kind.kind().into(),
                    restart: s.spec.restart.name().into(),
                    state: s.state.name().into(),
                    restarts: s.restarts,
                    last_failure: s.last_failure.clone(),
                    tree: None,
                })
                .collect(),
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.logger.debug(
            1,
            format_args!(
                "supervisor {}: starting {} child(ren), {}",
                self.name,
                self.children.len(),
                self.strategy
            ),
        );
        self.advance(ctx);
    }
}
