//! A real `nats-server` for the tests that need one (`.ci/run` installs
//! it).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` on a free loopback port; killed and reaped when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server and waits (bounded) until it listens: it, and its port.
pub fn start_server() -> (Server, u16) {
    let bin = ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server is not installed (.ci/run installs it)");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, port)
}
