//! End to end: large call arguments and results through sealed memfds
//! (the socket transport's `shm_threshold`).
//!
//! - payloads are correct on both sides of the threshold, exactly at it, at
//!   0 and at several MiB, and the pool's `shared_payloads` count says
//!   which of them went through shared memory;
//! - a worker SIGKILLed while it holds or moves a payload fails its call
//!   with `Died`, and no shared memory is left behind: no payload memfd in
//!   this process's `/proc/self/maps` or `/proc/self/fd` (nor in the
//!   workers'), nothing new in `/dev/shm`, no SysV segment;
//! - a worker that forges a large reply with a bad descriptor (a pipe, an
//!   unsealed memfd, a `/dev/shm` file, a wrong size, none at all, a pipe
//!   beside a good one, or one on a frame that takes none) gets its link
//!   dropped; the same forgery with a good memfd is accepted (so the
//!   forgeries are well formed and only their descriptors are wrong).

mod common;

use common::shm::{
    assert_link_dropped, dev_shm, die_by_sigkill, frame_with_fds, memfd, memfds, send_forged,
    stream_sockets, wait_ready, ALL_SEALS,
};
use common::{wait_until, zombie_children};
use daemonic::actix::Addr;
use daemonic::worker::{GetPoolStats, StopPool, WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

/// A payload memfd's name, as `/proc/<pid>/maps` and `/proc/<pid>/fd` show
/// it (`memfd:daemonic-payload`).
const MEMFD_NAME: &str = "daemonic-payload";

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
pub struct Store;

/// A large reply with something wrong, forged by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forgery {
    /// Nothing wrong: a sealed memfd of the announced size.
    Good,
    Pipe,
    Unsealed,
    WrongSize,
    DevShm,
    NoDescriptor,
    TwoDescriptors,
    OnAPlainFrame,
}

#[daemonic::worker]
impl Store {
    pub fn echo(&mut self, data: ByteBuf) -> ByteBuf {
        data
    }

    /// Runs beside other calls in a pool with `max_concurrent`.
    pub async fn echo_async(&self, data: ByteBuf) -> ByteBuf {
        tokio::task::yield_now().await;
        data
    }

    /// Dies (SIGKILL) while it holds its arguments.
    pub fn die_holding(&mut self, data: ByteBuf) -> u64 {
        assert!(!data.is_empty());
        die_by_sigkill()
    }

    /// Writes a forged reply to call `ctx.call_id()` on its link; returns
    /// 7 at once for a good forgery (the pool has the forged 4242 by
    /// then), else waits to be killed.
    pub fn forge(&mut self, ctx: &mut daemonic::WorkerContext, forgery: Forgery) -> u64 {
        let id = ctx.call_id().expect("a call id");
        for fd in stream_sockets() {
            forge_on(fd, id, forgery);
        }
        if forgery == Forgery::Good {
            return 7;
        }
        std::thread::sleep(Duration::from_secs(60));
        7
    }
}

// The worker protocol's replies, mirrored (rmp-serde encodes them by shape
// and variant name): `Forgery::Good` proves the mirror right.
#[derive(Serialize)]
enum FromChild {
    #[allow(dead_code)]
    Ready,
    Reply {
        id: u64,
        outcome: Outcome,
    },
}

#[derive(Serialize)]
enum Outcome {
    Shared(u64),
}

fn forge_on(sock: RawFd, id: u64, forgery: Forgery) {
    let result = rmp_serde::to_vec(&4242u64).unwrap();
    let len = result.len() as u64;
    let reply = |len| {
        rmp_serde::to_vec(&FromChild::Reply {
            id,
            outcome: Outcome::Shared(len),
        })
        .unwrap()
    };
    let with_fd = |body: &[u8]| frame_with_fds(body);
    let plain = |body: &[u8]| {
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    };
    let good = || memfd(&result, ALL_SEALS);
    let (frame, fds): (Vec<u8>, Vec<OwnedFd>) = match forgery {
        Forgery::Good => (with_fd(&reply(len)), vec![good()]),
        Forgery::Pipe => {
            let (read, _write) = nix::unistd::pipe().unwrap();
            (with_fd(&reply(len)), vec![read])
        }
        Forgery::Unsealed => (with_fd(&reply(len)), vec![memfd(&result, 0)]),
        Forgery::WrongSize => (with_fd(&reply(len + 1000)), vec![good()]),
        Forgery::DevShm => {
            let path = format!("/dev/shm/daemonic-forged-{}", std::process::id());
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            file.write_all(&result).unwrap();
            (with_fd(&reply(len)), vec![file.into()])
        }
        Forgery::NoDescriptor => (with_fd(&reply(len)), vec![]),
        // The payload's memfd, and a pipe where a `SharedBytes`' memfd
        // may follow it.
        Forgery::TwoDescriptors => {
            let (read, _write) = nix::unistd::pipe().unwrap();
            (with_fd(&reply(len)), vec![good(), read])
        }
        Forgery::OnAPlainFrame => (plain(&reply(len)), vec![good()]),
    };
    send_forged(sock, &frame, &fds);
}

type Pool = Addr<WorkerPool<Store>>;

const THRESHOLD: usize = 64 * 1024;

fn start(threshold: usize) -> Pool {
    daemonic::testing::fork_server().prestart().unwrap();
    WorkerPool::builder(Store)
        .size(1)
        .shm_threshold(threshold)
        .max_payload(40 * 1024 * 1024)
        // A hang would be a failure of the test, never a pass.
        .call_timeout(Duration::from_secs(30))
        .restart_limit(1000, Duration::from_secs(1))
        .start()
        .unwrap()
}

async fn stop(pool: Pool) {
    pool.send(StopPool {
        grace: Duration::from_secs(5),
    })
    .await
    .unwrap();
}

async fn shared_payloads(pool: &Pool) -> u64 {
    pool.send(GetPoolStats).await.unwrap().shared_payloads
}

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + len) as u8).collect()
}

/// Data whose echo call's arguments encode to exactly `encoded` bytes (at
/// least 3: the empty case), and the size its result encodes to.
fn data_for(encoded: usize) -> (ByteBuf, usize, usize) {
    // Arguments: a one-element array holding a byte string with a 1- to
    // 5-byte header.
    for len in (encoded.saturating_sub(6)..=encoded).rev() {
        let data = ByteBuf::from(bytes(len));
        let args = rmp_serde::to_vec(&store::Echo { data: data.clone() })
            .unwrap()
            .len();
        if args == encoded || len == 0 {
            let result = rmp_serde::to_vec(&data).unwrap().len();
            return (data, args, result);
        }
    }
    unreachable!("no byte string encodes to {encoded} bytes of arguments")
}

#[actix::test]
async fn payloads_are_correct_around_the_threshold() {
    let pool = start(THRESHOLD);
    let t = THRESHOLD;
    let mut shared = shared_payloads(&pool).await;
    for encoded in [
        0,
        t - 2,
        t - 1,
        t,
        t + 1,
        t + 2,
        3 * 1024 * 1024 + 5,
        9 * 1024 * 1024,
    ] {
        let (data, args, result) = data_for(encoded);
        assert!(encoded < 3 || args == encoded, "{encoded}: {args}");
        let back = pool.send(store::Echo { data: data.clone() }).await.unwrap();
        assert_eq!(back.as_ref().map(|b| b.len()), Ok(data.len()), "{encoded}");
        assert!(
            back.unwrap() == data,
            "{encoded}: the bytes came back changed"
        );
        let now = shared_payloads(&pool).await;
        let expected = u64::from(args >= t) + u64::from(result >= t);
        assert_eq!(
            now - shared,
            expected,
            "arguments of {args} bytes, result of {result}: through shared memory"
        );
        shared = now;
    }
    stop(pool).await;
}

/// With shared memory off, a large frame fills the socket's send buffer:
/// the host's writer must wait for writability (a registration it makes
/// only then, `ipc/outbox.rs`) and deliver every byte, both ways.
#[actix::test]
async fn frames_larger_than_the_socket_buffer_arrive_whole_without_shared_memory() {
    daemonic::testing::fork_server().prestart().unwrap();
    let pool = WorkerPool::builder(Store)
        .size(1)
        .max_payload(40 * 1024 * 1024)
        .shm_threshold(usize::MAX)
        .start()
        .unwrap();
    for len in [1024 * 1024, 16 * 1024 * 1024] {
        let data = ByteBuf::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let back = pool.send(store::Echo { data: data.clone() }).await.unwrap();
        assert!(back.unwrap() == data, "{len} bytes came back changed");
    }
    assert_eq!(
        shared_payloads(&pool).await,
        0,
        "nothing went through shared memory"
    );
    stop(pool).await;
}

#[actix::test]
async fn the_default_threshold_sends_several_mib_through_shared_memory() {
    daemonic::testing::fork_server().prestart().unwrap();
    let pool = WorkerPool::builder(Store)
        .size(1)
        .max_payload(40 * 1024 * 1024)
        .start()
        .unwrap();
    let data = ByteBuf::from(bytes(8 * 1024 * 1024));
    let back = pool.send(store::Echo { data: data.clone() }).await.unwrap();
    assert!(back.unwrap() == data);
    assert_eq!(shared_payloads(&pool).await, 2);
    let small = ByteBuf::from(bytes(daemonic::worker::DEFAULT_SHM_THRESHOLD / 2));
    let back = pool
        .send(store::Echo {
            data: small.clone(),
        })
        .await
        .unwrap();
    assert!(back.unwrap() == small);
    assert_eq!(
        shared_payloads(&pool).await,
        2,
        "half the threshold: in the frame"
    );
    stop(pool).await;
}

#[actix::test]
async fn concurrent_workers_move_large_payloads_too() {
    daemonic::testing::fork_server().prestart().unwrap();
    let pool = WorkerPool::builder(Store)
        .size(1)
        .max_concurrent(4)
        .shm_threshold(THRESHOLD)
        .max_payload(40 * 1024 * 1024)
        .call_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let sizes = [
        0,
        THRESHOLD - 100,
        THRESHOLD + 100,
        2 * 1024 * 1024,
        6 * 1024 * 1024,
    ];
    let calls: Vec<_> = sizes
        .iter()
        .map(|&len| {
            pool.send(store::EchoAsync {
                data: ByteBuf::from(bytes(len)),
            })
        })
        .collect();
    for (len, back) in sizes
        .iter()
        .zip(futures_util::future::join_all(calls).await)
    {
        assert!(
            back.unwrap().unwrap() == ByteBuf::from(bytes(*len)),
            "{len} bytes"
        );
    }
    // Three calls' arguments and results were large.
    assert_eq!(shared_payloads(&pool).await, 6);
    stop(pool).await;
}

/// Payload memfds this process (or `pid`) holds or maps.
fn payload_memfds(pid: &str) -> Vec<String> {
    memfds(pid, MEMFD_NAME)
}

/// SysV segments created or last attached by one of `pids`.
fn sysv_segments(pids: &[i32]) -> Vec<String> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4..6).is_some_and(|ids| {
                ids.iter()
                    .any(|id| id.parse::<i32>().is_ok_and(|p| pids.contains(&p)))
            })
        })
        .map(str::to_string)
        .collect()
}

async fn children(pool: &Pool) -> Vec<i32> {
    let stats = pool.send(GetPoolStats).await.unwrap();
    stats.children.iter().map(|c| c.pid).collect()
}

#[actix::test]
async fn a_worker_killed_mid_transfer_fails_its_call_and_leaves_no_shared_memory() {
    let shm_before = dev_shm();
    let me = std::process::id().to_string();
    let pool = start(THRESHOLD);
    let mut pids = vec![std::process::id() as i32];
    // Killed while it holds its mapped arguments.
    let data = ByteBuf::from(bytes(4 * 1024 * 1024));
    let holder = wait_ready(&pool).await;
    pids.extend(&holder);
    match pool.send(store::DieHolding { data }).await.unwrap() {
        Err(WorkerError::Died { pid, exit }) => {
            assert!(holder.contains(&pid), "{pid} is one of {holder:?}");
            assert_eq!(exit.to_string(), "killed by SIGKILL");
        }
        other => panic!("the call of a killed worker got {other:?}"),
    }
    // Killed from outside at chosen moments while 8 MiB go both ways: each
    // call comes back whole, or fails with `Died`.
    let mut died = 0;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..12u64 {
        let data = ByteBuf::from(bytes(8 * 1024 * 1024 + round as usize));
        wait_ready(&pool).await;
        let call = pool.send(store::Echo { data: data.clone() });
        let victims = children(&pool).await;
        pids.extend(&victims);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Fault injection, not synchronisation: a kill at some moment of
        // the transfer (0 to 15 ms after the call left).
        actix_rt::time::sleep(Duration::from_micros(rng % 15_000)).await;
        for pid in &victims {
            // SAFETY: signalling a worker of this test's pool.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        match call.await.unwrap() {
            Ok(back) => assert!(back == data, "round {round}: the bytes came back changed"),
            Err(WorkerError::Died { .. }) => died += 1,
            Err(other) => panic!("round {round}: {other:?}"),
        }
    }
    eprintln!("{died} of 12 calls were killed mid-transfer");
    // The pool still serves large calls.
    let data = ByteBuf::from(bytes(5 * 1024 * 1024));
    assert!(
        pool.send(store::Echo { data: data.clone() })
            .await
            .unwrap()
            .unwrap()
            == data
    );
    let live = children(&pool).await;
    assert!(
        wait_until(Duration::from_secs(10), || {
            payload_memfds(&me).is_empty()
                && live
                    .iter()
                    .all(|p| payload_memfds(&p.to_string()).is_empty())
        }),
        "payload memfds left: {:?} {:?}",
        payload_memfds(&me),
        live.iter()
            .map(|p| payload_memfds(&p.to_string()))
            .collect::<Vec<_>>()
    );
    stop(pool).await;
    let new: Vec<_> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(new.is_empty(), "new in /dev/shm: {new:?}");
    assert_eq!(sysv_segments(&pids), Vec::<String>::new());
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children().is_empty()),
        "zombies: {:?}",
        zombie_children()
    );
}

#[actix::test]
async fn a_worker_sending_a_bad_descriptor_or_size_gets_its_link_dropped() {
    let pool = start(THRESHOLD);
    wait_ready(&pool).await;
    // The forgery itself is well formed: with a good memfd it is taken.
    assert_eq!(
        pool.send(store::Forge {
            forgery: Forgery::Good
        })
        .await
        .unwrap(),
        Ok(4242)
    );
    for forgery in [
        Forgery::Pipe,
        Forgery::Unsealed,
        Forgery::WrongSize,
        Forgery::DevShm,
        Forgery::NoDescriptor,
        Forgery::TwoDescriptors,
        Forgery::OnAPlainFrame,
    ] {
        let what = format!("{forgery:?}");
        assert_link_dropped!(pool, store::Forge { forgery }, what);
        // The replacement serves.
        let data = ByteBuf::from(bytes(THRESHOLD * 2));
        assert!(
            pool.send(store::Echo { data: data.clone() })
                .await
                .unwrap()
                .unwrap()
                == data
        );
    }
    stop(pool).await;
}
