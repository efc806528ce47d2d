//! Supervision trees with OTP's semantics, whose children are worker pools
//! (processes behind an actor address), plain actix actors and nested
//! supervisors; usable in any actix `System`, with or without a daemon.
//!
//! A [`Supervisor`] starts its children in order and stops them in reverse
//! order, each within its shutdown timeout. When a child fails, its
//! [`Restart`] type says whether it restarts and the [`Strategy`] which
//! siblings restart with it, after a [`Backoff`]. More restarts than the
//! intensity allows within its period and the supervisor stops its children
//! and fails upward: its parent's strategy decides, and at the top a
//! daemon ends (exit code 70) or restarts.
//!
//! Children keep their address across restarts: a pool restarts in place
//! (new workers for the same actor; calls wait for it), an actor restarts
//! as actix's own supervisor restarts it (same value and mailbox, its
//! `Supervised::restarting` hook). Hand the address to handlers before the
//! tree starts ([`PoolSpec::addr`], [`ActorSpec::addr`]).
//!
//! ```no_run
//! use daemonic::prelude::*;
//! use daemonic::supervision::{ActorSpec, PoolSpec, Strategy, Supervisor};
//! use std::time::Duration;
//! # #[daemonic::worker]
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! # struct Decoder;
//! # #[daemonic::worker]
//! # impl Decoder {
//! #     pub fn decode(&mut self, n: u32) -> u32 { n }
//! # }
//! # struct Uploader;
//! # impl daemonic::actix::Actor for Uploader { type Context = daemonic::actix::Context<Self>; }
//! # impl daemonic::actix::Supervised for Uploader {}
//!
//! # fn main() -> Result<(), daemonic::Error> {
//! daemonic::actix::System::new().block_on(async {
//!     let decoder = PoolSpec::new(WorkerPool::builder(Decoder).size(4));
//!     let decode = decoder.addr();
//!     let tree = Supervisor::builder("media")
//!         .strategy(Strategy::RestForOne)
//!         .intensity(5, Duration::from_secs(30))
//!         .child(decoder)
//!         .child(ActorSpec::new(|_| Uploader))
//!         .child(Supervisor::builder("thumbnails"))
//!         .start()?;
//!     assert_eq!(decode.call(decoder::Decode { n: 1 }).await, Ok(1));
//!     # let _ = tree;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! - `builder.rs`: [`SupervisorBuilder`], nested trees;
//! - `supervisor.rs`: the actor and its queue of starts and stops;
//! - `decide.rs`: what a child's exit sets in motion;
//! - `messages.rs`: [`StopTree`], [`GetTree`], [`AddChild`], [`RemoveChild`] and the parent's messages;
//! - `strategy.rs`, `backoff.rs`, `budget.rs`: the pure decisions;
//! - `child.rs`, `pool.rs`, `actor.rs`: children and their kinds;
//! - `tree.rs`: the tree as `status` shows it.

mod actor;
mod backoff;
pub(crate) mod budget;
mod builder;
mod child;
mod decide;
mod messages;
mod pool;
mod strategy;
mod supervisor;
mod tree;

pub use actor::{stop_normally, ActorSpec};
pub use backoff::Backoff;
pub use builder::SupervisorBuilder;
/// For the daemon's own children (`daemon/supervisor/fixed.rs`).
pub(crate) use child::{ChildKind, ChildLink, StopMode};
pub use child::{ChildSpec, IntoChild, DEFAULT_SHUTDOWN};
pub use messages::{AddChild, GetTree, RemoveChild, RemoveChildError, StopTree};
pub use pool::PoolSpec;
pub use strategy::{Exit, Restart, Strategy};
pub use supervisor::Supervisor;
pub use tree::{ChildStats, TreeStats};
