//! End to end: `SharedBytes` in a call's arguments and results cross the
//! socket transport as descriptors of sealed memfds, not as bytes.
//!
//! - correct at 0, 1, a page and several MiB, through plain and `async`
//!   methods, in nested values, and built by the worker; the frame carries a
//!   reference only (the pool's spill count does not move) and an echo comes
//!   back as the very memfd that was sent (one inode in `/proc/self/maps`);
//! - on a link that carries no descriptors (`Transport::IpcChannel`) they
//!   travel as plain bytes, equally correct;
//! - a worker SIGKILLed while it holds one fails its call with `Died`, and
//!   once the values are dropped no `SharedBytes` memfd is left in this
//!   process or the workers' (`/proc/<pid>/maps`, `/proc/<pid>/fd`), nothing
//!   new in `/dev/shm`;
//! - a worker that attaches a bad descriptor to a reply (a pipe, an
//!   unsealed memfd, descriptors to a reply that takes none) gets its link
//!   dropped; a reference whose length is not its memfd's fails that call.

#![allow(clippy::await_holding_lock)] // `serial()`: each test has its own thread and runtime

mod common;

use common::shm::{
    assert_link_dropped, assert_no_memfds_left, dev_shm, die_by_sigkill, frame_with_fds, memfd,
    memfds, protocol_errors, send_forged, stream_sockets, wait_ready, ALL_SEALS,
};
use common::{wait_until, zombie_children};
use daemonic::actix::Addr;
use daemonic::worker::{
    GetPoolStats, SharedBytes, SharedBytesMut, StopPool, Transport, WorkerError, WorkerPool,
    SHARED_NAME,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
pub struct Images;

/// A reply with descriptors, forged by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forgery {
    /// Nothing wrong: a sealed memfd, referenced with its length.
    Good,
    Pipe,
    Unsealed,
    /// A sealed memfd, referenced with a length it does not have.
    WrongLength,
    /// A good memfd on a reply that carries an error, which takes none.
    OnAnError,
}

#[daemonic::worker]
impl Images {
    pub fn echo(&mut self, image: SharedBytes) -> SharedBytes {
        image
    }

    /// Runs beside other calls in a pool with `max_concurrent`.
    pub async fn echo_async(&self, image: SharedBytes) -> SharedBytes {
        tokio::task::yield_now().await;
        image
    }

    /// A new image, built in shared memory by the worker.
    pub fn invert(&mut self, image: SharedBytes) -> SharedBytes {
        let mut out = SharedBytesMut::new(image.len()).expect("a memfd");
        for (o, i) in out.iter_mut().zip(image.iter()) {
            *o = !i;
        }
        out.freeze().expect("sealed")
    }

    /// Several in one value, beside plain fields.
    pub fn split(&mut self, parts: Vec<(String, SharedBytes)>) -> (usize, Vec<SharedBytes>) {
        let total = parts.iter().map(|(_, b)| b.len()).sum();
        (total, parts.into_iter().rev().map(|(_, b)| b).collect())
    }

    /// A large plain value (spilled into a payload memfd) beside a
    /// `SharedBytes`, both ways.
    pub fn both(&mut self, big: ByteBuf, image: SharedBytes) -> (ByteBuf, SharedBytes) {
        (big, image)
    }

    /// Whether the bytes it got are mapped shared memory.
    pub fn is_shared(&mut self, image: SharedBytes) -> bool {
        image.is_shared()
    }

    /// Dies (SIGKILL) while it holds the image.
    pub fn die_holding(&mut self, image: SharedBytes) -> u64 {
        assert!(!image.is_empty());
        die_by_sigkill()
    }

    /// Writes a forged reply to this call on its link; returns at once for
    /// a good forgery (the pool has the forged one by then), else waits to
    /// be killed.
    pub fn forge(&mut self, ctx: &mut daemonic::WorkerContext, forgery: Forgery) -> SharedBytes {
        let id = ctx.call_id().expect("a call id");
        for fd in stream_sockets() {
            forge_on(fd, id, forgery);
        }
        if !matches!(forgery, Forgery::Good | Forgery::WrongLength) {
            std::thread::sleep(Duration::from_secs(60));
        }
        SharedBytes::from(b"not forged".to_vec())
    }
}

// The worker protocol's replies, mirrored (rmp-serde encodes them by shape
// and variant name): `Forgery::Good` proves the mirror right.
#[derive(Serialize)]
enum FromChild {
    Reply { id: u64, outcome: Outcome },
}

#[derive(Serialize)]
enum Outcome {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    #[allow(dead_code)]
    Panicked(String),
    BadCall(String),
}

fn forge_on(sock: RawFd, id: u64, forgery: Forgery) {
    let forged = b"forged bytes";
    // A result holding one `SharedBytes`: a reference to descriptor 0.
    let reference = |len: u64| rmp_serde::to_vec(&(0u32, len)).unwrap();
    let reply = |outcome| rmp_serde::to_vec(&FromChild::Reply { id, outcome }).unwrap();
    let ok = |len: u64| reply(Outcome::Ok(reference(len)));
    let len = forged.len() as u64;
    let (body, fds): (Vec<u8>, Vec<OwnedFd>) = match forgery {
        Forgery::Good => (ok(len), vec![memfd(forged, ALL_SEALS)]),
        Forgery::Pipe => {
            let (read, _write) = nix::unistd::pipe().unwrap();
            (ok(len), vec![read])
        }
        Forgery::Unsealed => (ok(len), vec![memfd(forged, 0)]),
        Forgery::WrongLength => (ok(len + 1), vec![memfd(forged, ALL_SEALS)]),
        Forgery::OnAnError => (
            reply(Outcome::BadCall("forged".into())),
            vec![memfd(forged, ALL_SEALS)],
        ),
    };
    send_forged(sock, &frame_with_fds(&body), &fds);
}

type Pool = Addr<WorkerPool<Images>>;

/// The tests look at this whole process's mappings and descriptors: they
/// run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn builder(
    transport: Transport,
    max_concurrent: usize,
) -> daemonic::worker::WorkerPoolBuilder<Images> {
    daemonic::testing::fork_server().prestart().unwrap();
    WorkerPool::builder(Images)
        .size(1)
        .transport(transport)
        .max_concurrent(max_concurrent)
        // A hang would be a failure of the test, never a pass.
        .call_timeout(Duration::from_secs(30))
        .restart_limit(1000, Duration::from_secs(1))
}

fn start(transport: Transport, max_concurrent: usize) -> Pool {
    builder(transport, max_concurrent).start().unwrap()
}

async fn stop(pool: Pool) {
    pool.send(StopPool {
        grace: Duration::from_secs(5),
    })
    .await
    .unwrap();
}

fn image(len: usize) -> SharedBytes {
    let mut buf = SharedBytesMut::new(len).unwrap();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 + len) as u8;
    }
    buf.freeze().unwrap()
}

/// The inodes of the `SharedBytes` memfds this process maps.
fn mapped_inodes() -> BTreeSet<String> {
    memfds(&std::process::id().to_string(), SHARED_NAME)
        .iter()
        .filter_map(|line| line.split_whitespace().nth(4).map(str::to_string))
        .filter(|inode| inode.contains(|c: char| c.is_ascii_digit()))
        .collect()
}

async fn echo(pool: &Pool, image: &SharedBytes) -> SharedBytes {
    let back = pool.send(images::Echo {
        image: image.clone(),
    });
    back.await.unwrap().unwrap()
}

async fn spilled(pool: &Pool) -> u64 {
    pool.send(GetPoolStats).await.unwrap().shared_payloads
}

#[actix::test]
async fn shared_bytes_cross_as_descriptors_both_ways() {
    let _serial = serial();
    let pool = start(Transport::Socket, 1);
    for len in [0, 1, 4096, 8 * 1024 * 1024 + 3] {
        let sent = image(len);
        let before = spilled(&pool).await;
        let back = echo(&pool, &sent).await;
        assert!(back == sent, "{len} bytes came back changed");
        assert!(back.is_shared(), "{len}: mapped, not copied");
        // The frames held references: nothing was large enough to spill.
        assert_eq!(spilled(&pool).await, before, "{len}: no payload memfd");
        if len > 0 {
            // What came back is the memfd that was sent: one inode mapped.
            let mapped = memfds(&std::process::id().to_string(), SHARED_NAME);
            assert_eq!(mapped_inodes().len(), 1, "{len}: {mapped:?}");
        }
        let inverted = pool
            .send(images::Invert {
                image: sent.clone(),
            })
            .await;
        let inverted = inverted.unwrap().unwrap();
        assert_eq!(inverted.len(), len);
        assert!(inverted.iter().zip(sent.iter()).all(|(o, i)| *o == !i));
        assert!(pool
            .send(images::IsShared { image: sent })
            .await
            .unwrap()
            .unwrap());
    }
    // Several in one value; one from a `Vec` is copied into a memfd.
    let parts = vec![
        ("a".to_string(), image(10)),
        ("b".to_string(), SharedBytes::from(vec![5u8; 3000])),
        ("c".to_string(), image(0)),
    ];
    let (total, back) = pool
        .send(images::Split {
            parts: parts.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 3010);
    let expected: Vec<SharedBytes> = parts.into_iter().rev().map(|(_, b)| b).collect();
    assert_eq!(back, expected);
    assert!(back.iter().all(SharedBytes::is_shared));
    stop(pool).await;
}

#[actix::test]
async fn async_methods_running_together_send_theirs_as_descriptors_too() {
    let _serial = serial();
    let pool = start(Transport::Socket, 4);
    let sent: Vec<SharedBytes> = (0..16).map(|i| image(1000 + i * 4096)).collect();
    let calls = sent.iter().map(|image| {
        pool.send(images::EchoAsync {
            image: image.clone(),
        })
    });
    let backs = futures_util::future::join_all(calls).await;
    for (back, sent) in backs.into_iter().zip(&sent) {
        let back = back.unwrap().unwrap();
        assert!(back == *sent);
        assert!(back.is_shared());
    }
    stop(pool).await;
}

#[actix::test]
async fn on_a_link_without_descriptors_they_travel_as_bytes() {
    let _serial = serial();
    let pool = start(Transport::IpcChannel, 1);
    for len in [0, 1, 300_000] {
        let sent = image(len);
        let back = echo(&pool, &sent).await;
        assert!(back == sent, "{len} bytes came back changed");
        assert!(!back.is_shared(), "{len}: decoded from bytes");
        let shared = pool.send(images::IsShared { image: sent }).await.unwrap();
        assert_eq!(shared, Ok(false));
    }
    stop(pool).await;
}

#[actix::test]
async fn a_worker_killed_holding_one_fails_its_call_and_leaves_nothing_behind() {
    let _serial = serial();
    let shm_before = dev_shm();
    let pool = start(Transport::Socket, 1);
    {
        let sent = image(4 * 1024 * 1024);
        let holder = wait_ready(&pool).await;
        match pool.send(images::DieHolding { image: sent }).await.unwrap() {
            Err(WorkerError::Died { pid, exit }) => {
                assert!(holder.contains(&pid), "{pid} is one of {holder:?}");
                assert_eq!(exit.to_string(), "killed by SIGKILL");
            }
            other => panic!("the call of a killed worker got {other:?}"),
        }
        // Killed from outside while echoes are in flight.
        for round in 0..6u64 {
            let sent = image(2 * 1024 * 1024 + round as usize);
            let victims = wait_ready(&pool).await;
            let call = pool.send(images::Echo {
                image: sent.clone(),
            });
            // Fault injection, not synchronisation: a kill some moment after
            // the call left.
            actix_rt::time::sleep(Duration::from_micros(round * 700)).await;
            for pid in &victims {
                // SAFETY: signalling a worker of this test's pool.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            match call.await.unwrap() {
                Ok(back) => assert!(back == sent, "round {round}: changed"),
                Err(WorkerError::Died { .. }) => {}
                Err(other) => panic!("round {round}: {other:?}"),
            }
        }
    }
    // Every value is dropped: nothing maps or holds a memfd any more.
    let live = wait_ready(&pool).await;
    assert_no_memfds_left(SHARED_NAME, &live);
    stop(pool).await;
    let new: Vec<_> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(new.is_empty(), "new in /dev/shm: {new:?}");
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children().is_empty()),
        "zombies: {:?}",
        zombie_children()
    );
}

#[actix::test]
async fn a_worker_attaching_a_bad_descriptor_gets_its_link_dropped() {
    let _serial = serial();
    let pool = start(Transport::Socket, 1);
    wait_ready(&pool).await;
    // The forgery itself is well formed: with a good memfd it is taken.
    let good = pool
        .send(images::Forge {
            forgery: Forgery::Good,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&good[..], b"forged bytes");
    assert!(good.is_shared());
    for forgery in [Forgery::Pipe, Forgery::Unsealed, Forgery::OnAnError] {
        let what = format!("{forgery:?}");
        assert_link_dropped!(pool, images::Forge { forgery }, what);
    }
    // A reference with the wrong length: that call fails, nothing is mapped.
    wait_ready(&pool).await;
    let forged = pool
        .send(images::Forge {
            forgery: Forgery::WrongLength,
        })
        .await
        .unwrap();
    match forged {
        Err(WorkerError::Protocol(why)) => assert!(why.contains("announced"), "{why}"),
        other => panic!("a wrong length got {other:?}"),
    }
    // The replacement serves.
    wait_ready(&pool).await;
    let sent = image(100_000);
    let back = pool
        .send(images::Echo {
            image: sent.clone(),
        })
        .await
        .unwrap();
    assert!(back.unwrap() == sent);
    stop(pool).await;
}

#[actix::test]
async fn with_shared_memory_payloads_off_they_still_cross_as_descriptors() {
    let _serial = serial();
    // No payload memfds, and the default 16 MiB `max_payload`: a 32 MiB
    // `SharedBytes` is neither.
    let pool = builder(Transport::Socket, 1)
        .shm_threshold(usize::MAX)
        .start()
        .unwrap();
    let sent = image(32 * 1024 * 1024);
    let back = echo(&pool, &sent).await;
    assert!(back.is_shared() && back == sent);
    stop(pool).await;
}

#[actix::test]
async fn a_spilled_payload_and_shared_bytes_travel_together_both_ways() {
    let _serial = serial();
    let pool = start(Transport::Socket, 1);
    let big = ByteBuf::from(vec![9u8; 1024 * 1024]);
    let before = spilled(&pool).await;
    for len in [0, 5000] {
        let sent = image(len);
        let (big_back, back) = pool
            .send(images::Both {
                big: big.clone(),
                image: sent.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(big_back == big, "{len}: the payload came back changed");
        assert!(back == sent && back.is_shared(), "{len}");
    }
    // Arguments and result spilled, each call: the payload memfd first,
    // the `SharedBytes`' after it, both ways.
    assert_eq!(spilled(&pool).await - before, 4);
    stop(pool).await;
}

#[actix::test]
async fn a_worker_may_not_hand_back_more_than_max_shared_bytes() {
    let _serial = serial();
    let pool = builder(Transport::Socket, 1)
        .max_shared_bytes(4096)
        .start()
        .unwrap();
    // Going out, the daemon's own are not limited; coming back, they are.
    let small = image(4096);
    assert!(echo(&pool, &small).await == small);
    let large = pool
        .send(images::Echo { image: image(4097) })
        .await
        .unwrap();
    match large {
        Err(WorkerError::Protocol(why)) => assert!(why.contains("4096"), "{why}"),
        other => panic!("a result over the limit got {other:?}"),
    }
    // The worker is not at fault for the limit: its link stays, and it
    // serves the next call.
    let serving = wait_ready(&pool).await;
    assert!(echo(&pool, &small).await == small);
    let stats = pool.send(GetPoolStats).await.unwrap();
    assert_eq!(protocol_errors(&stats), 0, "no link dropped: {stats:?}");
    assert_eq!(wait_ready(&pool).await, serving);
    stop(pool).await;
}
