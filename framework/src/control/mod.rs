//! The control channel: a unix socket through which the same binary's
//! `status` and `stop` subcommands talk to the running daemon.
//!
//! The socket is private: mode 0600 inside a directory of mode 0700 owned by
//! the daemon's user — next to the pid file when there is one
//! (`<dir>/.<name>.control/control.sock`), else under `$XDG_RUNTIME_DIR`
//! (`$XDG_RUNTIME_DIR/daemonic/<name>/control.sock`), else
//! `/tmp/daemonic-<uid>/<name>/control.sock`. A request is one line
//! (`status` or `stop`); the answer is one line of JSON.

pub(crate) mod client;
pub(crate) mod server;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Answers on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Status(Box<crate::Stats>),
    Stopping { pid: i32 },
    Error(String),
}

/// The control socket's path for daemon `name` with pid file `pidfile`.
pub fn socket_path(name: &str, pidfile: Option<&Path>) -> PathBuf {
    control_dir(name, pidfile).join("control.sock")
}

fn control_dir(name: &str, pidfile: Option<&Path>) -> PathBuf {
    if let Some(pidfile) = pidfile {
        let parent = pidfile
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return parent.join(format!(".{name}.control"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("daemonic").join(name),
        // SAFETY: getuid cannot fail.
        None => PathBuf::from(format!("/tmp/daemonic-{}", unsafe { libc::getuid() })).join(name),
    }
}

/// Creates the socket's directory chain's last levels with mode 0700 and
/// checks that the directory really is ours and private (a directory planted
/// in /tmp by someone else must not receive our socket).
pub(crate) fn prepare_dir(socket: &Path) -> Result<()> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let cant = |source: std::io::Error| Error::CantCreate {
        what: "control directory",
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(cant)?;
    let meta = std::fs::symlink_metadata(dir).map_err(cant)?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.file_type().is_dir() || meta.uid() != uid {
        return Err(cant(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a directory owned by this user",
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(cant)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_pid_file() {
        assert_eq!(
            socket_path("d", Some(Path::new("/run/d/d.pid"))),
            PathBuf::from("/run/d/.d.control/control.sock")
        );
    }

    #[test]
    fn the_directory_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("a/b/control.sock");
        prepare_dir(&socket).unwrap();
        let mode = std::fs::metadata(dir.path().join("a/b")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
