//! The drains of the logging pipeline and the reopenable log file.

use super::{Level, LogConfig};
use crate::event::{Events, LogWriting};
use parking_lot::Mutex;
use std::cell::Cell;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A log file that follows its path: when the file is renamed, deleted or
/// truncated (logrotate, an operator), the next line goes to a fresh file at
/// the same path.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    reopen: AtomicBool,
    dev: AtomicU64,
    ino: AtomicU64,
    seen_size: AtomicU64,
    write_errors: AtomicU64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        // A log path that is a symlink could be planted to make the daemon
        // append to a file it should not touch.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl LogFile {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = open_append(&path)?;
        let meta = file.metadata()?;
        if meta.file_type().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            ));
        }
        Ok(Self {
            path,
            dev: AtomicU64::new(meta.dev()),
            ino: AtomicU64::new(meta.ino()),
            seen_size: AtomicU64::new(meta.size()),
            file: Mutex::new(file),
            reopen: AtomicBool::new(false),
            write_errors: AtomicU64::new(0),
        })
    }

    /// The descriptor currently open.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self.file.lock())
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reopen before the next line (SIGHUP).
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Lines that could not be written (disk full, ...).
    // Counted, but not reported anywhere yet (it was reachable only as a
    // public method before the public surface was curated).
    #[allow(dead_code)]
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Compares the path with the open file; requests a reopen if the file was
    /// moved, deleted, replaced or truncated. Returns whether it did.
    pub fn check(&self) -> bool {
        let changed = match std::fs::symlink_metadata(&self.path) {
            Err(_) => true,
            Ok(meta) => {
                let replaced = meta.dev() != self.dev.load(Ordering::Acquire)
                    || meta.ino() != self.ino.load(Ordering::Acquire);
                let truncated = meta.size() < self.seen_size.swap(meta.size(), Ordering::AcqRel);
                replaced || truncated
            }
        };
        if changed {
            self.request_reopen();
        }
        changed
    }

    fn reopen_now(&self, file: &mut File) {
        match open_append(&self.path).and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok((new, meta)) => {
                *file = new;
                self.dev.store(meta.dev(), Ordering::Release);
                self.ino.store(meta.ino(), Ordering::Release);
                self.seen_size.store(meta.size(), Ordering::Release);
            }
            Err(e) => {
                // Keep writing to the old descriptor and try again at the next check.
                eprintln!(
                    "daemonic: cannot reopen log file {}: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// Writes one whole line with a single `write(2)` (O_APPEND keeps lines of
    /// several processes from interleaving).
    pub(crate) fn write_line(&self, line: &[u8]) {
        let mut file = self.file.lock();
        if self.reopen.swap(false, Ordering::AcqRel) {
            self.reopen_now(&mut file);
        }
        if file.write_all(line).is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where finished lines go in the daemon's main process.
#[derive(Clone)]
pub(super) struct LocalSink {
    pub file: Option<Arc<LogFile>>,
    pub console: bool,
}

impl LocalSink {
    pub(super) fn write(&self, line: &[u8]) {
        if let Some(file) = &self.file {
            file.write_line(line);
        }
        if self.console {
            super::journal::write_stderr(line);
        }
    }
}

pub(super) enum Target {
    Local(LocalSink),
    /// A child process: each line goes to the daemon as datagrams, which
    /// it stamps and writes (so rotation is handled in one place, lines of
    /// many processes never interleave, and a child cannot write a line as
    /// another process). `true`: also to stderr.
    Socket(super::sender::ChildSender, bool),
}

/// Formats records into lines and writes them (runs on the async thread in
/// the main process, inline in children).
pub(super) struct LineWriter {
    prefix: String,
    target: Target,
    buf: Mutex<String>,
}

// Only the line buffer is behind the lock, and it is cleared before use.
impl std::panic::RefUnwindSafe for LineWriter {}
impl std::panic::UnwindSafe for LineWriter {}

impl LineWriter {
    pub(super) fn new(config: &LogConfig, target: Target) -> Self {
        Self {
            prefix: format!(
                "[{}/{} {}]",
                config.daemon_pid,
                std::process::id(),
                config.role
            ),
            target,
            buf: Mutex::new(String::with_capacity(256)),
        }
    }
}

struct KvWriter<'a>(&'a mut String);

impl slog::Serializer for KvWriter<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for LineWriter {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut buf = self.buf.lock();
        buf.clear();
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let level = Level::from_slog(record.level()).as_str();
        let _ = write!(buf, "{now} {} ", self.prefix);
        // What a child sends: the daemon adds its own time and stamp.
        let body = buf.len();
        let _ = write!(buf, "{level} {}", record.msg());
        {
            use slog::KV;
            let mut kv = KvWriter(&mut buf);
            let _ = record.kv().serialize(record, &mut kv);
            let _ = values.serialize(record, &mut kv);
        }
        // A message with embedded newlines would look like several lines to
        // anyone parsing the log; keep one record on one line.
        if buf.contains('\n') {
            *buf = buf.replace('\n', "\\n");
        }
        buf.push('\n');
        match &self.target {
            Target::Local(sink) => sink.write(buf.as_bytes()),
            Target::Socket(sender, console) => {
                let sent = sender.send_line(&buf[body..buf.len() - 1]);
                // The daemon is gone: stderr is the last resort.
                if sent == super::sender::Sent::Failed || *console {
                    super::journal::write_stderr(buf.as_bytes());
                }
            }
        }
        Ok(())
    }
}

thread_local! {
    static IN_LOG_EVENT: Cell<bool> = const { Cell::new(false) };
}

/// Raises a [`LogWriting`] per line in the caller's thread, before the line is
/// queued, so listeners can rewrite or suppress it.
pub(super) struct EventHook<D> {
    inner: D,
    events: Events,
}

// The bus is only read under a lock while dispatching; a panicking listener
// cannot leave it half-updated.
impl<D: std::panic::RefUnwindSafe> std::panic::RefUnwindSafe for EventHook<D> {}
impl<D: std::panic::UnwindSafe> std::panic::UnwindSafe for EventHook<D> {}

impl<D> EventHook<D> {
    pub(super) fn new(inner: D, events: Events) -> Self {
        Self { inner, events }
    }
}

impl<D: slog::Drain> slog::Drain for EventHook<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<Self::Ok, D::Err> {
        // A listener that logs must not recurse into itself.
        if IN_LOG_EVENT.with(Cell::get) || !self.events.has_listeners::<LogWriting>() {
            return self.inner.log(record, values).map(Some);
        }
        let mut event = LogWriting::new(Level::from_slog(record.level()), record.msg().to_string());
        IN_LOG_EVENT.with(|f| f.set(true));
        self.events.dispatch(&mut event);
        IN_LOG_EVENT.with(|f| f.set(false));
        if event.is_suppressed() {
            return Ok(None);
        }
        let rstatic = slog::RecordStatic {
            location: record.location(),
            tag: record.tag(),
            level: event.level.to_slog(),
        };
        self.inner
            .log(
                &slog::Record::new(&rstatic, &format_args!("{}", event.message), record.kv()),
                values,
            )
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = LogFile::open(path.clone()).unwrap();
        log.write_line(b"one\n");
        assert!(!log.check());
        std::fs::rename(&path, dir.path().join("d.log.1")).unwrap();
        assert!(log.check());
        log.write_line(b"two\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("d.log.1")).unwrap(),
            "one\n"
        );
    }

    #[test]
    fn log_file_detects_truncation_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = LogFile::open(path.clone()).unwrap();
        log.write_line(b"0123456789\n");
        assert!(!log.check());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(log.check());
        log.write_line(b"a\n");
        std::fs::remove_file(&path).unwrap();
        assert!(log.check());
        log.write_line(b"b\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
    }

    #[test]
    fn log_file_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(LogFile::open(link).is_err());
    }
}
