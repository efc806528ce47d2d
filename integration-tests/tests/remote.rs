//! Worker pools across hosts through NATS, from outside: a real
//! `nats-server` on a free loopback port per test, `remote_workers host`
//! daemons serving a pool, and `remote_workers call` sending jobs. The
//! caller's report (one line per job) and the hosts' journals (one line per
//! job a worker started) tell what happened to every job.

use integration_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    example_bin("remote_workers")
}

fn nats_server_bin() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join("nats-server");
        if path.is_file() {
            return path;
        }
    }
    panic!("nats-server is not installed (apt-get install -y nats-server; .ci/run installs it)");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// A real NATS server on loopback, killed when dropped.
struct NatsServer {
    /// Held for its guard: dropping it kills the server.
    _process: Daemon,
    port: u16,
}

impl NatsServer {
    fn start(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: &[&str]) -> Self {
        let port_text = port.to_string();
        let mut args = vec!["-a", "127.0.0.1", "-p", &port_text];
        args.extend_from_slice(extra);
        let process = Daemon::start(&nats_server_bin(), &args);
        wait_for(DEADLINE, &format!("nats-server on port {port}"), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            _process: process,
            port,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A serving host (`remote_workers host`), killed when dropped.
struct Host {
    process: Daemon,
    name: String,
    log: PathBuf,
    journal: PathBuf,
    pidfile: PathBuf,
}

impl Host {
    fn start(dir: &Path, url: &str, name: &str, extra: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let journal = dir.join(format!("{name}.journal"));
        let pidfile = dir.join(format!("{name}.pid"));
        let mut cmd = Command::new(bin());
        cmd.arg("host")
            .args(["--nats", url, "--name", name])
            .arg("--journal")
            .arg(&journal)
            .arg("--log-file")
            .arg(&log)
            .arg("--pidfile")
            .arg(&pidfile)
            .args(extra);
        let process = Daemon::spawn(cmd);
        wait_for_line(&log, "serves pool transcoder");
        Self {
            process,
            name: name.into(),
            log,
            journal,
            pidfile,
        }
    }

    /// `remote_workers host --name NAME --pidfile PID status`.
    fn status(&self) -> String {
        let mut cmd = Command::new(bin());
        cmd.args(["host", "--name", &self.name])
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("status");
        let finished = run_command(cmd);
        assert_eq!(finished.exit, Exit::Code(0), "status: {}", finished.stderr);
        finished.stdout
    }

    /// Jobs that callers know wait on this host (`status --json`).
    fn promised(&self) -> u64 {
        let mut cmd = Command::new(bin());
        cmd.args(["host", "--name", &self.name])
            .arg("--pidfile")
            .arg(&self.pidfile)
            .args(["status", "--json"]);
        let finished = run_command(cmd);
        let json: serde_json::Value = serde_json::from_str(&finished.stdout).unwrap_or_default();
        json["nats"]["host"]["services"][0]["promised"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Jobs its workers started.
    fn journal(&self) -> Vec<u64> {
        read_lines(&self.journal)
            .iter()
            .map(|l| {
                l.split(' ')
                    .next()
                    .and_then(|j| j.parse().ok())
                    .expect("a job")
            })
            .collect()
    }
}

/// One line of the caller's report.
#[derive(Debug, Clone)]
struct Outcome {
    job: u64,
    kind: String,
    host: String,
    digest: Option<u64>,
    ms: u64,
}

fn parse_report(path: &Path) -> Vec<Outcome> {
    read_lines(path)
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.splitn(6, ' ').collect();
            assert!(f.len() >= 5, "bad report line {line:?}");
            Outcome {
                job: f[0].parse().expect("job"),
                kind: f[1].into(),
                host: f[2].into(),
                digest: f[3].parse().ok(),
                ms: f[4].parse().expect("ms"),
            }
        })
        .collect()
}

/// What the worker computes for `job`.
fn digest(job: u64) -> u64 {
    (0..64u64).fold(job ^ 0xcbf2_9ce4_8422_2325, |h, i| {
        (h ^ i).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Starts `remote_workers call` with a report in `dir`.
fn start_call(dir: &Path, url: &str, args: &[&str]) -> (Daemon, PathBuf) {
    let report = dir.join("report");
    let mut cmd = Command::new(bin());
    cmd.args(["call", "--nats", url])
        .arg("--report")
        .arg(&report)
        .args(args);
    (Daemon::spawn(cmd), report)
}

/// Waits for the caller to finish (0: every call resolved) and returns its
/// stdout and report.
#[track_caller]
fn finish_call(mut call: Daemon, report: &Path, timeout: Duration) -> (String, Vec<Outcome>) {
    let exit = call.wait_exit(timeout);
    assert_eq!(
        exit,
        Exit::Code(0),
        "call failed: {}{}",
        call.stdout(),
        call.stderr()
    );
    (call.stdout(), parse_report(report))
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

/// A number that follows `key` in `text` (`retries 12`).
fn number_after(text: &str, key: &str) -> u64 {
    let rest = &text[text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in\n{text}"))
        + key.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in\n{text}"))
}

fn by_kind(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for o in outcomes {
        *kinds.entry(o.kind.clone()).or_default() += 1;
    }
    kinds
}

#[test]
fn calls_spread_across_two_hosts_with_correct_results() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&[]);
    let a = Host::start(dir.path(), &nats.url(), "a", &[]);
    let b = Host::start(dir.path(), &nats.url(), "b", &[]);
    let args = [
        "--calls",
        "200",
        "--concurrency",
        "20",
        "--work-ms",
        "2",
        "--wait-hosts",
        "2",
    ];
    let (call, report) = start_call(dir.path(), &nats.url(), &args);
    let (stdout, outcomes) = finish_call(call, &report, DEADLINE * 3);
    assert_eq!(last_line(&stdout), "ok=200 failed=0 hosts=2", "{stdout}");
    let jobs: BTreeSet<u64> = outcomes.iter().map(|o| o.job).collect();
    assert_eq!(jobs, (0..200).collect(), "one answer per job");
    for o in &outcomes {
        assert_eq!(o.kind, "ok", "{o:?}");
        assert_eq!(
            o.digest,
            Some(digest(o.job)),
            "job {} computed wrongly",
            o.job
        );
    }
    let served: BTreeSet<&str> = outcomes.iter().map(|o| o.host.as_str()).collect();
    assert_eq!(served, BTreeSet::from(["a", "b"]), "both hosts served");
    let (ja, jb) = (a.journal(), b.journal());
    assert_eq!(ja.len() + jb.len(), 200, "each job ran once");
    assert!(!ja.is_empty() && !jb.is_empty());

    // `status` on a host shows the connection and what it serves.
    let status = a.status();
    assert!(
        status.contains("nats      connected 127.0.0.1:"),
        "{status}"
    );
    assert!(
        status.contains("serving   transcoder as host a on daemonic.remote_workers.Transcoder"),
        "{status}"
    );
    assert_eq!(
        number_after(&status, "remote_workers.Transcoder: "),
        ja.len() as u64,
        "{status}"
    );
    // The caller prints its remote pool's stats.
    assert!(
        stdout.contains(
            "remote pool transcoder on daemonic.remote_workers.Transcoder: calls 200 returned 200"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("latency p50"), "{stdout}");
    drop((a, b));
}

#[test]
fn no_host_is_unavailable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&[]);
    // A host timeout far beyond the test's patience: the answer must come
    // from the server's "no responders", not from a deadline.
    let args = ["--calls", "5", "--host-timeout", "60s"];
    let started = Instant::now();
    let (call, report) = start_call(dir.path(), &nats.url(), &args);
    let (stdout, outcomes) = finish_call(call, &report, DEADLINE);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(last_line(&stdout), "ok=0 failed=5 hosts=0", "{stdout}");
    assert_eq!(outcomes.len(), 5);
    for o in &outcomes {
        assert_eq!(o.kind, "unavailable", "{o:?}");
    }
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains("no host serves daemonic.remote_workers.Transcoder"),
        "{text}"
    );
}

#[test]
fn a_host_killed_under_load_loses_only_what_it_may_have_run() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&[]);
    // Room for every job on the survivor: nothing may fail `Busy`.
    let room = ["--queue", "4000"];
    let a = Host::start(dir.path(), &nats.url(), "a", &room);
    let b = Host::start(dir.path(), &nats.url(), "b", &room);
    let jobs = 1500u64;
    let args = [
        "--calls",
        "1500",
        "--concurrency",
        "1200",
        "--work-ms",
        "5",
        "--wait-hosts",
        "2",
        "--host-timeout",
        "1s",
    ];
    let spawned = Instant::now();
    let (call, report) = start_call(dir.path(), &nats.url(), &args);
    // Under load: jobs answered, over a thousand in flight, and `a` has
    // told the caller which of its jobs wait (heartbeats): those must run
    // on `b` once `a` is gone.
    wait_for(DEADLINE, "jobs answered by host a", || {
        parse_report(&report)
            .iter()
            .filter(|o| o.host == "a")
            .count()
            >= 20
    });
    wait_for(DEADLINE, "host a to promise waiting jobs", || {
        a.promised() >= 50
    });
    assert!(a.journal().len() < 600, "a still holds most of its share");
    let mut a = a;
    a.process.signal(Sig::SIGKILL);
    let killed_at = spawned.elapsed();
    let (stdout, outcomes) = finish_call(call, &report, Duration::from_secs(90));

    // Every job resolved exactly once: ok, or lost with the host.
    let answered: BTreeSet<u64> = outcomes.iter().map(|o| o.job).collect();
    assert_eq!(answered.len() as u64, jobs, "{stdout}");
    assert_eq!(outcomes.len() as u64, jobs, "one answer per job");
    let kinds = by_kind(&outcomes);
    assert!(
        kinds.keys().all(|k| k == "ok" || k == "host_lost"),
        "only ok and host_lost: {kinds:?}\n{stdout}"
    );
    let lost: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == "host_lost").collect();
    assert!(!lost.is_empty(), "the killed host held running jobs");
    // HostLost within the deadline (1 s of silence, plus slack for a busy
    // machine), not at the end of the run.
    let bound = killed_at.as_millis() as u64 + 1000 + 3000;
    for o in &lost {
        assert!(o.ms <= bound, "{o:?} resolved after {bound} ms");
    }

    // The journals: no job ran twice; every ok job ran exactly once.
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for job in a.journal().into_iter().chain(b.journal()) {
        *runs.entry(job).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs ran twice: {twice:?}");
    for o in &outcomes {
        let ran = runs.get(&o.job).copied().unwrap_or(0);
        match o.kind.as_str() {
            "ok" => assert_eq!(ran, 1, "{o:?}"),
            _ => assert!(ran <= 1, "{o:?}"),
        }
    }
    // Jobs the dead host held without starting ran on the survivor.
    assert!(number_after(&stdout, "retries ") > 0, "{stdout}");
    let ok_on_b = outcomes
        .iter()
        .filter(|o| o.kind == "ok" && o.host == "b")
        .count();
    assert!(
        ok_on_b as u64 > jobs / 2,
        "b took over: {ok_on_b} ok\n{stdout}"
    );
    assert!(a.process.try_exit().is_some());
}

#[test]
fn a_saturated_host_answers_busy_and_the_retry_lands_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&[]);
    // `a` holds two jobs at most (one runs, one waits); `b` has room.
    let a = Host::start(
        dir.path(),
        &nats.url(),
        "a",
        &["--workers", "1", "--queue", "1"],
    );
    let b = Host::start(dir.path(), &nats.url(), "b", &[]);
    let args = [
        "--calls",
        "100",
        "--concurrency",
        "20",
        "--work-ms",
        "20",
        "--wait-hosts",
        "2",
        "--retries",
        "3",
    ];
    let (call, report) = start_call(dir.path(), &nats.url(), &args);
    let (stdout, outcomes) = finish_call(call, &report, DEADLINE * 3);
    assert_eq!(last_line(&stdout), "ok=100 failed=0 hosts=2", "{stdout}");
    assert!(outcomes.iter().all(|o| o.kind == "ok"));
    let status = a.status();
    let busy = number_after(&status, "errors: busy ");
    assert!(busy > 0, "a answered Busy:\n{status}");
    assert!(
        number_after(&stdout, "retries ") >= busy,
        "every Busy was retried\n{stdout}"
    );
    // Busy jobs never ran on `a`: each job ran once, on one host.
    let (ja, jb) = (a.journal(), b.journal());
    assert_eq!(ja.len() + jb.len(), 100);
    let on_a: BTreeSet<u64> = ja.into_iter().collect();
    for o in outcomes.iter().filter(|o| o.host == "b") {
        assert!(!on_a.contains(&o.job), "{o:?} ran on a too");
    }
    drop(b);
}

#[test]
fn the_nats_server_restarted_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&[]);
    let port = nats.port;
    let host = Host::start(dir.path(), &nats.url(), "a", &[]);
    let args = [
        "--calls",
        "600",
        "--concurrency",
        "4",
        "--work-ms",
        "2",
        "--pace",
        "20ms",
        "--wait-hosts",
        "1",
    ];
    let (call, report) = start_call(dir.path(), &nats.url(), &args);
    wait_for(DEADLINE, "50 jobs done", || {
        parse_report(&report).len() >= 50
    });
    drop(nats); // SIGKILL: the server is gone
    wait_for(DEADLINE, "a job failing during the outage", || {
        parse_report(&report).iter().any(|o| o.kind != "ok")
    });
    let _nats = NatsServer::start_on(port, &[]);
    let (stdout, outcomes) = finish_call(call, &report, Duration::from_secs(60));
    assert_eq!(outcomes.len(), 600, "{stdout}");
    let mut by_job = outcomes.clone();
    by_job.sort_by_key(|o| o.job);
    assert!(
        by_job[..50].iter().all(|o| o.kind == "ok"),
        "before the outage"
    );
    let failed: Vec<&Outcome> = by_job.iter().filter(|o| o.kind != "ok").collect();
    assert!(!failed.is_empty());
    for o in &failed {
        assert!(
            o.kind == "unavailable" || o.kind == "host_lost",
            "calls during the outage fail typed: {o:?}"
        );
    }
    let last_failed = failed.iter().map(|o| o.job).max().unwrap_or(0);
    assert!(
        last_failed < 580,
        "later calls succeed (last failure: job {last_failed})\n{stdout}"
    );
    assert!(
        by_job[580..].iter().all(|o| o.kind == "ok"),
        "after the restart"
    );
    // The host saw the connection go and come back.
    wait_for_line(&host.log, "event: connected");
    let status = host.status();
    assert!(status.contains("nats      connected"), "{status}");
    let disconnects = status
        .split(" disconnects")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(disconnects.is_some_and(|n| n >= 1), "{status}");
}

/// A host given `wrong` credentials (in the address, `nats://WRONG@host`)
/// by a server started with `server_args` stops at once with exit 77 and a
/// clear message that never shows the secret; given `right`, it serves.
fn wrong_credentials_are_refused_and_right_ones_serve(
    server_args: &[&str],
    wrong: &str,
    right: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(server_args);
    let wrong_url = format!("nats://{wrong}@127.0.0.1:{}", nats.port);
    let mut cmd = Command::new(bin());
    cmd.args(["host", "--nats", &wrong_url, "--name", "x"]);
    let finished = run_command(cmd);
    assert_eq!(
        finished.exit,
        Exit::Code(77),
        "EX_NOPERM; stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("cannot connect to NATS at 127.0.0.1:"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("refused the credentials"),
        "{}",
        finished.stderr
    );
    let secret = wrong.rsplit(':').next().unwrap_or(wrong);
    assert!(
        !finished.stderr.contains(secret),
        "the secret never reaches the log"
    );
    // The right ones serve.
    let right_url = format!("nats://{right}@127.0.0.1:{}", nats.port);
    let host = Host::start(dir.path(), &right_url, "a", &[]);
    assert!(host.status().contains("serving   transcoder as host a"));
}

#[test]
fn a_wrong_password_is_a_clear_start_up_error() {
    wrong_credentials_are_refused_and_right_ones_serve(
        &["--user", "app", "--pass", "right"],
        "app:wrong",
        "app:right",
    );
}

#[test]
fn a_token_from_the_address_is_accepted_and_a_wrong_one_refused() {
    wrong_credentials_are_refused_and_right_ones_serve(
        &["--auth", "s3cr3t-token"],
        "not-the-token",
        "s3cr3t-token",
    );
}

#[test]
fn a_host_stopped_gracefully_hands_its_waiting_calls_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&[]);
    let a = Host::start(dir.path(), &nats.url(), "a", &[]);
    let b = Host::start(dir.path(), &nats.url(), "b", &[]);
    let args = [
        "--calls",
        "1500",
        "--concurrency",
        "300",
        "--work-ms",
        "5",
        "--wait-hosts",
        "2",
    ];
    let (call, report) = start_call(dir.path(), &nats.url(), &args);
    wait_for(DEADLINE, "jobs answered by host a", || {
        parse_report(&report)
            .iter()
            .filter(|o| o.host == "a")
            .count()
            >= 50
    });
    let mut a = a;
    a.process.signal(Sig::SIGTERM);
    // Calls still on their way to `a` when it unsubscribed are answered
    // `ShuttingDown` (not dropped), and run on `b`; those `a` runs finish.
    let (stdout, outcomes) = finish_call(call, &report, Duration::from_secs(60));
    assert_eq!(last_line(&stdout), "ok=1500 failed=0 hosts=2", "{stdout}");
    assert_eq!(a.process.wait_exit(DEADLINE), Exit::Code(0));
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for job in a.journal().into_iter().chain(b.journal()) {
        *runs.entry(job).or_default() += 1;
    }
    assert_eq!(runs.len(), 1500, "every job ran");
    assert!(runs.values().all(|n| *n == 1), "none twice");
    assert_eq!(outcomes.len(), 1500);
}
