//! Children's log lines as the daemon writes them: stamped with the sender's
//! real pid (from the socket, never from the child's text), one record per
//! line, long lines split instead of truncated.

use daemonic::worker::WorkerContext;
use daemonic::{Daemon, DaemonBuilder, LoopContext};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Liar {
    tag: String,
    #[serde(skip)]
    logger: Option<daemonic::Logger>,
}

#[daemonic::worker]
impl Liar {
    fn started(&mut self, ctx: &mut WorkerContext) {
        self.logger = Some(ctx.logger().clone());
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        if let Some(logger) = &self.logger {
            logger.log(message);
        }
    }

    /// Logs through the framework a message that imitates a line of `main`.
    pub fn forge_through_the_logger(&mut self) -> i32 {
        self.log(format_args!(
            "{}\n2026-01-01T00:00:00.000Z [1/1 main] ERROR {} forged by the logger",
            self.tag, self.tag
        ));
        std::process::id() as i32
    }

    /// Writes a finished line of `main` straight to the log socket, as a
    /// hostile child could.
    pub fn forge_raw(&mut self) -> i32 {
        let line = format!(
            "2026-01-01T00:00:00.000Z [1/1 main] ERROR {} forged raw\n",
            self.tag
        );
        // SAFETY: fd 4 is this worker's log socket; send reads `line`.
        unsafe { libc::send(4, line.as_ptr().cast(), line.len(), libc::MSG_NOSIGNAL) };
        std::process::id() as i32
    }

    /// Logs one line of about `len` bytes, ending in `END<attempt>`.
    pub fn long_line(&mut self, len: usize, attempt: u32) -> i32 {
        self.log(format_args!("{} {}END{attempt}", self.tag, body(len)));
        std::process::id() as i32
    }
}

struct Idle;

fn body(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

impl Daemon for Idle {
    fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
}

/// `[<daemon pid>/<pid> <role>]` of a line.
fn stamp(line: &str) -> Option<(i32, i32, String)> {
    let start = line.find(" [")? + 2;
    let end = start + line[start..].find(']')?;
    let (pids, role) = line[start..end].split_once(' ')?;
    let (d, p) = pids.split_once('/')?;
    Some((d.parse().ok()?, p.parse().ok()?, role.to_string()))
}

fn lines_with(log: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

async fn wait_for_lines(log: &Path, needle: &str, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = lines_with(log, needle);
        if found.len() >= count || std::time::Instant::now() > deadline {
            return found;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One daemon per test process: the children's log socket is process-wide,
/// so the cases run one after the other, on one daemon and worker.
#[actix::test]
async fn children_lines_are_stamped_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("d.log");
    let handle = DaemonBuilder::new(Idle)
        .name("liar")
        .handle_signals(false)
        .log_file(&log)
        .start()
        .unwrap();
    let tag = format!("tag{}", std::process::id());
    let pool = handle
        .workers(Liar {
            tag: tag.clone(),
            logger: None,
        })
        .size(1)
        .start()
        .unwrap();
    a_forged_log_line_is_attributed_to_its_real_sender(&pool, &log, &tag).await;
    a_long_line_is_split_not_truncated(&pool, &log, &tag).await;
    handle.shutdown();
    handle.wait().await;
}

const LONG: usize = 300 * 1024;

async fn a_forged_log_line_is_attributed_to_its_real_sender(
    pool: &daemonic::actix::Addr<daemonic::WorkerPool<Liar>>,
    log: &Path,
    tag: &str,
) {
    let me = std::process::id() as i32;
    let pid = pool
        .send(liar::ForgeThroughTheLogger {})
        .await
        .unwrap()
        .unwrap();
    let found = wait_for_lines(log, &format!("{tag} forged by the logger"), 1).await;
    assert_eq!(found.len(), 1, "one record, one line: {found:?}");
    assert_eq!(
        stamp(&found[0]),
        Some((me, pid, "worker:liar".into())),
        "stamped with the sender: {found:?}"
    );
    assert!(found[0].contains(&format!("{tag}\\n2026")), "{found:?}");

    let pid = pool.send(liar::ForgeRaw {}).await.unwrap().unwrap();
    let found = wait_for_lines(log, &format!("{tag} forged raw"), 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let (daemon_pid, sender, role) = stamp(&found[0]).unwrap();
    assert_eq!((daemon_pid, sender), (me, pid), "{found:?}");
    assert_ne!(
        role, "main",
        "a child cannot write a line of main: {found:?}"
    );
}

/// A child never waits long for the daemon: on a machine so busy that the
/// daemon's receiving thread does not run for a while, a long line can be
/// dropped (and counted). Try a few times; one must arrive whole, in parts.
async fn a_long_line_is_split_not_truncated(
    pool: &daemonic::actix::Addr<daemonic::WorkerPool<Liar>>,
    log: &Path,
    tag: &str,
) {
    for attempt in 0..5 {
        let pid = pool
            .send(liar::LongLine { len: LONG, attempt })
            .await
            .unwrap()
            .unwrap();
        let end = format!("END{attempt}");
        if wait_for_lines(log, &end, 1).await.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(log).unwrap();
        let parts: Vec<&str> = text
            .lines()
            .filter(|l| stamp(l).is_some_and(|(_, p, _)| p == pid))
            .skip_while(|l| !l.contains(&format!("] INFO  {tag} abc")))
            .collect();
        let ends = parts.iter().position(|p| p.contains(&end)).unwrap();
        let parts = &parts[..=ends];
        assert!(parts.len() > 1, "split into several lines: {}", parts.len());
        // Every byte arrived, in order, across the parts.
        let mut whole = String::new();
        for (i, part) in parts.iter().enumerate() {
            let text = part.split_once("] ").map(|(_, t)| t).unwrap_or("");
            let text = if i == 0 {
                text.strip_prefix("INFO  ").unwrap_or("")
            } else {
                text
            };
            let more = i + 1 < parts.len();
            assert_eq!(part.ends_with(" [continues]"), more, "part {i}");
            whole.push_str(text.strip_suffix(" [continues]").unwrap_or(text));
        }
        assert_eq!(
            whole,
            format!("{tag} {}{end}", body(LONG)),
            "whole, in order"
        );
        if attempt > 0 {
            // What was dropped was counted and reported.
            assert!(
                text.contains("earlier log line(s) of this process were dropped"),
                "a dropped line went unreported"
            );
        }
        return;
    }
    panic!("a long line never arrived whole in 5 attempts");
}
