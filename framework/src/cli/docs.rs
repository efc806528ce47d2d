//! `completions SHELL` and `man`: a shell completion script and a man page,
//! generated from the same clap definition that parses the command line (the
//! daemon's own flags included).

use super::{NoArgs, Program};
use crate::error::ExitCode;
use clap::Command;
use parking_lot::Mutex;
use std::io::Write;

/// The command line as it was parsed (with the daemon's name, version and
/// own flags).
static COMMAND: Mutex<Option<Command>> = Mutex::new(None);

/// Keeps the parser's definition for [`completions`] and [`man`].
pub(crate) fn remember(command: &Command) {
    *COMMAND.lock() = Some(command.clone());
}

/// The parsed definition, or the standard flags when the daemon's arguments
/// were not parsed by a [`Program`].
fn command(name: &str) -> Command {
    COMMAND
        .lock()
        .clone()
        .unwrap_or_else(|| Program::new(name).command::<NoArgs>())
        .name(name.to_string())
        .bin_name(name.to_string())
}

fn print(name: &str, what: &str, bytes: &[u8]) -> ExitCode {
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("{name}: error: cannot write the {what}: {e}");
            ExitCode::Software
        }
    }
}

/// Prints the completion script for `shell`.
pub(crate) fn completions(name: &str, shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(name), name, &mut script);
    print(name, "completion script", &script)
}

/// Prints the man page (roff, section 1).
pub(crate) fn man(name: &str) -> ExitCode {
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(command(name)).render(&mut page) {
        eprintln!("{name}: error: cannot render the man page: {e}");
        return ExitCode::Software;
    }
    print(name, "man page", &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_and_completions_name_the_flags() {
        let mut page = Vec::new();
        clap_mangen::Man::new(command("mydaemon"))
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains(".TH mydaemon 1"), "{page}");
        assert!(page.contains("pidfile"), "{page}");
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command("mydaemon"),
            "mydaemon",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("--pidfile") && script.contains("_mydaemon()"));
    }
}
