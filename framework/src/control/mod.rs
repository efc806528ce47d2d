//! The control channel: a unix socket through which the same binary's
//! `status` and `stop` subcommands talk to the running daemon.
//!
//! The socket is private: mode 0600 from the moment it exists (set on the
//! socket before `bind`, never by path afterwards), inside a directory of
//! mode 0700 owned by the daemon's user — next to the pid file when there is
//! one (`<dir>/.<name>.control/control.sock`), else under `$XDG_RUNTIME_DIR`
//! (`$XDG_RUNTIME_DIR/daemonic/<name>/control.sock`), else
//! `/run/daemonic/<name>/control.sock` for root and
//! `/tmp/daemonic-<uid>/<name>/control.sock` for other users (root never
//! uses `/tmp`). Every directory level the framework creates or reuses is
//! checked (`control/dir.rs`); the daemon refuses to start on an unsafe one.
//!
//! Both ends check the other: the daemon serves only peers running as its
//! own user or root (`SO_PEERCRED`), and a client talks only to a daemon
//! running as its own user, root, or the `--user` it was given. A request is
//! one line (`status` or `stop`); the answer is one line of JSON.

pub(crate) mod client;
mod dir;
pub(crate) mod server;

pub(crate) use dir::{Location, Trusted};

use serde::{Deserialize, Serialize};

/// Answers on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Status(Box<crate::Stats>),
    Stopping {
        pid: i32,
    },
    Error(String),
    /// The client's user may not use this daemon's control channel.
    Refused(String),
}

/// Longest request line the daemon reads from a client.
pub(crate) const MAX_REQUEST: u64 = 256;

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    Status,
    Stop,
    /// Anything else (answered with an error naming it).
    Unknown(String),
}

/// Decodes the bytes a client sent (its first line, at most
/// [`MAX_REQUEST`] bytes); `None` if they are not UTF-8 (the connection is
/// then closed without an answer).
pub(crate) fn parse_request(line: &[u8]) -> Option<Request> {
    let line = std::str::from_utf8(line).ok()?;
    Some(match line.trim() {
        "status" => Request::Status,
        "stop" => Request::Stop,
        other => Request::Unknown(other.to_string()),
    })
}

/// Decodes the daemon's one-line answer.
pub(crate) fn decode_reply(answer: &str) -> serde_json::Result<Reply> {
    serde_json::from_str(answer)
}
