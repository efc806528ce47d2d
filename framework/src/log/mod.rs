//! Logging: slog with an async writer thread that never drops a line.
//!
//! The chain is `Logger → level filter → log-event hook → slog-async (Block) →
//! line writer`. The hook runs in the caller's thread so a [`LogWriting`]
//! listener can rewrite or suppress a line before it is queued; the writer
//! thread formats every line as
//! `2026-11-24T19:14:27.123Z [<daemon pid>/<pid> <role>] INFO message k=v`
//! and writes it with one `write(2)`, so lines from several processes sharing
//! the file never interleave.
//!
//! When stderr is the systemd journal (`JOURNAL_STREAM`), lines written to it
//! start with their syslog priority (`<3>` for errors, `<6>` for info).
//!
//! The log file is reopened when it is renamed, deleted or truncated (a
//! watcher stats the path four times a second, never per line) and on
//! SIGHUP.
//!
//! [`LogWriting`]: crate::event::LogWriting

mod bridge;
mod children;
pub(crate) mod datagram;
mod drain;
mod journal;
mod queue;
mod sender;
mod tracing;
pub(crate) mod watcher;

/// The receiving thread's decoding of one datagram, for the fuzz targets.
#[cfg(feature = "testing")]
pub(crate) use children::{lines_for, receive, Received};

pub use self::tracing::layer as tracing_layer;
pub(crate) use children::{child_lines_dropped, child_log_settings};
// The spawn path in process/ calls these with every child's pid and role.
pub(crate) use children::{forget_child, register_child};

pub(crate) use drain::LogFile;

use crate::error::{Error, Result};
use crate::event::Events;
use slog::Drain;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;

/// Severity of a log line.
///
/// ```
/// use daemonic::event::LogWriting;
/// use daemonic::Level;
///
/// let events = daemonic::Events::new();
/// events.on(|e: &mut LogWriting| {
///     if e.level <= Level::Warning {
///         // errors and warnings: page someone
///     }
/// });
/// assert!(Level::Error < Level::Info);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// A failure.
    Error,
    /// Something unexpected that the daemon survives.
    Warning,
    /// Normal operation (`log`).
    Info,
    /// Diagnostics, shown with `--debug`.
    Debug,
    /// Very verbose diagnostics, shown with `--debug=3` and above.
    Trace,
}

impl Level {
    pub(crate) fn to_slog(self) -> slog::Level {
        match self {
            Level::Error => slog::Level::Error,
            Level::Warning => slog::Level::Warning,
            Level::Info => slog::Level::Info,
            Level::Debug => slog::Level::Debug,
            Level::Trace => slog::Level::Trace,
        }
    }

    pub(crate) fn from_slog(level: slog::Level) -> Self {
        match level {
            slog::Level::Critical | slog::Level::Error => Level::Error,
            slog::Level::Warning => Level::Warning,
            slog::Level::Info => Level::Info,
            slog::Level::Debug => Level::Debug,
            slog::Level::Trace => Level::Trace,
        }
    }

    /// The most verbose level shown for a `--debug` level (0 = off).
    pub(crate) fn max_for_debug(debug_level: u8) -> Self {
        match debug_level {
            0 => Level::Info,
            1 | 2 => Level::Debug,
            _ => Level::Trace,
        }
    }

    /// Fixed-width name used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warning => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// Where and how a process logs.
#[derive(Debug, Clone)]
pub(crate) struct LogConfig {
    /// Append to this file (created `0640` if missing, never through a symlink).
    pub file: Option<PathBuf>,
    /// Also write to stderr.
    pub console: bool,
    /// `--debug` level: 0 = off, 1 = debug lines, 3+ = trace lines too.
    pub debug_level: u8,
    /// Role printed in every line (`main`, `worker:hasher`, `task:send_email`).
    pub role: String,
    /// Pid of the daemon's main process (printed in children's lines too).
    pub daemon_pid: i32,
    /// Name of the daemon (process titles of children).
    pub daemon_name: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            file: None,
            console: true,
            debug_level: 0,
            role: "main".into(),
            daemon_pid: std::process::id() as i32,
            daemon_name: "daemon".into(),
        }
    }
}

/// A cloneable handle to the daemon's log, for user code (the `LogTrait` of
/// the PHP original). `log`-crate macros reach the same log.
///
/// ```
/// let logger = daemonic::log::Logger::discard();
/// logger.log("started");
/// logger.debug(2, format_args!("detail {}", 42));
/// slog::info!(logger.slog(), "structured"; "key" => 1);
/// ```
#[derive(Clone)]
pub struct Logger {
    slog: slog::Logger,
    debug_level: u8,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("debug_level", &self.debug_level)
            .finish()
    }
}

impl Logger {
    /// A logger that writes nothing (for tests and inline use).
    pub fn discard() -> Self {
        Self {
            slog: slog::Logger::root(slog::Discard, slog::o!()),
            debug_level: 0,
        }
    }

    /// Logs an informational line.
    pub fn log(&self, message: impl Display) {
        slog::info!(self.slog, "{}", message);
    }

    /// Logs an informational line (same as [`log`](Self::log)).
    pub fn info(&self, message: impl Display) {
        slog::info!(self.slog, "{}", message);
    }

    /// Logs a warning.
    pub fn warn(&self, message: impl Display) {
        slog::warn!(self.slog, "{}", message);
    }

    /// Logs an error.
    pub fn error(&self, message: impl Display) {
        slog::error!(self.slog, "{}", message);
    }

    /// Logs a debug line if the daemon runs with `--debug=LEVEL` and
    /// `level <= LEVEL` (levels 3 and above are logged as trace).
    pub fn debug(&self, level: u8, message: impl Display) {
        if level == 0 || level > self.debug_level {
            return;
        }
        if level >= 3 {
            slog::trace!(self.slog, "{}", message);
        } else {
            slog::debug!(self.slog, "{}", message);
        }
    }

    /// Whether `debug(level, ..)` lines are written.
    pub fn debug_enabled(&self, level: u8) -> bool {
        level > 0 && level <= self.debug_level
    }

    /// The underlying slog logger, for structured key-value logging.
    pub fn slog(&self) -> &slog::Logger {
        &self.slog
    }
}

/// Keeps the writer threads alive; dropping it flushes every queued line.
pub(crate) struct LogGuard {
    _async_guard: slog_async::AsyncGuard,
    children: Option<children::ChildLogReceiver>,
}

impl LogGuard {
    /// Writes every line child processes have sent and stops receiving more.
    /// Call once no child is left, before the daemon's last line: otherwise
    /// a child's queued line can land after it.
    pub(crate) fn drain_children(&mut self) {
        self.children.take();
    }
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// A started logging pipeline.
pub(crate) struct LogSystem {
    pub logger: Logger,
    pub guard: LogGuard,
    pub file: Option<Arc<LogFile>>,
}

impl LogSystem {
    /// Opens the log file (so a bad path fails before anything starts) and
    /// starts the writer thread.
    #[allow(dead_code)] // used by child processes
    pub fn start(config: &LogConfig, events: &Events) -> Result<Self> {
        let file = match &config.file {
            Some(path) => Some(Arc::new(LogFile::open(path.clone()).map_err(|source| {
                Error::CantCreate {
                    what: "log file",
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        Ok(Self::start_with(config, events, file))
    }

    /// Starts the writer thread with an already opened log file.
    pub fn start_with(config: &LogConfig, events: &Events, file: Option<Arc<LogFile>>) -> Self {
        let sink = drain::LocalSink {
            file: file.clone(),
            console: config.console,
        };
        let children = children::ChildLogReceiver::start(config, sink.clone());
        let writer = drain::LineWriter::new(config, drain::Target::Local(sink));
        let (async_drain, async_guard) = slog_async::Async::new(writer)
            .chan_size(8192)
            .overflow_strategy(slog_async::OverflowStrategy::Block)
            .thread_name("daemonic-log".into())
            .build_with_guard();
        let hooked = drain::EventHook::new(async_drain, events.clone());
        let max = Level::max_for_debug(config.debug_level).to_slog();
        let filtered = slog::LevelFilter::new(hooked, max);
        let slog = slog::Logger::root(filtered.ignore_res(), slog::o!());
        install_bridges(&slog, config.debug_level);
        Self {
            logger: Logger {
                slog,
                debug_level: config.debug_level,
            },
            guard: LogGuard {
                _async_guard: async_guard,
                children: Some(children),
            },
            file,
        }
    }
}

/// Routes `log` records and `tracing` events of this process into `slog`.
fn install_bridges(slog: &slog::Logger, debug_level: u8) {
    let max = Level::max_for_debug(debug_level);
    bridge::install(slog, max);
    self::tracing::install(slog, max);
}

/// A child process's logger; `log` records and `tracing` events of the child
/// reach the daemon's log through it too.
pub(crate) fn child_logger(config: &LogConfig, sink: Option<std::os::fd::OwnedFd>) -> Logger {
    let logger = children::child_logger(config, sink);
    install_bridges(&logger.slog, config.debug_level);
    logger
}

/// Registers the `log`-crate and `tracing` bridges, pointing nowhere, with
/// the level of `debug_level`, in the fork server before it forks: each
/// child inherits them and its [`child_logger`] only points them at itself
/// (with the same level, the callsites' interest stays valid). Building the
/// `tracing` registry and rebuilding that cache in every child cost ~60 µs
/// of its start (see BENCHMARKS.md "Process layer").
pub(crate) fn prepare_bridges_for_children(debug_level: u8) {
    bridge::prepare();
    self::tracing::set_level(Level::max_for_debug(debug_level));
}

/// Points the `log`-crate and `tracing` bridges away from a pipeline that is
/// shutting down.
pub(crate) fn detach_bridge() {
    bridge::detach();
    self::tracing::detach();
}
