//! Lines for the systemd journal: when stderr is connected to journald
//! (`JOURNAL_STREAM` names the stream's device and inode), each line written
//! to stderr starts with its syslog priority (`<3>` for errors, ...), which
//! journald strips and records, so `journalctl -p err` finds the errors.
//! The log file never gets these prefixes.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// Whether stderr is the journal's stream (checked once per process: a
/// process's stderr does not change under it).
fn stderr_is_journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let Some(expected) = std::env::var("JOURNAL_STREAM")
            .ok()
            .and_then(|v| parse_stream(&v))
        else {
            return false;
        };
        // fstat on fd 2 through /proc would follow a path; this is the descriptor itself.
        let file = std::mem::ManuallyDrop::new(
            // SAFETY: fd 2 stays open; ManuallyDrop never closes it.
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(2) },
        );
        file.metadata()
            .is_ok_and(|m| (m.dev(), m.ino()) == expected)
    })
}

/// `JOURNAL_STREAM`'s `DEVICE:INODE`.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority prefix for a formatted log line
/// (`<time> [<pids> <role>] LEVEL message`), `None` if it has no level.
fn priority(line: &[u8]) -> Option<&'static [u8]> {
    let start = line.windows(2).position(|w| w == b"] ")? + 2;
    let level = line.get(start..start + 5)?;
    Some(match level {
        b"ERROR" => b"<3>",
        b"WARN " => b"<4>",
        b"INFO " => b"<6>",
        b"DEBUG" | b"TRACE" => b"<7>",
        _ => return None,
    })
}

/// Writes one finished line to stderr with a single `write(2)`, prefixed
/// with its priority when stderr is the journal.
pub(super) fn write_stderr(line: &[u8]) {
    let prefix = if stderr_is_journal() {
        priority(line)
    } else {
        None
    };
    let mut stderr = io::stderr().lock();
    let _ = match prefix {
        Some(prefix) => stderr.write_all(&[prefix, line].concat()),
        None => stderr.write_all(line),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_the_level() {
        let line = |level: &str| format!("2026-12-09T10:14:03.120Z [1/2 main] {level} hello\n");
        assert_eq!(priority(line("ERROR").as_bytes()), Some(&b"<3>"[..]));
        assert_eq!(priority(line("WARN ").as_bytes()), Some(&b"<4>"[..]));
        assert_eq!(priority(line("INFO ").as_bytes()), Some(&b"<6>"[..]));
        assert_eq!(priority(line("DEBUG").as_bytes()), Some(&b"<7>"[..]));
        assert_eq!(priority(line("TRACE").as_bytes()), Some(&b"<7>"[..]));
        // A role with "] " in a message does not matter: the first one counts.
        assert_eq!(
            priority(b"2026-12-09T10:14:03.120Z [1/2 worker:a] ERROR x] INFO  y\n"),
            Some(&b"<3>"[..])
        );
        assert_eq!(priority(b"no level here\n"), None);
        assert_eq!(priority(b"t [1/2 main] NOTE  x\n"), None);
    }

    #[test]
    fn journal_stream_parses() {
        assert_eq!(parse_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_stream(" 8:1\n"), Some((8, 1)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("a:1"), None);
    }
}
