//! The actor that notices a rotated log file and reopens it on SIGHUP.

use super::LogFile;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// How often the path is compared with the open file. Rotation is noticed
/// within this period without a `stat` per written line.
pub(crate) const CHECK_PERIOD: Duration = Duration::from_millis(250);

pub(crate) struct LogWatcher {
    file: Arc<LogFile>,
}

impl LogWatcher {
    pub(crate) fn new(file: Arc<LogFile>) -> Self {
        Self { file }
    }
}

impl Actor for LogWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(CHECK_PERIOD, |act, _| {
            act.file.check();
        });
    }
}
