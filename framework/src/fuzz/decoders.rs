//! Targets for the decoders that are pure functions of bytes: stream frames,
//! the worker protocol, the spawn wire format, control requests and
//! replies, task reports and children's log datagrams. Each target panics
//! when an invariant breaks; a decoder that returns an error for bad bytes
//! is doing its job.

use crate::control::{self, Reply, Request};
use crate::ipc::frame::{self, Decoder, MAX_FRAME};
use crate::log::datagram;
use crate::log::{lines_for, Received};
use crate::process::wire::{self, Hello, SpawnReply, SpawnRequest};
use crate::task::TaskReport;
use crate::worker::protocol::{self, Bootstrap, FromChild, Outcome, ToChild};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Read};

use super::gen::Rng;

/// A reader that hands its bytes out in pieces of random sizes, with
/// `Interrupted` now and then, as a socket does.
struct Pieces<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.one_in(16) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (1 + self.rng.below(64 * 1024))
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The stream decoders of `ipc/frame.rs`: the daemon's non-blocking
/// [`Decoder`] fed in random pieces and the blocking [`frame::read_frame`]
/// must see the same frames, refuse the same oversized header, and never
/// allocate for bytes that did not arrive. The first byte seeds the split.
pub(super) fn stream_frames(data: &[u8]) {
    let (seed, stream) = match data.split_first() {
        Some((seed, stream)) => (u64::from(*seed), stream),
        None => (0, data),
    };
    // The daemon's side.
    let mut rng = Rng::new(seed);
    let mut decoder = Decoder::new();
    let mut decoded = Vec::new();
    let mut refused = false;
    let mut rest = stream;
    while !rest.is_empty() && !refused {
        let n = (1 + rng.below(rest.len().min(4096))).min(rest.len());
        decoder.read_buffer().extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        match decoder.frames() {
            Ok(frames) => decoded.extend(frames.into_iter().map(|f| f.bytes)),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                refused = true;
            }
        }
    }
    // As the socket transport's reader checks before each read.
    refused |= decoder.refused().is_some();
    // The worker's side, blocking.
    let mut reader = Pieces {
        data: stream,
        rng: Rng::new(seed ^ 0x5555),
    };
    let mut read = Vec::new();
    let mut read_refused = false;
    loop {
        match frame::read_frame(&mut reader) {
            Ok(Some(f)) => read.push(f),
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                read_refused = true;
                break;
            }
        }
    }
    assert_eq!(decoded, read, "both readers see the same frames");
    assert_eq!(refused, read_refused, "both refuse an oversized header");
    let mut again = Vec::new();
    for f in &decoded {
        assert!(f.len() <= MAX_FRAME);
        frame::push(&mut again, f).expect("a received frame is within the limit");
    }
    assert!(stream.starts_with(&again), "frames re-encode to the stream");
}

/// Encodes `value`, decodes it again and checks that nothing changed.
fn round_trip<T>(value: &T, encode: impl Fn(&T) -> Vec<u8>, decode: impl Fn(&[u8]) -> T) {
    let bytes = encode(value);
    let again = decode(&bytes);
    assert_eq!(encode(&again), bytes, "a decoded value round-trips");
}

fn rmp<T: Serialize>(value: &T) -> Vec<u8> {
    protocol::encode(value).expect("a decoded value encodes")
}

/// What a worker sends the daemon ([`FromChild`]) and, since a hostile
/// worker may send anything, the bytes as every other frame type.
pub(super) fn worker_frames(data: &[u8]) {
    if let Ok(value) = protocol::decode::<FromChild>(data) {
        if let FromChild::Reply {
            outcome: Outcome::Ok(bytes),
            ..
        } = &value
        {
            payloads(bytes);
        }
        round_trip(&value, rmp, |b| {
            // Owned: the round trip outlives `b`.
            protocol::decode::<FromChild>(b)
                .expect("re-decodes")
                .into_owned()
        });
    }
    if let Ok(value) = protocol::decode::<ToChild<'_>>(data) {
        if let ToChild::Call { args, .. } = &value {
            payloads(args);
        }
        round_trip(&value, rmp, |b| {
            // Owned: the round trip outlives `b`.
            let call: ToChild<'_> = protocol::decode(b).expect("re-decodes");
            match call {
                ToChild::Call {
                    id,
                    method,
                    args,
                    deadline,
                    attach,
                } => ToChild::Call {
                    id,
                    method,
                    args: Cow::Owned(args.into_owned()),
                    deadline,
                    attach,
                },
                ToChild::Stop => ToChild::Stop,
                ToChild::CallShared {
                    id,
                    method,
                    len,
                    deadline,
                    attach,
                } => ToChild::CallShared {
                    id,
                    method,
                    len,
                    deadline,
                    attach,
                },
            }
        });
    }
    if let Ok(value) = protocol::decode::<Bootstrap>(data) {
        round_trip(&value, rmp, |b| protocol::decode(b).expect("re-decodes"));
    }
}

/// Shapes a method's arguments and results commonly have.
#[derive(Debug, Serialize, Deserialize)]
enum Shape {
    Unit,
    Text(String),
    Numbers(Vec<i64>),
    Nested(Option<Box<Shape>>),
    Record {
        name: String,
        score: f64,
        tags: Vec<String>,
    },
}

/// A call's arguments or result, decoded the way the generated code does
/// ([`crate::worker::decode_args`]; the pool decodes results with the same
/// rmp-serde call) into several typical types.
fn payloads(bytes: &[u8]) {
    use crate::worker::decode_args as decode;
    let _ = decode::<String>(bytes);
    let _ = decode::<(u64, i64, f64, bool)>(bytes);
    let _ = decode::<Vec<String>>(bytes);
    let _ = decode::<BTreeMap<String, Vec<u32>>>(bytes);
    let _ = decode::<serde_bytes::ByteBuf>(bytes);
    let _ = decode::<Shape>(bytes);
    let _ = decode::<Vec<Shape>>(bytes);
}

/// A call's arguments or result as bytes of their own.
pub(super) fn payload(data: &[u8]) {
    payloads(data);
}

fn named<T: Serialize>(value: &T) -> Vec<u8> {
    wire::encode(value).expect("a decoded value encodes")
}

/// The fork server's messages: what the daemon sends it
/// ([`SpawnRequest`]), what it answers ([`SpawnReply`], [`Hello`]), and the
/// report a task's child leaves on its channel ([`TaskReport`]).
pub(super) fn spawn_messages(data: &[u8]) {
    if let Ok(value) = wire::decode::<SpawnRequest>(data) {
        round_trip(&value, named, |b| wire::decode(b).expect("re-decodes"));
    }
    if let Ok(value) = wire::decode::<SpawnReply>(data) {
        round_trip(&value, named, |b| wire::decode(b).expect("re-decodes"));
    }
    if let Ok(value) = wire::decode::<Hello>(data) {
        round_trip(&value, named, |b| wire::decode(b).expect("re-decodes"));
    }
    if let Some(TaskReport::Failed(message) | TaskReport::Panicked(message)) =
        crate::task::decode_report(data)
    {
        assert!(message.len() < data.len());
    }
}

/// A control client's request line, as the daemon reads it.
pub(super) fn control_request(data: &[u8]) {
    let line = &data[..data.len().min(control::MAX_REQUEST as usize)];
    match control::parse_request(line) {
        None => assert!(std::str::from_utf8(line).is_err()),
        Some(Request::Status) => assert_eq!(std::str::from_utf8(line).map(str::trim), Ok("status")),
        Some(Request::Stop) => assert_eq!(std::str::from_utf8(line).map(str::trim), Ok("stop")),
        Some(Request::Unknown(other)) => {
            assert!(other != "status" && other != "stop");
            // The daemon answers with it quoted: one line of JSON.
            let reply = serde_json::to_string(&Reply::Error(format!("unknown request {other:?}")))
                .expect("encodes");
            assert!(!reply.contains('\n'));
        }
    }
}

/// The daemon's answer as `status` and `stop` read it, and what `status`
/// prints of it: never a terminal control character.
pub(super) fn control_reply(data: &[u8]) {
    let Ok(answer) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reply) = control::decode_reply(answer) else {
        return;
    };
    let json = serde_json::to_string(&reply).expect("a decoded reply encodes");
    assert!(control::decode_reply(&json).is_ok(), "re-decodes");
    if let Reply::Status(stats) = reply {
        let shown = control::client::render(&stats);
        assert!(
            !shown.chars().any(|c| c != '\n' && hostile(c)),
            "status prints a control character: {shown:?}"
        );
    }
}

/// What `text.rs` escapes.
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A child's log datagram, as the daemon's receiving thread turns it into
/// lines: each line is one line, free of terminal controls, stamped with
/// the pid the kernel reported and never with the role `main` unless the
/// daemon registered it. The first byte says whether the datagram was cut.
pub(super) fn log_datagram(data: &[u8]) {
    let (truncated, bytes) = match data.split_first() {
        Some((flag, bytes)) => (flag & 1 == 1, bytes),
        None => (false, data),
    };
    if let Some(d) = datagram::decode(bytes) {
        assert!(d.declared_role.len() <= datagram::MAX_ROLE);
        let mut again = Vec::new();
        datagram::encode(d.declared_role, d.dropped, d.more, &d.text, &mut again);
        assert_eq!(datagram::decode(&again), Some(d), "a datagram round-trips");
    }
    // A pid no test registers.
    let pid = i32::MAX - 7;
    let received = Received {
        pid,
        bytes,
        truncated,
    };
    let mut lines = Vec::new();
    let dropped = lines_for(&received, 1, |line, _| lines.push(line));
    assert!(!lines.is_empty() && lines.len() <= 2);
    assert_eq!(lines.len() == 2, dropped > 0);
    for line in &lines {
        let body = line.strip_suffix('\n').expect("a line ends with a newline");
        assert!(
            !body.chars().any(hostile),
            "a control character in {line:?}"
        );
        let stamp = format!(" [1/{pid} ");
        let at = body.find(&stamp).expect("stamped with the sender's pid");
        let role = body[at + stamp.len()..].split(']').next().expect("a role");
        assert_ne!(role, "main", "a child posed as the daemon: {line:?}");
    }
}
