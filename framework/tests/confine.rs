//! Least privilege per pool: a pool's workers run as their own user, can
//! never gain privileges, and live within resource limits. Checked from
//! outside (`/proc`) and from inside (what the worker itself can do). Needs
//! root (as in CI); skipped with a message otherwise.

mod common;

use common::{wait_until, zombie_children};
use daemonic::worker::{WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Sandboxed;

/// What a worker sees of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pid: i32,
    uid: u32,
    euid: u32,
    gid: u32,
    groups: Vec<u32>,
    no_new_privs: bool,
    could_become_root: bool,
    address_space: u64,
    open_files: u64,
    nice: i32,
    /// The signal it gets when the daemon dies (`PR_GET_PDEATHSIG`).
    death_signal: i32,
}

fn rlimit(resource: nix::sys::resource::Resource) -> u64 {
    nix::sys::resource::getrlimit(resource).map_or(0, |(soft, _)| soft)
}

#[daemonic::worker]
impl Sandboxed {
    pub fn seen(&mut self) -> Seen {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Seen {
            pid: std::process::id() as i32,
            uid: nix::unistd::getuid().as_raw(),
            euid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: nix::unistd::getgroups()
                .unwrap_or_default()
                .iter()
                .map(|g| g.as_raw())
                .collect(),
            no_new_privs: status.lines().any(|l| l == "NoNewPrivs:\t1"),
            could_become_root: nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok(),
            address_space: rlimit(nix::sys::resource::Resource::RLIMIT_AS),
            open_files: rlimit(nix::sys::resource::Resource::RLIMIT_NOFILE),
            // SAFETY: plain getter.
            nice: unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
            death_signal: {
                let mut signal: libc::c_int = 0;
                // SAFETY: PR_GET_PDEATHSIG writes one int.
                unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int) };
                signal
            },
        }
    }

    /// Allocates and touches `mib` MiB.
    pub fn hog(&mut self, mib: usize) -> usize {
        let block = vec![1u8; mib * 1024 * 1024];
        block.iter().step_by(4096).map(|b| *b as usize).sum()
    }
}

const NOBODY: u32 = 65534;
const MEMORY: u64 = 256 * 1024 * 1024;

#[test]
fn a_pool_runs_as_its_own_user_within_its_limits() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: a pool's own user needs a daemon running as root");
        return;
    }
    // The worker that breaks its memory limit aborts: no core file.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0).unwrap();
    let system = actix::System::new();
    system.block_on(async {
        let pool = WorkerPool::builder(Sandboxed)
            .size(1)
            .user("nobody")
            .no_new_privs()
            .limit_memory(MEMORY)
            .limit_open_files(64)
            .nice(5)
            .start()
            .unwrap();
        let seen = pool.send(sandboxed::Seen {}).await.unwrap().unwrap();
        assert_eq!(
            (seen.uid, seen.euid, seen.gid),
            (NOBODY, NOBODY, NOBODY),
            "{seen:?}"
        );
        assert_eq!(seen.groups, vec![NOBODY], "{seen:?}");
        assert!(seen.no_new_privs, "{seen:?}");
        assert!(!seen.could_become_root, "{seen:?}");
        assert_eq!(
            (seen.address_space, seen.open_files, seen.nice),
            (MEMORY, 64, 5)
        );
        // Its own user, and still a child that dies with the daemon (the
        // kernel clears the death signal when a process changes its ids).
        assert_eq!(seen.death_signal, libc::SIGKILL, "{seen:?}");
        // From outside, as an operator would check it.
        let status = std::fs::read_to_string(format!("/proc/{}/status", seen.pid)).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l == "Uid:\t65534\t65534\t65534\t65534"),
            "{status}"
        );
        // Over its memory limit: the call resolves Died, the worker is replaced.
        match pool.send(sandboxed::Hog { mib: 1024 }).await.unwrap() {
            Err(WorkerError::Died { pid, exit }) => {
                assert_eq!(pid, seen.pid);
                assert_eq!(exit.signal(), Some(libc::SIGABRT), "{exit}");
            }
            other => panic!("expected Died, got {other:?}"),
        }
        let next = pool.send(sandboxed::Seen {}).await.unwrap().unwrap();
        assert_ne!(next.pid, seen.pid, "a fresh worker");
        assert_eq!(next.uid, NOBODY);
        // Within the limit, fine.
        assert!(pool.send(sandboxed::Hog { mib: 16 }).await.unwrap().is_ok());
    });
    drop(system);
    assert!(wait_until(Duration::from_secs(5), || zombie_children().is_empty()));
}
