//! Typed errors and the exit codes they map to.
//!
//! Every error a user can meet at start-up maps to a distinct exit code (the
//! BSD `sysexits.h` convention), so scripts and service managers can tell a
//! typo in a flag from an unwritable log file from a daemon that is already
//! running.

use std::path::PathBuf;

/// A boxed error from user code (an `initialize` hook, a plugin).
///
/// ```
/// use daemonic::BoxError;
///
/// fn connect(url: &str) -> Result<(), BoxError> {
///     if url.is_empty() {
///         return Err("no URL".into());
///     }
///     Ok(())
/// }
/// assert!(connect("").is_err());
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Exit codes of a daemon built with daemonic.
///
/// The numeric values follow `sysexits.h` so that they mean the same thing as
/// for other Unix daemons.
///
/// ```
/// use daemonic::ExitCode;
///
/// assert_eq!(ExitCode::AlreadyRunning.code(), 75);
/// let process_code: std::process::ExitCode = ExitCode::Config.into();
/// # let _ = process_code;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// Clean exit (graceful shutdown completed).
    Ok = 0,
    /// `status`/`stop`: no daemon is running (the LSB `status` convention).
    NotRunning = 3,
    /// The command line could not be parsed (`EX_USAGE`).
    Usage = 64,
    /// A service the daemon needs could not be reached (`EX_UNAVAILABLE`):
    /// no NATS server answered.
    Unavailable = 69,
    /// The daemon failed at run time (`EX_SOFTWARE`): an `initialize` hook
    /// failed, or a graceful shutdown did not finish in time.
    Software = 70,
    /// The OS refused something the framework needs (`EX_OSERR`): fork,
    /// signal handlers, a thread.
    OsError = 71,
    /// A log, pid or lock file could not be created or written (`EX_CANTCREAT`).
    CantCreate = 73,
    /// Another instance already holds the lock (`EX_TEMPFAIL`).
    AlreadyRunning = 75,
    /// A file or directory the daemon would trust is unsafe (owned by another
    /// user, a symlink, writable by others), a control client was refused, or
    /// privileges could not be dropped (`EX_NOPERM`).
    NoPermission = 77,
    /// The configuration is invalid (`EX_CONFIG`).
    Config = 78,
    /// The daemon was stopped immediately by a second SIGINT (128 + SIGINT).
    Interrupted = 130,
}

impl ExitCode {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// Everything that can go wrong in the framework itself.
///
/// ```
/// use daemonic::{Error, ExitCode};
///
/// let e = Error::Config("interval must be more than zero".into());
/// assert_eq!(e.to_string(), "invalid configuration: interval must be more than zero");
/// assert_eq!(e.exit_code(), ExitCode::Config);
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line could not be parsed.
    #[error("{0}")]
    Usage(String),

    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A file the daemon must write (log, pid file) cannot be opened.
    #[error("cannot open {what} {path}: {source}")]
    CantCreate {
        /// What the file is for ("log file", "pid file").
        what: &'static str,
        /// The offending path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// An OS call the framework depends on failed.
    #[error("{context}: {source}")]
    Os {
        /// What the framework was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Another instance of the daemon holds the lock.
    #[error("already running with pid {pid} (lock {path})")]
    AlreadyRunning {
        /// Pid of the running instance.
        pid: i32,
        /// The lock file or shared memory name.
        path: PathBuf,
    },

    /// A file or directory the daemon would trust is unsafe, so it is refused.
    #[error("refusing {what} {path}: it {reason}")]
    Insecure {
        /// What it is for ("control directory", "pid file").
        what: &'static str,
        /// The offending path.
        path: PathBuf,
        /// Why it is unsafe ("is owned by uid 1000, not by uid 0").
        reason: String,
    },

    /// Dropping privileges (`--user`, `--group`, `--chroot`) failed.
    #[error("cannot drop privileges: {0}")]
    Privileges(String),

    /// The user's `initialize` hook returned an error.
    #[error("initialize failed: {0}")]
    Initialize(#[source] BoxError),

    /// A daemon was started outside a running actix `System`.
    #[error("no actix System is running; call start() from inside System::new().block_on(..) or use main()")]
    NoSystem,

    /// The daemon stopped before it finished starting.
    #[error("the daemon stopped during start-up")]
    StartAborted,

    /// A child process could not be started.
    #[error("cannot start child process: {0}")]
    Spawn(String),

    /// The fork server died, stopped answering, or could not be started; a
    /// new one is started for the next spawn.
    #[error("fork server unavailable: {0}")]
    ForkServer(String),

    /// The daemon is shutting down and refuses new work.
    #[error("the daemon is shutting down")]
    ShuttingDown,

    /// A concurrency limit was reached and the work was rejected.
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// The exit code a process should end with when this error stops it.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Config(_) => ExitCode::Config,
            Error::CantCreate { .. } => ExitCode::CantCreate,
            Error::Os { .. } => ExitCode::OsError,
            Error::AlreadyRunning { .. } => ExitCode::AlreadyRunning,
            Error::Insecure { .. } | Error::Privileges(_) => ExitCode::NoPermission,
            Error::Initialize(_)
            | Error::NoSystem
            | Error::StartAborted
            | Error::ShuttingDown
            | Error::Busy(_) => ExitCode::Software,
            Error::Spawn(_) | Error::ForkServer(_) => ExitCode::OsError,
        }
    }

    pub(crate) fn os(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Os {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// A `Result` with the framework's [`Error`].
///
/// ```
/// fn start() -> daemonic::Result<()> {
///     Err(daemonic::Error::ShuttingDown)
/// }
/// assert!(start().is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let errors = [
            Error::Usage("x".into()),
            Error::Config("x".into()),
            Error::CantCreate {
                what: "log file",
                path: "/x".into(),
                source: std::io::Error::from_raw_os_error(libc::EACCES),
            },
            Error::os("fork", std::io::Error::from_raw_os_error(libc::EAGAIN)),
            Error::AlreadyRunning {
                pid: 1,
                path: "/x".into(),
            },
            Error::Initialize("boom".into()),
            Error::Insecure {
                what: "pid file",
                path: "/x".into(),
                reason: "is a symlink".into(),
            },
        ];
        let mut codes: Vec<u8> = errors.iter().map(|e| e.exit_code().code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn messages_name_the_problem() {
        let e = Error::CantCreate {
            what: "log file",
            path: "/nope/x.log".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("log file") && msg.contains("/nope/x.log"),
            "{msg}"
        );
    }
}
