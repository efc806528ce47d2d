//! A worker pool as a supervised child. Its address exists before it starts
//! and stays the same across restarts: a restart is in place (the same pool
//! actor gets new workers), never a new actor.

use super::child::{ChildKind, ChildLink, ChildSpec, IntoChild, StopMode, DEFAULT_SHUTDOWN};
use super::strategy::Exit;
use crate::worker::{
    ResumePool, StopPool, SuspendPool, WorkerMethods, WorkerPool, WorkerPoolBuilder,
};
use actix::dev::channel::AddressReceiver;
use actix::Addr;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use std::time::Duration;

/// A [`WorkerPool`] as the child of a [`Supervisor`](super::Supervisor),
/// with its address known before the tree starts it.
///
/// While its supervisor restarts it, calls through the address queue (up to
/// the pool's `queue_capacity`) and each waits at most the pool's
/// `start_timeout`, then resolves [`WorkerError::StartTimeout`]; if the tree
/// gives up instead, they resolve [`WorkerError::PoolFailed`]. A call never
/// meets a dead mailbox.
///
/// [`WorkerError::StartTimeout`]: crate::WorkerError::StartTimeout
/// [`WorkerError::PoolFailed`]: crate::WorkerError::PoolFailed
///
/// ```no_run
/// # use daemonic::prelude::*;
/// # #[daemonic::worker]
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// # struct Decoder;
/// # #[daemonic::worker]
/// # impl Decoder {
/// #     pub fn decode(&mut self, n: u32) -> u32 { n }
/// # }
/// use daemonic::supervision::{PoolSpec, Supervisor};
///
/// # fn main() -> Result<(), daemonic::Error> {
/// daemonic::actix::System::new().block_on(async {
///     let decoder = PoolSpec::new(WorkerPool::builder(Decoder).size(4));
///     let addr = decoder.addr(); // for handlers: valid across restarts
///     let _tree = Supervisor::builder("media").child(decoder).start()?;
///     assert_eq!(addr.call(decoder::Decode { n: 7 }).await, Ok(7));
///     Ok(())
/// })
/// # }
/// ```
pub struct PoolSpec<W: WorkerMethods> {
    addr: Addr<WorkerPool<W>>,
    /// Until the first start.
    first: Option<(WorkerPoolBuilder<W>, AddressReceiver<WorkerPool<W>>)>,
}

impl<W: WorkerMethods> PoolSpec<W> {
    /// The pool `builder` configures, as a child.
    pub fn new(builder: WorkerPoolBuilder<W>) -> Self {
        let (tx, rx) = actix::dev::channel::channel(16);
        Self {
            addr: Addr::new(tx),
            first: Some((builder, rx)),
        }
    }

    /// The pool's address: calls sent before the tree starts it wait in its
    /// mailbox; it stays valid across restarts.
    pub fn addr(&self) -> Addr<WorkerPool<W>> {
        self.addr.clone()
    }
}

fn report(link: ChildLink) -> crate::worker::PoolReport {
    Box::new(move |reason| link.exited(Exit::Failed(reason)))
}

impl<W: WorkerMethods> ChildKind for PoolSpec<W> {
    fn kind(&self) -> &'static str {
        "pool"
    }

    fn start(&mut self, link: ChildLink) -> LocalBoxFuture<'static, Result<(), String>> {
        let result = match self.first.take() {
            Some((builder, mailbox)) => {
                let mut builder = builder.inherit(link.events.clone(), link.logger.clone());
                if let Some(pools) = link.pools.clone() {
                    builder = builder.in_registry(pools);
                }
                builder
                    .start_with(mailbox, self.addr.clone(), Some(report(link)))
                    .map_err(|e| e.to_string())
            }
            None => {
                self.addr.do_send(ResumePool {
                    report: report(link),
                });
                Ok(())
            }
        };
        async move { result }.boxed_local()
    }

    fn stop(&mut self, mode: StopMode, timeout: Option<Duration>) -> LocalBoxFuture<'static, ()> {
        if self.first.is_some() {
            return async {}.boxed_local();
        }
        // The pool kills what is left at the end of its grace.
        let grace = timeout.unwrap_or(Duration::from_secs(86_400 * 365));
        let addr = self.addr.clone();
        async move {
            let _ = match mode {
                StopMode::Restart => addr.send(SuspendPool { grace }).await,
                StopMode::Final => addr.send(StopPool { grace }).await,
            };
        }
        .boxed_local()
    }
}

impl<W: WorkerMethods> IntoChild for PoolSpec<W> {
    fn into_child(self) -> ChildSpec {
        let name = match &self.first {
            Some((builder, _)) => builder.pool_name().to_string(),
            None => "pool".into(),
        };
        ChildSpec::new(name, Some(DEFAULT_SHUTDOWN), Box::new(self))
    }
}

impl<W: WorkerMethods> IntoChild for WorkerPoolBuilder<W> {
    fn into_child(self) -> ChildSpec {
        PoolSpec::new(self).into_child()
    }
}
