//! The command line every daemon built with daemonic shares.
//!
//! A daemon with flags of its own flattens [`DaemonArgs`] into its parser:
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

pub(crate) mod docs;

use crate::error::ExitCode;
use clap::{Args, CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

/// Commands that run instead of starting the daemon: they talk to a running
/// one, or print its documentation.
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
        /// Seconds to wait.
        #[arg(long, default_value_t = 30.0, value_name = "SECS")]
        timeout: f64,
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
    /// Seconds between the starts of two loop ticks (fractional; 0 = as fast as possible).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub interval: Option<f64>,
    /// Seconds a graceful shutdown may take before the daemon stops anyway.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub shutdown_timeout: Option<f64>,
    /// Restart gracefully (re-exec, same arguments) after running this many seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub restart_after: Option<f64>,
    /// A fatal error within this many seconds of start exits instead of restarting (default 10).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub min_runtime: Option<f64>,
    /// Serve Prometheus /metrics, a status page (/) and /status.json on ADDR: PORT or :PORT (127.0.0.1), or HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// No extra flags.
#[derive(Debug, Clone, Default, Args)]
pub struct NoArgs {}

/// The standard command line plus a daemon's own flags `A`.
#[derive(Debug, Parser)]
pub struct Cli<A: Args = NoArgs> {
    /// The standard flags.
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The daemon's own flags.
    #[command(flatten)]
    pub app: A,
}

/// Parses the process's arguments into `P`. `--help` and `--version` print
/// and return `Err(ExitCode::Ok)`; a bad command line prints one line naming
/// the problem and returns `Err(ExitCode::Usage)`.
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

pub(crate) fn parse_daemon_args(
    name: &str,
    version: Option<String>,
    about: Option<String>,
) -> Result<DaemonArgs, ExitCode> {
    let mut command = Cli::<NoArgs>::command().name(name.to_string());
    if let Some(v) = version {
        command = command.version(v);
    }
    if let Some(a) = about {
        command = command.about(a);
    }
    docs::remember(&command);
    let parsed = command
        .try_get_matches()
        .and_then(|m| Cli::<NoArgs>::from_arg_matches(&m));
    report(name, parsed).map(|cli| cli.daemon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let cli = Cli::<NoArgs>::try_parse_from([
            "d",
            "--daemon",
            "--pidfile",
            "/tmp/d.pid",
            "--log-file=/tmp/d.log",
            "-vv",
            "--debug",
            "--interval",
            "0.25",
        ])
        .unwrap();
        let a = cli.daemon;
        assert!(a.daemon);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.debug, Some(1));
        assert_eq!(a.interval, Some(0.25));
        assert_eq!(a.pidfile.unwrap().to_str(), Some("/tmp/d.pid"));
    }

    #[test]
    fn negative_interval_parses_and_is_rejected_later() {
        let cli = Cli::<NoArgs>::try_parse_from(["d", "--interval", "-1"]).unwrap();
        assert_eq!(cli.daemon.interval, Some(-1.0));
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let parsed = Cli::<NoArgs>::try_parse_from(["d", "--nope"]);
        assert_eq!(report("d", parsed).err(), Some(ExitCode::Usage));
    }
}
