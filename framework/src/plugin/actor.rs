//! The actor that owns one set-up plugin.

use super::{Plugin, PluginContext};
use actix::prelude::*;

pub(crate) struct PluginActor {
    plugin: Box<dyn Plugin>,
    ctx: PluginContext,
    torn_down: bool,
}

impl PluginActor {
    /// Takes over a plugin whose `setup` succeeded.
    pub(crate) fn start(plugin: Box<dyn Plugin>, ctx: PluginContext) -> Addr<Self> {
        Self {
            plugin,
            ctx,
            torn_down: false,
        }
        .start()
    }
}

impl Actor for PluginActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.plugin.tick_interval() {
            ctx.run_interval(every, |act, _| act.plugin.tick(&act.ctx));
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Dropped without the supervisor's teardown (a forced stop): still
        // release what the plugin holds.
        if !self.torn_down {
            self.plugin.teardown(&self.ctx);
        }
    }
}

/// Tear the plugin down and stop its actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TearDown;

impl Handler<TearDown> for PluginActor {
    type Result = ();

    fn handle(&mut self, _: TearDown, ctx: &mut Context<Self>) {
        if !self.torn_down {
            self.torn_down = true;
            self.plugin.teardown(&self.ctx);
        }
        ctx.stop();
    }
}

/// The plugin's name and stats lines (for `status` and the SIGUSR1 dump).
#[derive(Message)]
#[rtype(result = "(String, Vec<(String, String)>)")]
pub(crate) struct PluginStats;

impl Handler<PluginStats> for PluginActor {
    type Result = MessageResult<PluginStats>;

    fn handle(&mut self, _: PluginStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.plugin.name().to_string(), self.plugin.stats()))
    }
}
