//! The `--pidfile`: written after daemonizing, never through a symlink,
//! removed on exit only if it still names this process.

use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes this process's pid to `path`.
pub(crate) fn write(path: &Path) -> Result<()> {
    let cant = |source| Error::CantCreate {
        what: "pid file",
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(cant)?;
    writeln!(file, "{}", std::process::id()).map_err(cant)?;
    Ok(())
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
        write(&path).unwrap();
        assert_eq!(read(&path), Some(std::process::id() as i32));
        remove_if_ours(&path);
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
        let err = write(&link).unwrap_err();
        assert!(err.to_string().contains("pid file"), "{err}");
        assert!(!target.exists());
    }
}
