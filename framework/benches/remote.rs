//! Remote pools over NATS: call round trip and pipelined calls/s through
//! two serving hosts (each a daemon with a pool of 2 workers), beside a raw
//! async-nats request/reply echo served by two processes in a queue group
//! (the baseline: the same broker hops without daemonic), and beside a
//! local pool of 2 (the cost of the network hop).
//!
//! ```text
//! cargo bench -p daemonic --features nats --bench remote
//! ```
//!
//! It starts its own `nats-server` on a free loopback port (Debian:
//! `apt-get install nats-server`), and runs this same binary as the hosts
//! (`DAEMONIC_BENCH_NATS_HOST`) and the raw echo responders
//! (`DAEMONIC_BENCH_NATS_ECHO`).

// The tests' real `nats-server` (killed and reaped when dropped).
#[path = "../tests/common/nats.rs"]
mod nats_server;

use actix::Addr;
use daemonic::remote::{GetRemotePoolStats, Nats, NatsOptions, RemotePool};
use daemonic::worker::{WorkerError, WorkerPool};
use daemonic::{BoxError, Daemon, DaemonBuilder, LoopContext};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST_ENV: &str = "DAEMONIC_BENCH_NATS_HOST";
const ECHO_ENV: &str = "DAEMONIC_BENCH_NATS_ECHO";
const PAYLOAD: usize = 64;
const WARMUP: usize = 300;
/// Sequential round trips per side and round.
const SEQ_CALLS: usize = 3_000;
/// Pipelined calls per side and round, and how many are in flight.
const PIPE_CALLS: usize = 40_000;
const PIPE_WINDOW: usize = 256;
const ROUNDS: usize = 3;
/// Per worker, in the hosts' pools and the local one.
const MAX_IN_FLIGHT: usize = 16;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Echo {}

#[daemonic::worker]
impl Echo {
    /// Sends the bytes back.
    pub fn echo(&mut self, data: ByteBuf) -> ByteBuf {
        data
    }
}

// ---------------------------------------------------------------- children

/// A serving host: a daemon with a pool of 2, served on NATS.
struct Host {
    nats: Nats,
}

impl Daemon for Host {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        let pool = ctx
            .workers(Echo {})
            .size(2)
            .max_in_flight(MAX_IN_FLIGHT)
            .queue_capacity(4096)
            .start()?;
        self.nats.serve(&pool)?;
        Ok(())
    }

    fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
}

fn run_host(spec: String) -> ! {
    let (url, name) = spec.split_once(' ').expect("URL NAME");
    let nats = Nats::new(NatsOptions::new(url).host_name(name));
    let code = DaemonBuilder::new(Host { nats: nats.clone() })
        .name(format!("bench-host-{name}"))
        .interval(Duration::from_secs(1))
        .nats(&nats)
        .run();
    let _ = code;
    std::process::exit(0)
}

/// The baseline's responder: a plain async-nats queue subscriber that
/// publishes every payload back, on a current-thread runtime.
fn run_echo(url: String) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = async_nats::connect(url).await.expect("connect");
        let mut requests = client
            .queue_subscribe("bench.echo", "bench.echo".into())
            .await
            .expect("subscribe");
        while let Some(message) = requests.next().await {
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, message.payload).await;
            }
        }
    });
    std::process::exit(0)
}

// ---------------------------------------------------------------- helpers

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_self(env: &str, value: &str) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .env(env, value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a child of the benchmark")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[derive(Clone, Copy, Default)]
struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Sequential latencies and pipelined throughput of `call`, over rounds.
async fn measure<F, Fut>(call: F) -> (Vec<Duration>, Vec<f64>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..WARMUP {
        call().await;
    }
    for _ in 0..ROUNDS {
        for _ in 0..SEQ_CALLS {
            let t = Instant::now();
            call().await;
            latencies.push(t.elapsed());
        }
        let t = Instant::now();
        stream::iter(0..PIPE_CALLS)
            .map(|_| call())
            .buffer_unordered(PIPE_WINDOW)
            .for_each(|_| async {})
            .await;
        rates.push(PIPE_CALLS as f64 / t.elapsed().as_secs_f64());
    }
    (latencies, rates)
}

fn figures((mut latencies, mut rates): (Vec<Duration>, Vec<f64>)) -> Figures {
    latencies.sort();
    Figures {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        per_sec: median(&mut rates),
    }
}

async fn remote_call(pool: &Addr<RemotePool<Echo>>, data: &ByteBuf) {
    let answer = pool.send(echo::Echo { data: data.clone() }).await;
    assert!(
        matches!(answer, Ok(Ok(_))),
        "remote call failed: {answer:?}"
    );
}

async fn local_call(pool: &Addr<WorkerPool<Echo>>, data: &ByteBuf) {
    let answer: Result<Result<ByteBuf, WorkerError>, _> =
        pool.send(echo::Echo { data: data.clone() }).await;
    assert!(matches!(answer, Ok(Ok(_))), "local call failed: {answer:?}");
}

fn main() {
    if let Ok(spec) = std::env::var(HOST_ENV) {
        run_host(spec);
    }
    if let Ok(url) = std::env::var(ECHO_ENV) {
        run_echo(url);
    }
    let started = Instant::now();
    let (_server, port) = nats_server::start_server();
    let url = format!("nats://127.0.0.1:{port}");
    let mut children = Children(Vec::new());
    for name in ["a", "b"] {
        children
            .0
            .push(spawn_self(HOST_ENV, &format!("{url} {name}")));
        children.0.push(spawn_self(ECHO_ENV, &url));
    }
    daemonic::testing::fork_server()
        .prestart()
        .expect("fork server");

    let system = actix::System::new();
    let (raw, remote, local) = system.block_on(async move {
        let data = ByteBuf::from(vec![7u8; PAYLOAD]);
        let nats = Nats::new(NatsOptions::new(url.clone()));
        nats.connect().await.expect("connect");
        let remote = nats.remote::<Echo>().start().expect("remote pool");
        let deadline = Instant::now() + Duration::from_secs(20);
        while remote
            .send(GetRemotePoolStats)
            .await
            .map(|s| s.live_hosts)
            .unwrap_or(0)
            < 2
        {
            assert!(Instant::now() < deadline, "the hosts did not come up");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let client = async_nats::connect(url).await.expect("connect");
        let raw_data = bytes::Bytes::from(vec![7u8; PAYLOAD]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while client
            .request("bench.echo", raw_data.clone())
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the echo responders did not come up"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let local = WorkerPool::builder(Echo {})
            .size(2)
            .max_in_flight(MAX_IN_FLIGHT)
            .queue_capacity(4096)
            .start()
            .expect("local pool");

        eprintln!("raw async-nats echo…");
        let raw = figures(
            measure(|| {
                let (client, data) = (client.clone(), raw_data.clone());
                async move {
                    let reply = client.request("bench.echo", data).await;
                    assert!(reply.is_ok(), "raw request failed: {reply:?}");
                }
            })
            .await,
        );
        eprintln!("remote pool…");
        let remote_figures = figures(measure(|| remote_call(&remote, &data)).await);
        let stats = remote.send(GetRemotePoolStats).await.expect("stats");
        eprintln!("local pool…");
        let local = figures(measure(|| local_call(&local, &data)).await);
        for line in stats.lines() {
            eprintln!("{line}");
        }
        (raw, remote_figures, local)
    });
    drop(children);

    println!();
    println!(
        "remote pools over NATS: {PAYLOAD} B echo on loopback, 2 hosts x pool of 2, \
         {SEQ_CALLS} sequential calls x {ROUNDS}, {PIPE_CALLS} pipelined x {ROUNDS} \
         ({PIPE_WINDOW} in flight; median round)"
    );
    println!();
    println!("| measure | remote pool | raw async-nats echo | ratio | target | local pool of 2 |");
    println!("|---|---|---|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let p50 = us(remote.p50) / us(raw.p50);
    println!(
        "| round trip p50 | {:.1} µs | {:.1} µs | {p50:.2}× | ≤ 1.5× ({}) | {:.1} µs |",
        us(remote.p50),
        us(raw.p50),
        verdict(p50 <= 1.5),
        us(local.p50)
    );
    let p99 = us(remote.p99) / us(raw.p99);
    println!(
        "| round trip p99 | {:.1} µs | {:.1} µs | {p99:.2}× | — | {:.1} µs |",
        us(remote.p99),
        us(raw.p99),
        us(local.p99)
    );
    let rate = remote.per_sec / raw.per_sec;
    println!(
        "| pipelined calls/s | {:.0} | {:.0} | {:.0}% | ≥ 70% ({}) | {:.0} |",
        remote.per_sec,
        raw.per_sec,
        rate * 100.0,
        verdict(rate >= 0.7),
        local.per_sec
    );
    println!();
    println!("(took {:.0?})", started.elapsed());
}
