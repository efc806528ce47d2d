//! The daemon's task manager: limits, exit events, and stopping tasks at
//! shutdown (SIGTERM, then SIGKILL when the grace period ends).

use super::{RegisteredTask, TaskChild, TaskStatus};
use crate::error::{Error, Result};
use crate::event::{Events, TaskExited};
use crate::log::Logger;
use crate::process::Signaller;
use actix::prelude::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// A started task, as returned to the caller.
///
/// ```no_run
/// # use daemonic::{BoxError, Daemon, LoopContext, Task, TaskContext};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Cleanup;
/// # #[daemonic::task]
/// # impl Task for Cleanup {
/// #     fn run(self, _: &mut TaskContext) -> Result<(), BoxError> { Ok(()) }
/// # }
/// # struct App;
/// # impl Daemon for App {
/// fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
///     if let Ok(task) = ctx.task(Cleanup) {
///         ctx.log(format_args!("{} started as pid {}", task.name, task.pid));
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskHandle {
    /// The task's pid.
    pub pid: i32,
    /// The task's registered name.
    pub name: &'static str,
}

#[derive(Default)]
struct RegistryState {
    running: HashMap<&'static str, usize>,
    shutting_down: bool,
}

/// Shared between every thread that starts tasks and the manager actor.
#[derive(Default)]
pub(crate) struct TaskRegistry {
    state: Mutex<RegistryState>,
    manager: OnceLock<Addr<TaskManager>>,
}

impl TaskRegistry {
    pub(crate) fn spawn<T: RegisteredTask>(&self, task: &T) -> Result<TaskHandle> {
        let manager = self
            .manager
            .get()
            .ok_or_else(|| Error::Spawn("the daemon's task manager is not running".into()))?;
        {
            let mut state = self.state.lock();
            if state.shutting_down {
                return Err(Error::ShuttingDown);
            }
            let running = state.running.entry(T::NAME).or_default();
            if let Some(max) = T::MAX_CONCURRENT {
                if *running >= max {
                    return Err(Error::Busy(format!(
                        "task {} already runs {max} instance(s) (its MAX_CONCURRENT)",
                        super::short_name(T::NAME)
                    )));
                }
            }
            *running += 1;
        }
        match super::spawn(task) {
            Ok(child) => {
                let handle = TaskHandle {
                    pid: child.pid(),
                    name: T::NAME,
                };
                manager.do_send(Watch(child));
                Ok(handle)
            }
            Err(e) => {
                self.finished(T::NAME);
                Err(e)
            }
        }
    }

    fn finished(&self, name: &'static str) {
        let mut state = self.state.lock();
        if let Some(n) = state.running.get_mut(name) {
            *n = n.saturating_sub(1);
        }
    }

    /// Tasks running now, by name.
    pub(crate) fn running(&self) -> Vec<(&'static str, usize)> {
        let state = self.state.lock();
        let mut list: Vec<_> = state
            .running
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (*k, *n))
            .collect();
        list.sort_unstable();
        list
    }
}

/// Watches every task of a daemon.
pub(crate) struct TaskManager {
    registry: Arc<TaskRegistry>,
    events: Events,
    logger: Logger,
    running: HashMap<i32, (&'static str, Signaller)>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    /// Set by `StopTasks`: the grace period late arrivals get.
    stopping: Option<Duration>,
}

impl TaskManager {
    pub(crate) fn start(registry: Arc<TaskRegistry>, events: Events, logger: Logger) -> Addr<Self> {
        let addr = Self {
            registry: registry.clone(),
            events,
            logger,
            running: HashMap::new(),
            stop_waiters: Vec::new(),
            stopping: None,
        }
        .start();
        let _ = registry.manager.set(addr.clone());
        addr
    }

    fn exited(&mut self, pid: i32, name: &'static str, status: TaskStatus, runtime: Duration) {
        self.running.remove(&pid);
        self.registry.finished(name);
        self.logger.debug(
            1,
            format_args!(
                "task {} (pid {pid}) ended after {runtime:?}: {status}",
                super::short_name(name)
            ),
        );
        self.events.dispatch(&mut TaskExited {
            name,
            pid,
            status,
            runtime,
        });
        if self.running.is_empty() {
            for waiter in self.stop_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for TaskManager {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Watch(TaskChild);

impl Handler<Watch> for TaskManager {
    type Result = ();

    fn handle(&mut self, Watch(mut child): Watch, ctx: &mut Context<Self>) {
        let pid = child.pid();
        let name = child.name();
        if let Some(signaller) = child.process.signaller() {
            if let Some(grace) = self.stopping {
                // Spawned by another thread as the shutdown began: it gets
                // the same treatment as the tasks that were already running.
                signaller.signal(libc::SIGTERM);
                ctx.run_later(grace, move |act, _| {
                    if let Some((_, signaller)) = act.running.get(&pid) {
                        signaller.signal(libc::SIGKILL);
                    }
                });
            }
            self.running.insert(pid, (name, signaller));
        }
        let waiting = async move {
            let status = child.wait().await;
            (status, child.runtime())
        };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(waiting).map(
            move |(status, runtime), act, _| {
                let status =
                    status.unwrap_or_else(|e| TaskStatus::Failed(format!("cannot reap: {e}")));
                act.exited(pid, name, status, runtime);
            },
        ));
    }
}

/// Refuse new tasks, SIGTERM running ones, SIGKILL them after `grace`;
/// resolves when none is left.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopTasks {
    pub grace: Duration,
}

impl Handler<StopTasks> for TaskManager {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.registry.state.lock().shutting_down = true;
        self.stopping = Some(msg.grace);
        if self.running.is_empty() {
            return Box::pin(async {});
        }
        self.logger.log(format_args!(
            "stopping {} running task(s) (SIGTERM, SIGKILL after {:?})",
            self.running.len(),
            msg.grace
        ));
        for (_, signaller) in self.running.values() {
            signaller.signal(libc::SIGTERM);
        }
        ctx.run_later(msg.grace, |act, _| {
            for (pid, (name, signaller)) in &act.running {
                act.logger.warn(format_args!(
                    "task {} (pid {pid}) ignored SIGTERM; killing it",
                    super::short_name(name)
                ));
                signaller.signal(libc::SIGKILL);
            }
        });
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
