//! Child processes: the fork server, spawning, child set-up and reaping.
//!
//! Every worker and task of a daemon is forked by a single-threaded **fork
//! server**: the program's own binary, started once with `exec` and caught by
//! a constructor before `main` (so it works under `cargo test`, in examples
//! and in applications whose `main` the framework does not own). Forking the
//! multithreaded daemon itself would be undefined behaviour in practice, and
//! slow for a large parent.
//!
//! Children are created with `CLONE_PARENT | CLONE_PIDFD`: they are the
//! daemon's own children, reaped through their pidfds — no SIGCHLD handler,
//! never `waitpid(-1)`, so a `std::process::Child` spawned by user code keeps
//! its exit status.
//!
//! What a child runs is named by a stable string registered at link time
//! ([`ENTRY_POINTS`], a `linkme` slice — constructor-based registries are
//! empty in the fork server, whose constructor never returns).
//!
//! The only other fork in the framework is `--daemon`'s double fork
//! ([`daemonize`]), in the main process before any thread exists (checked
//! before each fork): detaching the process itself cannot be delegated.
//!
//! Limitation: `/proc/self/exe` must be the program that links daemonic; a
//! daemonic linked into a shared library loaded by another program cannot
//! start a fork server.

pub(crate) mod child;
mod confine;
pub(crate) mod daemonize;
mod launcher;
mod lean;
mod orphans;
mod reap;
pub(crate) mod server;
mod service;
mod spare;
mod spawn;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod wire;

pub use child::{handle_termination_gracefully, termination_requested, ChildStart};
pub use confine::{Confinement, Identity, Limit};
pub use launcher::{fork_server, ForkServer};
pub(crate) use reap::Signaller;
pub use reap::{ChildProcess, ExitStatus};
pub(crate) use spawn::{spawn, spawn_blocking};
pub use spawn::{SpawnOptions, Spawned};

/// A function a child can run, under a stable name.
#[derive(Debug)]
pub struct EntryPoint {
    /// Stable name (`module::path::Type`), sent in spawn requests.
    pub name: &'static str,
    /// Runs in the child; returns its exit code.
    pub run: fn(ChildStart) -> i32,
}

/// Every entry point linked into this binary.
#[linkme::distributed_slice]
pub static ENTRY_POINTS: [EntryPoint];

pub(crate) fn find_entry(name: &str) -> Option<&'static EntryPoint> {
    ENTRY_POINTS.iter().find(|e| e.name == name)
}
