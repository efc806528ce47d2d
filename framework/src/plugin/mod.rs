//! Plugins: reusable pieces of a daemon (locks, metrics...) that the
//! supervisor sets up before the main loop starts and tears down after it
//! stops, in reverse order.

mod file_lock;

pub use file_lock::{FileLock, ShmLock};

use crate::error::BoxError;
use crate::event::Events;
use crate::log::Logger;

/// What a plugin gets from the daemon.
#[derive(Debug, Clone)]
pub struct PluginContext {
    /// The daemon's logger.
    pub logger: Logger,
    /// The daemon's event bus (subscribe here in `setup`).
    pub events: Events,
    /// The daemon's name.
    pub name: String,
}

/// A plugin of the daemon.
///
/// ```
/// use daemonic::plugin::{Plugin, PluginContext};
/// use daemonic::event::Idle;
///
/// struct Heartbeat;
///
/// impl Plugin for Heartbeat {
///     fn name(&self) -> &str { "heartbeat" }
///     fn setup(&mut self, ctx: &PluginContext) -> Result<(), daemonic::BoxError> {
///         let logger = ctx.logger.clone();
///         ctx.events.on(move |e: &mut Idle| {
///             if e.iteration % 60 == 0 { logger.log("still alive"); }
///         });
///         Ok(())
///     }
/// }
/// ```
pub trait Plugin: Send + 'static {
    /// A unique name (used in log lines and errors).
    fn name(&self) -> &str;

    /// Called before the main loop starts; an error stops the start with a
    /// clear message.
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError>;

    /// Called after the main loop stopped.
    fn teardown(&mut self, ctx: &PluginContext) {
        let _ = ctx;
    }
}
