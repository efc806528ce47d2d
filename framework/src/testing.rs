//! Test hooks (cargo feature `testing`; not for production): kill a worker
//! on purpose, make the fork server misbehave, and reach the process layer
//! directly. The framework's own tests and benchmarks use them.

pub use crate::process::testing::{inject_next_spawn, Fault};
pub use crate::process::{
    fork_server, ChildStart, EntryPoint, ForkServer, SpawnOptions, Spawned, ENTRY_POINTS,
};
pub use crate::worker::pool::KillWorker;
