//! The control socket's directory: created or reused only when it is safe.
//!
//! Every directory level the framework creates or reuses for the socket is
//! opened with `O_NOFOLLOW` relative to the level above (no path is resolved
//! twice, so nothing can be swapped between a check and its use) and checked:
//! a directory (not a symlink), owned by a trusted user (the daemon's user,
//! the user it drops to, or root), not writable by group or other. The level
//! that holds the socket is made `0700`. The socket is then bound and
//! reached through `/proc/self/fd/<dir>/control.sock`, the directory already
//! checked, never through the path again.

use crate::error::{Error, Result};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Name of the socket inside its directory.
pub(crate) const SOCKET_NAME: &str = "control.sock";

/// Where a daemon's control socket lives: a base directory the framework does
/// not own (`/run`, `$XDG_RUNTIME_DIR`, the pid file's directory) and the
/// levels below it that it creates and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    base: PathBuf,
    levels: Vec<String>,
}

impl Location {
    /// Where daemon `name` (pid file `pidfile`) listens, for a process whose
    /// effective uid is `euid` and whose `$XDG_RUNTIME_DIR` is `runtime_dir`.
    /// Root never uses `/tmp` (a directory there can be planted by anyone):
    /// without a pid file or runtime directory it uses `/run/daemonic`.
    pub(crate) fn decide(
        name: &str,
        pidfile: Option<&Path>,
        runtime_dir: Option<&Path>,
        euid: u32,
    ) -> Self {
        if let Some(pidfile) = pidfile {
            let parent = pidfile
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return Self {
                base: parent.to_path_buf(),
                levels: vec![format!(".{name}.control")],
            };
        }
        let (base, first) = match runtime_dir {
            Some(dir) => (dir.to_path_buf(), "daemonic".to_string()),
            None if euid == 0 => (PathBuf::from("/run"), "daemonic".to_string()),
            None => (PathBuf::from("/tmp"), format!("daemonic-{euid}")),
        };
        Self {
            base,
            levels: vec![first, name.to_string()],
        }
    }

    /// [`decide`](Self::decide) for this process.
    pub(crate) fn current(name: &str, pidfile: Option<&Path>) -> Self {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
        Self::decide(
            name,
            pidfile,
            runtime.as_deref().map(Path::new),
            nix::unistd::geteuid().as_raw(),
        )
    }

    /// The socket's directory.
    pub(crate) fn dir(&self) -> PathBuf {
        let mut dir = self.base.clone();
        dir.extend(&self.levels);
        dir
    }

    /// The socket's path.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir().join(SOCKET_NAME)
    }
}

/// Who may own the socket's directories (and run the daemon behind it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trusted {
    uids: Vec<u32>,
}

impl Trusted {
    /// Root, this process's effective uid, and `also` (the user a daemon
    /// drops to, or the user a client was told the daemon runs as).
    pub(crate) fn new(also: Option<u32>) -> Self {
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        uids.extend(also);
        uids.sort_unstable();
        uids.dedup();
        Self { uids }
    }

    pub(crate) fn contains(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }

    fn describe(&self) -> String {
        let uids: Vec<String> = self.uids.iter().map(u32::to_string).collect();
        format!("uid {}", uids.join(" or "))
    }

    /// Why a peer running as `uid` is not the daemon expected, if it is not.
    pub(crate) fn check_server(&self, uid: u32) -> std::result::Result<(), String> {
        if self.contains(uid) {
            return Ok(());
        }
        Err(format!(
            "the process answering runs as uid {uid}, not as {} (if the daemon drops \
             privileges, give the same --user it was started with)",
            self.describe()
        ))
    }
}

/// Why a directory is unsafe, if it is (a pure decision on its `lstat`).
pub(crate) fn unsafe_because(stat: &FileStat, trusted: &Trusted) -> Option<String> {
    let kind = stat.st_mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Some("is a symlink".into());
    }
    if kind != libc::S_IFDIR {
        return Some("is not a directory".into());
    }
    if !trusted.contains(stat.st_uid) {
        return Some(format!(
            "is owned by uid {}, not by {}",
            stat.st_uid,
            trusted.describe()
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Some(format!(
            "is writable by group or other (mode {:o})",
            stat.st_mode & 0o7777
        ));
    }
    None
}

/// An open, checked directory that holds (or will hold) the socket.
#[derive(Debug)]
pub(crate) struct ControlDir {
    fd: OwnedFd,
    path: PathBuf,
    /// The level above and the directory's name in it (to remove it on
    /// exit through a descriptor: paths may mean something else after
    /// `--chroot`).
    parent: Option<(OwnedFd, String)>,
}

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::Insecure {
        what: "control directory",
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn os(path: &Path, e: nix::errno::Errno) -> Error {
    Error::CantCreate {
        what: "control directory",
        path: path.to_path_buf(),
        source: e.into(),
    }
}

impl ControlDir {
    /// Opens every level of `location`, creating missing ones (mode `0700`)
    /// when `create`, and checks each one; the socket's own level is made
    /// `0700` if it had wider permissions.
    pub(crate) fn open(location: &Location, trusted: &Trusted, create: bool) -> Result<Self> {
        let base = &location.base;
        let mut fd = nix::fcntl::open(
            base,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| os(base, e))?;
        let mut path = base.clone();
        let mut parent = None;
        for (i, level) in location.levels.iter().enumerate() {
            if !is_plain_name(level) {
                return Err(refuse(&path.join(level), "is not a plain file name"));
            }
            path.push(level);
            if create {
                match nix::sys::stat::mkdirat(&fd, level.as_str(), Mode::from_bits_truncate(0o700))
                {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(os(&path, e)),
                }
            }
            let stat = nix::sys::stat::fstatat(&fd, level.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| os(&path, e))?;
            if let Some(reason) = unsafe_because(&stat, trusted) {
                return Err(refuse(&path, reason));
            }
            // O_NOFOLLOW: a symlink swapped in after the check fails here.
            let next = nix::fcntl::openat(
                &fd,
                level.as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| os(&path, e))?;
            let opened = nix::sys::stat::fstat(&next).map_err(|e| os(&path, e))?;
            if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
                return Err(refuse(&path, "was replaced while it was checked"));
            }
            let last = i + 1 == location.levels.len();
            if last && create && opened.st_mode & 0o077 != 0 {
                // Ours and not writable by others (checked above): tighten it
                // through the descriptor, never by path.
                chmod_fd(&next, 0o700).map_err(|e| os(&path, e))?;
            }
            parent = Some((std::mem::replace(&mut fd, next), level.clone()));
        }
        Ok(Self { fd, path, parent })
    }

    /// The directory's path (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A path to `name` inside the checked directory that does not resolve
    /// the directory's own path again (`/proc/self/fd/<fd>/<name>`; short
    /// enough for a socket address whatever the directory's path).
    pub(crate) fn entry(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd()))
    }

    /// Removes `name` from the directory.
    pub(crate) fn remove(&self, name: &str) -> nix::Result<()> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
    }

    /// Gives the directory and `name` in it to `uid`:`gid` (before a
    /// privilege drop, so the dropped daemon can still remove its socket).
    pub(crate) fn hand_over(&self, name: &str, uid: u32, gid: u32) -> nix::Result<()> {
        let (uid, gid) = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        nix::unistd::fchownat(&self.fd, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        nix::unistd::fchownat(&self.fd, "", uid, gid, AtFlags::AT_EMPTY_PATH)
    }

    /// Removes the directory itself (when empty) from its parent.
    pub(crate) fn remove_self(&self) {
        if let Some((parent, name)) = &self.parent {
            let _ =
                nix::unistd::unlinkat(parent, name.as_str(), nix::unistd::UnlinkatFlags::RemoveDir);
        }
    }
}

fn is_plain_name(level: &str) -> bool {
    !level.is_empty() && level != "." && level != ".." && !level.contains(['/', '\0'])
}

/// `fchmod` on an `O_PATH` descriptor is refused; go through its
/// `/proc/self/fd` entry, which names exactly the opened inode.
fn chmod_fd(fd: &impl AsFd, mode: u32) -> nix::Result<()> {
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()).as_str(),
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn loc(base: &Path, levels: &[&str]) -> Location {
        Location {
            base: base.to_path_buf(),
            levels: levels.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn root_never_falls_back_to_tmp() {
        let root = Location::decide("d", None, None, 0);
        assert_eq!(root.socket(), PathBuf::from("/run/daemonic/d/control.sock"));
        let user = Location::decide("d", None, None, 1000);
        assert_eq!(
            user.socket(),
            PathBuf::from("/tmp/daemonic-1000/d/control.sock")
        );
        let runtime = Location::decide("d", None, Some(Path::new("/run/user/0")), 0);
        assert_eq!(
            runtime.socket(),
            PathBuf::from("/run/user/0/daemonic/d/control.sock")
        );
        let pid = Location::decide("d", Some(Path::new("/run/d/d.pid")), None, 0);
        assert_eq!(
            pid.socket(),
            PathBuf::from("/run/d/.d.control/control.sock")
        );
    }

    #[test]
    fn created_levels_are_private_and_reached_through_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let l = loc(dir.path(), &["a", "b"]);
        let opened = ControlDir::open(&l, &Trusted::new(None), true).unwrap();
        for p in [dir.path().join("a"), dir.path().join("a/b")] {
            assert_eq!(std::fs::metadata(p).unwrap().mode() & 0o777, 0o700);
        }
        std::fs::write(opened.entry("x"), "y").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/b/x")).unwrap(),
            "y"
        );
    }

    #[test]
    fn a_wide_socket_directory_of_ours_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("c");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ControlDir::open(&loc(dir.path(), &["c"]), &Trusted::new(None), true).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn symlinks_and_writable_levels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("link")).unwrap();
        let err = ControlDir::open(&loc(dir.path(), &["link", "x"]), &Trusted::new(None), true)
            .unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(err.exit_code(), crate::ExitCode::NoPermission);
        assert!(!elsewhere.join("x").exists());

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ControlDir::open(&loc(dir.path(), &["open", "x"]), &Trusted::new(None), true)
            .unwrap_err();
        assert!(
            err.to_string().contains("writable by group or other"),
            "{err}"
        );
    }

    #[test]
    fn a_level_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("planted");
        std::fs::create_dir(&planted).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let other = if me == 0 { 65534 } else { me + 1 };
        if std::os::unix::fs::chown(&planted, Some(other), None).is_err() {
            // Only root can give a directory away; judge the stat instead.
            let mut stat = nix::sys::stat::lstat(&planted).unwrap();
            stat.st_uid = other;
            assert!(unsafe_because(&stat, &Trusted::new(None))
                .unwrap()
                .contains("owned by uid"));
            return;
        }
        let err = ControlDir::open(
            &loc(dir.path(), &["planted", "x"]),
            &Trusted::new(None),
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("is owned by uid {other}, not by uid 0")),
            "{err}"
        );
        assert!(!planted.join("x").exists(), "nothing created inside");
        // Trusted when it is the user the daemon drops to.
        ControlDir::open(
            &loc(dir.path(), &["planted"]),
            &Trusted::new(Some(other)),
            false,
        )
        .unwrap();
    }

    #[test]
    fn the_client_names_a_server_of_an_unexpected_user() {
        let trusted = Trusted::new(None);
        assert!(trusted.check_server(0).is_ok());
        let err = trusted.check_server(54321).unwrap_err();
        assert!(err.contains("uid 54321") && err.contains("--user"), "{err}");
        assert!(Trusted::new(Some(54321)).check_server(54321).is_ok());
    }
}
