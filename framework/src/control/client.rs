//! The `status` and `stop` subcommands: talk to the running daemon.

use super::dir::{ControlDir, SOCKET_NAME};
use super::{Location, Reply, Trusted};
use crate::error::ExitCode;
use crate::Stats;
use std::borrow::Cow;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

enum Failure {
    NotRunning(String),
    /// An unsafe directory, a daemon of an unexpected user, or a daemon that
    /// refused us.
    Refused(String),
    Other(String),
}

/// Where a client connects, and whom it trusts to answer there.
pub(crate) struct Target<'a> {
    pub location: &'a Location,
    pub trusted: &'a Trusted,
}

fn request(target: &Target<'_>, line: &str) -> Result<Reply, Failure> {
    let socket = target.location.socket();
    let dir = ControlDir::open(target.location, target.trusted, false).map_err(|e| match e {
        crate::Error::CantCreate { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Failure::NotRunning(format!(
                "no daemon answers on {} ({source})",
                socket.display()
            ))
        }
        crate::Error::Insecure { ref reason, .. } if reason.contains("owned by uid") => {
            Failure::Refused(format!(
                "{e} (if the daemon drops privileges, give the same --user it was started with)"
            ))
        }
        crate::Error::Insecure { .. } => Failure::Refused(e.to_string()),
        other => Failure::Other(other.to_string()),
    })?;
    let mut stream = UnixStream::connect(dir.entry(SOCKET_NAME)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Failure::NotRunning(format!("no daemon answers on {} ({e})", socket.display()))
        }
        _ => Failure::Other(format!("cannot connect to {}: {e}", socket.display())),
    })?;
    // The server's credentials were recorded when it called listen().
    let server = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Failure::Other(format!("cannot read the daemon's credentials: {e}")))?;
    target
        .trusted
        .check_server(server.uid())
        .map_err(|why| Failure::Refused(format!("{}: {why}", socket.display())))?;
    let timeout = Some(Duration::from_secs(10));
    let io = |e: std::io::Error| Failure::Other(format!("control channel: {e}"));
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    let sent = stream.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    // A daemon that refuses us may close before reading: its answer says why.
    match BufReader::new(stream).read_line(&mut answer) {
        Ok(n) if n > 0 => {}
        read => {
            sent.map_err(io)?;
            read.map_err(io)?;
        }
    }
    match super::decode_reply(&answer) {
        Ok(Reply::Refused(why)) => Err(Failure::Refused(why)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(Failure::Other(format!(
            "unreadable answer from the daemon: {e}"
        ))),
    }
}

fn fail(name: &str, failure: Failure) -> ExitCode {
    let name = printable(name);
    match failure {
        Failure::NotRunning(why) => {
            eprintln!("{name}: not running: {}", printable(&why));
            ExitCode::NotRunning
        }
        Failure::Refused(why) => {
            eprintln!("{name}: refused: {}", printable(&why));
            ExitCode::NoPermission
        }
        Failure::Other(why) => {
            eprintln!("{name}: error: {}", printable(&why));
            ExitCode::Software
        }
    }
}

/// A daemon's strings (pool, plugin and task names, stats added by
/// listeners) must not move the cursor, clear the screen or forge lines in an
/// operator's terminal.
fn printable(s: &str) -> Cow<'_, str> {
    crate::text::escape_controls(s)
}

/// Prints a command's answer: `Ok`, or an error that is not the reader's
/// leaving early.
fn out(name: &str, text: &str) -> ExitCode {
    match crate::text::to_stdout(text) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("{}: error: cannot write the answer: {e}", printable(name));
            ExitCode::OsError
        }
    }
}

/// `status [--json]`.
pub(crate) fn status(name: &str, target: &Target<'_>, json: bool) -> ExitCode {
    match request(target, "status") {
        Ok(Reply::Status(stats)) => {
            let text = if json {
                match serde_json::to_string_pretty(&stats) {
                    Ok(text) => text + "\n",
                    Err(e) => return fail(name, Failure::Other(e.to_string())),
                }
            } else {
                render(&stats)
            };
            out(name, &text)
        }
        Ok(Reply::Error(e)) => fail(name, Failure::Other(e)),
        Ok(other) => fail(name, Failure::Other(format!("unexpected answer {other:?}"))),
        Err(f) => fail(name, f),
    }
}

/// `stop`: asks for a graceful shutdown and waits until the daemon is gone.
pub(crate) fn stop(name: &str, target: &Target<'_>, timeout: Duration) -> ExitCode {
    let pid = match request(target, "stop") {
        Ok(Reply::Stopping { pid }) => pid,
        Ok(Reply::Error(e)) => return fail(name, Failure::Other(e)),
        Ok(other) => return fail(name, Failure::Other(format!("unexpected answer {other:?}"))),
        Err(f) => return fail(name, f),
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return out(name, &format!("{}: stopped (pid {pid})\n", printable(name)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "{}: error: pid {pid} did not stop within {timeout:?}",
        printable(name)
    );
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
        printable(&s.name),
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
        let plugins: Vec<_> = s.plugins.iter().map(|p| printable(p)).collect();
        out += &format!("plugins   {}\n", plugins.join(", "));
    }
    for p in &s.pools {
        out += &format!(
            "pool      {}: size {}, {} calls, {} in flight, {} queued, {} restarts, {} recycled{}\n",
            printable(&p.name),
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
            let errors: Vec<String> = p
                .errors
                .iter()
                .map(|(k, n)| format!("{} {n}", printable(k)))
                .collect();
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
                printable(&c.state)
            );
        }
    }
    if s.tasks.is_empty() {
        out += "tasks     none running\n";
    } else {
        let tasks: Vec<String> = s
            .tasks
            .iter()
            .map(|(name, n)| format!("{} {n}", printable(name)))
            .collect();
        out += &format!("tasks     running: {}\n", tasks.join(", "));
    }
    if let Some(nats) = &s.nats {
        out += &render_nats(nats);
    }
    // An empty root (a daemon without pools or supervised children) says
    // nothing worth a line.
    if let Some(tree) = s.tree.as_ref().filter(|t| !t.children.is_empty()) {
        for line in tree.lines() {
            out += &format!("tree      {}\n", printable(&line));
        }
    }
    if s.log_lines_dropped > 0 {
        out += &format!(
            "log       {} lines of child processes dropped (log sink too slow)\n",
            s.log_lines_dropped
        );
    }
    for (k, v) in &s.extra {
        out += &format!("{}: {}\n", printable(k), printable(v));
    }
    out
}

fn counts(pairs: &[(String, u64)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, n)| format!("{} {n}", printable(k)))
        .collect();
    parts.join(", ")
}

/// The NATS connection, the pools served and the remote pools.
fn render_nats(n: &crate::remote::NatsStats) -> String {
    let mut out = format!(
        "nats      {} {}, {} disconnects, {} errors\n",
        printable(&n.state),
        printable(&n.server),
        n.disconnects,
        n.errors
    );
    if let Some(e) = &n.last_error {
        out += &format!("          last error: {}\n", printable(e));
    }
    if let Some(host) = &n.host {
        for s in &host.services {
            out += &format!(
                "serving   {} as host {} on {}: {} calls, {} returned, {} running, {} queued ({} promised)\n",
                printable(&s.pool),
                printable(&host.name),
                printable(&s.subject),
                s.calls,
                s.returned,
                s.running,
                s.queued,
                s.promised
            );
            if !s.errors.is_empty() {
                out += &format!("          errors: {}\n", counts(&s.errors));
            }
        }
    }
    for p in &n.remote_pools {
        out += &format!(
            "remote    {} on {}: {} calls, {} returned, {} in flight, {} retries, {} live hosts\n",
            printable(&p.name),
            printable(&p.subject),
            p.calls,
            p.returned,
            p.in_flight,
            p.retries,
            p.live_hosts
        );
        if let Some((p50, p90, p99)) = p.latency {
            out += &format!("          latency p50 {p50:.1?}, p90 {p90:.1?}, p99 {p99:.1?}\n");
        }
        if !p.errors.is_empty() {
            out += &format!("          errors: {}\n", counts(&p.errors));
        }
        if !p.hosts.is_empty() {
            out += &format!("          answers by host: {}\n", counts(&p.hosts));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strips_terminal_control_characters_from_every_string() {
        let evil = "x\u{1b}[2J\u{1b}]0;pwned\u{7}\ry\nforged line\u{9b}1m\u{202e}z";
        let stats = Stats {
            name: evil.into(),
            plugins: vec![evil.into()],
            pools: vec![crate::worker::PoolStats {
                name: evil.into(),
                errors: vec![(evil.into(), 1)],
                children: vec![crate::worker::ChildStats {
                    pid: 1,
                    uptime: Duration::ZERO,
                    calls: 0,
                    state: evil.into(),
                }],
                ..Default::default()
            }],
            tasks: vec![(evil.into(), 1)],
            extra: vec![(evil.into(), evil.into())],
            nats: Some(nats_stats(evil)),
            ..Default::default()
        };
        let out = render(&stats);
        let bad: Vec<char> = out
            .chars()
            .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
            .collect();
        assert!(
            bad.is_empty(),
            "control characters reach the terminal: {bad:?}\n{out}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with("forged line")),
            "a newline in a name forged a line:\n{out}"
        );
        assert!(out.contains("x\\u{1b}[2J"), "{out}");
        assert!(out.contains("\\nforged line"), "{out}");
        assert_eq!(printable("plain"), Cow::Borrowed("plain"));
    }

    fn nats_stats(s: &str) -> crate::remote::NatsStats {
        use crate::remote::{HostStats, NatsStats, RemotePoolStats, ServiceStats};
        NatsStats {
            server: s.into(),
            state: s.into(),
            last_error: Some(s.into()),
            host: Some(HostStats {
                name: s.into(),
                services: vec![ServiceStats {
                    pool: s.into(),
                    subject: s.into(),
                    calls: 7,
                    errors: vec![(s.into(), 1)],
                    ..Default::default()
                }],
            }),
            remote_pools: vec![RemotePoolStats {
                name: s.into(),
                subject: s.into(),
                calls: 9,
                errors: vec![(s.into(), 2)],
                hosts: vec![(s.into(), 3)],
                latency: Some((Duration::from_micros(200), Duration::ZERO, Duration::ZERO)),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn status_shows_nats_served_pools_and_remote_pools() {
        let stats = Stats {
            nats: Some(nats_stats("x")),
            ..Default::default()
        };
        let out = render(&stats);
        for needle in [
            "nats      x x, 0 disconnects, 0 errors",
            "serving   x as host x on x: 7 calls",
            "remote    x on x: 9 calls",
            "latency p50 200.0µs",
            "errors: x 2",
            "answers by host: x 3",
        ] {
            assert!(out.contains(needle), "{needle:?} not in\n{out}");
        }
    }
}
