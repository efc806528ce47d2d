//! Plugins: reusable pieces of a daemon (locks, metrics...). Each plugin is
//! an actor under the supervisor: validated before anything starts, set up
//! before the main loop, ticked on its own schedule, asked for stats, and
//! torn down after the main loop stops, in reverse order. A plugin added with
//! [`DaemonBuilder::lazy_plugin`](crate::DaemonBuilder::lazy_plugin) is set
//! up on first use instead.

mod actor;
mod file_lock;

pub(crate) use actor::{PluginActor, PluginStats, TearDown};
pub use file_lock::{FileLock, ShmLock};

use crate::error::BoxError;
use crate::event::Events;
use crate::log::Logger;
use std::time::Duration;

/// What a plugin gets from the daemon.
///
/// ```
/// use daemonic::plugin::{Plugin, PluginContext};
///
/// struct Hello;
///
/// impl Plugin for Hello {
///     fn name(&self) -> &str {
///         "hello"
///     }
///     fn setup(&mut self, ctx: &PluginContext) -> Result<(), daemonic::BoxError> {
///         ctx.logger.log(format_args!("set up in {}", ctx.name));
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct PluginContext {
    /// The daemon's logger.
    pub logger: Logger,
    /// The daemon's event bus (subscribe here in `setup`).
    pub events: Events,
    /// The daemon's name.
    pub name: String,
}

/// A plugin of the daemon. Its options are its own typed fields (with
/// defaults through its constructor); [`validate`](Self::validate) checks
/// them before the daemon starts anything.
///
/// ```
/// use daemonic::plugin::{Plugin, PluginContext};
/// use daemonic::event::IdleStarted;
///
/// struct Heartbeat { every_ticks: u64 }
///
/// impl Plugin for Heartbeat {
///     fn name(&self) -> &str { "heartbeat" }
///     fn validate(&self) -> Result<(), daemonic::BoxError> {
///         if self.every_ticks == 0 { return Err("every_ticks must be > 0".into()); }
///         Ok(())
///     }
///     fn setup(&mut self, ctx: &PluginContext) -> Result<(), daemonic::BoxError> {
///         let (logger, every) = (ctx.logger.clone(), self.every_ticks);
///         ctx.events.on(move |e: &mut IdleStarted| {
///             if e.iteration % every == 0 { logger.log("still alive"); }
///         });
///         Ok(())
///     }
/// }
/// ```
pub trait Plugin: Send + 'static {
    /// A unique name (log lines, errors, `status`). Two plugins with one
    /// name are refused.
    fn name(&self) -> &str;

    /// Checks the plugin's options before the daemon starts anything; an
    /// error stops the start with exit code 78 and the message.
    fn validate(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called before the main loop starts (or on first use for a lazy
    /// plugin); an error stops the start with a clear message (a framework
    /// error keeps its own exit code: a held lock exits 75).
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError>;

    /// How often [`tick`](Self::tick) runs (`None`: never).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work, on the plugin's actor.
    fn tick(&mut self, ctx: &PluginContext) {
        let _ = ctx;
    }

    /// Lines for the stats dump and `status`.
    fn stats(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Called after the main loop stopped.
    fn teardown(&mut self, ctx: &PluginContext) {
        let _ = ctx;
    }
}
