//! What a child gives up before any user code runs: its user and groups,
//! the right to gain privileges, and resources (a pool's least privilege).
//!
//! Decided in the daemon (names resolved there, where the account database
//! may be read), applied in the child right after its descriptors are in
//! place. A child that cannot apply all of it exits (code
//! [`EXIT_CONFINE`]) instead of running with more than it was given.

use serde::{Deserialize, Serialize};

/// Exit code of a child that could not confine itself.
pub const EXIT_CONFINE: i32 = 77;

/// The ids a child runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// User id (real, effective and saved).
    pub uid: u32,
    /// Group id (real, effective and saved).
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A resource limit (`setrlimit`), soft and hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// Address space in bytes (`RLIMIT_AS`): an allocation beyond it fails.
    AddressSpace(u64),
    /// CPU seconds (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL a second later.
    CpuSeconds(u64),
    /// Open descriptors (`RLIMIT_NOFILE`).
    OpenFiles(u64),
}

/// Everything a child gives up, in the order it is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Resource limits (applied first, while the child may still raise them).
    pub limits: Vec<Limit>,
    /// Scheduling niceness (`setpriority`), -20 to 19.
    pub nice: Option<i32>,
    /// Ids to switch to.
    pub identity: Option<Identity>,
    /// `PR_SET_NO_NEW_PRIVS`: no setuid, setgid or file capability of a
    /// program the child runs can raise its privileges.
    pub no_new_privs: bool,
}

impl Confinement {
    /// Whether there is anything to apply.
    pub fn is_empty(&self) -> bool {
        *self == Confinement::default()
    }
}

/// Applies `c` to this (single-threaded, just-forked) process. `Err` names
/// what failed.
pub(crate) fn apply(c: &Confinement) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    for limit in &c.limits {
        let (resource, value, what) = match *limit {
            Limit::AddressSpace(n) => (Resource::RLIMIT_AS, n, "address space"),
            Limit::CpuSeconds(n) => {
                // SIGXCPU at the soft limit (a clear signal in `Died`), the
                // kernel's SIGKILL a second later if it is ignored.
                setrlimit(Resource::RLIMIT_CPU, n, n.saturating_add(1))
                    .map_err(|e| format!("cannot limit CPU time to {n} s: {e}"))?;
                continue;
            }
            Limit::OpenFiles(n) => (Resource::RLIMIT_NOFILE, n, "open files"),
        };
        setrlimit(resource, value, value)
            .map_err(|e| format!("cannot limit {what} to {value}: {e}"))?;
    }
    if let Some(nice) = c.nice {
        // SAFETY: plain syscall on this process.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            return Err(format!(
                "cannot set niceness {nice}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(id) = &c.identity {
        let gid = nix::unistd::Gid::from_raw(id.gid);
        let uid = nix::unistd::Uid::from_raw(id.uid);
        let groups: Vec<nix::unistd::Gid> = id
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid {}: {e}", id.gid))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid {}: {e}", id.uid))?;
        let uids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
        if [uids.real, uids.effective, uids.saved]
            .iter()
            .any(|u| u.as_raw() != id.uid)
        {
            return Err(format!(
                "ids after the switch are {uids:?}, not uid {}",
                id.uid
            ));
        }
        if id.uid != 0 && nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
            return Err("root could be regained after the switch".into());
        }
    }
    if c.no_new_privs {
        // SAFETY: plain prctl on this process.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
