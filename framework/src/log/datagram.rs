//! The datagrams children send their log lines in, and the line the daemon
//! writes for each one. Pure functions: the receiving thread and the fuzz
//! tests call them the same way.
//!
//! A datagram is a header and the text of one line, or of one part of a long
//! line:
//!
//! ```text
//! [0]       version (1)
//! [1]       flags: bit 0 = the line continues in the next datagram
//! [2..6]    lines this child dropped since its last delivered datagram (u32 LE)
//! [6]       length of the role the child declares (at most 64 bytes)
//! [7..]     the role, then the text ("INFO  message k=v"), UTF-8
//! ```
//!
//! The daemon never takes the pid, the time or (when it knows the child) the
//! role from these bytes: it stamps each line with the sender's pid from the
//! socket's credentials, its own clock, and the role it registered for that
//! pid. A declared role is used only for a pid the daemon has not registered,
//! and never `main`.

use std::borrow::Cow;

const VERSION: u8 = 1;
const FLAG_MORE: u8 = 1;
const HEADER: usize = 7;
/// Longest role a child may declare.
pub(crate) const MAX_ROLE: usize = 64;
/// Longest text per datagram: longer lines are sent in parts of this size
/// (well below the socket's datagram limit, which is about 200 KiB).
pub(crate) const MAX_TEXT: usize = 32 * 1024;
/// Receive buffer: any datagram a well-behaved child sends fits.
pub(crate) const MAX_DATAGRAM: usize = HEADER + MAX_ROLE + MAX_TEXT;
/// Role shown for a child the daemon does not know and that declared no
/// acceptable role.
pub(crate) const UNKNOWN_ROLE: &str = "child";
/// Appended to a part of a line that continues in the next line.
pub(crate) const CONTINUES: &str = " [continues]";

/// A decoded datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Datagram<'a> {
    pub declared_role: &'a str,
    pub dropped: u32,
    pub more: bool,
    pub text: Cow<'a, str>,
}

/// Encodes one part of a line.
pub(crate) fn encode(role: &str, dropped: u32, more: bool, text: &str, out: &mut Vec<u8>) {
    let role = truncate(role, MAX_ROLE);
    out.clear();
    out.push(VERSION);
    out.push(if more { FLAG_MORE } else { 0 });
    out.extend_from_slice(&dropped.to_le_bytes());
    out.push(role.len() as u8);
    out.extend_from_slice(role.as_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Decodes a datagram; `None` if it is not one (a child writing raw bytes to
/// its log socket: the daemon still writes them, marked as malformed).
pub(crate) fn decode(bytes: &[u8]) -> Option<Datagram<'_>> {
    let [version, flags, d0, d1, d2, d3, role_len, rest @ ..] = bytes else {
        return None;
    };
    if *version != VERSION || usize::from(*role_len) > MAX_ROLE {
        return None;
    }
    let role = rest.get(..usize::from(*role_len))?;
    let text = &rest[role.len()..];
    Some(Datagram {
        declared_role: std::str::from_utf8(role).ok()?,
        dropped: u32::from_le_bytes([*d0, *d1, *d2, *d3]),
        more: flags & FLAG_MORE != 0,
        text: String::from_utf8_lossy(text),
    })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits `text` into parts of at most [`MAX_TEXT`] bytes on character
/// boundaries (an empty text is one empty part).
pub(crate) fn parts(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let part = truncate(current, MAX_TEXT);
        let part = if part.is_empty() && !current.is_empty() {
            // A single character longer than MAX_TEXT cannot exist; keep the
            // iterator finite anyway.
            current
        } else {
            part
        };
        let left = &current[part.len()..];
        rest = (!left.is_empty()).then_some(left);
        Some(part)
    })
}

/// The role to stamp: the one the daemon registered for the pid, else the
/// declared one if it is plausible and not `main`.
pub(crate) fn role<'a>(registered: Option<&'a str>, declared: &'a str) -> &'a str {
    if let Some(role) = registered {
        return role;
    }
    let plausible = !declared.is_empty()
        && declared != "main"
        && declared
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '[' && c != ']');
    if plausible {
        declared
    } else {
        UNKNOWN_ROLE
    }
}

/// The line the daemon writes for a child's datagram, newline included.
/// `text` is escaped: a child's newlines and terminal controls stay inside
/// its one line.
pub(crate) fn render(
    now: std::time::SystemTime,
    daemon_pid: i32,
    pid: i32,
    role: &str,
    text: &str,
    more: bool,
) -> String {
    let text = crate::text::escape_controls(text);
    let mut line = format!(
        "{} [{daemon_pid}/{pid} {role}] {text}",
        humantime::format_rfc3339_millis(now)
    );
    if more {
        line.push_str(CONTINUES);
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_round_trips() {
        let mut buf = Vec::new();
        encode("worker:hasher", 3, true, "INFO  héllo", &mut buf);
        assert_eq!(
            decode(&buf),
            Some(Datagram {
                declared_role: "worker:hasher",
                dropped: 3,
                more: true,
                text: "INFO  héllo".into(),
            })
        );
    }

    #[test]
    fn raw_bytes_are_not_a_datagram() {
        assert_eq!(decode(b"2026-01-01T00:00:00.000Z [1/1 main] INFO x"), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0, 200]), None, "role too long");
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0, 5, b'a']), None, "role cut short");
    }

    #[test]
    fn a_child_cannot_be_main() {
        assert_eq!(role(None, "main"), UNKNOWN_ROLE);
        assert_eq!(role(None, "worker:x] [1/1 main"), UNKNOWN_ROLE);
        assert_eq!(role(None, ""), UNKNOWN_ROLE);
        assert_eq!(role(None, "task:send"), "task:send");
        assert_eq!(role(Some("worker:real"), "main"), "worker:real");
        assert_eq!(role(Some("worker:real"), "task:other"), "worker:real");
    }

    #[test]
    fn a_line_stays_one_line() {
        let line = render(
            std::time::UNIX_EPOCH,
            1,
            2,
            "worker:x",
            "INFO  a\n1970-01-01T00:00:00.000Z [1/1 main] INFO  b\u{1b}[2J",
            false,
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000Z [1/2 worker:x] INFO  a\\n1970-01-01T00:00:00.000Z [1/1 main] INFO  b\\u{1b}[2J\n"
        );
        assert!(render(std::time::UNIX_EPOCH, 1, 2, "r", "x", true).ends_with(" [continues]\n"));
    }

    #[test]
    fn long_text_is_split_on_character_boundaries() {
        let text = "é".repeat(MAX_TEXT); // 2 bytes each
        let parts: Vec<&str> = parts(&text).collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= MAX_TEXT));
        assert_eq!(parts.concat(), text);
        assert_eq!(super::parts("").collect::<Vec<_>>(), vec![""]);
    }
}
