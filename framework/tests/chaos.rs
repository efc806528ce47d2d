//! Chaos: sustained calls while everything around the workers goes wrong at
//! once. Workers are SIGKILLed, stopped and continued, asked to terminate;
//! every process of the pool gets USR1/HUP storms; the fork server itself is
//! SIGKILLed. A journal written by the worker method proves what ran. Alone
//! in its binary so descriptor counts are not disturbed by other tests.

mod common;

use common::{fd_count, fd_list, wait_until, zombie_children};
use daemonic::actix::Addr;
use daemonic::testing::KillWorker;
use daemonic::worker::Transport;
use daemonic::worker::{GetPoolStats, StopPool, WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records every execution in a journal, so a call that ran twice shows.
#[daemonic::worker]
#[derive(Serialize, Deserialize)]
pub struct Journal {
    path: String,
    #[serde(skip)]
    file: Option<std::fs::File>,
}

#[daemonic::worker]
impl Journal {
    fn started(&mut self, _: &mut daemonic::WorkerContext) {
        self.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .ok();
    }

    pub fn square(&mut self, id: u64) -> u64 {
        if let Some(f) = &mut self.file {
            // One write per line; O_APPEND keeps lines whole.
            let _ = f.write_all(format!("{id}\n").as_bytes());
        }
        // A little work, so that kills also land while a call runs.
        let until = Instant::now() + Duration::from_micros(300);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        id * id
    }
}

/// At least this many calls; more while the drills have not all fired
/// often enough.
const CALLS: u64 = 20_000;
const CALLERS: u64 = 8;
const SIZE: usize = 3;

#[test]
fn every_call_resolves_exactly_once_while_everything_fails() {
    daemonic::testing::fork_server().prestart().unwrap();
    // Sequentially, so descriptor counts stay meaningful.
    chaos(Transport::Socket);
    chaos(Transport::IpcChannel);
}

/// How often each drill fired.
#[derive(Default)]
struct Drills {
    kills: AtomicU32,
    stops: AtomicU32,
    terms: AtomicU32,
    storms: AtomicU32,
    server_kills: AtomicU32,
}

impl Drills {
    fn enough(&self) -> bool {
        self.kills.load(Ordering::Relaxed) >= 20
            && self.stops.load(Ordering::Relaxed) >= 5
            && self.terms.load(Ordering::Relaxed) >= 5
            && self.storms.load(Ordering::Relaxed) >= 10
            && self.server_kills.load(Ordering::Relaxed) >= 4
    }

    fn report(&self) -> String {
        format!(
            "{} SIGKILLs, {} SIGSTOP/SIGCONTs, {} SIGTERMs, {} USR1/HUP storms, {} fork-server kills",
            self.kills.load(Ordering::Relaxed),
            self.stops.load(Ordering::Relaxed),
            self.terms.load(Ordering::Relaxed),
            self.storms.load(Ordering::Relaxed),
            self.server_kills.load(Ordering::Relaxed),
        )
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling our own worker or fork server.
    unsafe { libc::kill(pid, sig) };
}

async fn worker_pids(pool: &Addr<WorkerPool<Journal>>) -> Vec<i32> {
    pool.send(GetPoolStats)
        .await
        .map(|s| s.children.iter().map(|c| c.pid).collect())
        .unwrap_or_default()
}

/// Runs `drill` every `period` until `done`.
fn every(
    period: Duration,
    done: Arc<AtomicBool>,
    mut drill: impl FnMut() -> futures_util::future::LocalBoxFuture<'static, ()> + 'static,
) -> tokio::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        while !done.load(Ordering::Relaxed) {
            actix_rt::time::sleep(period).await;
            drill().await;
        }
    })
}

/// Outcome of one call, as its caller saw it.
enum Seen {
    Ok(u64),
    Died(u64, i32),
}

fn chaos(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::write(&journal, "").unwrap();
    let path = journal.to_string_lossy().into_owned();

    let system = actix::System::new();
    let fds_before = system.block_on(async { fd_count() });
    let fd_list_before = fd_list();
    let drills = Arc::new(Drills::default());
    let stats = drills.clone();
    let (seen, calls) = system.block_on(async move {
        let pool = WorkerPool::builder(Journal { path, file: None })
            .size(SIZE)
            .transport(transport)
            .max_in_flight(4)
            .queue_capacity(100_000)
            .restart_limit(100_000, Duration::from_secs(1))
            .start()
            .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let mut drill_tasks = Vec::new();

        // SIGKILL a worker every 50 ms.
        let (p, d, n) = (pool.clone(), drills.clone(), AtomicU32::new(0));
        drill_tasks.push(every(Duration::from_millis(50), done.clone(), move || {
            let (p, d) = (p.clone(), d.clone());
            let index = n.fetch_add(1, Ordering::Relaxed) as usize;
            Box::pin(async move {
                let kill = KillWorker {
                    index,
                    signal: libc::SIGKILL,
                };
                if let Ok(Some(_)) = p.send(kill).await {
                    d.kills.fetch_add(1, Ordering::Relaxed);
                }
            })
        }));
        // SIGSTOP a worker for 20 ms, then SIGCONT it.
        let (p, d, n) = (pool.clone(), drills.clone(), AtomicU32::new(0));
        drill_tasks.push(every(Duration::from_millis(120), done.clone(), move || {
            let (p, d) = (p.clone(), d.clone());
            let index = n.fetch_add(1, Ordering::Relaxed) as usize;
            Box::pin(async move {
                let pids = worker_pids(&p).await;
                if let Some(&pid) = pids.get(index % pids.len().max(1)) {
                    signal(pid, libc::SIGSTOP);
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                    signal(pid, libc::SIGCONT);
                    d.stops.fetch_add(1, Ordering::Relaxed);
                }
            })
        }));
        // Ask a worker to terminate (it finishes its call and leaves).
        let (p, d, n) = (pool.clone(), drills.clone(), AtomicU32::new(0));
        drill_tasks.push(every(Duration::from_millis(200), done.clone(), move || {
            let (p, d) = (p.clone(), d.clone());
            let index = n.fetch_add(1, Ordering::Relaxed) as usize;
            Box::pin(async move {
                let term = KillWorker {
                    index,
                    signal: libc::SIGTERM,
                };
                if let Ok(Some(_)) = p.send(term).await {
                    d.terms.fetch_add(1, Ordering::Relaxed);
                }
            })
        }));
        // USR1 and HUP to every process of the pool, fork server included
        // (`pkill -USR1 -f <daemon>`).
        let (p, d) = (pool.clone(), drills.clone());
        drill_tasks.push(every(Duration::from_millis(100), done.clone(), move || {
            let (p, d) = (p.clone(), d.clone());
            Box::pin(async move {
                let mut pids = worker_pids(&p).await;
                pids.extend(daemonic::testing::fork_server().pid());
                for pid in pids {
                    for _ in 0..5 {
                        signal(pid, libc::SIGUSR1);
                        signal(pid, libc::SIGHUP);
                    }
                }
                d.storms.fetch_add(1, Ordering::Relaxed);
            })
        }));
        // SIGKILL the fork server every 500 ms.
        let d = drills.clone();
        drill_tasks.push(every(Duration::from_millis(500), done.clone(), move || {
            let d = d.clone();
            Box::pin(async move {
                if let Some(pid) = daemonic::testing::fork_server().pid() {
                    signal(pid, libc::SIGKILL);
                    d.server_kills.fetch_add(1, Ordering::Relaxed);
                }
            })
        }));

        let deadline = Instant::now() + Duration::from_secs(90);
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let pool = pool.clone();
                let drills = drills.clone();
                actix_rt::spawn(async move {
                    let mut seen = Vec::new();
                    let mut id = c;
                    while (id < CALLS || !drills.enough()) && Instant::now() < deadline {
                        let batch: Vec<u64> = (0..16).map(|i| id + i * CALLERS).collect();
                        id += 16 * CALLERS;
                        let replies = futures_util::future::join_all(
                            batch.iter().map(|&id| pool.send(journal::Square { id })),
                        )
                        .await;
                        for (&id, reply) in batch.iter().zip(replies) {
                            match reply.expect("the pool actor is alive") {
                                Ok(square) => {
                                    assert_eq!(square, id * id, "correct result for {id}");
                                    seen.push(Seen::Ok(id));
                                }
                                Err(WorkerError::Died { pid, .. }) => {
                                    seen.push(Seen::Died(id, pid))
                                }
                                Err(other) => panic!("call {id}: unexpected {other:?}"),
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut seen = Vec::new();
        for caller in callers {
            seen.extend(caller.await.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "chaos run took too long: {}",
            drills.report()
        );
        done.store(true, Ordering::Relaxed);
        for task in drill_tasks {
            task.await.unwrap();
        }

        // The pool returns to full size.
        let back = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = pool.send(GetPoolStats).await.unwrap();
            let ready = stats.children.iter().filter(|c| c.state == "ready").count();
            if ready == SIZE && stats.in_flight == 0 && stats.queued == 0 {
                break;
            }
            assert!(
                Instant::now() < back,
                "pool back to {SIZE} ready workers: {stats:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        pool.send(StopPool {
            grace: Duration::from_secs(5),
        })
        .await
        .unwrap();
        let calls = seen.len();
        (seen, calls)
    });
    drop(system);
    let drills = stats;
    assert!(drills.enough(), "every drill fired: {}", drills.report());

    // Every call resolved exactly once: each id answered once.
    let mut answered = HashSet::new();
    for s in &seen {
        let id = match s {
            Seen::Ok(id) | Seen::Died(id, _) => *id,
        };
        assert!(answered.insert(id), "call {id} answered twice");
    }
    assert!(calls as u64 >= CALLS);

    // Nothing ran twice; everything that returned ran.
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut executed = HashSet::new();
    for line in text.lines() {
        let id: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("torn journal line {line:?}"));
        assert!(executed.insert(id), "call {id} executed twice");
    }
    let mut died_by_pid: HashMap<i32, Vec<u64>> = HashMap::new();
    let mut returned = 0;
    for s in &seen {
        match s {
            Seen::Ok(id) => {
                returned += 1;
                assert!(executed.contains(id), "call {id} returned without running");
            }
            Seen::Died(id, pid) => died_by_pid.entry(*pid).or_default().push(*id),
        }
    }
    // No call that never started is reported `Died`: a worker runs one call
    // at a time, so a dead worker was running at most one of the calls it
    // held; the others it had not started, and they ran elsewhere.
    for (pid, ids) in &died_by_pid {
        assert!(
            ids.len() <= 1,
            "worker {pid} died with {} calls reported Died ({ids:?}); at most the one it ran may be",
            ids.len()
        );
    }
    let died: usize = died_by_pid.values().map(Vec::len).sum();
    // The journal line is the method's first statement: a kill between the
    // worker recording the start and that line leaves a Died call unjournaled.
    let unjournaled = died_by_pid
        .values()
        .flatten()
        .filter(|id| !executed.contains(id))
        .count();

    assert!(
        wait_until(Duration::from_secs(5), || zombie_children().is_empty()),
        "zombies: {:?}",
        zombie_children()
    );
    assert!(
        wait_until(Duration::from_secs(10), || fd_count() <= fds_before),
        "descriptors: {fds_before} before, {} after: {:#?}, before: {fd_list_before:#?}",
        fd_count(),
        fd_list()
    );
    eprintln!(
        "chaos ({transport:?}): {calls} calls, {returned} returned, {died} died with the worker \
         running them ({unjournaled} before their first line); drills: {}",
        drills.report()
    );
}
