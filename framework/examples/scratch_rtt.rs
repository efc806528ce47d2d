// Scratch: syscalls per call on the call path (not committed).
use daemonic::worker::WorkerPool;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::time::Instant;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Echo {}

#[daemonic::worker]
impl Echo {
    pub fn echo(&mut self, data: ByteBuf) -> ByteBuf {
        data
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(20000);
    let pipelined = std::env::args().nth(2).is_some();
    daemonic::testing::fork_server().prestart().unwrap();
    let system = actix::System::new();
    system.block_on(async move {
        let pool = WorkerPool::builder(Echo {})
            .size(if pipelined { 2 } else { 1 })
            .max_in_flight(64)
            .queue_capacity(1 << 20)
            .start()
            .unwrap();
        // warm up
        for _ in 0..1000 {
            pool.send(echo::Echo {
                data: ByteBuf::from(vec![1u8; 64]),
            })
            .await
            .unwrap()
            .unwrap();
        }
        let t = Instant::now();
        if pipelined {
            use futures_util::stream::{FuturesUnordered, StreamExt};
            let mut f = FuturesUnordered::new();
            let mut sent = 0;
            let mut done = 0;
            while done < n {
                while sent < n && f.len() < 1024 {
                    f.push(pool.send(echo::Echo {
                        data: ByteBuf::from(vec![1u8; 64]),
                    }));
                    sent += 1;
                }
                f.next().await.unwrap().unwrap().unwrap();
                done += 1;
            }
            println!(
                "pipelined {:.0} calls/s",
                n as f64 / t.elapsed().as_secs_f64()
            );
        } else {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Instant::now();
                pool.send(echo::Echo {
                    data: ByteBuf::from(vec![1u8; 64]),
                })
                .await
                .unwrap()
                .unwrap();
                v.push(s.elapsed());
            }
            v.sort();
            println!("p50 {:?} p99 {:?}", v[n / 2], v[n * 99 / 100]);
        }
    });
}
