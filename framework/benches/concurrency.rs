//! Concurrent `async` methods (`max_concurrent`): 100 calls that each await
//! 50 ms, on a pool of ONE worker process, for several `max_concurrent`
//! values. Prints the wall time of the whole batch, beside the ideal (one
//! 50 ms wait per round of `max_concurrent` calls).
//!
//! ```text
//! cargo bench -p daemonic --bench concurrency
//! ```

use daemonic::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const CALLS: usize = 100;
const WAIT: Duration = Duration::from_millis(50);
const RUNS: usize = 3;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Fetcher;

#[daemonic::worker]
impl Fetcher {
    /// Stands for an HTTP request: awaits `ms`, then answers.
    pub async fn fetch(&self, id: u64, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        id
    }
}

/// Wall time of `CALLS` calls sent at once, best of `RUNS`.
async fn batch(max_concurrent: usize) -> Duration {
    let pool = WorkerPool::builder(Fetcher)
        .size(1)
        .warm_spares(0)
        .max_concurrent(max_concurrent)
        .queue_capacity(CALLS)
        .start()
        .expect("pool starts");
    // Warm up: the worker is started and its runtime built.
    pool.call(fetcher::Fetch { id: 0, ms: 0 })
        .await
        .expect("warm-up call");
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let began = Instant::now();
        let calls: Vec<_> = (0..CALLS as u64)
            .map(|id| {
                pool.call(fetcher::Fetch {
                    id,
                    ms: WAIT.as_millis() as u64,
                })
            })
            .collect();
        for (id, answer) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(answer.expect("call answered"), id as u64);
        }
        best = best.min(began.elapsed());
    }
    best
}

fn main() {
    let system = actix::System::new();
    let rows = system.block_on(async {
        let mut rows = Vec::new();
        for max_concurrent in [1, 10, 50, 100] {
            eprintln!("max_concurrent {max_concurrent}…");
            rows.push((max_concurrent, batch(max_concurrent).await));
        }
        rows
    });
    println!(
        "\n{CALLS} calls awaiting {} ms each, one worker process, best of {RUNS} runs\n",
        WAIT.as_millis()
    );
    println!("| max_concurrent | wall time | ideal | calls/s |");
    println!("|---:|---:|---:|---:|");
    for (max_concurrent, wall) in rows {
        let rounds = CALLS.div_ceil(max_concurrent) as u32;
        println!(
            "| {max_concurrent} | {:.0} ms | {:.0} ms | {:.0} |",
            wall.as_secs_f64() * 1e3,
            (WAIT * rounds).as_secs_f64() * 1e3,
            CALLS as f64 / wall.as_secs_f64()
        );
    }
}
