//! The fork server fails too: it is stopped, killed, or dies between forking
//! a child and answering. Pools keep serving from their healthy workers, the
//! fork server is replaced, and no child is left behind. Alone in its binary:
//! the fork server is shared by every test of a process, and these tests
//! stop and kill it; they take turns through `SERIAL`.

mod common;

use common::{wait_until, zombie_children, Behave, Probe};
use daemonic::testing::fork_server;
use daemonic::testing::KillWorker;
use daemonic::testing::{inject_next_spawn, Fault};
use daemonic::worker::{GetPoolStats, WorkerPool};
use daemonic::Error;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Echo;

#[daemonic::worker]
impl Echo {
    pub fn pid(&mut self) -> i32 {
        std::process::id() as i32
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling a process of this test.
    unsafe { libc::kill(pid, sig) };
}

fn gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Children of this process other than the fork server and its waiting
/// spare (`fork-spare`, see `tests/prefork.rs`): none may be left behind by
/// a spawn that went wrong.
fn stray_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let server = fork_server().pid();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid: Option<i32> = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        let spare = stat.contains("(fork-spare)") && !rest.trim_start().starts_with('Z');
        if ppid == Some(me) && Some(pid) != server && !spare {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_stopped_fork_server_blocks_no_call_and_is_replaced() {
    let _serial = serial();
    let system = actix::System::new();
    system.block_on(async {
        let pool = WorkerPool::builder(Echo)
            .size(2)
            .warm_spares(0)
            .start()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = pool.send(GetPoolStats).await.unwrap();
            if stats.children.iter().filter(|c| c.state == "ready").count() == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "two workers ready: {stats:?}");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let stopped = fork_server().pid().expect("a fork server runs");
        signal(stopped, libc::SIGSTOP);
        // A worker dies: its replacement is requested from the stopped server.
        let victim = pool
            .send(KillWorker {
                index: 0,
                signal: libc::SIGKILL,
            })
            .await
            .unwrap()
            .expect("an active worker");
        let wait_for_respawn = Instant::now() + Duration::from_secs(10);
        while pool
            .send(GetPoolStats)
            .await
            .unwrap()
            .children
            .iter()
            .any(|c| c.pid == victim)
        {
            assert!(Instant::now() < wait_for_respawn, "the victim was settled");
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        // The pool's thread is free: the healthy worker answers at once,
        // however long the fork server takes.
        let began = Instant::now();
        for _ in 0..20 {
            let pid = pool.send(echo::Pid {}).await.unwrap().unwrap();
            assert_ne!(pid, victim);
        }
        let stats = pool.send(GetPoolStats).await.unwrap();
        let answered = began.elapsed();
        eprintln!("20 calls and a stats request with a stopped fork server: {answered:?}");
        assert!(
            answered < Duration::from_secs(2),
            "calls waited on the stopped fork server: {answered:?}"
        );
        assert_eq!(stats.children.len(), 1, "{stats:?}");
        // The stopped fork server is declared hung, killed and replaced; the
        // pool gets back to two workers.
        let back = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = pool.send(GetPoolStats).await.unwrap();
            let ready = stats.children.iter().filter(|c| c.state == "ready").count();
            if ready == 2 {
                break;
            }
            assert!(Instant::now() < back, "pool back to size: {stats:?}");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            wait_until(Duration::from_secs(5), || gone(stopped)),
            "the stopped fork server {stopped} was killed and reaped"
        );
        assert_ne!(fork_server().pid(), Some(stopped));
        pool.send(daemonic::worker::StopPool {
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
}

fn lost_reply(fault: Fault) {
    fork_server().prestart().unwrap();
    let before = stray_children();
    assert!(before.is_empty(), "children before: {before:?}");
    let server = fork_server().pid().unwrap();
    inject_next_spawn(fault);
    let began = Instant::now();
    match daemonic::task::spawn(&Probe(Behave::Sleep(60_000))) {
        Err(Error::ForkServer(why)) => eprintln!("{fault:?}: {why} after {:?}", began.elapsed()),
        other => panic!("expected a fork-server error, got {other:?}"),
    }
    // The child the fork server forked before it failed is found and
    // reaped; the fork server is replaced.
    assert!(
        wait_until(Duration::from_secs(10), || stray_children().is_empty()
            && gone(server)),
        "left behind: {:?} (fork server {server} gone: {})",
        stray_children(),
        gone(server)
    );
    assert!(zombie_children().is_empty());
    let mut next = daemonic::task::spawn(&Probe(Behave::Succeed)).expect("the next spawn works");
    assert!(next.wait_blocking().unwrap().success());
    assert_ne!(fork_server().pid(), Some(server));
}

#[test]
fn a_fork_server_that_stops_before_answering_leaves_no_child() {
    let _serial = serial();
    lost_reply(Fault::StopAfterClone);
}

#[test]
fn a_fork_server_that_dies_before_answering_leaves_no_child() {
    let _serial = serial();
    lost_reply(Fault::ExitAfterClone);
}

#[test]
fn a_killed_fork_server_is_replaced_for_the_next_spawn() {
    let _serial = serial();
    fork_server().prestart().unwrap();
    let server = fork_server().pid().unwrap();
    signal(server, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || gone(server)));
    let mut child = daemonic::task::spawn(&Probe(Behave::Exit(4))).expect("spawn after the kill");
    assert_eq!(
        child.wait_blocking().unwrap(),
        daemonic::task::TaskStatus::Exited(4)
    );
    assert_ne!(fork_server().pid(), Some(server));
}

/// The marker is validated in a constructor, before `main`: one that fails
/// stops the program with an error instead of running its `main`.
#[test]
fn an_invalid_fork_server_marker_stops_the_program_before_main() {
    let me = std::env::current_exe().unwrap();
    for marker in ["1", "3:abc:1", "7:00ff:999999", ""] {
        let out = std::process::Command::new(&me)
            .args(["--list"])
            .env("DAEMONIC_FORK_SERVER", marker)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "marker {marker:?}: {stderr}");
        assert!(stderr.contains("refusing to start"), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(": test"),
            "main ran with marker {marker:?}"
        );
    }
}

/// A setuid program must not trust a marker its (less privileged) caller
/// put in the environment: run a setuid-root copy of this test binary as
/// `nobody` (real uid nobody, effective uid root: `AT_SECURE`).
#[test]
fn the_marker_is_refused_in_a_setuid_program() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: making a setuid-root program needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // Not under /tmp, which may be mounted nosuid.
    let base = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir_in(base.parent().unwrap()).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("setuid-copy");
    std::fs::copy(&base, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .arg("--list")
        .env("DAEMONIC_FORK_SERVER", "3:00ff:1")
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("secure mode"), "{stderr}");
}
