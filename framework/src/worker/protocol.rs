//! Frames between a pool and its worker processes (rmp-serde; payloads as
//! raw bytes, never element-by-element).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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
    },
    /// Run `stopping` and exit 0 (recycling, shutdown).
    Stop,
}

/// Worker → daemon.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromChild {
    /// `started` ran; calls may come.
    Ready,
    Reply {
        id: u64,
        outcome: Outcome,
    },
    /// Leaving on its own (SIGTERM/SIGINT): finished the call it was running,
    /// ran `stopping`, exits 0. Calls it had not started are run elsewhere;
    /// it is replaced, and it is not a failure.
    Leaving,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Panicked(String),
    BadCall(String),
    /// The method returned, but its encoded result is this many bytes,
    /// over the pool's limit.
    ReplyTooLarge(usize),
}

/// Bytes a reply adds around the method's encoded result (enum tags, the
/// call id, the length of the byte string): the worker keeps the whole frame
/// within the limits.
pub(crate) const REPLY_OVERHEAD: usize = 32;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(value)
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_overhead_covers_the_largest_header() {
        let payload = vec![0u8; 70_000];
        let frame = encode(&FromChild::Reply {
            id: u64::MAX,
            outcome: Outcome::Ok(payload.clone()),
        })
        .unwrap();
        assert!(
            frame.len() <= payload.len() + REPLY_OVERHEAD,
            "{}",
            frame.len()
        );
    }
}
