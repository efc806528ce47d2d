//! Log lines of child processes: each child sends its lines as datagrams
//! ([`datagram`](super::datagram)) over a socket the daemon hands it at
//! spawn; a thread in the daemon receives them with the sender's credentials
//! and stamps each line with the sender's real pid and the role registered
//! for it, and another writes them to the same file and console as the
//! daemon's own lines.
//!
//! The role comes from [`register_child`], which the spawn path calls with
//! the pid and role of every child it starts (and [`forget_child`] when it
//! reaps one). A child the daemon has not registered (a grandchild forked by
//! a worker, or a line that arrives before the registration) is shown with
//! the role it declares, never `main`.

use super::datagram;
use super::drain::{LineWriter, LocalSink, Target};
use super::queue::Queue;
use super::sender::ChildSender;
use super::{Level, LogConfig, Logger};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use parking_lot::{Mutex, RwLock};
use slog::Drain;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Read once: outside a daemon every spawn asks for it (a `readlink` each).
fn binary_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "daemonic".into())
    })
    .clone()
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

/// Roles of the children the daemon spawned, by pid: the role a line is
/// stamped with comes from here, not from the child.
static ROLES: Mutex<Option<HashMap<i32, String>>> = Mutex::new(None);

/// Records that the daemon spawned `pid` as `role` (`worker:hasher`). Called
/// by the spawn path as soon as the pid is known; paired with
/// [`forget_child`] when the child is reaped (a pid can be reused).
pub(crate) fn register_child(pid: i32, role: &str) {
    ROLES
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(pid, role.to_string());
}

/// Forgets a reaped child (see [`register_child`]).
pub(crate) fn forget_child(pid: i32) {
    if let Some(roles) = ROLES.lock().as_mut() {
        roles.remove(&pid);
    }
}

fn registered_role(pid: i32) -> Option<String> {
    ROLES.lock().as_ref()?.get(&pid).cloned()
}

/// Lines of children dropped because the log sink was too slow, by the
/// running daemon's receiver (and reported by the children themselves).
static DROPPED: Mutex<Option<Arc<AtomicU64>>> = Mutex::new(None);

/// Children's log lines dropped so far because the log sink was too slow.
pub(crate) fn child_lines_dropped() -> u64 {
    DROPPED
        .lock()
        .as_ref()
        .map_or(0, |d| d.load(Ordering::Relaxed))
}

/// The receiving and writing threads; dropping this stops them after
/// draining.
pub(crate) struct ChildLogReceiver {
    receiver: Option<Arc<OwnedFd>>,
    /// Closed to stop the receiving thread.
    wake: Option<OwnedFd>,
    queue: Option<Arc<Queue>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    #[cfg(test)]
    sending_end: Option<Arc<OwnedFd>>,
    #[cfg(test)]
    dropped: Arc<AtomicU64>,
}

/// One datagram as received: the sender's pid (from the kernel) and bytes.
pub(crate) struct Received<'a> {
    pub pid: i32,
    pub bytes: &'a [u8],
    pub truncated: bool,
}

/// Receives one datagram with the sender's credentials; descriptors a child
/// sent along (it should not) are closed at once. Never blocks (`EAGAIN`
/// when nothing is queued); `Ok(None)` for an empty datagram.
pub(crate) fn receive<'b>(
    fd: &OwnedFd,
    buf: &'b mut [u8],
    cmsg: &mut [u8],
) -> nix::Result<Option<Received<'b>>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (pid, len, truncated) = {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        )?;
        let mut pid = 0;
        let mut had_fds = false;
        for c in msg.cmsgs().into_iter().flatten() {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid(),
                ControlMessageOwned::ScmRights(fds) => {
                    had_fds = true;
                    for fd in fds {
                        // SAFETY: received just now, owned by nothing else.
                        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                    }
                }
                _ => {}
            }
        }
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        if msg.bytes == 0 && !truncated && !had_fds {
            return Ok(None);
        }
        (pid, msg.bytes, truncated)
    };
    Ok(Some(Received {
        pid,
        bytes: &buf[..len],
        truncated,
    }))
}

/// The lines the daemon writes for one received datagram.
/// `emit` gets each line and whether it is the child's own (else a notice).
/// Returns how many earlier lines the child says it dropped.
pub(crate) fn lines_for(
    received: &Received<'_>,
    daemon_pid: i32,
    mut emit: impl FnMut(String, bool),
) -> u32 {
    let now = std::time::SystemTime::now();
    let registered = registered_role(received.pid);
    let (role, text, more, dropped) = match datagram::decode(received.bytes) {
        Some(d) => (
            datagram::role(registered.as_deref(), d.declared_role).to_string(),
            d.text,
            d.more,
            d.dropped,
        ),
        None => (
            datagram::role(registered.as_deref(), "").to_string(),
            format!(
                "WARN  malformed log datagram: {}",
                String::from_utf8_lossy(received.bytes)
            )
            .into(),
            false,
            0,
        ),
    };
    if dropped > 0 {
        emit(datagram::render(
            now,
            daemon_pid,
            received.pid,
            &role,
            &format!("WARN  {dropped} earlier log line(s) of this process were dropped: the daemon's log socket was full"),
            false,
        ), false);
    }
    let text = if received.truncated {
        format!("{text} [truncated at {} bytes]", received.bytes.len()).into()
    } else {
        text
    };
    emit(
        datagram::render(now, daemon_pid, received.pid, &role, &text, more),
        true,
    );
    dropped
}

impl ChildLogReceiver {
    pub(crate) fn start(config: &LogConfig, sink: LocalSink) -> Self {
        let none = Self {
            receiver: None,
            wake: None,
            queue: None,
            threads: Vec::new(),
            #[cfg(test)]
            sending_end: None,
            #[cfg(test)]
            dropped: Arc::default(),
        };
        let Ok((rx, tx)) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) else {
            return none;
        };
        // The kernel attaches each sender's credentials: lines are stamped
        // with the pid that really sent them.
        if nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::PassCred, &true).is_err() {
            return none;
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let queue = Arc::new(Queue::new(dropped.clone()));
        let rx = Arc::new(rx);
        let reader = rx.clone();
        let to_writer = queue.clone();
        let daemon_pid = config.daemon_pid;
        // Closing the write end tells the receiving thread to read what is
        // queued and stop. (Not a shutdown of the socket: a read of zero
        // bytes would then be either the end or a child's empty datagram.)
        let Ok((wake_r, wake_w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
            return none;
        };
        let receiving = std::thread::Builder::new()
            .name("daemonic-childlog".into())
            .spawn(move || {
                let mut buf = vec![0u8; datagram::MAX_DATAGRAM];
                let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; 253]);
                let mut stopping = false;
                while !stopping {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    let mut fds = [
                        PollFd::new(reader.as_fd(), PollFlags::POLLIN),
                        PollFd::new(wake_r.as_fd(), PollFlags::POLLIN),
                    ];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => break,
                    }
                    stopping = fds[1].revents().is_some_and(|r| !r.is_empty());
                    // Everything queued now, without blocking.
                    loop {
                        match receive(&reader, &mut buf, &mut cmsg) {
                            Ok(Some(received)) => {
                                let dropped = lines_for(&received, daemon_pid, |line, childs| {
                                    to_writer.push(line, childs)
                                });
                                to_writer.count_dropped(u64::from(dropped));
                            }
                            // A child's empty datagram: nothing to write.
                            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
                            Err(nix::errno::Errno::EAGAIN) => break,
                            Err(_) => {
                                stopping = true;
                                break;
                            }
                        }
                    }
                }
                to_writer.close();
            });
        let Ok(receiving) = receiving else {
            return none;
        };
        let from_receiver = queue.clone();
        let writing = std::thread::Builder::new()
            .name("daemonic-childlog-w".into())
            .spawn(move || {
                while let Some(line) = from_receiver.pop() {
                    sink.write(line.as_bytes());
                }
            });
        let Ok(writing) = writing else {
            queue.close();
            return none;
        };
        *DROPPED.lock() = Some(dropped.clone());
        let tx = Arc::new(tx);
        *SETTINGS.write() = Some(Arc::new(ChildLogSettings {
            daemon: config.daemon_name.clone(),
            daemon_pid: config.daemon_pid,
            debug_level: config.debug_level,
            console: false,
            sink: Some(tx.clone()),
        }));
        Self {
            receiver: Some(rx),
            wake: Some(wake_w),
            queue: Some(queue),
            threads: vec![receiving, writing],
            #[cfg(test)]
            sending_end: Some(tx),
            #[cfg(test)]
            dropped,
        }
    }
}

impl Drop for ChildLogReceiver {
    fn drop(&mut self) {
        let Some(rx) = self.receiver.take() else {
            return;
        };
        *SETTINGS.write() = None;
        // The receiving thread reads what is queued and stops; the writer
        // then drains the queue and stops.
        drop(self.wake.take());
        drop(rx);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(queue) = self.queue.take() {
            queue.close();
        }
    }
}

/// A synchronous logger for a child process.
pub(crate) fn child_logger(config: &LogConfig, sink: Option<OwnedFd>) -> Logger {
    let target = match sink {
        Some(fd) => Target::Socket(ChildSender::new(fd, &config.role), false),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::sender::Sent;
    use crate::log::LogFile;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;

    fn receiver(file: Arc<LogFile>) -> ChildLogReceiver {
        let config = LogConfig {
            daemon_pid: 4242,
            ..LogConfig::default()
        };
        ChildLogReceiver::start(
            &config,
            LocalSink {
                file: Some(file),
                console: false,
            },
        )
    }

    /// A child's end of the log socket (this test process plays the child).
    fn sender(receiver: &ChildLogReceiver, declared_role: &str) -> ChildSender {
        let end = receiver.sending_end.as_ref().unwrap();
        ChildSender::new(end.as_fd().try_clone_to_owned().unwrap(), declared_role)
    }

    #[test]
    fn the_registered_role_wins_over_the_declared_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let rx = receiver(Arc::new(LogFile::open(path.clone()).unwrap()));
        let me = std::process::id() as i32;
        register_child(me, "worker:registered");
        let child = sender(&rx, "main");
        assert_eq!(child.send_line("INFO  hello"), Sent::Delivered);
        drop(child);
        drop(rx);
        forget_child(me);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("[4242/{me} worker:registered] INFO  hello\n")),
            "{text}"
        );
    }

    #[test]
    fn an_empty_datagram_neither_stops_the_receiver_nor_leaks_descriptors() {
        use crate::ipc::frame::tests::{all_closed, pipe_copies};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let rx = receiver(Arc::new(LogFile::open(path.clone()).unwrap()));
        let end = rx.sending_end.as_ref().unwrap();
        // A child sends an empty datagram, then one with descriptors only.
        let (probe, copies) = pipe_copies(2);
        let raw: Vec<_> = copies.iter().map(|c| c.as_raw_fd()).collect();
        crate::process::wire::send_message(end.as_fd(), b"", &[]).unwrap();
        crate::process::wire::send_message(end.as_fd(), b"", &raw).unwrap();
        drop(copies);
        let child = sender(&rx, "task:after");
        assert_eq!(child.send_line("INFO  still heard"), Sent::Delivered);
        drop(child);
        drop(rx);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("INFO  still heard\n"), "{text}");
        assert!(all_closed(&probe), "descriptors sent along were leaked");
    }

    #[test]
    fn a_slow_sink_never_blocks_a_child_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("slow.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A reader that does not read: the sink stalls once the pipe is full.
        let stalled = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let rx = receiver(Arc::new(LogFile::open(fifo.clone()).unwrap()));
        let dropped = rx.dropped.clone();
        let child = sender(&rx, "task:chatty");
        // (Counted by content: another test may register this pid's role.)
        let line = format!("INFO  chatty {}", "x".repeat(1024));
        // Far more than the pipe and the daemon's queue hold. This returns
        // (it would hang forever if a child waited for the sink).
        let outcomes: Vec<_> = (0..20_000).map(|_| child.send_line(&line)).collect();
        assert!(outcomes.iter().all(|o| *o != Sent::Failed));
        // Unblock the sink and stop: every line is written or counted.
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut stalled = stalled;
            let flags = nix::fcntl::OFlag::empty();
            nix::fcntl::fcntl(&stalled, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
            let mut text = String::new();
            let _ = stalled.read_to_string(&mut text);
            text
        });
        // The child reports what it dropped with its next delivered line.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut finals_dropped = 0;
        while child.send_line("INFO  chatty final") != Sent::Delivered {
            assert!(
                std::time::Instant::now() < deadline,
                "the socket never had room again"
            );
            finals_dropped += 1;
            std::thread::yield_now();
        }
        drop(child);
        drop(rx);
        let text = reader.join().unwrap();
        // The 20,000 lines and the final one.
        let written = text
            .lines()
            .filter(|l| l.contains("] INFO  chatty "))
            .count() as u64;
        let counted = dropped.load(Ordering::Relaxed) - finals_dropped;
        assert!(
            counted > 0,
            "the sink was too slow: some lines were dropped"
        );
        assert_eq!(
            written + counted,
            20_001,
            "every line is written or counted as dropped"
        );
    }
}
