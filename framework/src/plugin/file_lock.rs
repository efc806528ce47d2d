//! FileLock: one running instance per lock file (a pid file held with
//! `flock`).
//!
//! The lock, not the file's existence, decides: `flock` is released by the
//! kernel when its holder dies (kill -9, crash, reboot), so a file left behind
//! by a dead daemon is taken over with a log line instead of blocking every
//! later start (the PHP original's stale lock files did). Acquiring is one
//! `flock(LOCK_EX | LOCK_NB)`: no check-then-write race.

use super::{Plugin, PluginContext};
use crate::error::{BoxError, Error};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Holds an exclusive lock on a pid file for the daemon's lifetime.
///
/// ```no_run
/// use daemonic::plugin::FileLock;
/// # struct D; impl daemonic::Daemon for D { fn execute(&mut self, _: &mut daemonic::LoopContext<'_, Self>) {} }
/// daemonic::DaemonBuilder::new(D).plugin(FileLock::new("/run/mydaemon/lock.pid"));
/// ```
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    /// `Some`: a POSIX shared-memory object (see [`ShmLock`]).
    shm_name: Option<String>,
    held: Option<File>,
}

/// The [`FileLock`] contract on POSIX shared memory: `shm_open("/<name>")`
/// created exclusively with mode 0600 (private to the daemon's user), locked
/// with `flock`, recording the holder's pid; `shm_unlink`ed on clean exit if
/// it is still the object held. A lock whose holder died is taken over; an
/// object owned by another user is refused (exit code 77).
///
/// ```no_run
/// use daemonic::plugin::ShmLock;
/// # struct D; impl daemonic::Daemon for D { fn execute(&mut self, _: &mut daemonic::LoopContext<'_, Self>) {} }
/// daemonic::DaemonBuilder::new(D).plugin(ShmLock::new("mydaemon").unwrap());
/// ```
#[derive(Debug)]
pub struct ShmLock(FileLock);

impl ShmLock {
    /// A lock named `daemonic.<name>` (letters, digits, `-`, `_`, `.`).
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(Error::Config(format!(
                "shared-memory lock name `{name}` must be 1-200 letters, digits, `-`, `_` or `.`"
            )));
        }
        let object = format!("daemonic.{name}");
        Ok(Self(FileLock {
            // Where Linux exposes POSIX shared memory, for messages and the
            // same-object check.
            path: PathBuf::from("/dev/shm").join(&object),
            shm_name: Some(format!("/{object}")),
            held: None,
        }))
    }

    /// The shared-memory object's path (`/dev/shm/daemonic.<name>`).
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

impl Plugin for ShmLock {
    fn name(&self) -> &str {
        "shm-lock"
    }

    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        self.0.setup(ctx)
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        self.0.tick_interval()
    }

    fn tick(&mut self, ctx: &PluginContext) {
        self.0.tick(ctx)
    }

    fn stats(&self) -> Vec<(String, String)> {
        self.0.stats()
    }

    fn teardown(&mut self, ctx: &PluginContext) {
        self.0.teardown(ctx)
    }
}

impl FileLock {
    /// A lock on `path` (created `0644`, never through a symlink or hard
    /// link; a file owned by another user is refused with exit code 77). A
    /// relative path is resolved now, against the current directory:
    /// `--daemon` changes to `/` before the plugins are set up.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            path: std::path::absolute(&path).unwrap_or(path),
            shm_name: None,
            held: None,
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> Result<File, Error> {
        let file = match &self.shm_name {
            Some(name) => self.open_shm(name)?,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                // O_NONBLOCK: a FIFO planted at the path must not hang the
                // start (it is refused below, as any non-regular file).
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&self.path)
                .map_err(|source| Error::CantCreate {
                    what: "lock file",
                    path: self.path.clone(),
                    source,
                })?,
        };
        let what = self.what();
        let meta = file.metadata().map_err(|source| Error::CantCreate {
            what,
            path: self.path.clone(),
            source,
        })?;
        crate::daemon::pidfile::check_owned(what, &self.path, &meta)?;
        Ok(file)
    }

    fn what(&self) -> &'static str {
        match self.shm_name {
            Some(_) => "shared-memory lock",
            None => "lock file",
        }
    }

    /// Creates the object exclusively (mode 0600), or opens an existing one,
    /// which the caller checks is ours; an existing one of ours with looser
    /// permissions is made private again.
    fn open_shm(&self, name: &str) -> Result<File, Error> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let cant = |e: nix::errno::Errno| Error::CantCreate {
            what: "shared-memory lock",
            path: self.path.clone(),
            source: e.into(),
        };
        let private = Mode::from_bits_truncate(0o600);
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW;
        let fd =
            match nix::sys::mman::shm_open(name, flags | OFlag::O_CREAT | OFlag::O_EXCL, private) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::EEXIST) => {
                    nix::sys::mman::shm_open(name, flags, Mode::empty()).map_err(cant)?
                }
                Err(e) => return Err(cant(e)),
            };
        let stat = nix::sys::stat::fstat(&fd).map_err(cant)?;
        let euid = nix::unistd::geteuid().as_raw();
        if stat.st_uid == euid && stat.st_mode & 0o077 != 0 {
            nix::sys::stat::fchmod(&fd, private).map_err(cant)?;
        }
        Ok(File::from(fd))
    }

    /// Whether the path still names the file `held` (nobody replaced it).
    fn names(&self, held: &File) -> bool {
        match (held.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Takes the lock or says who holds it.
    fn acquire(&self) -> Result<(File, Option<i32>), Error> {
        // The file we locked must still be the one at the path: a holder that
        // unlinks it on exit could otherwise leave us locking a ghost.
        for _ in 0..10 {
            let mut file = self.open()?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(Error::AlreadyRunning {
                        pid: read_pid(&mut file).unwrap_or(0),
                        path: self.path.clone(),
                    });
                }
                return Err(Error::os(format!("flock {}", self.path.display()), err));
            }
            if self.names(&file) {
                let previous = read_pid(&mut file);
                return Ok((file, previous));
            }
        }
        Err(Error::os(
            format!("lock file {} keeps being replaced", self.path.display()),
            std::io::Error::from_raw_os_error(libc::EAGAIN),
        ))
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_data()
}

impl Plugin for FileLock {
    fn name(&self) -> &str {
        "file-lock"
    }

    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let (mut file, previous) = self.acquire()?;
        let me = std::process::id() as i32;
        if let Some(pid) = previous.filter(|p| *p != me && *p > 0) {
            ctx.logger.warn(format_args!(
                "lock {}: taking over from pid {pid}, which is no longer running",
                self.path.display()
            ));
        }
        write_pid(&mut file).map_err(|source| Error::CantCreate {
            what: "lock file",
            path: self.path.clone(),
            source,
        })?;
        self.held = Some(file);
        Ok(())
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(5))
    }

    /// Refresh: the file at the path must still be ours. If someone deleted
    /// or replaced it, take a lock on a fresh one (an instance started
    /// meanwhile would otherwise run alongside us).
    fn tick(&mut self, ctx: &PluginContext) {
        let Some(held) = &self.held else { return };
        if self.names(held) {
            return;
        }
        match self.acquire() {
            Ok((mut file, _)) => {
                if write_pid(&mut file).is_ok() {
                    ctx.logger.warn(format_args!(
                        "lock {} was removed or replaced; restored it",
                        self.path.display()
                    ));
                    self.held = Some(file);
                }
            }
            Err(e) => ctx
                .logger
                .error(format_args!("lock {} lost: {e}", self.path.display())),
        }
    }

    fn stats(&self) -> Vec<(String, String)> {
        vec![
            ("path".into(), self.path.display().to_string()),
            ("held".into(), self.held.is_some().to_string()),
        ]
    }

    fn teardown(&mut self, _: &PluginContext) {
        if let Some(file) = self.held.take() {
            // Only the file we hold: if the path names another one now (an
            // operator replaced it, another instance took it over after we
            // lost it), it is not ours to delete.
            if !self.names(&file) {
                return;
            }
            // Unlink while still holding the lock; a starting instance that
            // opened the old file notices the path changed and retries.
            match &self.shm_name {
                Some(name) => {
                    let _ = nix::sys::mman::shm_unlink(name.as_str());
                }
                None => {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
            drop(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ctx() -> PluginContext {
        PluginContext {
            logger: crate::log::Logger::discard(),
            events: crate::event::Events::new(),
            name: "t".into(),
        }
    }

    #[test]
    fn second_holder_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        let mut first = FileLock::new(&path);
        first.setup(&ctx()).unwrap();
        let err = FileLock::new(&path).setup(&ctx()).unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert_eq!(err.exit_code(), crate::ExitCode::AlreadyRunning);
        assert_eq!(
            err.to_string(),
            format!(
                "already running with pid {} (lock {})",
                std::process::id(),
                path.display()
            )
        );
        first.teardown(&ctx());
        assert!(!path.exists());
        FileLock::new(&path).setup(&ctx()).unwrap();
    }

    #[test]
    fn a_deleted_lock_file_is_restored_by_the_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        let mut lock = FileLock::new(&path);
        lock.setup(&ctx()).unwrap();
        std::fs::remove_file(&path).unwrap();
        lock.tick(&ctx());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // And a second instance is refused again.
        assert!(FileLock::new(&path).setup(&ctx()).is_err());
    }

    #[test]
    fn a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        std::fs::write(&path, "999999\n").unwrap();
        let mut lock = FileLock::new(&path);
        lock.setup(&ctx()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn shm_lock_has_the_same_contract() {
        let name = format!("test-{}", std::process::id());
        let mut first = ShmLock::new(&name).unwrap();
        first.setup(&ctx()).unwrap();
        let meta = std::fs::metadata(first.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "private to the daemon's user");
        let err = ShmLock::new(&name).unwrap().setup(&ctx()).unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert_eq!(err.exit_code(), crate::ExitCode::AlreadyRunning);
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        first.teardown(&ctx());
        assert!(!first.path().exists(), "removed on clean exit");
        assert!(ShmLock::new("../etc/passwd").is_err());
    }

    /// Root can plant objects owned by someone else; other users cannot.
    fn other_uid() -> Option<u32> {
        (nix::unistd::geteuid().is_root()).then_some(65534)
    }

    #[test]
    fn teardown_removes_the_file_only_if_the_path_still_names_the_held_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        let mut lock = FileLock::new(&path);
        lock.setup(&ctx()).unwrap();
        // Someone replaced the file (a second instance's lock, say).
        let theirs = dir.path().join("theirs");
        std::fs::write(&theirs, "4242\n").unwrap();
        std::fs::rename(&theirs, &path).unwrap();
        lock.teardown(&ctx());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "4242\n",
            "another file at the path is left alone"
        );
    }

    #[test]
    fn a_lock_file_owned_by_another_user_is_refused() {
        let Some(other) = other_uid() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        std::fs::write(&path, "1\n").unwrap();
        std::os::unix::fs::chown(&path, Some(other), Some(other)).unwrap();
        let err = FileLock::new(&path).setup(&ctx()).unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert_eq!(err.exit_code(), crate::ExitCode::NoPermission);
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn shm_lock_refuses_an_object_owned_by_another_user() {
        let Some(other) = other_uid() else { return };
        let name = format!("test-other-{}", std::process::id());
        let lock = ShmLock::new(&name).unwrap();
        // Planted before the daemon starts, world-writable.
        std::fs::write(lock.path(), "1\n").unwrap();
        std::fs::set_permissions(lock.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        std::os::unix::fs::chown(lock.path(), Some(other), Some(other)).unwrap();
        let mut lock = lock;
        let err = lock.setup(&ctx()).unwrap_err();
        let path = lock.path().to_path_buf();
        let _ = std::fs::remove_file(&path);
        let err = err.downcast::<Error>().unwrap();
        assert_eq!(err.exit_code(), crate::ExitCode::NoPermission);
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn shm_lock_creates_its_object_private_whatever_the_umask() {
        let name = format!("test-mode-{}", std::process::id());
        let mut lock = ShmLock::new(&name).unwrap();
        // A leftover of ours with loose permissions is tightened.
        std::fs::write(lock.path(), "").unwrap();
        std::fs::set_permissions(lock.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        lock.setup(&ctx()).unwrap();
        let mode = std::fs::metadata(lock.path()).unwrap().mode() & 0o777;
        lock.teardown(&ctx());
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("d.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = FileLock::new(&link).setup(&ctx()).unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert_eq!(err.exit_code(), crate::ExitCode::CantCreate);
        assert!(!target.exists());
    }
}
