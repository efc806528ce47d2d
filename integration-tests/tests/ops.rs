//! The `ops` example from outside: `tracing` events of every process in its
//! log, Prometheus `/metrics` (parsed with a real parser), the status page and
//! `/status.json` over real HTTP, a busy port, and a restart.

use integration_tests::*;
use std::path::PathBuf;
use std::process::Command;

fn ops_bin() -> PathBuf {
    example_bin("ops")
}

/// A running `ops` daemon with its metrics server.
struct Ops {
    daemon: Daemon,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    base: String,
}

impl Ops {
    fn start(metrics: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(ops_bin());
        cmd.current_dir(dir.path())
            .args(["--log-file", "ops.log", "--pidfile", "ops.pid"])
            .args(["--metrics", metrics, "--interval", "0.05"])
            .args(extra);
        let daemon = Daemon::spawn(cmd);
        let log = dir.path().join("ops.log");
        let line = wait_for_line(&log, "metrics on http://");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") && w.ends_with("/metrics,"))
            .expect("the address in the line");
        let base = url.trim_end_matches("/metrics,").to_string();
        Self { daemon, dir, base }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("ops.log")
    }

    fn lines(&self) -> Vec<LogLine> {
        read_lines(&self.log())
            .iter()
            .filter_map(|l| parse_log_line(l))
            .collect()
    }

    /// Waits for a parsed log line matching `pred`.
    #[track_caller]
    fn wait_line(&self, what: &str, pred: impl Fn(&LogLine) -> bool) -> LogLine {
        wait_for_value(DEADLINE, what, || {
            self.lines().into_iter().find(|l| pred(l))
        })
    }

    fn get(&self, path: &str) -> Answer {
        request("GET", &format!("{}{path}", self.base))
    }

    fn scrape(&self) -> prometheus_parse::Scrape {
        let answer = self.get("/metrics");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.content_type, "text/plain; version=0.0.4; charset=utf-8",
            "the Prometheus text format's content type"
        );
        prometheus_parse::Scrape::parse(answer.body.lines().map(|l| Ok(l.to_string())))
            .expect("/metrics parses as Prometheus text")
    }

    fn stop(mut self) {
        self.daemon.signal(Sig::SIGTERM);
        self.daemon.expect_exit_code(0);
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// One real HTTP request (any status is an answer).
fn request(method: &str, url: &str) -> Answer {
    try_request(method, url).unwrap_or_else(|| panic!("{method} {url} failed"))
}

/// One real HTTP request; `None` if no server answered.
fn try_request(method: &str, url: &str) -> Option<Answer> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let response = match method {
        "GET" => agent.get(url).call(),
        "POST" => agent.post(url).send_empty(),
        "DELETE" => agent.delete(url).call(),
        other => panic!("no such method in this test: {other}"),
    };
    let mut response = response.ok()?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some(Answer {
        status: response.status().as_u16(),
        content_type,
        body: response.body_mut().read_to_string().ok()?,
    })
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

const POOL: (&str, &str) = ("pool", "checksummer");

#[test]
fn tracing_events_of_main_workers_tasks_and_actix_web_reach_the_log_with_fields() {
    let ops = Ops::start(
        "127.0.0.1:0",
        &["--debug", "--task-every", "3", "--fail-every", "4"],
    );
    let me = ops.daemon.pid();

    let main = ops.wait_line("the main process's tracing event", |l| {
        l.message.starts_with("ops daemon initialized")
    });
    assert_eq!(
        (main.pid, main.role.as_str(), main.level.as_str()),
        (me, "main", "INFO")
    );
    assert!(main.message.ends_with(" workers=2 target=ops"), "{main:?}");

    let worker = ops.wait_line("a worker's tracing event", |l| {
        l.message.starts_with("checksum computed")
    });
    assert_eq!(worker.role, "worker:checksummer");
    assert_eq!(worker.daemon_pid, me);
    assert_ne!(worker.pid, me, "the worker's own pid");
    for field in [" bytes=", " digest=", " job=", " span=job", " target=ops"] {
        assert!(
            worker.message.contains(field),
            "{field} missing: {worker:?}"
        );
    }
    let record = ops.wait_line("a worker's `log` record", |l| {
        l.role == "worker:checksummer" && l.message.ends_with("done (a log record)")
    });
    assert_ne!(record.pid, me);

    let task = ops.wait_line("a task's tracing event", |l| {
        l.message.starts_with("report task ran")
    });
    assert_eq!(task.role, "task:report");
    assert_ne!(task.pid, me);
    assert!(task.message.contains(" iteration=3 "), "{task:?}");

    let refused = ops.wait_line("a WARN event with fields", |l| {
        l.message.starts_with("job refused")
    });
    assert_eq!(
        (refused.level.as_str(), refused.role.as_str()),
        ("WARN", "main")
    );
    assert!(
        refused.message.contains(" job=4 reason=job 4 refused"),
        "{refused:?}"
    );

    // actix-web's own events (actix-server emits `tracing` events)...
    let addr = ops.base.trim_start_matches("http://");
    let actix = ops.wait_line("actix-server's start event", |l| {
        l.message.starts_with("starting service:")
    });
    assert_eq!((actix.pid, actix.role.as_str()), (me, "main"));
    assert!(
        actix.message.contains(&format!("listening on: {addr}"))
            && actix.message.ends_with("target=actix_server::server"),
        "{actix:?}"
    );
    // ...and an event inside a request's span, with the span's fields.
    assert_eq!(ops.get("/status.json").status, 200);
    let served = ops.wait_line("the request's debug event", |l| {
        l.message.starts_with("served status=200") && l.message.contains("path=/status.json")
    });
    assert_eq!(served.level, "DEBUG");
    assert!(
        served.message.ends_with(
            "method=GET path=/status.json span=http_request target=daemonic::metrics::server"
        ),
        "{served:?}"
    );
    ops.stop();
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_when_calls_happen() {
    let ops = Ops::start("127.0.0.1:0", &["--task-every", "2", "--crash-every", "7"]);
    let ok = |s: &prometheus_parse::Scrape| {
        value(s, "daemonic_pool_calls_total", &[POOL, ("outcome", "ok")]).unwrap_or(0.0)
    };
    let first = ops.scrape();
    let calls = ok(&first);
    let latencies =
        value(&first, "daemonic_pool_call_duration_seconds_count", &[POOL]).unwrap_or(0.0);
    let submitted = value(&first, "ops_jobs_submitted_total", &[]).expect("the user's counter");
    let ticks = value(&first, "daemonic_loop_ticks_total", &[]).expect("loop ticks");

    // A worker killed itself on job 7 (and every 7th after): died calls, a restart.
    let later = wait_for_value(DEADLINE, "more calls, a death and a finished task", || {
        let s = ops.scrape();
        let moved = ok(&s) >= calls + 5.0
            && value(&s, "daemonic_pool_restarts_total", &[POOL]).unwrap_or(0.0) >= 1.0
            && value(
                &s,
                "daemonic_tasks_exited_total",
                &[("task", "report"), ("status", "ok")],
            )
            .unwrap_or(0.0)
                >= 1.0;
        moved.then_some(s)
    });
    let died = value(
        &later,
        "daemonic_pool_calls_total",
        &[POOL, ("outcome", "died")],
    );
    assert!(
        died.is_some_and(|n| n >= 1.0),
        "calls by outcome: died {died:?}"
    );
    let count = value(&later, "daemonic_pool_call_duration_seconds_count", &[POOL]).unwrap();
    assert!(
        count >= latencies + 5.0,
        "latency histogram count {latencies} -> {count}"
    );
    let buckets = value(&later, "daemonic_pool_call_duration_seconds", &[POOL]).unwrap();
    assert_eq!(buckets, count, "the +Inf bucket holds every call");
    assert!(value(&later, "ops_jobs_submitted_total", &[]).unwrap() > submitted);
    assert!(value(&later, "daemonic_loop_ticks_total", &[]).unwrap() > ticks);
    assert!(value(&later, "daemonic_loop_lateness_seconds_count", &[]).unwrap() > 0.0);
    assert!(value(&later, "daemonic_loop_overruns_total", &[]).is_some());
    assert_eq!(value(&later, "daemonic_pool_size", &[POOL]), Some(2.0));
    assert!(value(&later, "daemonic_pool_queued_calls", &[POOL]).is_some());
    assert!(value(&later, "daemonic_pool_in_flight_calls", &[POOL]).is_some());
    assert!(value(&later, "daemonic_pool_recycled_total", &[POOL]).is_some());
    let workers: f64 = later
        .samples
        .iter()
        .filter(|s| s.metric == "daemonic_pool_workers")
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => Some(v),
            _ => None,
        })
        .sum();
    assert!(workers >= 2.0, "workers by state: {workers}");
    let main_rss = value(
        &later,
        "daemonic_memory_resident_bytes",
        &[("process", "main")],
    );
    let worker_rss = value(
        &later,
        "daemonic_memory_resident_bytes",
        &[("process", "worker"), POOL],
    );
    assert!(main_rss.is_some_and(|v| v > 0.0) && worker_rss.is_some_and(|v| v > 0.0));
    assert!(
        later.docs.contains_key("daemonic_pool_calls_total"),
        "HELP lines"
    );

    // The death is on the status page's list of recent restarts.
    let page = ops.get("/");
    assert!(
        page.body.contains("died (killed by SIGKILL)"),
        "{}",
        page.body
    );
    ops.stop();
}

/// Object keys, recursively (arrays: the keys of their first element).
fn shape(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), shape(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(items) => items.first().map(shape).into_iter().collect(),
        _ => serde_json::Value::Null,
    }
}

fn worker_pids(status: &serde_json::Value) -> Vec<i64> {
    let mut pids: Vec<i64> = status["pools"][0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c["pid"].as_i64())
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn status_page_and_status_json_over_http_read_only_on_loopback() {
    // `--metrics PORT` alone listens on loopback.
    let ops = Ops::start("0", &[]);
    assert!(ops.base.starts_with("http://127.0.0.1:"), "{}", ops.base);
    wait_for(DEADLINE, "a few calls", || {
        let status: serde_json::Value =
            serde_json::from_str(&ops.get("/status.json").body).unwrap_or_default();
        status["pools"][0]["returned"].as_u64() >= Some(3)
    });

    let json = ops.get("/status.json");
    assert_eq!(json.status, 200);
    assert_eq!(json.content_type, "application/json");
    let over_http: serde_json::Value = serde_json::from_str(&json.body).expect("JSON");
    let mut cmd = Command::new(ops_bin());
    cmd.current_dir(ops.dir.path())
        .args(["--pidfile", "ops.pid", "status", "--json"]);
    let cli = run_command(cmd);
    assert_eq!(cli.exit.code(), Some(0), "{cli:?}");
    let from_cli: serde_json::Value = serde_json::from_str(&cli.stdout).expect("JSON");
    assert_eq!(shape(&over_http), shape(&from_cli), "the same document");
    for key in ["name", "pid", "plugins"] {
        assert_eq!(over_http[key], from_cli[key], "{key}");
    }
    assert_eq!(over_http["pid"], ops.daemon.pid());
    assert_eq!(worker_pids(&over_http), worker_pids(&from_cli));

    let page = ops.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = &page.body;
    assert!(
        html.contains("<meta http-equiv=refresh content=2>"),
        "refreshes itself"
    );
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));
    for needle in [
        "Main loop",
        "Worker pools",
        "checksummer",
        "Tasks",
        "Recent restarts",
    ] {
        assert!(html.contains(needle), "{needle} missing:\n{html}");
    }
    for pid in worker_pids(&over_http) {
        assert!(
            html.contains(&format!("<td>{pid}</td>")),
            "worker {pid} missing"
        );
    }
    assert!(html.contains(&format!("pid {}", ops.daemon.pid())));

    // Read-only: nothing answers a method that could act.
    assert_eq!(request("POST", &format!("{}/", ops.base)).status, 405);
    assert_eq!(
        request("DELETE", &format!("{}/metrics", ops.base)).status,
        405
    );
    assert_eq!(
        request("POST", &format!("{}/status.json", ops.base)).status,
        405
    );
    assert_eq!(ops.get("/stop").status, 404);
    ops.stop();
}

#[test]
fn a_busy_metrics_port_or_a_bad_address_fails_start_with_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(ops_bin());
    cmd.current_dir(dir.path()).args([
        "--log-file",
        "ops.log",
        "--pidfile",
        "ops.pid",
        "--metrics",
        &addr,
    ]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(71), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with(&format!("ops: error: cannot serve --metrics on {addr}: ")),
        "{out:?}"
    );
    assert!(!dir.path().join("ops.pid").exists(), "pid file removed");

    let mut cmd = Command::new(ops_bin());
    cmd.current_dir(dir.path())
        .args(["--metrics", "localhost:x"]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(78), "{out:?}");
    assert!(
        out.stderr
            .contains("--metrics takes PORT, :PORT or HOST:PORT"),
        "{out:?}"
    );
    drop(taken);
}

#[test]
fn the_metrics_server_comes_back_on_its_port_after_a_daemon_restart() {
    // A free port, named explicitly so the restarted daemon binds it again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::Builder::new()
        .prefix("daemonic-ops-restart")
        .tempdir()
        .unwrap();
    let _guard = KillByArg::new(dir.path().to_str().unwrap());
    let (pidfile, log) = (dir.path().join("ops.pid"), dir.path().join("ops.log"));
    let read_pid =
        || -> Option<i32> { std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok() };
    let mut cmd = Command::new(ops_bin());
    cmd.arg("--daemon")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--log-file")
        .arg(&log)
        .args(["--metrics", &port.to_string(), "--interval", "0.05"]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
    let url = format!("http://127.0.0.1:{port}/status.json");
    let served_pid = || {
        let answer = try_request("GET", &url)?;
        let status: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        status["pid"].as_i64().map(|p| p as i32)
    };
    let first = read_pid().expect("pid file");
    let _first = KillOnDrop::new(first);
    assert_eq!(served_pid(), Some(first));

    // SIGHUP: a graceful restart, a new detached daemon with a new pid.
    send_signal(first, Sig::SIGHUP);
    let second = wait_for_value(DEADLINE, "the restarted daemon's pid file", || {
        read_pid().filter(|p| *p != first)
    });
    let _second = KillOnDrop::new(second);
    wait_for(DEADLINE, "the new daemon behind the same port", || {
        served_pid() == Some(second)
    });
    assert!(
        !read_lines(&log).iter().any(|l| l.contains("cannot serve")),
        "the restarted daemon bound the port"
    );
    let mut stop = Command::new(ops_bin());
    stop.arg("--pidfile").arg(&pidfile).arg("stop");
    let stopped = run_command(stop);
    assert_eq!(stopped.exit.code(), Some(0), "{stopped:?}");
    assert!(!is_alive(second));
}
