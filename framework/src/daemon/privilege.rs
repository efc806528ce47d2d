//! Least privilege for the daemon process: `--user`, `--group`, `--umask`,
//! `--chdir`, `--chroot`, and core dumps off for daemons started as root
//! (the PEP 3143 `DaemonContext` set: uid, gid, initgroups, umask,
//! working_directory, chroot_directory, prevent_core).
//!
//! The drop happens once, in the supervisor, after everything that needs
//! root is in place: plugins (locks), the pid file, the log file and the
//! control socket. Then, in this order: `chroot` and `chdir`, supplementary
//! groups (`initgroups` for the user), gid, uid, all three ids of each (real,
//! effective, saved), so nothing can switch back. It is then checked that
//! regaining root fails; if it does not, the daemon stops.
//!
//! Worker and task processes are forked by the fork server, which starts
//! lazily on the first spawn: after the drop, so it and every child run as
//! the dropped user too. (A fork server started earlier, by a spawn before
//! the daemon started, is stopped at the drop so that none keeps root.)
//!
//! glibc applies `setresuid`, `setresgid` and `setgroups` to every thread of
//! the process, so threads started before the drop (the log writer, actix
//! arbiters) lose root with the rest.

use crate::error::{Error, Result};
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::path::PathBuf;

/// The process settings a daemon was given (builder methods and flags).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub chdir: Option<PathBuf>,
    pub chroot: Option<PathBuf>,
    /// `None`: off when started as root, else left as inherited.
    pub core_dumps: Option<bool>,
}

/// The user and group to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub uid: u32,
    pub gid: u32,
    /// The account name, for `initgroups` (`None`: no supplementary groups).
    name: Option<CString>,
    /// Shown in the log line.
    label: String,
}

/// What to do at the drop point.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub target: Option<Target>,
    chroot: Option<PathBuf>,
    chdir: Option<PathBuf>,
    /// The daemon created its log file at start: it is handed to the user,
    /// who can then reopen it (SIGHUP, a truncating rotation). A log file
    /// that existed before is never given away.
    pub created_log: bool,
}

fn config(message: String) -> Error {
    Error::Config(message)
}

fn lookup_user(spec: &str) -> Result<(u32, Option<u32>, Option<String>)> {
    let found = match spec.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(spec),
    }
    .map_err(|e| config(format!("--user {spec}: cannot look it up: {e}")))?;
    match (found, spec.parse::<u32>()) {
        (Some(user), _) => Ok((user.uid.as_raw(), Some(user.gid.as_raw()), Some(user.name))),
        // A numeric uid without an account: allowed, with an explicit group.
        (None, Ok(uid)) => Ok((uid, None, None)),
        (None, Err(_)) => Err(config(format!("--user {spec}: no such user"))),
    }
}

fn lookup_group(spec: &str) -> Result<u32> {
    let found = match spec.parse::<u32>() {
        Ok(gid) => nix::unistd::Group::from_gid(Gid::from_raw(gid)),
        Err(_) => nix::unistd::Group::from_name(spec),
    }
    .map_err(|e| config(format!("--group {spec}: cannot look it up: {e}")))?;
    match (found, spec.parse::<u32>()) {
        (Some(group), _) => Ok(group.gid.as_raw()),
        (None, Ok(gid)) => Ok(gid),
        (None, Err(_)) => Err(config(format!("--group {spec}: no such group"))),
    }
}

/// The ids to become, from what `--user` and `--group` resolved to and the
/// current ids (a pure decision).
fn decide_target(
    user: Option<(u32, Option<u32>, Option<String>)>,
    group: Option<u32>,
    current: (u32, u32),
) -> Result<Option<Target>> {
    let (uid, gid, name) = match (user, group) {
        (None, None) => return Ok(None),
        (Some((uid, primary, name)), group) => {
            let gid = group.or(primary).ok_or_else(|| {
                config(format!(
                    "--user {uid} has no account to take a group from: give --group too"
                ))
            })?;
            (uid, gid, name)
        }
        // Only the group changes: keep the uid, drop supplementary groups.
        (None, Some(gid)) => (current.0, gid, None),
    };
    let label = match &name {
        Some(n) => format!("user {n} (uid {uid}, gid {gid})"),
        None => format!("uid {uid}, gid {gid}"),
    };
    let name = name
        .map(|n| {
            CString::new(n).map_err(|_| config("--user: the account name has a NUL byte".into()))
        })
        .transpose()?;
    Ok(Some(Target {
        uid,
        gid,
        name,
        label,
    }))
}

impl Settings {
    /// Whether any setting asks for a change at the drop point.
    fn drops(&self) -> bool {
        self.user.is_some() || self.group.is_some() || self.chdir.is_some() || self.chroot.is_some()
    }

    /// Looks the user and group up and checks that this process may become
    /// them (before anything starts: a typo fails at once, exit code 78).
    pub(crate) fn plan(&self) -> Result<Option<Plan>> {
        if !self.drops() {
            return Ok(None);
        }
        let user = self.user.as_deref().map(lookup_user).transpose()?;
        let group = self.group.as_deref().map(lookup_group).transpose()?;
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        let target = decide_target(user, group, (euid, egid))?;
        let changes_ids = target
            .as_ref()
            .is_some_and(|t| (t.uid, t.gid) != (euid, egid));
        if euid != 0 && (changes_ids || self.chroot.is_some()) {
            let what = if changes_ids {
                "--user/--group"
            } else {
                "--chroot"
            };
            return Err(Error::Privileges(format!(
                "{what} needs a daemon started as root; this one runs as uid {euid}"
            )));
        }
        for (flag, dir) in [("--chroot", &self.chroot), ("--chdir", &self.chdir)] {
            if let Some(dir) = dir {
                if !dir.is_absolute() {
                    return Err(config(format!(
                        "{flag} {} must be an absolute path",
                        dir.display()
                    )));
                }
            }
        }
        if let Some(root) = &self.chroot {
            if !root.is_dir() {
                return Err(config(format!(
                    "--chroot {}: not a directory",
                    root.display()
                )));
            }
        }
        Ok(Some(Plan {
            target,
            chroot: self.chroot.clone(),
            chdir: self.chdir.clone(),
            created_log: false,
        }))
    }

    /// The uid `--user` names (for a `status` client: the uid the daemon
    /// answering may run as).
    pub(crate) fn user_uid(&self) -> Result<Option<u32>> {
        Ok(self
            .user
            .as_deref()
            .map(lookup_user)
            .transpose()?
            .map(|(uid, _, _)| uid))
    }

    /// The umask, when one was given.
    pub(crate) fn apply_umask(&self) {
        if let Some(mask) = self.umask {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask & 0o777));
        }
    }

    /// Core dumps off (soft and hard limit 0, inherited by the fork server
    /// and every child) for a daemon started as root, unless allowed: a
    /// core file of a root daemon holds whatever secrets it read.
    pub(crate) fn apply_core_dumps(&self) -> Result<()> {
        let started_as_root = nix::unistd::getuid().is_root() || nix::unistd::geteuid().is_root();
        if !self.core_dumps.unwrap_or(!started_as_root) {
            use nix::sys::resource::{setrlimit, Resource};
            setrlimit(Resource::RLIMIT_CORE, 0, 0)
                .map_err(|e| Error::os("disable core dumps (RLIMIT_CORE)", e))?;
        }
        Ok(())
    }
}

fn fail(what: &str, e: nix::errno::Errno) -> Error {
    Error::Privileges(format!("{what}: {e}"))
}

/// Applies `plan` to this process (see the module docs). Returns the line to
/// log.
pub(crate) fn drop_privileges(plan: &Plan) -> Result<String> {
    let mut done = Vec::new();
    if let Some(root) = &plan.chroot {
        nix::unistd::chroot(root).map_err(|e| fail(&format!("chroot {}", root.display()), e))?;
        nix::unistd::chdir("/").map_err(|e| fail("chdir / in the new root", e))?;
        done.push(format!("root directory {}", root.display()));
    }
    if let Some(dir) = &plan.chdir {
        nix::unistd::chdir(dir).map_err(|e| fail(&format!("chdir {}", dir.display()), e))?;
        done.push(format!("working directory {}", dir.display()));
    }
    if let Some(target) = &plan.target {
        let already = nix::unistd::geteuid().as_raw() == target.uid
            && nix::unistd::getegid().as_raw() == target.gid
            && target.uid != 0;
        if !already {
            become_target(target)?;
        }
        verify(target)?;
        done.push(target.label.clone());
    }
    Ok(format!("running as {}", done.join(", ")))
}

fn become_target(target: &Target) -> Result<()> {
    let gid = Gid::from_raw(target.gid);
    let uid = Uid::from_raw(target.uid);
    match &target.name {
        Some(name) => nix::unistd::initgroups(name, gid).map_err(|e| fail("initgroups", e))?,
        None => nix::unistd::setgroups(&[gid]).map_err(|e| fail("setgroups", e))?,
    }
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    Ok(())
}

/// Every id is the target's, and root cannot be regained.
fn verify(target: &Target) -> Result<()> {
    let uids = nix::unistd::getresuid().map_err(|e| fail("getresuid", e))?;
    let gids = nix::unistd::getresgid().map_err(|e| fail("getresgid", e))?;
    let all_uid = [uids.real, uids.effective, uids.saved]
        .iter()
        .all(|u| u.as_raw() == target.uid);
    let all_gid = [gids.real, gids.effective, gids.saved]
        .iter()
        .all(|g| g.as_raw() == target.gid);
    if !all_uid || !all_gid {
        return Err(Error::Privileges(format!(
            "ids after the drop are uid {uids:?}, gid {gids:?}, not {}",
            target.label
        )));
    }
    if target.uid != 0 && regain_root() {
        return Err(Error::Privileges(
            "root could be regained after the drop".into(),
        ));
    }
    Ok(())
}

/// The drop point in a running daemon: no fork server started before it
/// may keep root, then [`drop_privileges`], then a log line and warnings
/// about what the dropped daemon cannot do with its log and pid files.
pub(crate) fn at_drop_point(
    plan: &Plan,
    logger: &crate::log::Logger,
    log_file: Option<&crate::log::LogFile>,
    pid_file: Option<&std::path::Path>,
) -> Result<()> {
    if let (Some(target), Some(log), true) = (&plan.target, log_file, plan.created_log) {
        // SAFETY: fchown on the log file's open descriptor (never by path).
        let rc = unsafe { libc::fchown(log.raw_fd(), target.uid, target.gid) };
        if rc != 0 {
            return Err(Error::os(
                format!("chown {}", log.path().display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    if plan.target.is_some() && crate::process::fork_server().pid().is_some() {
        // Started by a spawn before the daemon (an embedding application):
        // its children would keep root. The next spawn starts a new one.
        crate::process::fork_server().shutdown(std::time::Duration::from_millis(500));
        logger.debug(
            1,
            "stopped the fork server started before the privilege drop",
        );
    }
    let done = drop_privileges(plan)?;
    logger.log(done);
    if let Some(target) = &plan.target {
        for warning in file_warnings(&target.label, log_file.map(|f| f.path()), pid_file) {
            logger.warn(warning);
        }
    }
    Ok(())
}

/// What the dropped daemon will not be able to do with its log and pid
/// files, as warnings (checked as the dropped user, with `access`).
pub(crate) fn file_warnings(
    user: &str,
    log: Option<&std::path::Path>,
    pid: Option<&std::path::Path>,
) -> Vec<String> {
    use nix::unistd::{access, AccessFlags};
    let dir_of = |p: &std::path::Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    let writable_dir =
        |d: &std::path::Path| access(d, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    let mut warnings = Vec::new();
    if let Some(log) = log {
        if access(log, AccessFlags::W_OK).is_err() {
            warnings.push(format!(
                "log file {}: not writable by {user}: reopening it (SIGHUP, a truncating \
                 rotation) fails and the daemon keeps its old descriptor (chown it to the user)",
                log.display()
            ));
        }
        if !writable_dir(&dir_of(log)) {
            warnings.push(format!(
                "log file {}: {user} cannot create files in {}: a rotation that moves the file \
                 away must create the new one for the user (logrotate's `create 0640 USER GROUP`), \
                 or use `copytruncate`",
                log.display(),
                dir_of(log).display()
            ));
        }
    }
    if let Some(pid) = pid {
        if !writable_dir(&dir_of(pid)) {
            warnings.push(format!(
                "pid file {}: {user} cannot remove files in {}, so it will be emptied on exit \
                 instead of removed (use a directory the user owns, e.g. systemd's RuntimeDirectory=)",
                pid.display(),
                dir_of(pid).display()
            ));
        }
    }
    warnings
}

/// The ids a worker pool's children switch to (`WorkerPoolBuilder::user` and
/// `group`): resolved here, in the daemon, where the account database can be
/// read; applied in each child before any user code. Needs a daemon that
/// runs as root.
pub(crate) fn pool_identity(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<crate::process::Identity>> {
    let user = user.map(lookup_user).transpose()?;
    let group = group.map(lookup_group).transpose()?;
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let Some(target) = decide_target(user, group, (euid, egid))? else {
        return Ok(None);
    };
    if euid != 0 && (target.uid, target.gid) != (euid, egid) {
        return Err(Error::Privileges(format!(
            "a worker pool's own user or group needs a daemon running as root; this one runs \
             as uid {euid}"
        )));
    }
    let groups = match &target.name {
        Some(name) => nix::unistd::getgrouplist(name, Gid::from_raw(target.gid))
            .map_err(|e| fail("getgrouplist", e))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect(),
        None => vec![target.gid],
    };
    Ok(Some(crate::process::Identity {
        uid: target.uid,
        gid: target.gid,
        groups,
    }))
}

/// Tries to become root again; true if it worked (it must not).
pub(crate) fn regain_root() -> bool {
    nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::seteuid(Uid::from_raw(0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_ids_follow_user_and_group() {
        assert_eq!(decide_target(None, None, (0, 0)).unwrap(), None);
        let user = Some((65534, Some(65534), Some("nobody".to_string())));
        let t = decide_target(user.clone(), None, (0, 0)).unwrap().unwrap();
        assert_eq!((t.uid, t.gid), (65534, 65534));
        assert!(t.name.is_some(), "initgroups for a named user");
        let t = decide_target(user, Some(100), (0, 0)).unwrap().unwrap();
        assert_eq!(
            (t.uid, t.gid),
            (65534, 100),
            "--group wins over the primary group"
        );
        let t = decide_target(None, Some(100), (0, 0)).unwrap().unwrap();
        assert_eq!(
            (t.uid, t.gid, t.name),
            (0, 100, None),
            "only the group changes"
        );
        let err = decide_target(Some((4321, None, None)), None, (0, 0)).unwrap_err();
        assert!(err.to_string().contains("give --group"), "{err}");
    }

    #[test]
    fn unknown_names_are_configuration_errors() {
        let settings = Settings {
            user: Some("no-such-user-daemonic".into()),
            ..Settings::default()
        };
        let err = settings.plan().unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Config);
        assert!(err.to_string().contains("no such user"), "{err}");
        let settings = Settings {
            group: Some("no-such-group-daemonic".into()),
            ..Settings::default()
        };
        assert!(settings
            .plan()
            .unwrap_err()
            .to_string()
            .contains("no such group"));
    }

    #[test]
    fn relative_directories_are_refused() {
        let settings = Settings {
            chdir: Some("relative/dir".into()),
            ..Settings::default()
        };
        let err = settings.plan().unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }
}
