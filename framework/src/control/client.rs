//! The `status` and `stop` subcommands: talk to the running daemon.

use super::Reply;
use crate::error::ExitCode;
use crate::Stats;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

enum Failure {
    NotRunning(String),
    Other(String),
}

fn request(socket: &Path, line: &str) -> Result<Reply, Failure> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Failure::NotRunning(format!("no daemon answers on {} ({e})", socket.display()))
        }
        _ => Failure::Other(format!("cannot connect to {}: {e}", socket.display())),
    })?;
    let timeout = Some(Duration::from_secs(10));
    let io = |e: std::io::Error| Failure::Other(format!("control channel: {e}"));
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer)
        .map_err(|e| Failure::Other(format!("unreadable answer from the daemon: {e}")))
}

fn fail(name: &str, failure: Failure) -> ExitCode {
    match failure {
        Failure::NotRunning(why) => {
            eprintln!("{name}: not running: {why}");
            ExitCode::NotRunning
        }
        Failure::Other(why) => {
            eprintln!("{name}: error: {why}");
            ExitCode::Software
        }
    }
}

/// `status [--json]`.
pub(crate) fn status(name: &str, socket: &Path, json: bool) -> ExitCode {
    match request(socket, "status") {
        Ok(Reply::Status(stats)) => {
            if json {
                match serde_json::to_string_pretty(&stats) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return fail(name, Failure::Other(e.to_string())),
                }
            } else {
                print!("{}", render(&stats));
            }
            ExitCode::Ok
        }
        Ok(Reply::Error(e)) => fail(name, Failure::Other(e)),
        Ok(other) => fail(name, Failure::Other(format!("unexpected answer {other:?}"))),
        Err(f) => fail(name, f),
    }
}

/// `stop`: asks for a graceful shutdown and waits until the daemon is gone.
pub(crate) fn stop(name: &str, socket: &Path, timeout: Duration) -> ExitCode {
    let pid = match request(socket, "stop") {
        Ok(Reply::Stopping { pid }) => pid,
        Ok(Reply::Error(e)) => return fail(name, Failure::Other(e)),
        Ok(other) => return fail(name, Failure::Other(format!("unexpected answer {other:?}"))),
        Err(f) => return fail(name, f),
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            println!("{name}: stopped (pid {pid})");
            return ExitCode::Ok;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{name}: error: pid {pid} did not stop within {timeout:?}");
    ExitCode::Software
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn dur(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    } else {
        format!("{d:.1?}")
    }
}

/// The human-readable status table.
pub(crate) fn render(s: &Stats) -> String {
    let mut out = String::new();
    let l = &s.main_loop;
    out += &format!(
        "{} is running: pid {}, uptime {}\n",
        s.name,
        s.pid,
        dur(s.uptime)
    );
    out += &format!(
        "loop      interval {:?}, {} iterations, {} skipped, {} overruns, execute mean {:.1?} max {:.1?}\n",
        l.interval, l.iterations, l.skipped, l.overruns, l.mean_execute, l.max_execute
    );
    out += &format!(
        "memory    rss {:.1} MiB, private {:.1} MiB\n",
        s.memory.rss_bytes as f64 / 1048576.0,
        s.memory.private_bytes as f64 / 1048576.0
    );
    if !s.plugins.is_empty() {
        out += &format!("plugins   {}\n", s.plugins.join(", "));
    }
    for p in &s.pools {
        out += &format!(
            "pool      {}: size {}, {} calls, {} in flight, {} queued, {} restarts, {} recycled{}\n",
            p.name,
            p.size,
            p.calls,
            p.in_flight,
            p.queued,
            p.restarts,
            p.recycled,
            if p.failed { ", FAILED" } else { "" }
        );
        if let Some((p50, _, p99)) = p.latency {
            out += &format!("          latency p50 {p50:.1?}, p99 {p99:.1?}\n");
        }
        if !p.errors.is_empty() {
            let errors: Vec<String> = p.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out += &format!("          errors: {}\n", errors.join(", "));
        }
        out += &format!(
            "          {:>8}  {:>10}  {:>8}  STATE\n",
            "PID", "UPTIME", "CALLS"
        );
        for c in &p.children {
            out += &format!(
                "          {:>8}  {:>10}  {:>8}  {}\n",
                c.pid,
                dur(c.uptime),
                c.calls,
                c.state
            );
        }
    }
    if s.tasks.is_empty() {
        out += "tasks     none running\n";
    } else {
        let tasks: Vec<String> = s
            .tasks
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        out += &format!("tasks     running: {}\n", tasks.join(", "));
    }
    for (k, v) in &s.extra {
        out += &format!("{k}: {v}\n");
    }
    out
}
