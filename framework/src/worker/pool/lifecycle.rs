//! A worker's life as the pool runs it: spawned (asynchronously), started
//! within the start timeout, promoted from spare, recycled and killed
//! (`ending.rs` settles its end, and keeps the restart limit).

use super::super::progress::Progress;
use super::super::protocol::{self, Bootstrap, REPLY_OVERHEAD};
use super::super::{WorkerError, WorkerMethods};
use super::schedule::{self, Census};
use super::slot::{Role, Slot, SlotState};
use super::{PoolState, WorkerPool};
use crate::event::{WorkerRecycled, WorkerSpawned, WorkerTimedOut};
use crate::ipc::ipc_channel::IpcHostLink;
use crate::ipc::socket::SocketHostLink;
use crate::ipc::{frame, HostLink, Transport};
use crate::process::{ExitStatus, SpawnOptions, Spawned};
use actix::prelude::*;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// How long after a failed spawn the pool tries again.
const SPAWN_RETRY: Duration = Duration::from_millis(100);

impl<W: WorkerMethods> WorkerPool<W> {
    pub(super) fn slot_mut(&mut self, key: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.key == key)
    }

    fn census(&self) -> Census {
        let mut census = Census::default();
        for slot in self.slots.iter().filter(|s| s.exit.is_none()) {
            match slot.state {
                s if s.is_active() => census.active += 1,
                SlotState::Ready { role: Role::Spare } => census.spares_ready += 1,
                SlotState::Starting {
                    role: Role::Spare, ..
                } => census.spares_starting += 1,
                _ => {}
            }
        }
        for (_, role) in &self.spawning {
            match role {
                Role::Active => census.spawning_active += 1,
                Role::Spare => census.spawning_spares += 1,
            }
        }
        census
    }

    /// Keeps `size` active workers (promoting spares first) and `warm_spares`
    /// spares. Spares are spawned shortly after, not inline: right after a
    /// worker was lost, the `Died` replies and the promoted spare's first
    /// calls come first.
    pub(super) fn promote(&mut self, ctx: &mut Context<Self>) {
        if self.state != PoolState::Running {
            return;
        }
        let plan = schedule::plan(self.census(), self.config.size, self.config.warm_spares);
        for _ in 0..plan.promote_ready {
            if let Some(spare) = self
                .slots
                .iter_mut()
                .find(|s| s.exit.is_none() && s.state == SlotState::Ready { role: Role::Spare })
            {
                spare.state = SlotState::Ready { role: Role::Active };
            }
        }
        for _ in 0..plan.promote_starting {
            if let Some(spare) = self.slots.iter_mut().find(|s| {
                s.exit.is_none()
                    && matches!(
                        s.state,
                        SlotState::Starting {
                            role: Role::Spare,
                            ..
                        }
                    )
            }) {
                if let SlotState::Starting { deadline, .. } = spare.state {
                    spare.state = SlotState::Starting {
                        role: Role::Active,
                        deadline,
                    };
                }
            }
        }
        for _ in 0..plan.spawn_active {
            self.spawn(Role::Active, ctx);
        }
        if plan.spawn_spares > 0 && !self.spare_refill_pending {
            self.spare_refill_pending = true;
            ctx.run_later(Duration::from_millis(2), |act, ctx| {
                act.spare_refill_pending = false;
                if act.state != PoolState::Running {
                    return;
                }
                let plan = schedule::plan(act.census(), act.config.size, act.config.warm_spares);
                for _ in 0..plan.spawn_spares {
                    act.spawn(Role::Spare, ctx);
                }
            });
        }
    }

    /// Asks the fork server for a worker; the answer comes asynchronously.
    fn spawn(&mut self, role: Role, ctx: &mut Context<Self>) {
        let key = self.next_key;
        self.next_key += 1;
        self.spawning.push((key, role));
        let options = SpawnOptions {
            entry: W::NAME.to_string(),
            role: format!("worker:{}", self.config.name),
            confinement: self.confinement.clone(),
        };
        let spawning = async move { crate::process::spawn(&options).await };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(spawning)
                .map(move |result, act, ctx| act.on_spawned(key, result, ctx)),
        );
    }

    fn on_spawned(
        &mut self,
        key: u64,
        result: crate::error::Result<Spawned>,
        ctx: &mut Context<Self>,
    ) {
        let Some(pos) = self.spawning.iter().position(|(k, _)| *k == key) else {
            return;
        };
        let (_, role) = self.spawning.swap_remove(pos);
        let outcome = match result {
            Ok(spawned) if self.state == PoolState::Running => self.attach(key, role, spawned, ctx),
            // Stopping or failed meanwhile: dropping the handle kills the
            // child and has it reaped.
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            self.config.logger.error(format_args!(
                "pool {}: cannot start a worker: {e}",
                self.config.name
            ));
            self.record_restart(ctx, &format!("spawn failed: {e}"));
            if self.state == PoolState::Running && !self.spawn_retry_pending {
                self.spawn_retry_pending = true;
                ctx.run_later(SPAWN_RETRY, |act, ctx| {
                    act.spawn_retry_pending = false;
                    act.promote(ctx);
                    act.dispatch(ctx);
                });
            }
        }
        self.notify_if_stopped();
        if self.state == PoolState::Running {
            self.dispatch(ctx);
        }
    }

    /// Sets up a spawned worker: its progress word and bootstrap (sent with
    /// the word's descriptor), its state, its link and its exit watch.
    fn attach(
        &mut self,
        key: u64,
        role: Role,
        spawned: Spawned,
        ctx: &mut Context<Self>,
    ) -> Result<(), String> {
        let Spawned { process, channel } = spawned;
        let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let progress = Progress::new().map_err(|e| fail("progress word", e))?;
        let capacity = self.config.max_in_flight + 4;
        let ipc = match self.config.transport {
            Transport::Socket => None,
            Transport::IpcChannel => Some(
                IpcHostLink::new(&self.config.name, capacity)
                    .map_err(|e| fail("ipc-channel server", e))?,
            ),
        };
        let bootstrap = Bootstrap {
            ipc_server: ipc.as_ref().map(|l| l.server_name().to_string()),
            max_reply: self.config.max_payload + REPLY_OVERHEAD,
            max_concurrent: self.config.max_concurrent,
            shm_threshold: self.shm_threshold(),
        };
        let bootstrap = protocol::encode(&bootstrap)
            .map_err(|e| fail("bootstrap", std::io::Error::other(e)))?;
        channel
            .set_nonblocking(true)
            .map_err(|e| fail("worker channel", e))?;
        // The channel is new and empty: this small frame fits at once.
        frame::send_frame_with_fds(channel.as_fd(), &bootstrap, &[progress.fd().as_raw_fd()])
            .map_err(|e| fail("bootstrap", e))?;
        let mut link: Box<dyn HostLink> = match ipc {
            None => {
                let mut link =
                    SocketHostLink::new(channel, capacity).map_err(|e| fail("worker link", e))?;
                link.send(self.template.to_vec())
                    .map_err(|e| fail("worker state", e))?;
                Box::new(link)
            }
            Some(link) => {
                // The state still goes over the spawn channel, whatever its
                // size, without blocking this thread.
                let template = self.template.clone();
                let channel = tokio::net::UnixStream::from_std(channel)
                    .map_err(|e| fail("worker channel", e))?;
                actix_rt::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut channel = channel;
                    if let Ok(header) = frame::header(template.len()) {
                        let _ = channel.write_all(&header).await;
                        let _ = channel.write_all(&template).await;
                    }
                });
                Box::new(link)
            }
        };
        let pid = process.pid();
        if let Some(source) = link.frame_source() {
            ctx.spawn(super::reader::LinkReader::new(key, source));
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
        let now = Instant::now();
        let recycle_at = self.config.max_runtime_per_child.and_then(|max| {
            let jitter = 1.0 - self.config.runtime_jitter * self.random_unit();
            now.checked_add(max.mul_f64(jitter))
        });
        let deadline = now
            .checked_add(self.config.start_timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.slots.push(Slot {
            key,
            pid,
            link,
            signaller,
            progress,
            started: now,
            state: SlotState::Starting { role, deadline },
            calls: 0,
            sent: 0,
            in_flight: VecDeque::new(),
            recycle_at,
            exit: None,
            link_open: true,
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
                if role == Role::Spare { " (spare)" } else { "" }
            ),
        );
        Ok(())
    }

    /// The worker said `started` returned. A spare is warmed up at once
    /// (see `warm_up`), while it waits.
    pub(super) fn on_ready(&mut self, key: u64) {
        if let Some(slot) = self.slot_mut(key) {
            if let SlotState::Starting { role, .. } = slot.state {
                slot.state = SlotState::Ready { role };
                if role == Role::Spare {
                    self.warm_up(key);
                }
            }
        }
    }

    /// The worker said it leaves (it was asked to terminate): an orderly
    /// exit, replaced but not a failure.
    pub(super) fn on_leaving(&mut self, key: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let announce = !matches!(
            slot.state,
            SlotState::Retiring { .. } | SlotState::Killed { .. }
        );
        if !matches!(slot.state, SlotState::Killed { .. }) {
            slot.state = SlotState::Leaving;
        }
        if announce {
            let pid = slot.pid;
            self.counters.recycled += 1;
            self.config.events.dispatch(&mut WorkerRecycled {
                pool: self.config.name.clone(),
                pid,
                reason: "terminated",
            });
        }
    }

    pub(super) fn kill(&mut self, key: u64, reason: &'static str) {
        if let Some(slot) = self.slot_mut(key) {
            // The first reason stays (a killed worker's link drops too).
            if slot.exit.is_none() && !matches!(slot.state, SlotState::Killed { .. }) {
                slot.state = SlotState::Killed { reason };
                slot.signal(libc::SIGKILL);
            }
        }
    }

    /// Stops sending calls to a worker and replaces it; it gets `Stop` once
    /// its calls are done.
    pub(super) fn retire(&mut self, key: u64, reason: &'static str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if !matches!(
            slot.state,
            SlotState::Starting { .. } | SlotState::Ready { .. }
        ) || slot.exit.is_some()
        {
            return;
        }
        slot.state = SlotState::Retiring {
            reason,
            stop_sent: false,
        };
        let pid = slot.pid;
        if reason != "shutdown" {
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
        }
        self.send_stop_if_drained(key);
        self.promote(ctx);
    }

    /// Periodic: call timeouts, start timeouts, recycling by runtime.
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.state == PoolState::Restarting {
            self.expire_waiting(now);
        }
        let mut timed_out = Vec::new();
        let mut not_started = Vec::new();
        let mut to_retire = Vec::new();
        for slot in &mut self.slots {
            if slot.exit.is_some() || matches!(slot.state, SlotState::Killed { .. }) {
                continue;
            }
            if let SlotState::Starting { deadline, .. } = slot.state {
                if now >= deadline {
                    not_started.push((slot.key, slot.pid));
                }
                continue;
            }
            if let Some(pos) = slot
                .in_flight
                .iter()
                .position(|c| c.deadline.is_some_and(|d| now >= d))
            {
                if let Some(call) = slot.in_flight.remove(pos) {
                    timed_out.push((slot.key, slot.pid, call));
                }
            } else if slot.recycle_at.is_some_and(|at| now >= at)
                && slot.state == (SlotState::Ready { role: Role::Active })
            {
                to_retire.push(slot.key);
            }
        }
        for (key, pid, call) in timed_out {
            let after = self.config.call_timeout.unwrap_or_default();
            self.config.events.dispatch(&mut WorkerTimedOut {
                pool: self.config.name.clone(),
                pid,
                method: call.name,
                after,
            });
            self.config.logger.warn(format_args!(
                "pool {}: call {} timed out after {after:?}; killing worker pid {pid}",
                self.config.name, call.name
            ));
            self.finish(
                call.name,
                call.id,
                pid,
                call.accepted.elapsed(),
                call.reply,
                Err(WorkerError::Timeout { pid, after }),
            );
            self.kill(key, "a call timeout");
        }
        for (key, pid) in not_started {
            let after = self.config.start_timeout;
            self.config.events.dispatch(&mut WorkerTimedOut {
                pool: self.config.name.clone(),
                pid,
                method: "started",
                after,
            });
            self.config.logger.warn(format_args!(
                "pool {}: worker pid {pid} was not ready within {after:?} (its `started` hook \
                 did not return); killing it",
                self.config.name
            ));
            self.kill(key, "a start timeout");
            // Nobody can take the waiting calls now: tell them, rather than
            // let them wait for the next worker's start, which may block too.
            let ready = self
                .slots
                .iter()
                .any(|s| s.state == (SlotState::Ready { role: Role::Active }) && s.exit.is_none());
            if !ready {
                self.fail_queue(WorkerError::StartTimeout { after });
            }
        }
        for key in to_retire {
            self.retire(key, "max runtime", ctx);
        }
        if self.state == PoolState::Running {
            self.promote(ctx);
            self.dispatch(ctx);
        }
    }
}
