//! Chaos: sustained calls while workers are SIGKILLed at random. Alone in its
//! binary so descriptor counts are not disturbed by other tests.

mod common;

use common::{fd_count, wait_until, zombie_children};
use daemonic::ipc::Transport;
use daemonic::worker::{GetPoolStats, KillWorker, StopPool, WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
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
        id * id
    }
}

const CALLS: u64 = 20_000;
const CALLERS: u64 = 8;

#[test]
fn every_call_resolves_exactly_once_while_workers_are_killed() {
    daemonic::process::fork_server().prestart().unwrap();
    // Sequentially, so descriptor counts stay meaningful.
    chaos(Transport::Socket);
    chaos(Transport::IpcChannel);
}

fn chaos(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::write(&journal, "").unwrap();
    let path = journal.to_string_lossy().into_owned();

    let system = actix::System::new();
    let fds_before = system.block_on(async { fd_count() });
    let (ok_ids, died, kills) = system.block_on(async move {
        let pool = WorkerPool::builder(Journal { path, file: None })
            .size(3)
            .transport(transport)
            .max_in_flight(4)
            .queue_capacity(100_000)
            .restart_limit(100_000, Duration::from_secs(1))
            .start()
            .unwrap();

        // The killer: one SIGKILL every ~50 ms until the callers are done.
        let killer_pool = pool.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let killer = actix_rt::spawn(async move {
            let mut kills = 0u32;
            let mut index = 0usize;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return kills,
                    _ = actix_rt::time::sleep(Duration::from_millis(50)) => {
                        index += 1;
                        if let Ok(Some(_)) = killer_pool.send(KillWorker { index, signal: libc::SIGKILL }).await {
                            kills += 1;
                        }
                    }
                }
            }
        });

        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let pool = pool.clone();
                actix_rt::spawn(async move {
                    let mut ok = Vec::new();
                    let mut died = 0u32;
                    let ids: Vec<u64> = (0..CALLS).filter(|i| i % CALLERS == c).collect();
                    for batch in ids.chunks(16) {
                        let replies = futures_util::future::join_all(
                            batch.iter().map(|&id| pool.send(journal::Square { id })),
                        )
                        .await;
                        for (&id, reply) in batch.iter().zip(replies) {
                            match reply.expect("the pool actor is alive") {
                                Ok(square) => {
                                    assert_eq!(square, id * id, "correct result for {id}");
                                    ok.push(id);
                                }
                                Err(WorkerError::Died { .. }) => died += 1,
                                Err(other) => panic!("call {id}: unexpected {other:?}"),
                            }
                        }
                    }
                    (ok, died)
                })
            })
            .collect();

        let deadline = Instant::now() + Duration::from_secs(120);
        let mut ok_ids = Vec::new();
        let mut died = 0;
        for caller in callers {
            let (ok, d) = caller.await.unwrap();
            ok_ids.extend(ok);
            died += d;
        }
        assert!(Instant::now() < deadline, "chaos run took too long");
        let _ = stop_tx.send(());
        let kills = killer.await.unwrap();

        // The pool returns to full size.
        let mut full = false;
        for _ in 0..500 {
            let stats = pool.send(GetPoolStats).await.unwrap();
            let ready = stats.children.iter().filter(|c| c.state == "ready").count();
            if ready == 3 && stats.in_flight == 0 && stats.queued == 0 {
                full = true;
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(full, "pool back to 3 ready workers: {:?}", pool.send(GetPoolStats).await.unwrap());
        pool.send(StopPool {
            grace: Duration::from_secs(5),
        })
        .await
        .unwrap();
        (ok_ids, died, kills)
    });
    drop(system);

    // Every call resolved: returned or died with its worker.
    assert_eq!(ok_ids.len() as u64 + u64::from(died), CALLS);
    assert!(kills >= 5, "the drill killed workers ({kills})");
    assert!(died > 0, "some calls were held by killed workers");

    // Nothing ran twice; everything that returned ran.
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut executed = HashSet::new();
    for line in text.lines() {
        let id: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("torn journal line {line:?}"));
        assert!(executed.insert(id), "call {id} executed twice");
    }
    for id in &ok_ids {
        assert!(executed.contains(id), "call {id} returned without running");
    }

    assert!(
        wait_until(Duration::from_secs(5), || zombie_children().is_empty()),
        "zombies: {:?}",
        zombie_children()
    );
    assert!(
        wait_until(Duration::from_secs(5), || fd_count() <= fds_before),
        "descriptors: {fds_before} before, {} after",
        fd_count()
    );
    eprintln!(
        "chaos ({transport:?}): {} returned, {died} died with their worker, {kills} kills",
        ok_ids.len()
    );
}
