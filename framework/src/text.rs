//! Text from other processes made safe to print: a log line or a terminal
//! must show what a child or a daemon sent, never obey it.

use std::borrow::Cow;
use std::io::Write;

/// Writes `text` to stdout. A reader that left early (`status --json |
/// head -1`) is no error: nobody is left to tell, and `println!` would
/// panic. Any other failure (a full disk) is returned.
pub(crate) fn to_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Terminal control characters: C0 and C1 controls, DEL, and the Unicode
/// bidirectional controls that reorder what a terminal shows.
fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every terminal control character replaced by a visible escape
/// (`\n`, `\r`, `\t`, else `\u{1b}`-style), so it stays on one line and can
/// neither move the cursor, clear a screen nor forge lines.
pub(crate) fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hostile(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape_controls("plain text"), Cow::Borrowed("plain text"));
        assert_eq!(
            escape_controls("a\nb\r\t\u{1b}[2J\u{9b}\u{202e}"),
            "a\\nb\\r\\t\\u{1b}[2J\\u{9b}\\u{202e}"
        );
    }
}
