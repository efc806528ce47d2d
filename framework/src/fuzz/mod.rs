//! Fuzz targets for every decoder of bytes another process writes (feature
//! `testing`; not public API). The property tests
//! (`framework/tests/fuzz_decoders.rs`) run each target on a bounded number
//! of generated inputs in CI; the long-running driver
//! (`framework/benches/fuzz.rs`) and the coverage-guided targets in `fuzz/`
//! run the same functions for as long as they are given.
//!
//! A target takes any bytes and panics only when an invariant breaks: a
//! decoder that returns an error for hostile bytes is doing its job.

pub mod alloc;
mod decoders;
pub mod gen;
mod ipc;
mod sockets;

use crate::ipc::frame;
use crate::log::datagram;
use crate::process::wire::{self, Hello, SpawnReply, SpawnRequest};
use crate::worker::protocol::{self, Bootstrap, FromChild, Outcome, ToChild};
use std::borrow::Cow;

/// One decoder under test.
pub struct Target {
    /// Short name (`worker_frames`).
    pub name: &'static str,
    /// Which decoder, in a few words.
    pub about: &'static str,
    /// Valid inputs that mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Longest input worth generating.
    pub max_len: usize,
    run: fn(&[u8]),
    /// The largest allocation allowed for an input of this many bytes.
    bound: fn(usize) -> usize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The largest allocation a decoder may make for an input of `len` bytes:
/// buffers of a fixed size (a 1 MiB read chunk, a socket's largest message)
/// and a few times what actually arrived, never what a peer announced.
pub fn allocation_bound(len: usize) -> usize {
    4 * 1024 * 1024 + 16 * len
}

impl Target {
    /// Runs the target on `data`; panics if an invariant breaks, including
    /// an allocation over [`allocation_bound`] when [`alloc::Tracking`] is
    /// the global allocator.
    pub fn run(&self, data: &[u8]) {
        alloc::reset();
        (self.run)(data);
        if let Some(largest) = alloc::largest() {
            assert!(
                largest <= (self.bound)(data.len()),
                "{}: allocated {largest} bytes for a {}-byte input",
                self.name,
                data.len()
            );
        }
    }
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "stream_frames",
            about: "ipc/frame.rs Decoder and read_frame (worker links, bootstrap, task reports)",
            seeds: stream_seeds,
            max_len: 64 * 1024,
            bound: allocation_bound,
            run: decoders::stream_frames,
        },
        Target {
            name: "frame_with_fds",
            about: "ipc/frame.rs read_frame_with_fds on a socketpair, descriptors attached",
            seeds: fds_seeds,
            max_len: 32 * 1024,
            bound: allocation_bound,
            run: sockets::frame_with_fds,
        },
        Target {
            name: "link_with_fds",
            about: "ipc/frame.rs Decoder::recv on a worker link, descriptors attached; ipc/shm.rs checks",
            seeds: link_seeds,
            max_len: 32 * 1024,
            bound: allocation_bound,
            run: sockets::link_with_fds,
        },
        Target {
            name: "worker_frames",
            about: "worker/protocol.rs FromChild, ToChild and Bootstrap",
            seeds: worker_seeds,
            max_len: 64 * 1024,
            bound: allocation_bound,
            run: decoders::worker_frames,
        },
        Target {
            name: "payloads",
            about: "call arguments and results (rmp-serde) into typical types",
            seeds: payload_seeds,
            max_len: 64 * 1024,
            bound: allocation_bound,
            run: decoders::payload,
        },
        Target {
            name: "spawn_messages",
            about: "process/wire.rs SpawnRequest, SpawnReply, Hello; task reports",
            seeds: spawn_seeds,
            max_len: 64 * 1024,
            bound: allocation_bound,
            run: decoders::spawn_messages,
        },
        Target {
            name: "spawn_recv_message",
            about: "process/wire.rs recv_message on a SOCK_SEQPACKET pair, descriptors attached",
            seeds: recv_message_seeds,
            max_len: wire::MAX_CONTROL + 64,
            bound: allocation_bound,
            run: sockets::control_message,
        },
        Target {
            name: "control_request",
            about: "control/mod.rs parse_request (what a client sends the daemon)",
            seeds: || {
                vec![
                    b"status\n".to_vec(),
                    b" stop \r\n".to_vec(),
                    b"stat\xffus".to_vec(),
                ]
            },
            max_len: 1024,
            bound: allocation_bound,
            run: decoders::control_request,
        },
        Target {
            name: "control_reply",
            about: "control/mod.rs decode_reply and the status rendering (what a daemon answers)",
            seeds: reply_seeds,
            max_len: 64 * 1024,
            bound: allocation_bound,
            run: decoders::control_reply,
        },
        Target {
            name: "log_datagram",
            about: "log/datagram.rs decode and log/children.rs lines_for (children's log lines)",
            seeds: datagram_seeds,
            max_len: datagram::MAX_DATAGRAM + 16,
            bound: allocation_bound,
            run: decoders::log_datagram,
        },
        Target {
            name: "log_socket",
            about: "log/children.rs receive on a datagram socket with credentials, descriptors attached",
            seeds: datagram_seeds,
            max_len: datagram::MAX_DATAGRAM + 1024,
            bound: allocation_bound,
            run: sockets::log_socket,
        },
        Target {
            name: "ipc_channel_message",
            about: "ipc/ipc_channel.rs checked receive of what a worker sends over ipc-channel",
            seeds: ipc::seeds,
            max_len: 64 * 1024,
            run: ipc::message,
            // ipc-channel reserves the whole of a long message when its
            // first part arrives (address space only, until the rest
            // does); the guard bounds that by the frame limit.
            bound: |len| allocation_bound(len) + crate::ipc::MAX_FRAME + 8,
        },
        Target {
            name: "ipc_channel_hello",
            about: "ipc/ipc_channel.rs checked handshake of a worker connecting over ipc-channel",
            seeds: ipc::hello_seeds,
            max_len: 4 * 1024,
            bound: allocation_bound,
            run: ipc::hello,
        },
    ]
}

/// Runs `target` on `cases` inputs generated from `seed`; on a failure,
/// prints the seed, the case and the input (hex) before the panic goes on.
pub fn check(target: &Target, seed: u64, cases: usize) {
    let seeds = (target.seeds)();
    for s in &seeds {
        target.run(s);
    }
    let mut rng = gen::Rng::new(seed);
    for case in 0..cases {
        let data = gen::input(&mut rng, &seeds, target.max_len);
        let outcome = std::panic::catch_unwind(|| target.run(&data));
        if let Err(panic) = outcome {
            eprintln!(
                "{}: case {case} of seed {seed} failed on {} bytes: {}",
                target.name,
                data.len(),
                hex(&data[..data.len().min(512)])
            );
            std::panic::resume_unwind(panic);
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn framed(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        frame::push(&mut out, p).expect("small");
    }
    out
}

fn rmp<T: serde::Serialize>(value: &T) -> Vec<u8> {
    protocol::encode(value).expect("encodes")
}

fn worker_seeds() -> Vec<Vec<u8>> {
    vec![
        rmp(&FromChild::Ready),
        rmp(&FromChild::Leaving),
        rmp(&FromChild::Reply {
            id: 7,
            outcome: Outcome::Ok(rmp(&"a result".to_string()).into()),
        }),
        rmp(&FromChild::Reply {
            id: u64::MAX,
            outcome: Outcome::Panicked("boom".into()),
        }),
        rmp(&FromChild::Reply {
            id: 1,
            outcome: Outcome::BadCall("no such method".into()),
        }),
        rmp(&FromChild::Reply {
            id: 2,
            outcome: Outcome::ReplyTooLarge(1 << 30),
        }),
        rmp(&ToChild::Call {
            id: 3,
            method: 2,
            args: Cow::Owned(rmp(&(1u64, "two"))),
            deadline: Some(1_000_000_000),
            attach: true,
        }),
        rmp(&ToChild::Stop),
        rmp(&Bootstrap {
            ipc_server: Some("/tmp/ipc-channel/socket".into()),
            max_reply: 1 << 20,
            max_concurrent: 4,
            shm_threshold: None,
        }),
        rmp(&FromChild::Reply {
            id: 5,
            outcome: Outcome::Shared(1 << 20),
        }),
        rmp(&ToChild::CallShared {
            id: 4,
            method: 1,
            len: 1 << 22,
            deadline: None,
            attach: false,
        }),
    ]
}

fn stream_seeds() -> Vec<Vec<u8>> {
    let mut seed = vec![0u8];
    seed.extend(framed(&worker_seeds()));
    vec![
        seed,
        vec![3, 0, 0, 0, 0],
        vec![9, 3, 0, 0, 0, b'a', b'b', b'c'],
    ]
}

fn fds_seeds() -> Vec<Vec<u8>> {
    let boot = rmp(&Bootstrap {
        ipc_server: None,
        max_reply: 4096,
        max_concurrent: 1,
        shm_threshold: Some(256 * 1024),
    });
    let mut one = vec![1u8];
    one.extend(framed(&[boot.clone(), rmp(&"worker state")]));
    let mut none = vec![0u8];
    none.extend(framed(&[boot]));
    vec![one, none]
}

fn link_seeds() -> Vec<Vec<u8>> {
    let reply = rmp(&FromChild::Reply {
        id: 9,
        outcome: Outcome::Shared(3),
    });
    let mut flagged = frame::header_with_fd(reply.len()).expect("small").to_vec();
    flagged.extend_from_slice(&reply);
    let mut seeds = Vec::new();
    for seed in [0u8, 1, 2, 3] {
        let mut input = vec![seed];
        input.extend(framed(&[rmp(&FromChild::Ready)]));
        input.extend_from_slice(&flagged);
        input.extend(framed(&[rmp(&FromChild::Leaving)]));
        seeds.push(input);
    }
    seeds
}

fn payload_seeds() -> Vec<Vec<u8>> {
    vec![
        rmp(&"text"),
        rmp(&(1u64, -2i64, 0.5f64, true)),
        rmp(&vec!["a".to_string(), "b".to_string()]),
        rmp(&std::collections::BTreeMap::from([(
            "k".to_string(),
            vec![1u32, 2],
        )])),
        rmp(&serde_bytes::ByteBuf::from(vec![1, 2, 3])),
        rmp(&vec![0x41u8; 40]),
    ]
}

fn spawn_request() -> SpawnRequest {
    SpawnRequest {
        entry: "worker:hasher".into(),
        role: "worker:hasher".into(),
        daemon: "demo".into(),
        daemon_pid: 4242,
        debug_level: 1,
        console: false,
        has_log: true,
        fault: None,
        confinement: Some(crate::process::Confinement {
            nice: Some(5),
            no_new_privs: true,
            ..Default::default()
        }),
    }
}

fn named<T: serde::Serialize>(value: &T) -> Vec<u8> {
    wire::encode(value).expect("encodes")
}

fn spawn_seeds() -> Vec<Vec<u8>> {
    vec![
        named(&spawn_request()),
        named(&SpawnReply::Started { pid: 77 }),
        named(&SpawnReply::Failed {
            error: "no such entry".into(),
        }),
        named(&Hello {
            cookie: u128::MAX - 3,
            pid: 12,
        }),
        framed(&[named(&crate::task::TaskReport::Panicked("oops".into()))]),
    ]
}

fn recv_message_seeds() -> Vec<Vec<u8>> {
    let mut request = vec![3u8];
    request.extend(named(&spawn_request()));
    let mut reply = vec![1u8];
    reply.extend(named(&SpawnReply::Started { pid: 9 }));
    vec![request, reply]
}

fn reply_seeds() -> Vec<Vec<u8>> {
    use crate::control::Reply;
    [
        Reply::Status(Box::default()),
        Reply::Stopping { pid: 1 },
        Reply::Error("unknown request \"x\"".into()),
        Reply::Refused("uid 65534 may not use this daemon's control channel".into()),
    ]
    .iter()
    .map(|r| serde_json::to_vec(r).expect("encodes"))
    .collect()
}

fn datagram_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (role, dropped, more, text) in [
        ("worker:hasher", 0, false, "INFO  hello k=v"),
        ("task:send", 3, true, "WARN  a long line, part one"),
        ("main", 0, false, "ERROR forged"),
    ] {
        let mut out = Vec::new();
        datagram::encode(role, dropped, more, text, &mut out);
        let mut seed = vec![0u8];
        seed.extend(out);
        seeds.push(seed);
    }
    seeds.push(b"\x01raw bytes written to the log socket\n".to_vec());
    seeds
}
