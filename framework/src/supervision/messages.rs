//! What a supervisor answers: its children's exits, its parent's restarts
//! and stops, and anyone's questions about its tree.

use super::child::{ChildExited, ChildLink, StopMode};
use super::supervisor::{ChildState, Op, Supervisor, TreeState};
use super::tree::TreeStats;
use actix::prelude::*;
use tokio::sync::oneshot;

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        self.on_exit(msg);
        self.advance(ctx);
    }
}

/// The parent restarts this (stopped or escalated) tree in place: a fresh
/// intensity window, every child started again in order.
pub(super) struct RestartTree {
    pub link: ChildLink,
    pub started: oneshot::Sender<Result<(), String>>,
}

impl Message for RestartTree {
    type Result = ();
}

impl Handler<RestartTree> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RestartTree, ctx: &mut Context<Self>) {
        self.parent = Some(msg.link);
        if self.state == TreeState::Running && self.ops.is_empty() && !self.busy {
            // Running already: nothing to restart.
            let _ = msg.started.send(Ok(()));
            return;
        }
        self.start_waiters.push(msg.started);
        self.budget.reset();
        self.pending.clear();
        self.state = TreeState::Restarting;
        for slot in &mut self.children {
            // As OTP's restarted supervisor, from its specs: temporary
            // children too.
            if matches!(slot.state, ChildState::Terminated | ChildState::Failed) {
                slot.state = ChildState::Stopped;
            }
        }
        self.ops.push_back(Op::StartAll);
        self.advance(ctx);
    }
}

/// Stops every child in reverse order (each within its shutdown timeout);
/// resolves once they all stopped.
pub(super) struct StopChildren {
    pub mode: StopMode,
}

impl Message for StopChildren {
    type Result = ();
}

impl Handler<StopChildren> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopChildren, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        // Restarts planned no longer matter; a stop in progress finishes
        // first (the queue runs in order).
        self.ops
            .retain(|op| matches!(op, Op::Stop { .. } | Op::Remove { .. } | Op::Stopped));
        self.pending.clear();
        if self.state != TreeState::Failed {
            self.state = TreeState::Stopping;
        }
        for id in self.children.iter().rev().map(|s| s.id) {
            self.ops.push_back(Op::Stop { id, mode: msg.mode });
        }
        self.ops.push_back(Op::Stopped);
        self.advance(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Stops the tree for good: every child in reverse order, each within its
/// shutdown timeout (pools fail the calls still waiting with
/// `ShuttingDown`). Resolves once all stopped.
///
/// ```no_run
/// # async fn demo(tree: daemonic::actix::Addr<daemonic::supervision::Supervisor>) {
/// use daemonic::supervision::StopTree;
/// let _ = tree.send(StopTree).await;
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopTree;

impl Handler<StopTree> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopTree, ctx: &mut Context<Self>) -> Self::Result {
        self.parent = None;
        self.on_escalation = None;
        <Self as Handler<StopChildren>>::handle(
            self,
            StopChildren {
                mode: StopMode::Final,
            },
            ctx,
        )
    }
}

/// The tree as it is now: this supervisor, its children and nested trees.
///
/// ```no_run
/// # async fn demo(tree: daemonic::actix::Addr<daemonic::supervision::Supervisor>) {
/// use daemonic::supervision::GetTree;
/// if let Ok(stats) = tree.send(GetTree).await {
///     for line in stats.lines() {
///         println!("{line}");
///     }
/// }
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "TreeStats")]
pub struct GetTree;

impl Handler<GetTree> for Supervisor {
    type Result = ResponseFuture<TreeStats>;

    fn handle(&mut self, _: GetTree, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats();
        let nested: Vec<_> = self
            .children
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.spec.kind.tree().map(|t| (i, t)))
            .collect();
        Box::pin(async move {
            for (index, tree) in nested {
                if let Some(tree) = tree.await {
                    stats.children[index].tree = Some(Box::new(tree));
                }
            }
            stats
        })
    }
}

/// Adds a child after the others and starts it (OTP's `start_child`): the
/// pools a daemon's `initialize` starts with `ctx.workers(..)` join its root
/// this way. From then on it is a child like the others: restarted by the
/// strategy, stopped in reverse order (it is the last, so the first to
/// stop). A tree that is stopping or gave up drops it, with a warning.
///
/// ```no_run
/// # use daemonic::prelude::*;
/// # #[daemonic::worker]
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// # struct Resizer;
/// # #[daemonic::worker]
/// # impl Resizer {
/// #     pub fn resize(&mut self, n: u32) -> u32 { n }
/// # }
/// use daemonic::supervision::{AddChild, IntoChild, PoolSpec, Supervisor};
///
/// # fn main() -> Result<(), daemonic::Error> {
/// daemonic::actix::System::new().block_on(async {
///     let tree = Supervisor::builder("media").start()?;
///     let resizer = PoolSpec::new(WorkerPool::builder(Resizer));
///     let addr = resizer.addr();
///     tree.do_send(AddChild(resizer.into_child()));
///     assert_eq!(addr.call(resizer::Resize { n: 3 }).await, Ok(3));
///     Ok(())
/// })
/// # }
/// ```
pub struct AddChild(pub super::child::ChildSpec);

impl Message for AddChild {
    type Result = ();
}

impl Handler<AddChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, AddChild(spec): AddChild, ctx: &mut Context<Self>) {
        if !self.state.supervising() {
            self.logger.warn(format_args!(
                "supervisor {}: child {} not added: the tree is {}",
                self.name,
                spec.name,
                self.state.name()
            ));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.children.push(super::supervisor::Slot::new(id, spec));
        self.ops.push_back(Op::StartAll);
        self.advance(ctx);
    }
}

/// Why a [`RemoveChild`] removed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveChildError {
    /// The supervisor has no child of that name.
    #[error("supervisor {supervisor} has no child named {child}")]
    NoSuchChild {
        /// The supervisor's name.
        supervisor: String,
        /// The name asked for.
        child: String,
    },
    /// The supervisor is stopping, stopped or gave up: its children go
    /// with it.
    #[error("supervisor {supervisor} is {state}")]
    NotSupervising {
        /// The supervisor's name.
        supervisor: String,
        /// Its state.
        state: String,
    },
}

/// Stops a child for good and forgets it (OTP's `terminate_child` then
/// `delete_child`): it stops within its shutdown timeout as at any stop
/// (a pool's waiting calls fail with `ShuttingDown`), is never restarted,
/// and no longer shows in the tree; its siblings are not affected.
/// Resolves once it is gone. The first child of that name is removed.
///
/// ```no_run
/// # use daemonic::prelude::*;
/// # #[daemonic::worker]
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// # struct Resizer;
/// # #[daemonic::worker]
/// # impl Resizer {
/// #     pub fn resize(&mut self, n: u32) -> u32 { n }
/// # }
/// use daemonic::supervision::{AddChild, IntoChild, PoolSpec, RemoveChild, Supervisor};
///
/// # fn main() -> Result<(), daemonic::Error> {
/// daemonic::actix::System::new().block_on(async {
///     let tree = Supervisor::builder("media").start()?;
///     let resizer = PoolSpec::new(WorkerPool::builder(Resizer).name("resizer"));
///     tree.do_send(AddChild(resizer.into_child()));
///     // … later, when the job that needed it is over:
///     let removed = tree.send(RemoveChild::new("resizer")).await;
///     assert_eq!(removed, Ok(Ok(())));
///     Ok(())
/// })
/// # }
/// ```
pub struct RemoveChild {
    name: String,
}

impl RemoveChild {
    /// Removes the child named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl Message for RemoveChild {
    type Result = Result<(), RemoveChildError>;
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ResponseFuture<Result<(), RemoveChildError>>;

    fn handle(&mut self, msg: RemoveChild, ctx: &mut Context<Self>) -> Self::Result {
        let supervisor = self.name.clone();
        if !self.state.supervising() {
            let state = self.state.name().to_string();
            return Box::pin(
                async move { Err(RemoveChildError::NotSupervising { supervisor, state }) },
            );
        }
        let Some(slot) = self
            .children
            .iter_mut()
            .find(|s| s.spec.name == msg.name && !s.leaving)
        else {
            let child = msg.name;
            return Box::pin(
                async move { Err(RemoveChildError::NoSuchChild { supervisor, child }) },
            );
        };
        // Never started again, even by a restart already planned.
        slot.leaving = true;
        let id = slot.id;
        let (done, removed) = oneshot::channel();
        self.ops.push_back(Op::Stop {
            id,
            mode: StopMode::Final,
        });
        self.ops.push_back(Op::Remove { id, done });
        self.logger.log(format_args!(
            "supervisor {supervisor}: removing child {}",
            msg.name
        ));
        self.advance(ctx);
        Box::pin(async move {
            // Dropped unanswered only if the tree stopped first, which
            // stopped the child too.
            let _ = removed.await;
            Ok(())
        })
    }
}
