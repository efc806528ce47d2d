//! Log lines of child processes: each child sends finished lines as
//! datagrams over a socket the daemon hands it at spawn; a thread in the
//! daemon writes them to the same file and console as its own lines.

use super::drain::{LineWriter, LocalSink, Target};
use super::{Level, LogConfig, Logger};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use parking_lot::RwLock;
use slog::Drain;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// What a spawned child needs to log like the daemon.
#[derive(Debug, Clone)]
pub(crate) struct ChildLogSettings {
    pub daemon: String,
    pub daemon_pid: i32,
    pub debug_level: u8,
    pub console: bool,
    /// Sending end of the daemon's child-log socket (passed to each child).
    pub sink: Option<Arc<OwnedFd>>,
}

static SETTINGS: RwLock<Option<Arc<ChildLogSettings>>> = RwLock::new(None);

fn binary_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "daemonic".into())
}

/// Settings for the next spawned child (defaults when no daemon logs: lines
/// go to the child's stderr).
pub(crate) fn child_log_settings() -> Arc<ChildLogSettings> {
    if let Some(s) = SETTINGS.read().as_ref() {
        return s.clone();
    }
    Arc::new(ChildLogSettings {
        daemon: binary_name(),
        daemon_pid: std::process::id() as i32,
        debug_level: 0,
        console: true,
        sink: None,
    })
}

/// The receiving thread; dropping this stops it after draining.
pub(crate) struct ChildLogReceiver {
    receiver: Option<Arc<OwnedFd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChildLogReceiver {
    pub(crate) fn start(config: &LogConfig, sink: LocalSink) -> Self {
        let none = Self {
            receiver: None,
            thread: None,
        };
        let Ok((rx, tx)) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) else {
            return none;
        };
        let rx = Arc::new(rx);
        let reader = rx.clone();
        let thread = std::thread::Builder::new()
            .name("daemonic-childlog".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match nix::sys::socket::recv(
                        reader.as_raw_fd(),
                        &mut buf,
                        nix::sys::socket::MsgFlags::empty(),
                    ) {
                        Ok(0) => return,
                        Ok(n) => sink.write(&buf[..n]),
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => return,
                    }
                }
            });
        let Ok(thread) = thread else {
            return none;
        };
        *SETTINGS.write() = Some(Arc::new(ChildLogSettings {
            daemon: config.daemon_name.clone(),
            daemon_pid: config.daemon_pid,
            debug_level: config.debug_level,
            console: false,
            sink: Some(Arc::new(tx)),
        }));
        Self {
            receiver: Some(rx),
            thread: Some(thread),
        }
    }
}

impl Drop for ChildLogReceiver {
    fn drop(&mut self) {
        let Some(rx) = self.receiver.take() else {
            return;
        };
        *SETTINGS.write() = None;
        // Wakes the blocked recv with 0 once queued lines are read.
        let _ = nix::sys::socket::shutdown(rx.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A synchronous logger for a child process.
pub(crate) fn child_logger(config: &LogConfig, sink: Option<OwnedFd>) -> Logger {
    let target = match sink {
        Some(fd) => Target::Socket(fd, false),
        None => Target::Local(LocalSink {
            file: None,
            console: true,
        }),
    };
    let writer = LineWriter::new(config, target);
    let max = Level::max_for_debug(config.debug_level).to_slog();
    let slog = slog::Logger::root(slog::LevelFilter::new(writer, max).ignore_res(), slog::o!());
    Logger {
        slog,
        debug_level: config.debug_level,
    }
}
