//! Frames between a pool and its worker processes (rmp-serde; payloads as
//! raw bytes, never element-by-element).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// First frame on a worker's spawn channel, sent with one descriptor: the
/// worker's progress word (see `progress.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    /// `None`: keep using the spawn channel (socket transport); `Some`: the
    /// ipc-channel one-shot server to connect to.
    pub ipc_server: Option<String>,
    /// Largest reply the worker may send; a bigger result is answered with
    /// [`Outcome::ReplyTooLarge`] instead.
    pub max_reply: usize,
    /// `async` methods taking `&self` the worker may run at once (1: one
    /// call at a time, no runtime of its own until an `async` method runs).
    pub max_concurrent: usize,
    /// Results of at least this many bytes go back in a sealed memfd
    /// ([`Outcome::Shared`]); `None`: always in the frame (a transport that
    /// carries no descriptors).
    #[serde(default)]
    pub shm_threshold: Option<usize>,
}

/// Daemon → worker. The arguments are borrowed both ways: the pool keeps
/// its copy (to run the call elsewhere if this worker never starts it), the
/// worker decodes them in place.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToChild<'a> {
    Call {
        id: u64,
        method: u16,
        #[serde(with = "serde_bytes", borrow)]
        args: Cow<'a, [u8]>,
        /// When the pool times the call out, as [`Deadline`] nanoseconds.
        deadline: Option<u64>,
        /// The arguments' `SharedBytes` are the frame's descriptors, and the
        /// result's must be sent so too (see `ipc/shared_bytes/link.rs`);
        /// `false`: plain bytes both ways (a remote pool's raw call).
        #[serde(default)]
        attach: bool,
    },
    /// Run `stopping` and exit 0 (recycling, shutdown).
    Stop,
    /// A call whose arguments, `len` bytes, are in the sealed memfd the
    /// frame carries (see `ipc/shm.rs`).
    CallShared {
        id: u64,
        method: u16,
        len: u64,
        deadline: Option<u64>,
        /// As [`ToChild::Call`]'s; the memfd of the arguments comes first
        /// among the frame's descriptors.
        #[serde(default)]
        attach: bool,
    },
}

/// Worker → daemon. A result is borrowed when decoded: the pool reads it
/// from the frame in place, where it was received.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromChild<'a> {
    /// `started` ran; calls may come.
    Ready,
    Reply {
        id: u64,
        #[serde(borrow)]
        outcome: Outcome<'a>,
    },
    /// Leaving on its own (SIGTERM/SIGINT): finished the call it was running,
    /// ran `stopping`, exits 0. Calls it had not started are run elsewhere;
    /// it is replaced, and it is not a failure.
    Leaving,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome<'a> {
    Ok(#[serde(with = "serde_bytes", borrow)] Cow<'a, [u8]>),
    Panicked(String),
    BadCall(String),
    /// The method returned, but its encoded result is this many bytes,
    /// over the pool's limit.
    ReplyTooLarge(usize),
    /// The method returned; its encoded result, this many bytes, is in the
    /// sealed memfd the frame carries (the first of its descriptors).
    Shared(u64),
}

impl FromChild<'_> {
    /// The same frame, owning its result (a fuzzer's round trip outlives
    /// the bytes it decoded).
    #[cfg(feature = "testing")]
    pub(crate) fn into_owned(self) -> FromChild<'static> {
        match self {
            FromChild::Ready => FromChild::Ready,
            FromChild::Leaving => FromChild::Leaving,
            FromChild::Reply { id, outcome } => FromChild::Reply {
                id,
                outcome: match outcome {
                    Outcome::Ok(bytes) => Outcome::Ok(Cow::Owned(bytes.into_owned())),
                    Outcome::Panicked(message) => Outcome::Panicked(message),
                    Outcome::BadCall(message) => Outcome::BadCall(message),
                    Outcome::ReplyTooLarge(size) => Outcome::ReplyTooLarge(size),
                    Outcome::Shared(len) => Outcome::Shared(len),
                },
            },
        }
    }
}

/// Bytes a reply adds around the method's encoded result (enum tags, the
/// call id, the length of the byte string): the worker keeps the whole frame
/// within the limits.
pub(crate) const REPLY_OVERHEAD: usize = 32;

/// A call's deadline on the wire: nanoseconds of `CLOCK_MONOTONIC`, which
/// the pool and its workers share (one machine, one time namespace), so the
/// worker sees the pool's deadline exactly, however long the call waited in
/// its link before it was read.
pub(crate) struct Deadline;

impl Deadline {
    fn now() -> (Instant, u64) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC exists
        // on every Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let nanos = (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64);
        (Instant::now(), nanos)
    }

    pub(crate) fn to_wire(deadline: Instant) -> u64 {
        let (now, nanos) = Self::now();
        let left = deadline.saturating_duration_since(now).as_nanos();
        nanos.saturating_add(u64::try_from(left).unwrap_or(u64::MAX))
    }

    pub(crate) fn from_wire(deadline: u64) -> Instant {
        let (now, nanos) = Self::now();
        let left = Duration::from_nanos(deadline.saturating_sub(nanos));
        now.checked_add(left)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    // Room for a small call's frame at once: grown from nothing, a 100-byte
    // frame costs five allocations (8, 16, 32, 64, 128 bytes) on every call.
    let mut out = Vec::with_capacity(FIRST_CAPACITY);
    encode_into(&mut out, value)?;
    Ok(out)
}

/// Appends `value`'s encoding to `out` (a link's outgoing buffer, so that a
/// frame needs no buffer of its own; see `HostLink::send_with`). On an
/// error, part of it may have been appended.
pub(crate) fn encode_into<T: Serialize>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), rmp_serde::encode::Error> {
    rmp_serde::encode::write(&mut Fallible(out), value)
}

/// Capacity an encoding starts with (see [`encode`]).
pub(crate) const FIRST_CAPACITY: usize = 128;

/// A buffer that reports running out of memory as an error, as
/// `rmp_serde::to_vec`'s does, instead of aborting.
struct Fallible<'a>(&'a mut Vec<u8>);

impl std::io::Write for Fallible<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .try_reserve(data.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deepest nesting a frame may have: frames nest a few levels; hostile
/// bytes nest thousands, and each level costs kilobytes of stack in a debug
/// build (rmp-serde's own limit, 1024, overflows a 2 MiB thread stack).
const MAX_DEPTH: usize = 16;

/// Deepest nesting of a call's arguments or result (serde_json's limit).
pub(crate) const MAX_PAYLOAD_DEPTH: usize = 128;

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    decode_at_most(bytes, MAX_DEPTH)
}

/// Decodes `bytes`, refusing nesting deeper than `depth`.
pub(crate) fn decode_at_most<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    depth: usize,
) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(depth);
    T::deserialize(&mut de)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread with half the default stack (a debug build's frames are
    /// large: rmp-serde's default depth of 1024 needs megabytes).
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        on_small_stack(|| {
            let mut nested = vec![0x91u8; 100_000]; // [[[[…]]]]
            nested.push(0xc0);
            // A frame whose field holds the nesting.
            let mut reply = vec![0x81, 0xa5];
            reply.extend_from_slice(b"Reply");
            reply.extend_from_slice(&nested);
            for bytes in [&nested, &reply] {
                assert!(decode::<FromChild>(bytes).is_err());
                assert!(decode::<ToChild>(bytes).is_err());
                assert!(decode::<Bootstrap>(bytes).is_err());
                assert!(crate::worker::decode_args::<serde::de::IgnoredAny>(bytes).is_err());
            }
        });
    }

    #[test]
    fn reply_overhead_covers_the_largest_header() {
        let payload = vec![0u8; 70_000];
        let frame = encode(&FromChild::Reply {
            id: u64::MAX,
            outcome: Outcome::Ok(payload.clone().into()),
        })
        .unwrap();
        assert!(
            frame.len() <= payload.len() + REPLY_OVERHEAD,
            "{}",
            frame.len()
        );
    }

    #[test]
    fn a_deadline_crosses_the_wire_unchanged() {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let back = Deadline::from_wire(Deadline::to_wire(deadline));
        let error = if back > deadline {
            back - deadline
        } else {
            deadline - back
        };
        // Only preemption between the two clock reads can add an error.
        assert!(error < Duration::from_millis(50), "{error:?}");
        // Passed already: it stays passed.
        let past = Instant::now();
        assert!(Deadline::from_wire(Deadline::to_wire(past)) <= Instant::now());
    }
}
