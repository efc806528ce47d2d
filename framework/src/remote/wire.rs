//! What travels over NATS between callers and hosts, and on which subjects.
//!
//! - A call is published to `<prefix>.<worker>` (queue group of the same
//!   name: one host of the group gets it) or to one host's direct subject
//!   `<prefix>._host.<host>.<worker>` (a retry that must land elsewhere).
//!   Its reply subject is `<inbox>.<id>`: the caller's inbox and the
//!   attempt's id.
//! - The host answers on that reply subject; it sends heartbeats and
//!   "running" notices to `<inbox>.c`, and presence to `<inbox>.p`.
//! - A caller looks for hosts on `<prefix>._ping.<worker>` (every host
//!   answers, no queue group); a host syncs with the server through its own
//!   `<prefix>._sync.<host>`.
//!
//! A call's payload is a 12-byte head (magic, version, the worker's schema
//! hash, the method's index) and the arguments exactly as a local pool
//! encodes them; an answer is a head, the host's name and either the
//! method's encoded result or the encoded `WorkerError`. So a host hands
//! the bytes to its pool and back without decoding the user's types.

use crate::worker::{WorkerError, WorkerMethods};
use serde::{Deserialize, Serialize};

const CALL_MAGIC: u8 = 0xD7;
const ANSWER_MAGIC: u8 = 0xDA;
const VERSION: u8 = 1;
/// Bytes before a call's arguments.
pub(crate) const CALL_HEAD: usize = 12;

/// A payload that is not ours, or of another version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {why}")]
pub(crate) struct WireError {
    what: &'static str,
    why: String,
}

fn wire_error(what: &'static str, why: impl Into<String>) -> WireError {
    WireError {
        what,
        why: why.into(),
    }
}

/// A stable hash of a worker's name and methods: a host refuses a call
/// from a caller built with another method list (indices would not match).
pub(crate) fn schema<W: WorkerMethods>() -> u64 {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0u8]) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(W::NAME.as_bytes());
    for method in W::METHODS {
        eat(method.as_bytes());
    }
    hash
}

/// A call's payload.
pub(crate) fn encode_call(schema: u64, method: u16, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CALL_HEAD + args.len());
    out.extend_from_slice(&[CALL_MAGIC, VERSION]);
    out.extend_from_slice(&schema.to_le_bytes());
    out.extend_from_slice(&method.to_le_bytes());
    out.extend_from_slice(args);
    out
}

/// A call's schema hash and method index; its arguments follow the head.
pub(crate) fn decode_call_head(payload: &[u8]) -> Result<(u64, u16), WireError> {
    let head = payload
        .get(..CALL_HEAD)
        .ok_or_else(|| wire_error("call", format!("{} bytes", payload.len())))?;
    if head[0] != CALL_MAGIC || head[1] != VERSION {
        return Err(wire_error(
            "call",
            format!("magic {:#x} version {}", head[0], head[1]),
        ));
    }
    let mut schema = [0u8; 8];
    schema.copy_from_slice(&head[2..10]);
    Ok((
        u64::from_le_bytes(schema),
        u16::from_le_bytes([head[10], head[11]]),
    ))
}

/// An answer's payload: `host` (at most 255 bytes, see [`host_token`]) and
/// the outcome.
pub(crate) fn encode_answer(host: &str, outcome: &Result<Vec<u8>, WorkerError>) -> Vec<u8> {
    let host = &host.as_bytes()[..host.len().min(255)];
    let body_len = match outcome {
        Ok(bytes) => bytes.len(),
        Err(_) => 64,
    };
    let mut out = Vec::with_capacity(4 + host.len() + body_len);
    out.extend_from_slice(&[ANSWER_MAGIC, VERSION, u8::from(outcome.is_err())]);
    out.push(host.len() as u8);
    out.extend_from_slice(host);
    match outcome {
        Ok(bytes) => out.extend_from_slice(bytes),
        Err(e) => {
            // An error that cannot be encoded still travels, as a protocol error.
            let encoded = rmp_serde::to_vec(e).or_else(|_| {
                rmp_serde::to_vec(&WorkerError::Protocol(format!("unencodable error: {e}")))
            });
            out.extend_from_slice(&encoded.unwrap_or_default());
        }
    }
    out
}

/// The answering host and the outcome; an `Ok` outcome is the range of
/// the payload that holds the method's encoded result.
pub(crate) fn decode_answer(
    payload: &[u8],
) -> Result<(&str, Result<std::ops::Range<usize>, WorkerError>), WireError> {
    let [magic, version, failed, host_len, ..] = *payload else {
        return Err(wire_error("answer", format!("{} bytes", payload.len())));
    };
    if magic != ANSWER_MAGIC || version != VERSION {
        return Err(wire_error(
            "answer",
            format!("magic {magic:#x} version {version}"),
        ));
    }
    let body = 4 + usize::from(host_len);
    let host = payload
        .get(4..body)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| wire_error("answer", "bad host name"))?;
    let outcome = match failed {
        0 => Ok(body..payload.len()),
        _ => Err(rmp_serde::from_slice::<WorkerError>(&payload[body..])
            .map_err(|e| wire_error("answer", format!("error does not decode: {e}")))?),
    };
    Ok((host, outcome))
}

/// What hosts tell callers besides answers (on `<inbox>.c` and `<inbox>.p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Notice {
    /// Sent every heartbeat interval to each caller the host holds calls
    /// of: the calls it holds but promised not to start before saying so
    /// (`queued`), and those it may have started (`running`).
    Heartbeat {
        host: String,
        interval_ms: u64,
        queued: Vec<u64>,
        running: Vec<u64>,
    },
    /// These calls, once listed as queued, may start now.
    Running { host: String, ids: Vec<u64> },
    /// The host serves the worker (an answer to a ping).
    Presence { host: String },
}

pub(crate) fn encode_notice(notice: &Notice) -> Vec<u8> {
    // Strings and integers only: encoding cannot fail.
    rmp_serde::to_vec(notice).unwrap_or_default()
}

pub(crate) fn decode_notice(payload: &[u8]) -> Result<Notice, WireError> {
    rmp_serde::from_slice(payload).map_err(|e| wire_error("notice", e.to_string()))
}

/// `name` as one subject token: characters NATS gives a meaning to
/// (`.`, `*`, `>`, whitespace) and anything outside `[A-Za-z0-9_-]`
/// become `_`; at most 64 bytes; never empty.
pub(crate) fn host_token(name: &str) -> String {
    let token: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if token.is_empty() {
        "host".into()
    } else {
        token
    }
}

/// A worker's stable name (`crate::module::Type`) as subject tokens
/// (`crate.module.Type`).
pub(crate) fn worker_tokens(name: &str) -> String {
    let tokens: Vec<String> = name
        .split("::")
        .filter(|t| !t.is_empty())
        .map(host_token)
        .collect();
    tokens.join(".")
}

/// The subjects of one worker type under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subjects {
    /// Calls, and the queue group hosts share them in.
    pub calls: String,
    /// Callers looking for hosts.
    pub ping: String,
    prefix: String,
    worker: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str, worker_name: &str) -> Self {
        let worker = worker_tokens(worker_name);
        Self {
            calls: format!("{prefix}.{worker}"),
            ping: format!("{prefix}._ping.{worker}"),
            prefix: prefix.to_string(),
            worker,
        }
    }

    /// One host's own subject for this worker.
    pub(crate) fn direct(&self, host: &str) -> String {
        format!("{}._host.{host}.{}", self.prefix, self.worker)
    }
}

/// A host's subject for syncing with the server.
pub(crate) fn sync_subject(prefix: &str, host: &str) -> String {
    format!("{prefix}._sync.{host}")
}

/// A prefix is one or more subject tokens.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| !c.is_whitespace() && c != '*' && c != '>')
        })
}

/// Where a message to a caller's inbox belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboxTail {
    /// The answer to attempt `id` (or the server's "no responders" for it).
    Answer(u64),
    /// A heartbeat or notice.
    Notice,
    /// A host's presence.
    Presence,
    Other,
}

pub(crate) fn inbox_tail(subject: &str) -> InboxTail {
    match subject.rsplit_once('.').map(|(_, tail)| tail) {
        Some("c") => InboxTail::Notice,
        Some("p") => InboxTail::Presence,
        Some(tail) => tail
            .parse()
            .map(InboxTail::Answer)
            .unwrap_or(InboxTail::Other),
        None => InboxTail::Other,
    }
}

/// The caller's inbox of a reply subject (`<inbox>.<id>`), and the id.
pub(crate) fn split_reply(reply: &str) -> Option<(&str, u64)> {
    let (inbox, id) = reply.rsplit_once('.')?;
    Some((inbox, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ExitStatus;

    #[test]
    fn a_call_keeps_its_arguments_untouched() {
        let payload = encode_call(0xfeed, 7, b"args");
        assert_eq!(decode_call_head(&payload), Ok((0xfeed, 7)));
        assert_eq!(&payload[CALL_HEAD..], b"args");
        assert!(decode_call_head(b"short").is_err());
        let mut other = payload.clone();
        other[1] = 9;
        assert!(decode_call_head(&other).is_err(), "another version");
    }

    #[test]
    fn answers_carry_results_and_typed_errors_unchanged() {
        let ok = encode_answer("h1", &Ok(b"result".to_vec()));
        let (host, outcome) = decode_answer(&ok).unwrap();
        assert_eq!(host, "h1");
        assert_eq!(&ok[outcome.unwrap()], b"result");
        for error in [
            WorkerError::Died {
                pid: 42,
                exit: ExitStatus::Signaled {
                    signal: 9,
                    core_dumped: false,
                },
            },
            WorkerError::Busy {
                queued: 3,
                queued_bytes: 99,
            },
            WorkerError::Panicked {
                message: "boom".into(),
            },
        ] {
            let bytes = encode_answer("h2", &Err(error.clone()));
            let (host, outcome) = decode_answer(&bytes).unwrap();
            assert_eq!((host, outcome), ("h2", Err(error)));
        }
        assert!(decode_answer(&[ANSWER_MAGIC, VERSION, 0, 9, b'x']).is_err());
    }

    #[test]
    fn names_become_valid_subject_tokens() {
        assert_eq!(host_token("web-1.example.org"), "web-1_example_org");
        assert_eq!(host_token("a b*>c"), "a_b__c");
        assert_eq!(host_token(""), "host");
        assert_eq!(worker_tokens("my_app::jobs::Hasher"), "my_app.jobs.Hasher");
        let s = Subjects::new("svc", "app::Hasher");
        assert_eq!(s.calls, "svc.app.Hasher");
        assert_eq!(s.ping, "svc._ping.app.Hasher");
        assert_eq!(s.direct("h1"), "svc._host.h1.app.Hasher");
        assert_eq!(sync_subject("svc", "h1"), "svc._sync.h1");
        assert!(valid_prefix("a.b") && !valid_prefix("a..b") && !valid_prefix("a.*"));
    }

    #[test]
    fn inbox_subjects_split() {
        assert_eq!(inbox_tail("_INBOX.x.17"), InboxTail::Answer(17));
        assert_eq!(inbox_tail("_INBOX.x.c"), InboxTail::Notice);
        assert_eq!(inbox_tail("_INBOX.x.p"), InboxTail::Presence);
        assert_eq!(inbox_tail("_INBOX.x.zz"), InboxTail::Other);
        assert_eq!(split_reply("_INBOX.x.17"), Some(("_INBOX.x", 17)));
        assert_eq!(split_reply("nodots"), None);
    }

    #[test]
    fn notices_round_trip() {
        let n = Notice::Heartbeat {
            host: "h".into(),
            interval_ms: 200,
            queued: vec![1, 2],
            running: vec![3],
        };
        assert_eq!(decode_notice(&encode_notice(&n)), Ok(n));
        assert!(decode_notice(b"\xff").is_err());
    }
}
