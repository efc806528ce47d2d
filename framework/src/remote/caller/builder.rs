//! Configuring and starting a [`RemotePool`].

use super::{GetRemotePoolStats, RemotePool, Settings, StopRemotePool};
use crate::error::{Error, Result};
use crate::remote::Nats;
use crate::worker::{Call, WorkerMethods};
use actix::prelude::*;
use std::marker::PhantomData;
use std::time::Duration;

/// Configures a [`RemotePool`]; get one from [`Nats::remote`].
pub struct RemotePoolBuilder<W: WorkerMethods> {
    nats: Nats,
    settings: Settings,
    arbiter: Option<ArbiterHandle>,
    _worker: PhantomData<fn() -> W>,
}

impl<W: WorkerMethods> RemotePoolBuilder<W> {
    pub(crate) fn new(nats: Nats) -> Self {
        Self {
            nats,
            settings: Settings {
                name: crate::worker::short_name(W::NAME),
                host_timeout: Duration::from_secs(1),
                max_attempts: 4,
                idempotent: false,
                idempotent_methods: Vec::new(),
            },
            arbiter: None,
            _worker: PhantomData,
        }
    }

    /// The pool's name in stats (default: the worker type's short name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// How many times a call that did not run is sent again, to another
    /// host: after `Busy` (or `ShuttingDown`, `PoolFailed`, `StartTimeout`)
    /// from a host, and after losing a host that held it without starting
    /// it (default 3). The last host's answer is the call's answer.
    pub fn retries(mut self, retries: u32) -> Self {
        self.settings.max_attempts = retries.saturating_add(1);
        self
    }

    /// How long a host holding a call may stay silent before the call
    /// resolves `HostLost` (default 1 s; at least three of the host's
    /// heartbeat intervals). It bounds how long a dead host can hold a call,
    /// with or without a call timeout on the host's pool.
    pub fn host_timeout(mut self, timeout: Duration) -> Self {
        self.settings.host_timeout = timeout;
        self
    }

    /// Every method of the worker may run twice: a call a lost host may
    /// have started is sent again (within [`retries`](Self::retries))
    /// instead of resolving `HostLost`. Only for methods whose second run
    /// does no harm.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.settings.idempotent = idempotent;
        self
    }

    /// Like [`idempotent`](Self::idempotent), for the method called by
    /// message type `M` only.
    pub fn idempotent_call<M: Call<W>>(mut self) -> Self {
        self.settings.idempotent_methods.push(M::METHOD);
        self
    }

    /// Run the pool actor on this arbiter instead of the current one.
    pub fn arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// Starts the pool (inside an actix `System`, once the [`Nats`] handle
    /// is connected) and returns its address.
    pub fn start(self) -> Result<Addr<RemotePool<W>>> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoSystem);
        }
        if self.settings.host_timeout.is_zero() {
            return Err(Error::Config("host_timeout must be more than zero".into()));
        }
        let Some((client, events, prefix)) = self.nats.client_and_prefix() else {
            return Err(Error::Config(
                "the NATS handle is not connected (connect it, or give it to the daemon's builder)"
                    .into(),
            ));
        };
        let settings = self.settings;
        let pool = move |_: &mut Context<RemotePool<W>>| {
            RemotePool::<W>::new(settings, &prefix, client, events)
        };
        let addr = match self.arbiter {
            Some(arbiter) => RemotePool::start_in_arbiter(&arbiter, pool),
            None => RemotePool::create(pool),
        };
        self.nats.register_remote(
            addr.clone().recipient::<GetRemotePoolStats>(),
            addr.clone().recipient::<StopRemotePool>(),
        );
        Ok(addr)
    }
}
