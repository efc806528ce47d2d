//! Worker pools served across hosts through NATS.
//!
//! `host` runs a daemon that serves a pool of `Transcoder` workers on NATS
//! (start as many as you like: they share the calls); `call` sends jobs to
//! whichever hosts serve them and reports.
//!
//! ```text
//! nats-server -a 127.0.0.1 -p 4222 &
//! cargo run --example remote_workers -- host --nats nats://127.0.0.1:4222 --name a &
//! cargo run --example remote_workers -- host --nats nats://127.0.0.1:4222 --name b &
//! cargo run --example remote_workers -- call --nats nats://127.0.0.1:4222 --calls 1000 --concurrency 50
//! ```
//!
//! `call` prints progress, the remote pool's stats and, last, one line
//! `ok=N failed=M hosts=K` (K: how many hosts answered). It exits 0 once
//! every call resolved, whatever the outcome. `--report FILE` writes one line
//! per call (`JOB OUTCOME HOST DIGEST MS [ERROR]`: `ok` or the error's kind,
//! the answering host and digest or `-`, milliseconds since the start); a
//! host's `--journal FILE` gets one line per job its workers start
//! (`JOB HOST PID`), which is how the tests prove that no job ran twice.

use clap::{Args, Parser, Subcommand};
use daemonic::actix::{Addr, System};
use daemonic::cli::{parse_duration, DaemonArgs};
use daemonic::remote::{Nats, NatsOptions};
use daemonic::worker::WorkerPool;
use daemonic::{BoxError, CallExt, Daemon, DaemonBuilder, LoopContext};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The worker: "transcodes" a job in a child process of a host.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Transcoder {
    host: String,
    journal: Option<PathBuf>,
}

/// A finished job, and where it ran.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    job: u64,
    digest: u64,
    host: String,
    pid: u32,
}

#[daemonic::worker]
impl Transcoder {
    /// Works on `job` for `millis` ms (a stand-in for real transcoding).
    pub fn transcode(&mut self, job: u64, millis: u64) -> Done {
        let pid = std::process::id();
        if let Some(path) = &self.journal {
            // One short O_APPEND write per job: lines never interleave.
            let line = format!("{job} {} {pid}\n", self.host);
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path);
            if let Ok(mut file) = file {
                let _ = file.write_all(line.as_bytes());
            }
        }
        std::thread::sleep(Duration::from_millis(millis));
        let digest = (0..64).fold(job ^ 0xcbf2_9ce4_8422_2325, |h, i| {
            (h ^ i).wrapping_mul(0x0100_0000_01b3)
        });
        Done {
            job,
            digest,
            host: self.host.clone(),
            pid,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "remote_workers",
    about = "Worker pools served across hosts through NATS."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a pool of transcoding workers on NATS (a daemon: standard flags apply).
    Host(Box<HostArgs>),
    /// Send jobs to the hosts and report.
    Call(CallArgs),
}

#[derive(Args)]
struct Connection {
    /// The NATS server (nats://[user:password@]host:port).
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Subject prefix.
    #[arg(long, default_value = daemonic::remote::DEFAULT_PREFIX)]
    prefix: String,
}

#[derive(Args)]
struct HostArgs {
    #[command(flatten)]
    connection: Connection,
    /// This host's name in answers and status (default: hostname-pid).
    #[arg(long)]
    name: Option<String>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs that may wait for a worker; beyond them the host answers Busy.
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Append `JOB HOST PID` for every job a worker starts.
    #[arg(long, value_name = "PATH")]
    journal: Option<PathBuf>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    connection: Connection,
    /// Jobs to send.
    #[arg(long, default_value_t = 100)]
    calls: u64,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long each job works.
    #[arg(long, default_value_t = 5)]
    work_ms: u64,
    /// Start job N no sooner than N times this after the first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pace: Option<Duration>,
    /// Write `JOB OUTCOME HOST DIGEST MS [ERROR]` for every job.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Before sending, wait (up to 10 s) until this many hosts answered a ping.
    #[arg(long, default_value_t = 0)]
    wait_hosts: usize,
    /// Times a job that did not run is sent to another host.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Silence after which a host holding a job is lost.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    host_timeout: Duration,
    /// Jobs may run twice: resend those a lost host may have started.
    #[arg(long)]
    idempotent: bool,
}

fn options(c: &Connection) -> NatsOptions {
    NatsOptions::new(c.nats.clone()).prefix(c.prefix.clone())
}

/// The serving daemon.
struct Host {
    nats: Nats,
    workers: usize,
    queue: usize,
    journal: Option<PathBuf>,
    pool: Option<Addr<WorkerPool<Transcoder>>>,
}

impl Daemon for Host {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        let worker = Transcoder {
            host: self.nats.host_name(),
            journal: self.journal.clone(),
        };
        let pool = ctx
            .workers(worker)
            .size(self.workers)
            .queue_capacity(self.queue)
            .start()?;
        // Connected already: the daemon connects before `initialize`.
        self.nats.serve(&pool)?;
        self.pool = Some(pool);
        Ok(())
    }

    fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
}

fn host(args: HostArgs) -> ExitCode {
    let mut options = options(&args.connection);
    if let Some(name) = &args.name {
        options = options.host_name(name.clone());
    }
    let nats = Nats::new(options);
    let host = Host {
        nats: nats.clone(),
        workers: args.workers,
        queue: args.queue,
        journal: args.journal,
        pool: None,
    };
    // One control channel per host, even with pid files side by side.
    let daemon_name = match &args.name {
        Some(name) => format!("remote_workers-{name}"),
        None => "remote_workers".into(),
    };
    DaemonBuilder::new(host)
        .name(daemon_name)
        .args(&args.daemon)
        .nats(&nats)
        .run()
}

/// How the jobs went.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: BTreeMap<&'static str, u64>,
    hosts: BTreeSet<String>,
}

impl Tally {
    fn failed(&self) -> u64 {
        self.failed.values().sum()
    }

    fn line(&self) -> String {
        format!(
            "ok={} failed={} hosts={}",
            self.ok,
            self.failed(),
            self.hosts.len()
        )
    }
}

async fn call(args: CallArgs) -> Result<Tally, BoxError> {
    let nats = Nats::new(options(&args.connection));
    nats.connect().await?;
    let pool = nats
        .remote::<Transcoder>()
        .retries(args.retries)
        .host_timeout(args.host_timeout)
        .idempotent(args.idempotent)
        .start()?;
    let mut report = match &args.report {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let waiting = Instant::now();
    while args.wait_hosts > 0 && waiting.elapsed() < Duration::from_secs(10) {
        let stats = pool.send(daemonic::remote::GetRemotePoolStats).await?;
        if stats.live_hosts >= args.wait_hosts {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let (pace, millis) = (args.pace, args.work_ms);
    let mut answers = futures_util::stream::iter(0..args.calls)
        .map(|job| {
            let pool = pool.clone();
            async move {
                if let Some(pace) = pace {
                    let due = start + pace.saturating_mul(job as u32);
                    actix_rt::time::sleep_until(due.into()).await;
                }
                let answer = pool.call(transcoder::Transcode { job, millis }).await;
                (job, answer)
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut tally = Tally::default();
    let every = (args.calls / 10).max(1);
    let mut done = 0;
    while let Some((job, answer)) = answers.next().await {
        let ms = start.elapsed().as_millis();
        let line = match answer {
            Ok(finished) => {
                tally.ok += 1;
                tally.hosts.insert(finished.host.clone());
                format!("{job} ok {} {} {ms}", finished.host, finished.digest)
            }
            // `kind()`: the worker error's (`host_lost`, `busy`, …), or `mailbox`.
            Err(e) => {
                *tally.failed.entry(e.kind()).or_default() += 1;
                format!("{job} {} - - {ms} {e}", e.kind())
            }
        };
        if let Some(report) = report.as_mut() {
            writeln!(report, "{line}")?;
            report.flush()?;
        }
        done += 1;
        if done % every == 0 {
            println!("progress {done}/{}: {}", args.calls, tally.line());
        }
    }
    let stats = pool.send(daemonic::remote::GetRemotePoolStats).await?;
    for line in stats.lines() {
        println!("{line}");
    }
    if !tally.failed.is_empty() {
        let kinds: Vec<String> = tally
            .failed
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!("failed by kind: {}", kinds.join(" "));
    }
    Ok(tally)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match cli.command {
        Command::Host(args) => host(*args),
        Command::Call(args) => match System::new().block_on(call(args)) {
            Ok(tally) => {
                println!("{}", tally.line());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("remote_workers: error: {e}");
                let code = match e.downcast_ref::<daemonic::remote::ConnectError>() {
                    Some(e) => e.exit_code().code(),
                    None => 70,
                };
                ExitCode::from(code)
            }
        },
    }
}
