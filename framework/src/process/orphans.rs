//! Finding a child whose spawn reply was lost.
//!
//! A fork server that dies or is stopped between its `clone` and its reply
//! leaves a child that is ours (`CLONE_PARENT`) but whose pid we were never
//! told. It is blocked reading its bootstrap from the channel whose other end
//! we kept open, so it is alive and recognisable: one of its descriptors is
//! the child's end of the socket pair we created for that spawn (each end of
//! a pair has an inode of its own: we look for the child's). `/proc` tells
//! us which of our children holds it.

use std::path::Path;

/// Our children that hold a socket with one of `inodes`, as `(inode, pid)`.
pub(crate) fn children_holding(inodes: &[u64]) -> Vec<(u64, i32)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if parent_of(pid) != Some(me) {
            continue;
        }
        for inode in sockets_of(pid) {
            if inodes.contains(&inode) {
                found.push((inode, pid));
            }
        }
    }
    found
}

/// The parent pid from `/proc/<pid>/stat`.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and ')': parse after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn sockets_of(pid: i32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| socket_inode(&target))
        .collect()
}

fn socket_inode(target: &Path) -> Option<u64> {
    let s = target.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of a socket we own.
pub(crate) fn inode_of(fd: &impl std::os::fd::AsFd) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_by_the_socket_it_holds() {
        use std::os::fd::AsRawFd;
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let inode = inode_of(&theirs).unwrap();
        let fd = theirs.as_raw_fd();
        let mut child = std::process::Command::new("sleep");
        child.arg("30");
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut child, move || {
                if libc::dup2(fd, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = child.spawn().unwrap();
        drop(theirs);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = Vec::new();
        while found.is_empty() && std::time::Instant::now() < deadline {
            found = children_holding(&[inode]);
        }
        let _ = child.kill();
        let _ = child.wait();
        drop(mine);
        assert_eq!(found, vec![(inode, child.id() as i32)]);
        assert_eq!(
            parent_of(std::process::id() as i32),
            Some(std::os::unix::process::parent_id() as i32)
        );
        assert_eq!(socket_inode(Path::new("socket:[42]")), Some(42));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
    }
}
