//! Large payloads: a call whose arguments are echoed back as its result,
//! through shared memory (sealed memfds, the default above
//! `DEFAULT_SHM_THRESHOLD`) and through the socket (`shm_threshold(usize::MAX)`),
//! beside the baselines of the same run: a `memcpy` of the same bytes, and
//! the small-call round trip (64 bytes each way).
//!
//! ```text
//! cargo bench -p daemonic --bench payloads            # full
//! cargo bench -p daemonic --bench payloads -- --quick # a few seconds (CI)
//! ```
//!
//! A round trip is the caller's whole `pool.send(..).await`: encoding the
//! arguments, their way to the worker, the worker decoding them and encoding
//! its result, the result's way back and its decoding into the caller's
//! value. The two transports alternate call by call, so that a noisy
//! moment of the machine weighs on both. The sizes below the threshold
//! show where shared memory starts to pay (the default threshold's
//! measure). The last table echoes a `SharedBytes` instead of a `ByteBuf`:
//! a descriptor crosses, not the bytes.

use actix::Addr;
use daemonic::worker::{SharedBytes, WorkerPool, DEFAULT_SHM_THRESHOLD};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::time::{Duration, Instant};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Echo {}

#[daemonic::worker]
impl Echo {
    pub fn echo(&mut self, data: ByteBuf) -> ByteBuf {
        data
    }

    pub fn echo_shared(&mut self, data: SharedBytes) -> SharedBytes {
        data
    }

    /// Reads every byte before it answers (each page is faulted in).
    pub fn read_and_echo(&mut self, data: SharedBytes) -> SharedBytes {
        std::hint::black_box(data.iter().fold(0u8, |a, b| a ^ b));
        data
    }
}

/// How a `SharedBytes` round trip is measured.
#[derive(Clone, Copy)]
enum SharedWay {
    /// The value is in shared memory already; the worker returns it.
    Echo,
    /// As `Echo`, and the worker reads every byte first.
    ReadAndEcho,
    /// Built from the bytes first (`copy_from_slice`, timed), then echoed.
    CopyThenEcho,
}

async fn shared_round_trip(
    pool: &Pool,
    value: &SharedBytes,
    bytes: &[u8],
    way: SharedWay,
) -> Duration {
    let started = Instant::now();
    let back = match way {
        SharedWay::Echo => {
            pool.send(echo::EchoShared {
                data: value.clone(),
            })
            .await
        }
        SharedWay::ReadAndEcho => {
            pool.send(echo::ReadAndEcho {
                data: value.clone(),
            })
            .await
        }
        SharedWay::CopyThenEcho => {
            let data = SharedBytes::copy_from_slice(bytes).expect("memfd");
            pool.send(echo::EchoShared { data }).await
        }
    };
    let took = started.elapsed();
    let back = back.expect("mailbox").expect("echo");
    assert!(back.is_shared() && back.len() == bytes.len());
    took
}

/// `calls` round trips of each way, interleaved: their medians.
async fn measure_shared(pool: &Pool, len: usize, calls: usize) -> [Duration; 3] {
    let bytes = vec![0x5au8; len];
    let value = SharedBytes::copy_from_slice(&bytes).expect("memfd");
    let ways = [
        SharedWay::Echo,
        SharedWay::ReadAndEcho,
        SharedWay::CopyThenEcho,
    ];
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=calls {
        for (i, way) in ways.iter().enumerate() {
            let took = shared_round_trip(pool, &value, &bytes, *way).await;
            if round > 0 {
                samples[i].push(took); // round 0 warms up
            }
        }
    }
    samples.map(median)
}

type Pool = Addr<WorkerPool<Echo>>;

const MIB: usize = 1024 * 1024;
/// The frame limit of every link (`ipc::MAX_FRAME`).
const FRAME_LIMIT: usize = 64 * MIB;
/// The largest payload a pool takes: the frame limit (64 MiB) less the
/// room `max_payload` keeps for the frame's own fields, less the
/// arguments' encoding.
const LARGEST: usize = FRAME_LIMIT - 2048;

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn size_name(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{:.0} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

fn gib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

fn start(shm: bool) -> Pool {
    let builder = WorkerPool::builder(Echo {})
        .size(1)
        .max_payload(FRAME_LIMIT - 1024);
    let builder = if shm {
        builder
    } else {
        builder.shm_threshold(usize::MAX)
    };
    builder.start().expect("pool")
}

async fn round_trip(pool: &Pool, data: &ByteBuf) -> Duration {
    let message = echo::Echo { data: data.clone() };
    let started = Instant::now();
    let back = pool.send(message).await.expect("mailbox").expect("echo");
    let took = started.elapsed();
    assert_eq!(back.len(), data.len());
    took
}

/// `calls` round trips of `len` bytes on each pool, alternating: the
/// medians (shared memory, socket).
async fn measure(shm: &Pool, socket: &Pool, len: usize, calls: usize) -> (Duration, Duration) {
    let data = ByteBuf::from(vec![0x5a; len]);
    // Warm-up: each pool's worker and allocator have seen the size.
    round_trip(shm, &data).await;
    round_trip(socket, &data).await;
    let mut a = Vec::with_capacity(calls);
    let mut b = Vec::with_capacity(calls);
    for _ in 0..calls {
        a.push(round_trip(shm, &data).await);
        b.push(round_trip(socket, &data).await);
    }
    (median(a), median(b))
}

/// A `memcpy` of `len` bytes between two buffers already in memory: the
/// median of `n`.
fn memcpy(len: usize, n: usize) -> Duration {
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src);
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            started.elapsed()
        })
        .collect();
    median(samples)
}

/// Filling a new memfd with `len` bytes and sealing it, as a sender does
/// (the kernel allocates and charges every page): the median of `n`.
fn memfd_fill(len: usize, n: usize) -> Duration {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let src = vec![0x5au8; len];
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            // SAFETY: memfd_create with a static name; the descriptor is ours.
            let fd = unsafe {
                libc::memfd_create(
                    c"bench".as_ptr(),
                    libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
                )
            };
            assert!(fd >= 0);
            // SAFETY: a new descriptor we own.
            let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            file.write_all(&src).expect("write");
            // SAFETY: fcntl on our memfd.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
            let took = started.elapsed();
            drop(file);
            took
        })
        .collect();
    median(samples)
}

fn main() {
    // Cargo passes `--bench`; `--quick` is ours.
    daemonic::testing::fork_server()
        .prestart()
        .expect("fork server");
    let system = actix::System::new();
    system.block_on(async {
        let shm = start(true);
        let socket = start(false);
        let (small_shm, small_socket) = measure(&shm, &socket, 64, if quick() { 500 } else { 5000 }).await;
        println!("Large payloads echoed back (pool of 1; medians; threshold {}):", size_name(DEFAULT_SHM_THRESHOLD));
        println!();
        // Both pools send 64 B in the frame: the same path, two measures
        // (their medians differ with where the scheduler puts each
        // worker); the baseline takes the faster.
        let small = small_shm.min(small_socket);
        println!(
            "small call (64 B each way): {:.1} µs on the one pool, {:.1} µs on the other; baseline {:.1} µs",
            us(small_shm),
            us(small_socket),
            us(small)
        );
        println!();
        println!("Where shared memory starts to pay (every size through both ways):");
        println!();
        println!("| payload | shm round trip | socket round trip | socket / shm |");
        println!("|---|---|---|---|");
        let sweep: &[usize] = &[
            16 * 1024,
            64 * 1024,
            128 * 1024,
            256 * 1024,
            384 * 1024,
            512 * 1024,
            MIB,
            4 * MIB,
        ];
        // A pool whose threshold is 0: every payload in a memfd.
        let tiny = WorkerPool::builder(Echo {})
            .size(1)
            .shm_threshold(0)
            .max_payload(FRAME_LIMIT - 1024)
            .start()
            .expect("pool");
        for &len in sweep {
            let calls = if quick() { 20 } else { 200 };
            let (a, b) = measure(&tiny, &socket, len, calls).await;
            println!(
                "| {} | {:.0} µs | {:.0} µs | {:.2}× |",
                size_name(len),
                us(a),
                us(b),
                b.as_secs_f64() / a.as_secs_f64()
            );
        }
        println!();
        println!("Targets: shm ≥ 2× the socket's throughput; shm round trip ≤ 1.5× (memcpy + small-call round trip).");
        println!();
        println!("| payload | shm round trip | shm throughput | socket round trip | socket throughput | shm / socket | memcpy | memcpy + small RTT | shm / (memcpy + small RTT) | memfd fill |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let mut floors = Vec::new();
        for (len, calls) in [(8 * MIB, if quick() { 5 } else { 40 }), (LARGEST, if quick() { 3 } else { 12 })] {
            let (a, b) = measure(&shm, &socket, len, calls).await;
            let copy = memcpy(len, if quick() { 5 } else { 20 });
            let fill = memfd_fill(len, if quick() { 3 } else { 10 });
            let floor = copy + small;
            println!(
                "| {} | {:.2} ms | {:.2} GiB/s | {:.2} ms | {:.2} GiB/s | {:.2}× | {:.2} ms | {:.2} ms | {:.2}× | {:.2} ms |",
                size_name(len),
                a.as_secs_f64() * 1e3,
                gib_s(len, a),
                b.as_secs_f64() * 1e3,
                gib_s(len, b),
                b.as_secs_f64() / a.as_secs_f64(),
                copy.as_secs_f64() * 1e3,
                floor.as_secs_f64() * 1e3,
                a.as_secs_f64() / floor.as_secs_f64(),
                fill.as_secs_f64() * 1e3,
            );
            // What an echo through owned values must do at least: the
            // caller encodes (into a memfd) and decodes, the worker decodes
            // and encodes (into a memfd): 2 fills, 2 copies out of a
            // mapping, 2 copies into fresh values.
            floors.push((len, 4 * copy + 2 * fill + small, a));
        }
        println!();
        for (len, floor, a) in floors {
            println!(
                "{}: this design's floor (4 memcpy + 2 memfd fills + small RTT) {:.2} ms; the round trip is {:.2}× it",
                size_name(len),
                floor.as_secs_f64() * 1e3,
                a.as_secs_f64() / floor.as_secs_f64()
            );
        }
        println!();
        println!("(throughput: payload bytes per round trip; the 64 MiB row is {} bytes, the largest payload a pool takes)", LARGEST);
        println!();
        println!("SharedBytes echoed back (the same pool; no copy: a descriptor crosses each way):");
        println!();
        println!("| payload | round trip | / (memcpy + small RTT) | worker reads every byte | / (memcpy + small RTT) | copy_from_slice + round trip | / (memcpy + small RTT) | ByteBuf round trip (above) / SharedBytes |");
        println!("|---|---|---|---|---|---|---|---|");
        for (len, calls) in [(8 * MIB, if quick() { 5 } else { 40 }), (LARGEST, if quick() { 3 } else { 12 })] {
            let [echo, read, copy_then] = measure_shared(&shm, len, calls).await;
            let floor = memcpy(len, if quick() { 5 } else { 20 }) + small;
            let (bytebuf, _) = measure(&shm, &socket, len, if quick() { 3 } else { 8 }).await;
            let ratio = |d: Duration| d.as_secs_f64() / floor.as_secs_f64();
            println!(
                "| {} | {:.3} ms | {:.2}× | {:.3} ms | {:.2}× | {:.3} ms | {:.2}× | {:.0}× |",
                size_name(len),
                echo.as_secs_f64() * 1e3,
                ratio(echo),
                read.as_secs_f64() * 1e3,
                ratio(read),
                copy_then.as_secs_f64() * 1e3,
                ratio(copy_then),
                bytebuf.as_secs_f64() / echo.as_secs_f64(),
            );
        }
    });
}
