//! The fork server's warm spare (`ForkServer::set_prefork`): a child forked
//! ahead of the next spawn request, which that request is handed to. It is
//! a real process of the daemon, checked from outside through `/proc`: how
//! it waits, what it holds, that it becomes exactly one task set up as a
//! child forked on demand would be, and that it never outlives the fork
//! server or becomes a zombie. Alone in its binary (it counts this
//! process's children and kills the fork server); tests take turns through
//! `SERIAL`.

mod common;

use common::{wait_until, zombie_children, Behave, Probe};
use daemonic::task::{Task, TaskContext};
use daemonic::testing::fork_server;
use daemonic::BoxError;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes this test's turn and starts a fork server with `prefork` on or off.
fn fresh_fork_server(prefork: bool) -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    fork_server().set_prefork(prefork);
    fork_server().shutdown(Duration::from_secs(5));
    fork_server().prestart().unwrap();
    guard
}

/// `(comm, state, ppid)` of a process, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(String, char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// This process's children named `fork-spare` that are alive.
fn spares() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            matches!(stat(pid), Some((comm, state, ppid))
                if ppid == me && comm == "fork-spare" && state != 'Z')
        })
        .collect()
}

/// Waits for the one spare of the running fork server.
fn the_spare() -> i32 {
    let mut found = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            found = spares();
            found.len() == 1
        }),
        "one spare waits: {found:?}"
    );
    found[0]
}

fn gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Descriptors a process holds, as `(number, target)`.
fn descriptors(pid: i32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// What a task reports about its own start: its pid, its open descriptors
/// (by number), its signal state and its death signal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    path: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Start {
    pid: i32,
    fds: Vec<i32>,
    signals: Vec<String>,
    death_signal: i32,
    ppid: i32,
}

#[daemonic::task]
impl Task for Report {
    fn run(self, _: &mut TaskContext) -> Result<(), BoxError> {
        // Before anything is opened here.
        // SAFETY: F_GETFD on numbers we do not own only reads flags.
        let fds = (0..256)
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
            .collect();
        let mut death_signal: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int.
        unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut death_signal) };
        let status = std::fs::read_to_string("/proc/self/status")?;
        let signals = status
            .lines()
            .filter(|l| {
                ["SigBlk:", "SigIgn:", "SigCgt:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(String::from)
            .collect();
        let start = Start {
            pid: std::process::id() as i32,
            fds,
            signals,
            death_signal,
            ppid: std::os::unix::process::parent_id() as i32,
        };
        let tmp = format!("{}.tmp", self.path);
        std::fs::write(&tmp, serde_json::to_vec(&start)?)?;
        std::fs::rename(tmp, &self.path)?;
        Ok(())
    }
}

/// Runs a [`Report`] task to its end and returns what it saw.
fn report(dir: &tempfile::TempDir, name: &str) -> Start {
    let path = dir.path().join(name);
    let mut child = daemonic::task::spawn(&Report {
        path: path.display().to_string(),
    })
    .unwrap();
    assert!(child.wait_blocking().unwrap().success());
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn no_zombies() {
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children().is_empty()),
        "zombies: {:?}",
        zombie_children()
    );
}

#[test]
fn a_spare_waits_named_holding_only_its_two_sockets() {
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    let (_, _, ppid) = stat(spare).unwrap();
    assert_eq!(ppid, std::process::id() as i32, "the daemon's own child");
    let held: Vec<_> = descriptors(spare)
        .into_iter()
        .filter(|(fd, _)| *fd > 2)
        .collect();
    assert_eq!(
        held.len(),
        2,
        "its socket to the fork server and the spare socket: {held:?}"
    );
    assert!(
        held.iter().all(|(_, t)| t.starts_with("socket:")),
        "{held:?}"
    );
    let cmdline = std::fs::read(format!("/proc/{spare}/cmdline")).unwrap();
    let title = String::from_utf8_lossy(&cmdline);
    assert!(
        title.contains(": fork-spare") && !title.contains("fork-server"),
        "a spare does not pass for a second fork server in `ps aux`: {title:?}"
    );
}

#[test]
fn a_task_from_a_spare_starts_as_one_forked_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let on_demand = {
        let _turn = fresh_fork_server(false);
        report(&dir, "on-demand")
    };
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    let from_spare = report(&dir, "from-spare");
    assert_eq!(from_spare.pid, spare, "the request went to the spare");
    assert_eq!(from_spare.fds, on_demand.fds);
    assert_eq!(from_spare.signals, on_demand.signals);
    assert_eq!(from_spare.death_signal, libc::SIGKILL);
    assert_eq!(from_spare.death_signal, on_demand.death_signal);
    assert_eq!(from_spare.ppid, std::process::id() as i32);
    assert_eq!(on_demand.ppid, std::process::id() as i32);
    no_zombies();
}

#[test]
fn each_spare_becomes_one_task_and_is_replaced() {
    let _turn = fresh_fork_server(true);
    let dir = tempfile::tempdir().unwrap();
    let mut pids = Vec::new();
    for i in 0..10 {
        let spare = the_spare();
        let start = report(&dir, &format!("task-{i}"));
        assert_eq!(start.pid, spare, "task {i} ran in the spare that waited");
        assert!(
            wait_until(Duration::from_secs(5), || gone(spare)),
            "the task's process {spare} ended and was reaped"
        );
        pids.push(start.pid);
    }
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), pids.len(), "a spare ran one task: {pids:?}");
    the_spare();
    no_zombies();
}

#[test]
fn descriptors_of_one_request_never_reach_the_next_spare() {
    let _turn = fresh_fork_server(true);
    let first = the_spare();
    let running = daemonic::task::spawn(&Probe(Behave::Sleep(60_000))).unwrap();
    assert_eq!(running.pid(), first);
    // Renamed once its descriptors are in place.
    assert!(wait_until(Duration::from_secs(5), || {
        stat(first).is_some_and(|(comm, _, _)| comm == "task:probe")
    }));
    let channel = descriptors(first)
        .into_iter()
        .find(|(fd, _)| *fd == 3)
        .map(|(_, target)| target)
        .expect("the task holds its channel on fd 3");
    let next = the_spare();
    assert_ne!(next, first, "a new spare");
    let held: Vec<_> = descriptors(next)
        .into_iter()
        .filter(|(fd, _)| *fd > 2)
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter().all(|(_, target)| *target != channel),
        "the next spare holds the last task's channel {channel}: {held:?}"
    );
    drop(running); // kills and reaps
    no_zombies();
}

#[test]
fn the_spare_dies_with_the_fork_server_and_is_reaped() {
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    let server = fork_server().pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(5), || gone(spare) && gone(server)),
        "spare {spare} gone: {}, fork server {server} gone: {}",
        gone(spare),
        gone(server)
    );
    no_zombies();
    let mut next = daemonic::task::spawn(&Probe(Behave::Exit(3))).unwrap();
    assert_eq!(
        next.wait_blocking().unwrap(),
        daemonic::task::TaskStatus::Exited(3)
    );
}

/// Nobody is left to report the spare: it dies while its fork server is
/// stopped (so the fork server never sees it go), then the fork server is
/// killed. The daemon, which heard of the spare at its birth, reaps it.
#[test]
fn a_spare_and_its_fork_server_killed_together_leave_no_zombie() {
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    let server = fork_server().pid().unwrap();
    // SAFETY: signalling our own children.
    unsafe {
        libc::kill(server, libc::SIGSTOP);
        libc::kill(spare, libc::SIGKILL);
    }
    assert!(
        wait_until(Duration::from_secs(5), || stat(spare)
            .map_or(true, |(_, state, _)| state == 'Z')),
        "the spare {spare} died"
    );
    // SAFETY: as above.
    unsafe { libc::kill(server, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(5), || gone(spare) && gone(server)),
        "spare {spare} reaped: {}, fork server {server} reaped: {}",
        gone(spare),
        gone(server)
    );
    no_zombies();
    let mut next = daemonic::task::spawn(&Probe(Behave::Exit(4))).unwrap();
    assert_eq!(
        next.wait_blocking().unwrap(),
        daemonic::task::TaskStatus::Exited(4)
    );
}

#[test]
fn a_killed_spare_is_reaped_and_replaced() {
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(spare, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(5), || gone(spare)),
        "the killed spare {spare} was reaped"
    );
    let next = the_spare();
    assert_ne!(next, spare);
    no_zombies();
}

#[test]
fn a_spare_survives_the_signals_sent_to_a_whole_daemon() {
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    for sig in [
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGQUIT,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGPIPE,
    ] {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(spare, sig) };
    }
    let dir = tempfile::tempdir().unwrap();
    let start = report(&dir, "after-signals");
    assert_eq!(start.pid, spare, "the spare lived on and took the request");
    no_zombies();
}

#[test]
fn shutdown_leaves_no_spare() {
    let _turn = fresh_fork_server(true);
    let spare = the_spare();
    fork_server().shutdown(Duration::from_secs(5));
    assert!(gone(spare), "the spare was stopped and reaped by shutdown");
    assert!(spares().is_empty());
    assert!(zombie_children().is_empty(), "{:?}", zombie_children());
}

#[test]
fn without_prefork_the_fork_server_holds_no_spare_socket() {
    let _turn = fresh_fork_server(false);
    let server = fork_server().pid().unwrap();
    let sockets = descriptors(server)
        .into_iter()
        .filter(|(_, t)| t.starts_with("socket:"))
        .count();
    assert_eq!(sockets, 1, "only its control socket");
    let mut child = daemonic::task::spawn(&Probe(Behave::Succeed)).unwrap();
    assert!(child.wait_blocking().unwrap().success());
    assert!(spares().is_empty());
}
