//! Large payloads: images (here, random bytes) sent to a worker process
//! and back. From the pool's `shm_threshold` up (default 256 KiB), the
//! arguments and the result travel in a sealed memfd instead of through
//! the socket; the worker maps its arguments read-only and shows the
//! mapping from its own `/proc/self/maps`. Then the same images as
//! `SharedBytes`: built in shared memory, they cross as descriptors each
//! way, and nothing is copied or encoded at any size.
//!
//! ```text
//! cargo run --release --example large_payloads
//! cargo run --release --example large_payloads -- --threshold 18446744073709551615  # never
//! ```

use clap::Parser;
use daemonic::prelude::*;
use daemonic::worker::{GetPoolStats, SharedBytes, SharedBytesMut};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::time::Instant;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Imaging;

#[daemonic::worker]
impl Imaging {
    /// Inverts every byte; also returns the payload mappings this worker
    /// holds while it runs (its arguments, if they came in a memfd).
    pub fn invert(&mut self, mut image: ByteBuf) -> (ByteBuf, Vec<String>) {
        for b in image.iter_mut() {
            *b = !*b;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mapped = maps
            .lines()
            .filter(|l| l.contains("memfd:daemonic-payload"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        (image, mapped)
    }

    /// The same, on `SharedBytes`: the argument is mapped, not copied; the
    /// result is written straight into a new memfd the caller maps.
    pub fn invert_shared(
        &mut self,
        image: SharedBytes,
    ) -> Result<(SharedBytes, Vec<String>), String> {
        let mut out = SharedBytesMut::new(image.len()).map_err(|e| e.to_string())?;
        for (o, i) in out.iter_mut().zip(image.iter()) {
            *o = !i;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mapped = maps
            .lines()
            .filter(|l| l.contains("memfd:daemonic-shared"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        Ok((out.freeze().map_err(|e| e.to_string())?, mapped))
    }
}

#[derive(Parser)]
struct Args {
    /// Arguments and results of this many bytes or more go through shared memory.
    #[arg(long, default_value_t = daemonic::worker::DEFAULT_SHM_THRESHOLD)]
    threshold: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    daemonic::actix::System::new().block_on(async move {
        let pool = WorkerPool::builder(Imaging)
            .size(1)
            .max_payload(48 * 1024 * 1024)
            .shm_threshold(args.threshold)
            .start()?;
        for size in [1024, 200 * 1024, 1024 * 1024, 32 * 1024 * 1024] {
            let image = ByteBuf::from(vec![0x0fu8; size]);
            let started = Instant::now();
            let (inverted, mapped) = pool.call(imaging::Invert { image }).await?;
            let took = started.elapsed();
            assert!(inverted.iter().all(|&b| b == 0xf0));
            let shared = pool
                .send(GetPoolStats)
                .await
                .map(|s| s.shared_payloads)
                .unwrap_or(0);
            println!(
                "{:>8} KiB inverted in {:>6.2} ms; payloads through shared memory so far: {shared}",
                size / 1024,
                took.as_secs_f64() * 1e3
            );
            for line in mapped {
                println!("    worker maps: {line}");
            }
        }
        println!("as SharedBytes (no copy, no encoding: a descriptor each way):");
        for size in [1024, 200 * 1024, 1024 * 1024, 32 * 1024 * 1024] {
            let mut image = SharedBytesMut::new(size)?;
            image.fill(0x0f);
            let image = image.freeze()?;
            let before = pool
                .send(GetPoolStats)
                .await
                .map(|s| s.shared_payloads)
                .unwrap_or(0);
            let started = Instant::now();
            let (inverted, mapped) = pool
                .call(imaging::InvertShared { image })
                .await
                .map_err(|e| e.to_string())?;
            let took = started.elapsed();
            assert!(inverted.iter().all(|&b| b == 0xf0));
            let spilled = pool
                .send(GetPoolStats)
                .await
                .map(|s| s.shared_payloads)
                .unwrap_or(0)
                - before;
            println!(
                "{:>8} KiB inverted in {:>6.2} ms; the result is in shared memory: {}; payloads spilled: {spilled}",
                size / 1024,
                took.as_secs_f64() * 1e3,
                inverted.is_shared()
            );
            for line in mapped {
                println!("    worker maps: {line}");
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
