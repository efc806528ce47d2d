//! The one place a daemon's command line is built and parsed, whether
//! [`DaemonBuilder::main`](crate::DaemonBuilder::main) parses it or the
//! daemon does (to read flags of its own first), so both show the same
//! `--help`.

use super::{report, Cli, DaemonArgs};
use crate::error::ExitCode;
use clap::{Args, FromArgMatches};
use std::ffi::OsString;

/// What a daemon's `--help` and `--version` say, and the name it runs under
/// (log lines, process titles, the control socket).
///
/// A daemon with flags of its own parses its command line with a `Program`
/// and hands the standard part to the builder, which then runs under the
/// program's name, version and description:
///
/// ```no_run
/// use daemonic::cli::Program;
/// use daemonic::{Daemon, DaemonBuilder, LoopContext};
///
/// #[derive(clap::Args)]
/// struct QueueArgs {
///     /// Queue to consume.
///     #[arg(long, default_value = "jobs")]
///     queue: String,
/// }
///
/// struct Consumer(String);
/// impl Daemon for Consumer {
///     fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
///         ctx.log(format_args!("polling {}", self.0));
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     let program = Program::new("consumer")
///         .version(env!("CARGO_PKG_VERSION"))
///         .about("Consumes a queue.");
///     let cli = match program.parse::<QueueArgs>() {
///         Ok(cli) => cli,
///         Err(code) => return code.into(),
///     };
///     DaemonBuilder::new(Consumer(cli.app.queue)).args(&cli.daemon).run()
/// }
/// ```
///
/// [`DaemonBuilder::main`](crate::DaemonBuilder::main) does the same with
/// the builder's [`name`](crate::DaemonBuilder::name),
/// [`version`](crate::DaemonBuilder::version) and
/// [`about`](crate::DaemonBuilder::about) and no flags of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub(crate) name: String,
    pub(crate) version: Option<String>,
    pub(crate) about: Option<String>,
}

impl Default for Program {
    /// Named after the running binary, without version or description.
    fn default() -> Self {
        Self::new(binary_name())
    }
}

impl Program {
    /// A program called `name`, without version or description.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: None,
            about: None,
        }
    }

    /// The version `--version` prints (e.g. `env!("CARGO_PKG_VERSION")`);
    /// without one there is no `--version` flag.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The description `--help` starts with.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line: the standard flags and subcommands, then `A`'s
    /// flags, under this program's name, version and description.
    pub fn command<A: Args>(&self) -> clap::Command {
        let command = A::augment_args(DaemonArgs::augment_args(clap::Command::new("")));
        // Last: a flattened struct's doc comment (and `#[command(..)]`)
        // replaces the command's description, so `A`'s must not win.
        let command = command
            .name(self.name.clone())
            .long_version(None::<&str>)
            .long_about(None::<&str>);
        let command = match &self.version {
            Some(version) => command.version(version.clone()),
            None => command.version(None::<&str>),
        };
        match &self.about {
            Some(about) => command.about(about.clone()),
            None => command.about(None::<&str>),
        }
    }

    /// Parses the process's arguments. `--help` and `--version` print and
    /// return `Err(ExitCode::Ok)`; a bad command line prints one line naming
    /// the problem and returns `Err(ExitCode::Usage)`.
    pub fn parse<A: Args>(&self) -> Result<Cli<A>, ExitCode> {
        report(&self.name, self.try_parse_from(std::env::args_os()))
    }

    /// Parses `args` (the first is the binary's path, as in `argv`).
    pub fn try_parse_from<A, I, T>(&self, args: I) -> Result<Cli<A>, clap::Error>
    where
        A: Args,
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = self.command::<A>();
        // `completions` and `man` describe this very parser.
        super::docs::remember(&command);
        let matches = command.try_get_matches_from_mut(args)?;
        let mut daemon =
            DaemonArgs::from_arg_matches(&matches).map_err(|e| e.format(&mut command.clone()))?;
        let app = A::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        daemon.program = Some(self.clone());
        Ok(Cli { daemon, app })
    }
}

/// The running binary's file name (`daemon` if there is none).
fn binary_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|arg| {
            std::path::Path::new(&arg)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "daemon".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::NoArgs;

    /// A doc comment that must not become the program's description.
    ///
    /// Nor its long description.
    #[derive(Debug, clap::Args)]
    struct Extra {
        /// Queue to consume.
        #[arg(long, default_value = "jobs")]
        queue: String,
    }

    fn program() -> Program {
        Program::new("mydaemon")
            .version("1.2.3")
            .about("Consumes a queue.")
    }

    fn help<A: Args>(program: &Program) -> String {
        program.command::<A>().render_help().to_string()
    }

    #[test]
    fn help_shows_name_version_about_and_every_flag() {
        let text = help::<Extra>(&program());
        assert!(text.starts_with("Consumes a queue.\n"), "{text}");
        let long = program().command::<Extra>().render_long_help().to_string();
        assert!(long.starts_with("Consumes a queue.\n"), "{long}");
        for needle in [
            "Usage: mydaemon [OPTIONS] [COMMAND]",
            "status",
            "stop",
            "--daemon",
            "--interval <DURATION>",
            "--queue <QUEUE>",
            "Queue to consume [default: jobs]",
            "-V, --version",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
        assert_eq!(
            program().command::<Extra>().render_version().to_string(),
            "mydaemon 1.2.3\n"
        );
    }

    /// The daemon's own flags are added to the standard help, which is
    /// otherwise unchanged.
    #[test]
    fn own_flags_extend_the_standard_help() {
        let standard = help::<NoArgs>(&program());
        let extended = help::<Extra>(&program());
        let mut extended_lines = extended.lines();
        for line in standard.lines() {
            assert!(
                extended_lines.any(|l| l == line),
                "{line:?} missing or out of order in:\n{extended}"
            );
        }
        assert!(!standard.contains("--queue"));
    }

    #[test]
    fn no_version_no_version_flag_and_no_about_no_description() {
        let text = help::<Extra>(&Program::new("d"));
        assert!(!text.contains("--version"), "{text}");
        assert!(text.starts_with("Usage: d "), "{text}");
        let err = Program::new("d")
            .try_parse_from::<NoArgs, _, _>(["d", "--version"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn parse_fills_both_parts_and_remembers_the_program() {
        let cli: Cli<Extra> = program()
            .try_parse_from(["x", "--queue", "mail", "--interval", "2"])
            .unwrap();
        assert_eq!(cli.app.queue, "mail");
        assert_eq!(cli.daemon.interval, Some(std::time::Duration::from_secs(2)));
        assert_eq!(cli.daemon.program(), Some(&program()));
    }

    #[test]
    fn help_and_version_are_reported_not_parsed() {
        for (arg, kind) in [
            ("--help", clap::error::ErrorKind::DisplayHelp),
            ("--version", clap::error::ErrorKind::DisplayVersion),
        ] {
            let err = program()
                .try_parse_from::<Extra, _, _>(["x", arg])
                .unwrap_err();
            assert_eq!(err.kind(), kind);
        }
    }
}
