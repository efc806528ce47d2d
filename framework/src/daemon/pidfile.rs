//! The `--pidfile`: opened after daemonizing (an unusable path fails before
//! anything starts), written only once the plugins hold their locks (an
//! instance refused by a lock never touches the running one's pid file),
//! never through a symlink, removed on exit only if it still names this
//! process.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A pid file opened but not written yet (see the module docs). Dropped
/// unwritten, it removes the file again if this process created it.
#[derive(Debug)]
pub(crate) struct PendingPidFile {
    file: Option<File>,
    path: PathBuf,
    created: bool,
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
            .write(true)
            .create_new(create_new)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        options
    };
    let (file, created) = match options(true).open(path) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            (options(false).open(path).map_err(cant)?, false)
        }
        Err(e) => return Err(cant(e)),
    };
    Ok(PendingPidFile {
        file: Some(file),
        path: path.to_path_buf(),
        created,
    })
}

impl PendingPidFile {
    /// Replaces the file's content with this process's pid.
    pub(crate) fn write(mut self) -> Result<()> {
        let cant = |source| Error::CantCreate {
            what: "pid file",
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.take().expect("written once");
        file.set_len(0).map_err(cant)?;
        writeln!(file, "{}", std::process::id()).map_err(cant)?;
        Ok(())
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

/// The pid recorded in `path`, if it holds one.
pub fn read(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes `path` if it still holds this process's pid (a restarted or
/// second instance may have taken it over).
pub(crate) fn remove_if_ours(path: &Path) {
    if read(path) == Some(std::process::id() as i32) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        open(&path).unwrap().write().unwrap();
        assert_eq!(read(&path), Some(std::process::id() as i32));
        remove_if_ours(&path);
        assert!(!path.exists());
    }

    #[test]
    fn opening_does_not_touch_an_existing_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "1\n").unwrap();
        drop(open(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        open(&path).unwrap().write().unwrap();
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
    fn foreign_pid_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "1\n").unwrap();
        remove_if_ours(&path);
        assert!(path.exists());
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
