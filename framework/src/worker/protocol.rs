//! Frames between a pool and its worker processes (rmp-serde; payloads as
//! raw bytes, never element-by-element).

use serde::{Deserialize, Serialize};

/// First frame on a worker's spawn channel: how to reach the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    /// `None`: keep using the spawn channel (socket transport); `Some`: the
    /// ipc-channel one-shot server to connect to.
    pub ipc_server: Option<String>,
}

/// Daemon → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToChild {
    Call {
        id: u64,
        method: u16,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
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
    /// Leaving on its own (SIGTERM/SIGINT): finished its call, ran
    /// `stopping`, exits 0. Replace it; it is not a failure.
    Leaving,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Panicked(String),
    BadCall(String),
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(value)
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}
