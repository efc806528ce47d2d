//! Helpers for the shared-memory tests (`shm.rs`, `shared_bytes.rs`):
//! forging a worker's frames with descriptors, and finding memfds left
//! behind.

use daemonic::actix::Addr;
use daemonic::worker::{GetPoolStats, PoolStats, WorkerMethods, WorkerPool};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Every seal: a memfd's size and bytes are final.
pub const ALL_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// A memfd holding `bytes`, with `seals` added.
pub fn memfd(bytes: &[u8], seals: libc::c_int) -> OwnedFd {
    // SAFETY: memfd_create with a static name.
    let fd = unsafe {
        libc::memfd_create(
            c"forged".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0);
    // SAFETY: a new descriptor we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes).unwrap();
    // SAFETY: fcntl on our memfd.
    assert!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0);
    file.into()
}

/// Ends this worker process with SIGKILL, as the OOM killer would.
pub fn die_by_sigkill() -> ! {
    // SAFETY: killing this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL is not delivered late")
}

/// The stream sockets of this process: a socket-transport worker's link.
pub fn stream_sockets() -> Vec<RawFd> {
    super::sockets()
        .into_iter()
        .filter(|(_, kind)| *kind == libc::SOCK_STREAM)
        .map(|(fd, _)| fd)
        .collect()
}

/// Sends `frame` (header included) on `sock` in one `sendmsg`, with `fds`.
pub fn send_forged(sock: RawFd, frame: &[u8], fds: &[OwnedFd]) {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let cmsgs: &[nix::sys::socket::ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [std::io::IoSlice::new(frame)];
    nix::sys::socket::sendmsg::<()>(
        sock,
        &iov,
        cmsgs,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .unwrap();
}

/// A frame of `body` whose header announces descriptors.
pub fn frame_with_fds(body: &[u8]) -> Vec<u8> {
    let mut frame = ((body.len() as u32) | 1 << 31).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Waits until a pool's worker is ready and the pool idle: the ready pids.
pub async fn wait_ready<W: WorkerMethods>(pool: &Addr<WorkerPool<W>>) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = pool.send(GetPoolStats).await.unwrap();
        let ready: Vec<i32> = stats
            .children
            .iter()
            .filter(|c| c.state == "ready")
            .map(|c| c.pid)
            .collect();
        if !ready.is_empty() && stats.in_flight == 0 && stats.queued == 0 {
            return ready;
        }
        assert!(Instant::now() < deadline, "pool ready: {stats:?}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Links a pool dropped as malformed.
pub fn protocol_errors(stats: &PoolStats) -> u64 {
    stats
        .errors
        .iter()
        .find(|(k, _)| k == "protocol")
        .map_or(0, |(_, n)| *n)
}

/// Memfds named `name` that `pid` maps (the lines of `/proc/<pid>/maps`)
/// or holds (the targets in `/proc/<pid>/fd`).
pub fn memfds(pid: &str, name: &str) -> Vec<String> {
    let memfd = format!("memfd:{name}");
    let mut found: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&memfd))
        .map(str::to_string)
        .collect();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if target.contains(&memfd) {
                found.push(target);
            }
        }
    }
    found
}

/// Waits (bounded) until neither this process nor `pids` map or hold a
/// memfd named `name`; panics with what is left.
pub fn assert_no_memfds_left(name: &str, pids: &[i32]) {
    let me = std::process::id().to_string();
    let left = || -> Vec<String> {
        let mut left = memfds(&me, name);
        for pid in pids {
            left.extend(memfds(&pid.to_string(), name));
        }
        left
    };
    assert!(
        super::wait_until(Duration::from_secs(10), || left().is_empty()),
        "{name} memfds left: {:?}",
        left()
    );
}

/// The entries of `/dev/shm`.
pub fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `$call` to `$pool`, whose worker forges a malformed reply to it,
/// and checks that the pool dropped the worker's link as malformed: the
/// call fails with `Died` (that worker's), at once (not after the worker's
/// nap), and the pool counts one more protocol error. (A macro: the pool's
/// and the call's types differ from test to test.)
#[allow(unused_macros)] // most test crates use none of this module
macro_rules! assert_link_dropped {
    ($pool:expr, $call:expr, $what:expr) => {{
        let (pool, what) = (&$pool, &$what);
        $crate::common::shm::wait_ready(pool).await;
        let before = pool.send(daemonic::worker::GetPoolStats).await.unwrap();
        let started = std::time::Instant::now();
        match pool.send($call).await.unwrap() {
            Err(daemonic::worker::WorkerError::Died { pid, .. }) => {
                assert!(before.children.iter().any(|c| c.pid == pid), "{what}")
            }
            other => panic!("{what}: the forging worker's call got {other:?}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{what}"
        );
        let after = pool.send(daemonic::worker::GetPoolStats).await.unwrap();
        assert_eq!(
            $crate::common::shm::protocol_errors(&after),
            $crate::common::shm::protocol_errors(&before) + 1,
            "{what}: the link was dropped as malformed"
        );
    }};
}
#[allow(unused_imports)]
pub(crate) use assert_link_dropped;
