//! The public surface is curated: everything not re-exported on purpose
//! stays private. Each block below names an internal item and must fail to
//! compile; if one compiles, an internal became public again (make it
//! private, or `#[doc(hidden)]` if generated code needs it).
//!
//! The concrete transports:
//!
//! ```compile_fail
//! use daemonic::ipc::socket::SocketHostLink;
//! ```
//!
//! ```compile_fail
//! use daemonic::ipc::ipc_channel::IpcChildLink;
//! ```
//!
//! ```compile_fail
//! use daemonic::ipc::frame::MAX_FRAME;
//! ```
//!
//! The fork server and the child's start:
//!
//! ```compile_fail
//! use daemonic::process::ForkServer;
//! ```
//!
//! ```compile_fail
//! use daemonic::process::ChildStart;
//! ```
//!
//! ```compile_fail
//! use daemonic::process::SpawnOptions;
//! ```
//!
//! The daemon's actors and their messages:
//!
//! ```compile_fail
//! use daemonic::MainLoop;
//! ```
//!
//! ```compile_fail
//! use daemonic::Supervisor;
//! ```
//!
//! ```compile_fail
//! use daemonic::daemon::Supervisor;
//! ```
//!
//! ```compile_fail
//! use daemonic::daemon::RequestShutdown;
//! ```
//!
//! ```compile_fail
//! use daemonic::signal::SignalActor;
//! ```
//!
//! ```compile_fail
//! use daemonic::control::socket_path;
//! ```
//!
//! Exit codes of children:
//!
//! ```compile_fail
//! let _ = daemonic::task::EXIT_PANICKED;
//! ```
//!
//! ```compile_fail
//! let _ = daemonic::task::EXIT_BAD_PAYLOAD;
//! ```
//!
//! The log's internals:
//!
//! ```compile_fail
//! use daemonic::log::LogGuard;
//! ```
//!
//! ```compile_fail
//! use daemonic::log::LogConfig;
//! ```
//!
//! The same items through their public neighbours are fine:
//!
//! ```
//! use daemonic::worker::{Transport, WorkerPool};
//! use daemonic::{DaemonBuilder, ExitStatus, LoopContext};
//! ```
