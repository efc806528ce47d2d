//! Routes `log`-crate macros (`log::info!`) into the daemon's slog pipeline.

use super::Level;
use parking_lot::RwLock;
use std::sync::Once;

static TARGET: RwLock<Option<slog::Logger>> = RwLock::new(None);
static INSTALL: Once = Once::new();

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        TARGET.read().is_some()
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(logger) = TARGET.read().clone() else {
            return;
        };
        let target = record.target();
        let args = record.args();
        match record.level() {
            log::Level::Error => slog::error!(logger, "{}", args; "target" => target),
            log::Level::Warn => slog::warn!(logger, "{}", args; "target" => target),
            log::Level::Info => slog::info!(logger, "{}", args),
            log::Level::Debug => slog::debug!(logger, "{}", args; "target" => target),
            log::Level::Trace => slog::trace!(logger, "{}", args; "target" => target),
        }
    }

    fn flush(&self) {}
}

/// Makes `logger` the destination of `log`-crate macros. If another `log`
/// implementation was installed first, it keeps working and ours is skipped.
pub(super) fn install(logger: &slog::Logger, max: Level) {
    *TARGET.write() = Some(logger.clone());
    prepare();
    log::set_max_level(match max {
        Level::Error => log::LevelFilter::Error,
        Level::Warning => log::LevelFilter::Warn,
        Level::Info => log::LevelFilter::Info,
        Level::Debug => log::LevelFilter::Debug,
        Level::Trace => log::LevelFilter::Trace,
    });
}

/// Registers the bridge with `log` (once per process), pointing nowhere
/// until [`install`].
pub(super) fn prepare() {
    INSTALL.call_once(|| {
        let _ = log::set_boxed_logger(Box::new(Bridge));
    });
}

/// Stops forwarding records to a pipeline that is shutting down.
pub(super) fn detach() {
    *TARGET.write() = None;
}
