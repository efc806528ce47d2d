//! The `--pidfile`: opened after daemonizing (an unusable path fails before
//! anything starts), written only once the plugins hold their locks (an
//! instance refused by a lock never touches the running one's pid file),
//! never through a symlink or a hard link, refused when another user owns it,
//! and removed on exit only if the path still names the file this process
//! wrote and that file still holds its pid. The daemon removes it before
//! releasing its locks, so a second instance that takes over a lock never
//! has its own pid file removed by the first. (Without a lock plugin two
//! instances can run at once and share the file; nothing then makes the pid
//! file exclusive.)

use crate::error::{Error, Result};
use nix::fcntl::{AtFlags, OFlag};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A pid file opened but not written yet (see the module docs). Dropped
/// unwritten, it removes the file again if this process created it.
#[derive(Debug)]
pub(crate) struct PendingPidFile {
    file: Option<File>,
    path: PathBuf,
    created: bool,
    /// The directory holding it, opened now: the file is removed through it
    /// at exit, whatever `--chroot` did to paths meanwhile.
    dir: Option<(OwnedFd, OsString)>,
}

/// Refuses a file the daemon should not write its pid into: not a regular
/// file, owned by another user, or with another name (a hard link planted to
/// make a root daemon overwrite, then delete, a file it should not touch).
pub(crate) fn check_owned(what: &'static str, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let refuse = |reason: String| Error::Insecure {
        what,
        path: path.to_path_buf(),
        reason,
    };
    if !meta.file_type().is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(refuse(format!(
            "is owned by uid {}, not by this daemon's user (uid {euid})",
            meta.uid()
        )));
    }
    if meta.nlink() > 1 {
        return Err(refuse(format!("has {} names (a hard link)", meta.nlink())));
    }
    Ok(())
}

/// Opens (creating if needed, never truncating) the pid file at `path`.
pub(crate) fn open(path: &Path) -> Result<PendingPidFile> {
    let cant = |source| Error::CantCreate {
        what: "pid file",
        path: path.to_path_buf(),
        source,
    };
    let options = |create_new: bool| {
        let mut options = OpenOptions::new();
        options
            .read(true) // to check, at exit, that it still holds our pid
            .write(true)
            .create_new(create_new)
            .mode(0o644)
            // O_NONBLOCK: a FIFO planted at the path must not hang the start
            // (it is refused below, as any non-regular file).
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
        options
    };
    let (file, created) = match options(true).open(path) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            (options(false).open(path).map_err(cant)?, false)
        }
        Err(e) => return Err(cant(e)),
    };
    check_owned("pid file", path, &file.metadata().map_err(cant)?)?;
    let dir = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => nix::fcntl::open(
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            },
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(|fd| (fd, name.to_os_string())),
        _ => None,
    };
    Ok(PendingPidFile {
        file: Some(file),
        path: path.to_path_buf(),
        created,
        dir,
    })
}

impl PendingPidFile {
    /// Replaces the file's content with this process's pid.
    pub(crate) fn write(mut self) -> Result<PidFile> {
        let cant = |source| Error::CantCreate {
            what: "pid file",
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.take().expect("written once");
        file.set_len(0).map_err(cant)?;
        writeln!(file, "{}", std::process::id()).map_err(cant)?;
        let meta = file.metadata().map_err(cant)?;
        Ok(PidFile {
            dev: meta.dev(),
            ino: meta.ino(),
            file: Some(file),
            path: self.path.clone(),
            dir: self.dir.take(),
        })
    }
}

impl Drop for PendingPidFile {
    fn drop(&mut self) {
        // Start-up failed before `write`: remove the empty file we created
        // (only if it is still that file).
        let Some(file) = self.file.take() else {
            return;
        };
        let ours = match (file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino() && b.len() == 0,
            _ => false,
        };
        if self.created && ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A written pid file, removed by [`remove`](Self::remove) or when dropped.
#[derive(Debug)]
pub(crate) struct PidFile {
    file: Option<File>,
    path: PathBuf,
    dev: u64,
    ino: u64,
    dir: Option<(OwnedFd, OsString)>,
}

impl PidFile {
    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if the path still names the file this process wrote
    /// and it still holds this process's pid. A daemon that dropped its
    /// privileges may not be allowed to remove it (the directory's
    /// permissions decide, see the README's "Privileges" section); it then
    /// empties the file, so nothing reads a stale pid from it.
    pub(crate) fn remove(mut self) {
        self.remove_now();
    }

    fn remove_now(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        let Some((dir, name)) = &self.dir else {
            return;
        };
        let same = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|m| (m.st_dev, m.st_ino) == (self.dev, self.ino));
        let mut content = [0u8; 32];
        let n = file.read_at(&mut content, 0).unwrap_or(0);
        let mine = std::str::from_utf8(&content[..n])
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if !(same && mine) {
            return;
        }
        let removed = nix::unistd::unlinkat(
            dir,
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        if removed.is_err() {
            let _ = file.set_len(0);
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        self.remove_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let written = open(&path).unwrap().write().unwrap();
        assert_eq!(read(&path), Some(std::process::id() as i32));
        written.remove();
        assert!(!path.exists());
    }

    #[test]
    fn opening_does_not_touch_an_existing_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "1\n").unwrap();
        drop(open(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        let _written = open(&path).unwrap().write().unwrap();
        assert_eq!(read(&path), Some(std::process::id() as i32));
    }

    #[test]
    fn an_unwritten_pid_file_we_created_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let pending = open(&path).unwrap();
        assert!(path.exists(), "created when opened");
        drop(pending);
        assert!(!path.exists());
    }

    #[test]
    fn a_pid_file_another_instance_wrote_into_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let written = open(&path).unwrap().write().unwrap();
        std::fs::write(&path, "1\n").unwrap();
        written.remove();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn a_pid_file_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root can plant a file owned by someone else
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "1\n").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let err = open(&path).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::NoPermission);
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn a_hard_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep\n").unwrap();
        let path = dir.path().join("d.pid");
        std::fs::hard_link(&target, &path).unwrap();
        let err = open(&path).unwrap_err();
        assert!(err.to_string().contains("hard link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn a_replaced_pid_file_is_not_removed_even_with_our_pid_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let written = open(&path).unwrap().write().unwrap();
        // A second instance's file now stands at the path (its content
        // cannot tell: an in-place restart keeps the pid).
        let theirs = dir.path().join("theirs");
        std::fs::write(&theirs, format!("{}\n", std::process::id())).unwrap();
        std::fs::rename(&theirs, &path).unwrap();
        written.remove();
        assert!(path.exists(), "another file at the path is left alone");
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let link = dir.path().join("d.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open(&link).unwrap_err();
        assert!(err.to_string().contains("pid file"), "{err}");
        assert!(!target.exists());
    }
}
