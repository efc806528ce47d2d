//! `--daemon`: the classic double fork, done before any thread exists.
//!
//! The launching process stays until the daemon reports that it started (or
//! why it could not), through a pipe, so `--daemon` still fails loudly with the
//! right exit code on a bad pid file or a failing `initialize`.

use crate::error::{Error, ExitCode, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{fork, ForkResult};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

/// The write end held by the daemon until it reports start-up.
#[derive(Debug)]
pub(crate) struct ReadyPipe(std::fs::File);

impl ReadyPipe {
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }

    /// Tells the launching process how start-up went; it exits with `code`.
    pub(crate) fn report(mut self, outcome: Result<(), (ExitCode, String)>) {
        let (code, message) = match outcome {
            Ok(()) => (ExitCode::Ok, String::new()),
            Err(e) => e,
        };
        let mut buf = vec![code.code()];
        buf.extend_from_slice(&std::process::id().to_le_bytes());
        buf.extend_from_slice(message.as_bytes());
        // The launcher may have been killed; nothing to do about it then.
        let _ = self.0.write_all(&buf);
    }
}

/// Number of threads of this process, from `/proc/self/task`.
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Forking a multithreaded process and running Rust code in the child is
/// undefined behaviour in practice; refuse instead.
pub(crate) fn assert_single_threaded(what: &str) -> Result<()> {
    match thread_count() {
        1 => Ok(()),
        n => Err(Error::os(
            format!("{what}: refusing to fork a process with {n} threads (daemonize before starting threads)"),
            std::io::Error::from_raw_os_error(libc::EDEADLK),
        )),
    }
}

/// Detaches from the terminal. Returns only in the daemon (the grandchild);
/// the launching process exits with the daemon's start-up code.
pub(crate) fn daemonize(name: &str) -> Result<ReadyPipe> {
    assert_single_threaded("--daemon")?;
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::os("pipe", e))?;
    // SAFETY: the process is single-threaded (checked above).
    match unsafe { fork() }.map_err(|e| Error::os("fork", e))? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let _ = nix::sys::wait::waitpid(child, None);
            launcher_wait(name, read_end)
        }
        ForkResult::Child => {
            drop(read_end);
            nix::unistd::setsid().map_err(|e| Error::os("setsid", e))?;
            // SAFETY: still single-threaded.
            match unsafe { fork() }.map_err(|e| Error::os("fork", e))? {
                // SAFETY: _exit is always safe; skipping atexit handlers keeps
                // buffered output from being flushed twice.
                ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
                ForkResult::Child => {
                    detach_stdio()?;
                    Ok(ReadyPipe(std::fs::File::from(write_end)))
                }
            }
        }
    }
}

/// A descriptor open when the program started, before `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inherited {
    fd: std::os::fd::RawFd,
    dev: u64,
    ino: u64,
}

/// Descriptors above 2 open before `main` ran: inherited from whoever
/// started the program (a shell's pipes, a supervisor's sockets).
static INHERITED: std::sync::OnceLock<Vec<Inherited>> = std::sync::OnceLock::new();

fn identity(fd: std::os::fd::RawFd) -> Option<(u64, u64)> {
    // SAFETY: fstat into a zeroed struct we own; a closed fd fails cleanly.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Runs before `main`, before any of the program's own objects exist.
#[ctor::ctor]
#[allow(unsafe_code)]
unsafe fn record_inherited_descriptors() {
    let mut inherited = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<std::os::fd::RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        // The directory's own descriptor is closed by now: fstat fails for it.
        for fd in fds.into_iter().filter(|fd| *fd > 2) {
            if let Some((dev, ino)) = identity(fd) {
                inherited.push(Inherited { fd, dev, ino });
            }
        }
    }
    let _ = INHERITED.set(inherited);
}

/// Closes the descriptors the launching process passed down (a shell's
/// pipes, say), except `keep`. Only those: descriptors the program opened
/// itself before `run()` (a database connection, a file it keeps) belong to
/// objects that still use them. A descriptor number that was inherited, then
/// closed and reused by the program, is recognised by its device and inode
/// and kept.
pub(crate) fn close_inherited(keep: &[std::os::fd::RawFd]) {
    for inherited in INHERITED.get().map(Vec::as_slice).unwrap_or(&[]) {
        if keep.contains(&inherited.fd) {
            continue;
        }
        if identity(inherited.fd) == Some((inherited.dev, inherited.ino)) {
            // SAFETY: a descriptor the program inherited and never replaced.
            unsafe { libc::close(inherited.fd) };
        }
    }
}

fn detach_stdio() -> Result<()> {
    nix::unistd::chdir("/").map_err(|e| Error::os("chdir /", e))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o027));
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, Mode::empty())
        .map_err(|e| Error::os("open /dev/null", e))?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which we own.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(Error::os("dup2 /dev/null", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn launcher_wait(name: &str, read_end: OwnedFd) -> ! {
    let mut report = Vec::new();
    let _ = std::fs::File::from(read_end).read_to_end(&mut report);
    let code = match report.as_slice() {
        [code, a, b, c, d, message @ ..] => {
            let pid = u32::from_le_bytes([*a, *b, *c, *d]);
            if *code == 0 {
                let started = format!("{name}: running in the background with pid {pid}\n");
                // It runs either way; its pid is in the pid file too.
                let _ = crate::text::to_stdout(&started);
            } else {
                eprintln!("{name}: error: {}", String::from_utf8_lossy(message));
            }
            *code
        }
        _ => {
            eprintln!("{name}: error: the daemon exited during start-up (see its log)");
            ExitCode::Software.code()
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code.into())
}
