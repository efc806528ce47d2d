//! Past one machine: worker pools served to other hosts, and called from
//! anywhere, through [NATS](https://nats.io) (feature `nats`).
//!
//! A host daemon serves its local pools with [`Nats::serve`]: each worker
//! type gets a subject, `<prefix>.<worker's stable name>`, and every host
//! serving it subscribes in one queue group, so NATS shares the calls among
//! them. A caller, in any actix `System`, gets a [`RemotePool`] from
//! [`Nats::remote`] and sends it the same message types as a local pool,
//! with the same `addr.send(..).await`.
//!
//! Each host keeps its pool's semantics (`Died`, `Panicked`, `Timeout`,
//! `Busy`, recycling, restart limits) and its answers, typed errors
//! included, travel back unchanged. What the network adds is honest about
//! whether the call may have run:
//!
//! | error | may have run | what the caller does |
//! |---|---|---|
//! | `Unavailable` | no | nobody serves the subject, or not connected |
//! | `Busy` (from a host) | no | sent to another host, `retries` times |
//! | `HostLost` | yes | resolved; sent again only if marked idempotent |
//! | `Timeout` | yes | as locally (the host's pool enforces it) |
//!
//! A host answers `Busy` for a call beyond what its pool can hold, so a
//! slow host never collects a backlog while others idle. It sends each
//! caller a heartbeat listing the calls it holds, so a dead host is noticed
//! within [`host_timeout`](RemotePoolBuilder::host_timeout), even without a
//! call timeout; the calls it never started run elsewhere (see
//! `host/mod.rs` for how the host makes sure of "never started").
//!
//! Module map: `nats.rs` the shared handle; `options.rs` servers,
//! credentials, TLS; `wire.rs` subjects and payloads; `publisher.rs` the
//! ordered outbound stream; `host/` the serving side; `caller/` the remote
//! pool; `stats.rs` what `status` shows (also without the feature).

mod stats;

pub use stats::{HostStats, NatsStats, RemotePoolStats, ServiceStats};

#[cfg(feature = "nats")]
mod caller;
#[cfg(feature = "nats")]
mod host;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
mod options;
#[cfg(feature = "nats")]
mod publisher;
#[cfg(feature = "nats")]
mod wire;

#[cfg(feature = "nats")]
pub use caller::{GetRemotePoolStats, RemotePool, RemotePoolBuilder, StopRemotePool};
#[cfg(feature = "nats")]
pub use nats::Nats;
#[cfg(feature = "nats")]
pub use options::{ConnectError, NatsOptions, DEFAULT_PREFIX};
