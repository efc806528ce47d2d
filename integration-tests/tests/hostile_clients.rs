//! The control channel against hostile clients, end to end: a running
//! daemon gets hundreds of connections that send random bytes (invalid
//! UTF-8, no newline, more than a request line may hold, control
//! characters), and must answer each with at most one line of JSON or
//! close it, keep serving `status` and `stop`, and keep no descriptor of
//! them. The decoder itself is fuzzed in `framework/tests/fuzz_decoders.rs`
//! (`control_request`).

use integration_tests::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A daemon without workers: its descriptors change only with its
/// control clients, so a leak shows as a count that stays up.
fn daemon_bin() -> PathBuf {
    example_bin("hello_world")
}

fn control(dir: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(daemon_bin());
    cmd.current_dir(dir)
        .arg("--pidfile")
        .arg("w.pid")
        .args(args);
    run_command(cmd)
}

/// SplitMix64: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A hostile request: random bytes, or a real request bent out of shape.
fn request(rng: &mut Rng) -> Vec<u8> {
    let len = [0, 1, 7, 255, 256, 257, 4096][rng.below(7) as usize];
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    match rng.below(4) {
        0 => bytes.splice(0..0, b"status".iter().copied()).for_each(drop),
        1 => bytes
            .splice(0..0, b"stop\xff\n".iter().copied())
            .for_each(drop),
        2 => bytes.push(b'\n'),
        _ => {}
    }
    bytes
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn hostile_control_clients_get_one_line_or_nothing_and_the_daemon_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(daemon_bin());
    cmd.current_dir(dir.path())
        .args(["--pidfile", "w.pid", "--log-file", "w.log"]);
    let mut daemon = Daemon::spawn(cmd);
    let socket = dir.path().join(".hello_world.control/control.sock");
    wait_for(DEADLINE, "the control socket", || socket.exists());
    let status = control(dir.path(), &["status"]);
    assert_eq!(status.exit.code(), Some(0), "{status:?}");
    let fds_before = open_fds(daemon.pid());

    let mut rng = Rng(0x00c0_7701);
    let mut answered = 0;
    for _ in 0..300 {
        let bytes = request(&mut rng);
        let mut stream = UnixStream::connect(&socket).expect("the daemon accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The daemon may answer and close before reading everything.
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("an answer or a close, never a hang");
        if answer.is_empty() {
            continue;
        }
        answered += 1;
        let text = std::str::from_utf8(&answer).expect("UTF-8");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert!(
            value.get("Error").is_some() || value.get("Status").is_some(),
            "an error or the status, never a stop: {text}"
        );
    }
    assert!(answered > 0, "some requests were answered");

    assert!(daemon.is_running());
    let status = control(dir.path(), &["status"]);
    assert_eq!(status.exit.code(), Some(0), "{status:?}");
    wait_for(DEADLINE, "the clients' descriptors closed", || {
        open_fds(daemon.pid()) <= fds_before
    });
    let stop = control(dir.path(), &["stop"]);
    assert_eq!(stop.exit.code(), Some(0), "{stop:?}");
    daemon.expect_exit_code(0);
    let log = read_lines(&dir.path().join("w.log"));
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:?}");
}
