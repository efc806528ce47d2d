//! The command line every daemon built with daemonic shares.
//!
//! [`DaemonBuilder::main`](crate::DaemonBuilder::main) parses it for a daemon
//! without flags of its own. A daemon with flags of its own parses
//! [`Cli<A>`] with a [`Program`] (the same command line, name, version and
//! `--help`, plus `A`'s flags) and passes [`Cli::daemon`] to
//! [`DaemonBuilder::args`](crate::DaemonBuilder::args).
//!
//! Time options take seconds (`--interval 0.25`) or a number with a unit
//! (`--interval 250ms`, `stop --timeout 2m`); see [`parse_duration`].
//!
//! A program with a parser of its own can flatten [`DaemonArgs`] into it
//! (its `--help` is then its own business):
//!
//! ```
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct MyCli {
//!     #[command(flatten)]
//!     daemon: daemonic::cli::DaemonArgs,
//!     /// Queue to consume.
//!     #[arg(long, default_value = "jobs")]
//!     queue: String,
//! }
//!
//! let cli = MyCli::try_parse_from(["mydaemon", "--queue", "mail", "-v", "--debug=2"]).unwrap();
//! assert_eq!(cli.queue, "mail");
//! assert_eq!(cli.daemon.debug, Some(2));
//! ```

mod duration;
mod program;

pub use duration::{parse_duration, parse_positive_duration, MAX_DURATION};
pub use program::Program;
pub(crate) mod docs;

use crate::error::ExitCode;
use clap::{Args, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// Commands that run instead of starting the daemon: they talk to a running
/// one, or print its documentation.
///
/// ```
/// use clap::Parser;
/// use daemonic::cli::{ControlCommand, DaemonArgs};
///
/// #[derive(Parser)]
/// struct MyCli {
///     #[command(flatten)]
///     daemon: DaemonArgs,
/// }
///
/// let cli = MyCli::parse_from(["mydaemon", "status", "--json"]);
/// assert_eq!(cli.daemon.command, Some(ControlCommand::Status { json: true }));
/// ```
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum ControlCommand {
    /// Print the running daemon's status (loop, memory, plugins, worker pools, tasks).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to shut down gracefully and wait until it has.
    Stop {
        /// How long to wait.
        #[arg(long, default_value = "30", value_name = "DURATION", value_parser = parse_positive_duration)]
        timeout: Duration,
    },
    /// Print a shell completion script, e.g. `completions bash > /etc/bash_completion.d/NAME`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `man > NAME.1; man -l NAME.1`.
    Man,
}

/// The standard flags.
///
/// ```
/// use daemonic::cli::{NoArgs, Program};
/// use std::time::Duration;
///
/// let cli = Program::new("mydaemon")
///     .try_parse_from::<NoArgs, _, _>(["mydaemon", "--interval", "250ms", "--pidfile", "/run/my.pid"])
///     .unwrap();
/// assert_eq!(cli.daemon.interval, Some(Duration::from_millis(250)));
/// assert!(cli.daemon.pidfile.is_some());
/// ```
#[derive(Debug, Clone, Default, Args)]
pub struct DaemonArgs {
    /// Talk to a running daemon (give the same --pidfile it was started with).
    #[command(subcommand)]
    pub command: Option<ControlCommand>,
    /// Run in the background: double fork, new session, cwd /, umask 027, stdio to /dev/null.
    #[arg(long)]
    pub daemon: bool,
    /// Write the daemon's pid to PATH (removed on exit; never through a symlink).
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// Append log lines to PATH (reopened when rotated and on SIGHUP).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Also log to the terminal when a log file is set.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log debug lines up to LEVEL (1 if no level is given; 3+ includes trace).
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, default_missing_value = "1", require_equals = true)]
    pub debug: Option<u8>,
    /// Time between the starts of two loop ticks (seconds or 250ms, 2m; 0 = as fast as possible).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// How long a graceful shutdown may take before the daemon stops anyway.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_positive_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Restart gracefully (re-exec, same arguments) after running this long.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_positive_duration)]
    pub restart_after: Option<Duration>,
    /// A fatal error this soon after start exits instead of restarting (default 10s).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    pub min_runtime: Option<Duration>,
    /// Once started (locks, pid file, log, control socket in place), run as USER (name or uid) with its groups.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Once started, run with GROUP (name or gid) instead of USER's primary group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// File mode creation mask, in octal (e.g. 027).
    #[arg(long, value_name = "OCTAL", value_parser = parse_umask)]
    pub umask: Option<u32>,
    /// Once started, change the working directory to DIR (absolute).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// Once started, change the root directory to DIR (absolute; needs root).
    #[arg(long, value_name = "DIR")]
    pub chroot: Option<PathBuf>,
    /// Allow core dumps (off by default for daemons started as root).
    #[arg(long)]
    pub core_dumps: bool,
    /// Serve Prometheus /metrics, a status page (/) and /status.json on ADDR: PORT or :PORT (127.0.0.1), or HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// The program these flags were parsed for ([`Program::parse`]); the
    /// builder runs under its name.
    #[arg(skip)]
    pub(crate) program: Option<Program>,
}

impl DaemonArgs {
    /// The program these flags were parsed for by [`Program::parse`] (`None`
    /// when they were parsed by a parser of the daemon's own).
    pub fn program(&self) -> Option<&Program> {
        self.program.as_ref()
    }
}

fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal mode from 000 to 777"))
}

/// No extra flags.
///
/// ```
/// use daemonic::cli::{NoArgs, Program};
///
/// let cli = Program::new("plain").try_parse_from::<NoArgs, _, _>(["plain", "-v"]).unwrap();
/// assert_eq!(cli.daemon.verbose, 1);
/// ```
#[derive(Debug, Clone, Default, Args)]
pub struct NoArgs {}

/// The standard command line plus a daemon's own flags `A`, parsed by
/// [`Program::parse`].
///
/// ```
/// use daemonic::cli::{Cli, Program};
///
/// #[derive(clap::Args)]
/// struct Flags {
///     #[arg(long, default_value_t = 4)]
///     workers: usize,
/// }
///
/// let cli: Cli<Flags> = Program::new("app")
///     .try_parse_from(["app", "--workers", "8", "--debug=2"])
///     .unwrap();
/// assert_eq!((cli.app.workers, cli.daemon.debug), (8, Some(2)));
/// ```
#[derive(Debug, Clone)]
pub struct Cli<A = NoArgs> {
    /// The standard flags (for [`DaemonBuilder::args`](crate::DaemonBuilder::args)).
    pub daemon: DaemonArgs,
    /// The daemon's own flags.
    pub app: A,
}

/// Parses the process's arguments with a parser of the program's own that
/// flattens [`DaemonArgs`] (a daemon with flags of its own usually wants
/// [`Program::parse`] instead). `--help` and `--version` print and return
/// `Err(ExitCode::Ok)`; a bad command line prints one line naming the
/// problem and returns `Err(ExitCode::Usage)`.
///
/// ```no_run
/// use clap::Parser;
///
/// #[derive(Parser)]
/// #[command(name = "mydaemon", version)]
/// struct MyCli {
///     #[command(flatten)]
///     daemon: daemonic::cli::DaemonArgs,
/// }
///
/// fn main() -> std::process::ExitCode {
///     let cli: MyCli = match daemonic::cli::parse() {
///         Ok(cli) => cli,
///         Err(code) => return code.into(),
///     };
///     # struct App;
///     # impl daemonic::Daemon for App {
///     #     fn execute(&mut self, _: &mut daemonic::LoopContext<'_, Self>) {}
///     # }
///     daemonic::DaemonBuilder::new(App).args(&cli.daemon).run()
/// }
/// ```
pub fn parse<P: Parser>() -> Result<P, ExitCode> {
    let command = P::command();
    docs::remember(&command);
    let name = command.get_name().to_string();
    report(&name, P::try_parse())
}

fn report<P>(name: &str, parsed: Result<P, clap::Error>) -> Result<P, ExitCode> {
    parsed.map_err(|err| {
        use clap::error::ErrorKind;
        match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = err.print();
                ExitCode::Ok
            }
            _ => {
                let rendered = err.render().to_string();
                let first = rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid command line");
                eprintln!("{name}: {first} (see --help)");
                ExitCode::Usage
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_from(args: &[&str]) -> Result<Cli, clap::Error> {
        Program::new("d").try_parse_from(args)
    }

    #[test]
    fn flags_parse() {
        let cli = parse_from(&[
            "d",
            "--daemon",
            "--pidfile",
            "/tmp/d.pid",
            "--log-file=/tmp/d.log",
            "-vv",
            "--debug",
            "--interval",
            "0.25",
            "--shutdown-timeout=2m",
            "--min-runtime",
            "0",
        ])
        .unwrap();
        let a = cli.daemon;
        assert!(a.daemon);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.debug, Some(1));
        assert_eq!(a.interval, Some(Duration::from_millis(250)));
        assert_eq!(a.shutdown_timeout, Some(Duration::from_secs(120)));
        assert_eq!(a.min_runtime, Some(Duration::ZERO));
        assert_eq!(a.restart_after, None);
        assert_eq!(a.pidfile.unwrap().to_str(), Some("/tmp/d.pid"));
    }

    #[test]
    fn stop_timeout_is_a_duration() {
        let cli = parse_from(&["d", "stop"]).unwrap();
        let timeout = Duration::from_secs(30);
        assert_eq!(cli.daemon.command, Some(ControlCommand::Stop { timeout }));
        let cli = parse_from(&["d", "stop", "--timeout", "500ms"]).unwrap();
        let timeout = Duration::from_millis(500);
        assert_eq!(cli.daemon.command, Some(ControlCommand::Stop { timeout }));
    }

    #[test]
    fn bad_time_options_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["d", "--interval", "-1"][..], "--interval"),
            (&["d", "--interval=nan"], "--interval"),
            (&["d", "--interval", "soon"], "--interval"),
            (&["d", "--shutdown-timeout", "0"], "--shutdown-timeout"),
            (&["d", "--restart-after", "0s"], "--restart-after"),
            (&["d", "--min-runtime=-3"], "--min-runtime"),
            (&["d", "stop", "--timeout", "0"], "--timeout"),
        ] {
            let err = parse_from(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
            assert_eq!(report("d", Err::<Cli, _>(err)).err(), Some(ExitCode::Usage));
        }
    }

    #[test]
    fn privilege_flags_parse() {
        let cli = parse_from(&[
            "d",
            "--user",
            "nobody",
            "--group",
            "nogroup",
            "--umask",
            "027",
            "--chdir",
            "/srv",
            "--chroot",
            "/jail",
            "--core-dumps",
        ])
        .unwrap();
        let a = cli.daemon;
        assert_eq!(a.user.as_deref(), Some("nobody"));
        assert_eq!(a.group.as_deref(), Some("nogroup"));
        assert_eq!(a.umask, Some(0o027));
        assert_eq!(a.chdir.unwrap().to_str(), Some("/srv"));
        assert_eq!(a.chroot.unwrap().to_str(), Some("/jail"));
        assert!(a.core_dumps);
        let bad = parse_from(&["d", "--umask", "999"]);
        assert_eq!(report("d", bad).err(), Some(ExitCode::Usage));
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let parsed = parse_from(&["d", "--nope"]);
        assert_eq!(report("d", parsed).err(), Some(ExitCode::Usage));
    }
}
