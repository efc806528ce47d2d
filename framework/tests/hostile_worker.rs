//! End to end: a worker turned hostile writes random bytes to every socket
//! it holds (its link to the pool among them, on both transports), with
//! descriptors attached where the socket carries them, then exits. The
//! daemon (this test process) must stay unharmed: the call the worker held
//! is answered `Died`, every other caller is answered, the pool replaces the
//! worker, and no zombie or descriptor is left behind. Alone in its binary
//! so descriptor counts are not disturbed by other tests.

mod common;

use common::{fd_count, sockets, wait_until, zombie_children};
use daemonic::actix::Addr;
use daemonic::fuzz::gen::Rng;
use daemonic::worker::Transport;
use daemonic::worker::{GetPoolStats, StopPool, WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
pub struct Hostile;

#[daemonic::worker]
impl Hostile {
    pub fn echo(&mut self, x: u64) -> u64 {
        x
    }

    /// Writes hostile bytes made from `seed` to every socket of this
    /// process, then exits without a reply.
    pub fn garble(&mut self, seed: u64) -> u64 {
        garble_sockets(seed, Attack::Random);
        // SAFETY: leaving at once, as a crashing parser would.
        unsafe { libc::_exit(0) }
    }

    /// Sends, on every SOCK_SEQPACKET socket (ipc-channel's), a message
    /// whose header announces a 1 TiB message, with a socket attached as
    /// if the rest were to follow on it; then exits.
    pub fn announce_huge(&mut self) -> u64 {
        garble_sockets(0, Attack::HugeAnnounced);
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    }

    /// Sends, on every SOCK_SEQPACKET socket, the first part of a 1 MiB
    /// frame with the socket the rest would come on, hands the far end of
    /// that socket to a process that outlives it (its pid appended to
    /// `pids`), and exits.
    pub fn hold_the_rest(&mut self, pids: String) -> u64 {
        for (fd, kind) in sockets() {
            if kind != libc::SOCK_SEQPACKET {
                continue;
            }
            let mut message = ((1usize << 20) + 8).to_ne_bytes().to_vec();
            message.extend_from_slice(&(1u64 << 20).to_le_bytes());
            message.extend_from_slice(&[7u8; 64]);
            let (near, far) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::SeqPacket,
                None,
                nix::sys::socket::SockFlag::empty(),
            )
            .unwrap();
            send_with(fd, &message, &[near]);
            // It outlives this worker on purpose (the test kills it).
            #[allow(clippy::zombie_processes)]
            let holder = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            drop(far);
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&pids)
                .unwrap();
            use std::io::Write;
            let _ = writeln!(file, "{}", holder.id());
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    }
}

/// Kills the processes whose pids a hostile worker wrote to a file.
struct Holders(std::path::PathBuf);

impl Drop for Holders {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(&self.0).unwrap_or_default();
        for pid in pids.lines().filter_map(|l| l.parse::<i32>().ok()) {
            // SAFETY: signalling a process a test worker started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[derive(Clone, Copy)]
enum Attack {
    Random,
    HugeAnnounced,
}

/// Descriptors a hostile worker attaches: a socket (ipc-channel takes one
/// as a channel), a pipe, a memfd and a directory (it maps anything else
/// as shared memory).
fn attachments(rng: &mut Rng) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    for _ in 0..rng.below(4) {
        let fd = match rng.below(4) {
            0 => std::os::unix::net::UnixStream::pair()
                .map(|(a, _)| OwnedFd::from(a))
                .ok(),
            1 => nix::unistd::pipe().map(|(r, _)| r).ok(),
            2 => {
                // SAFETY: memfd_create with a static name.
                let fd = unsafe { libc::memfd_create(c"hostile".as_ptr(), libc::MFD_CLOEXEC) };
                // SAFETY: a new descriptor we own.
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            }
            _ => std::fs::File::open("/").map(OwnedFd::from).ok(),
        };
        fds.extend(fd);
    }
    fds
}

fn send_with(fd: RawFd, bytes: &[u8], fds: &[OwnedFd]) {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let cmsgs: &[nix::sys::socket::ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let _ = nix::sys::socket::sendmsg::<()>(
        fd,
        &iov,
        cmsgs,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

fn garble_sockets(seed: u64, attack: Attack) {
    let mut rng = Rng::new(seed);
    for (fd, kind) in sockets() {
        match (attack, kind) {
            (Attack::HugeAnnounced, libc::SOCK_SEQPACKET) => {
                let mut message = (1usize << 40).to_ne_bytes().to_vec();
                message.extend_from_slice(&[0u8; 8]);
                let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
                send_with(fd, &message, &[OwnedFd::from(a)]);
            }
            (Attack::HugeAnnounced, _) => {}
            (Attack::Random, libc::SOCK_STREAM) => {
                // A frame header (random, huge, or plausible), then bytes.
                let mut bytes = match rng.below(3) {
                    0 => rng.bytes(4),
                    1 => (60u32 << 20).to_le_bytes().to_vec(),
                    _ => (rng.below(2000) as u32).to_le_bytes().to_vec(),
                };
                let n = rng.below(4096);
                bytes.extend(rng.bytes(n));
                let fds = attachments(&mut rng);
                send_with(fd, &bytes, &fds);
            }
            (Attack::Random, _) => {
                for _ in 0..1 + rng.below(4) {
                    let n = rng.below(64);
                    let mut bytes = rng.bytes(n);
                    if n >= 8 && rng.below(2) == 0 {
                        // ipc-channel's header: the total size of the message.
                        let total = [n - 8, n, 1 << 20, 1 << 40, usize::MAX][rng.below(5)];
                        bytes[..8].copy_from_slice(&total.to_ne_bytes());
                    }
                    let fds = attachments(&mut rng);
                    send_with(fd, &bytes, &fds);
                }
            }
        }
    }
}

const SIZE: usize = 2;
const ROUNDS: u64 = 40;

async fn wait_ready(pool: &Addr<WorkerPool<Hostile>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = pool.send(GetPoolStats).await.unwrap();
        let ready = stats.children.iter().filter(|c| c.state == "ready").count();
        if ready == SIZE && stats.in_flight == 0 && stats.queued == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "pool back to {SIZE}: {stats:?}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Drill {
    Garble,
    AnnounceHuge,
    HoldTheRest,
}

/// `ROUNDS` hostile workers in a row; returns after checking the pool.
async fn rounds(
    pool: &Addr<WorkerPool<Hostile>>,
    transport: Transport,
    drill: Drill,
    holders: &str,
) {
    let rounds = if drill == Drill::Garble { ROUNDS } else { 4 };
    for round in 0..rounds {
        wait_ready(pool).await;
        let pids: Vec<i32> = pool
            .send(GetPoolStats)
            .await
            .unwrap()
            .children
            .iter()
            .map(|c| c.pid)
            .collect();
        // Callers busy on the other worker while one turns hostile.
        let bystanders: Vec<_> = (0..20u64).map(|x| pool.send(hostile::Echo { x })).collect();
        let attack = match drill {
            Drill::AnnounceHuge => pool.send(hostile::AnnounceHuge {}).await.unwrap(),
            Drill::HoldTheRest => pool
                .send(hostile::HoldTheRest {
                    pids: holders.to_string(),
                })
                .await
                .unwrap(),
            Drill::Garble => pool
                .send(hostile::Garble {
                    seed: round * 7919 + transport as u64,
                })
                .await
                .unwrap(),
        };
        match attack {
            Err(WorkerError::Died { pid, .. }) => {
                assert!(pids.contains(&pid), "{pid} is one of {pids:?}")
            }
            other => panic!("{transport:?} round {round}: the hostile call got {other:?}"),
        }
        for (x, reply) in futures_util::future::join_all(bystanders)
            .await
            .into_iter()
            .enumerate()
        {
            match reply.unwrap() {
                Ok(y) => assert_eq!(y, x as u64),
                Err(WorkerError::Died { .. }) => {}
                Err(other) => panic!("bystander {x}: {other:?}"),
            }
        }
    }
    wait_ready(pool).await;
    // The replacements work.
    for x in 0..10u64 {
        assert_eq!(pool.send(hostile::Echo { x }).await.unwrap(), Ok(x));
    }
}

fn run(transport: Transport, drill: Drill) {
    daemonic::testing::fork_server().prestart().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("holders");
    let _holders = Holders(pids.clone());
    let pids = pids.to_string_lossy().into_owned();
    let system = actix::System::new();
    let fds_before = system.block_on(async { fd_count() });
    system.block_on(async move {
        let pool = WorkerPool::builder(Hostile)
            .size(SIZE)
            .transport(transport)
            // A hang would be a failure of the test, never a pass.
            .call_timeout(Duration::from_secs(20))
            .restart_limit(1000, Duration::from_secs(1))
            .start()
            .unwrap();
        rounds(&pool, transport, drill, &pids).await;
        pool.send(StopPool {
            grace: Duration::from_secs(5),
        })
        .await
        .unwrap();
    });
    drop(system);
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children().is_empty()),
        "zombies: {:?}",
        zombie_children()
    );
    assert!(
        wait_until(Duration::from_secs(10), || fd_count() <= fds_before),
        "descriptors: {fds_before} before, {} after",
        fd_count()
    );
}

#[test]
fn hostile_workers_leave_the_daemon_unharmed() {
    // Sequential: descriptor counts stay meaningful.
    run(Transport::Socket, Drill::Garble);
    run(Transport::IpcChannel, Drill::Garble);
    run(Transport::IpcChannel, Drill::AnnounceHuge);
    run(Transport::IpcChannel, Drill::HoldTheRest);
}
