//! What keeps the fork server's forks cheap. After a fork, every page the
//! fork server shares with a live child is write-protected: the next write
//! to it, by either process, is a page fault that copies the page (~5–10 µs
//! in this VM, and a page the child's exit must free). So the fork server
//! writes as few pages as it can between two forks, and none of them for
//! bookkeeping a child does not need (BENCHMARKS.md "Process layer").

use std::io;

/// glibc's tunables for the fork server: the caller's own, plus no `rseq`
/// registration. With `rseq`, the kernel writes the thread's CPU number into
/// its TLS page on the way back to user space after every fork, in the fork
/// server and in each child: a copy-on-write fault each (~10 µs per spawn
/// in this VM, before any user code). Nothing in a child needs `rseq`
/// (glibc's `sched_getcpu` falls back to the vDSO).
const TUNABLES: &str = "GLIBC_TUNABLES";
/// The caller's own `GLIBC_TUNABLES` (`1<value>`) or its absence (`0`),
/// restored before anything runs in the fork server, so children (and the
/// programs they run) see the daemon's environment.
const SAVED_TUNABLES: &str = "DAEMONIC_FORK_SERVER_TUNABLES";

/// The environment entries [`TUNABLES`] and [`SAVED_TUNABLES`] for the fork
/// server's `exec`.
pub(crate) fn tunables_for_fork_server() -> [(&'static str, std::ffi::OsString); 2] {
    use std::os::unix::ffi::OsStrExt;
    let original = std::env::var_os(TUNABLES);
    let mut tunables = std::ffi::OsString::new();
    let mut saved = std::ffi::OsString::from("0");
    if let Some(own) = original.filter(|t| !t.is_empty()) {
        tunables.push(&own);
        tunables.push(":");
        saved = std::ffi::OsString::from("1");
        saved.push(std::ffi::OsStr::from_bytes(own.as_bytes()));
    }
    tunables.push("glibc.pthread.rseq=0");
    [(TUNABLES, tunables), (SAVED_TUNABLES, saved)]
}

/// Puts the caller's `GLIBC_TUNABLES` back (see [`tunables_for_fork_server`]).
pub(super) fn restore_tunables() {
    use std::os::unix::ffi::OsStrExt;
    let Some(saved) = std::env::var_os(SAVED_TUNABLES) else {
        return;
    };
    // SAFETY: constructors run before main, with exactly one thread.
    unsafe {
        std::env::remove_var(SAVED_TUNABLES);
        match saved.as_bytes().split_first() {
            Some((b'1', own)) => std::env::set_var(TUNABLES, std::ffi::OsStr::from_bytes(own)),
            _ => std::env::remove_var(TUNABLES),
        }
    }
}

/// `/proc/self/task`, kept open: its link count is 2 + the number of
/// threads, so one `fstat` per spawn checks that this process is still
/// single-threaded. (Reading `/proc/self/stat` instead made the kernel
/// format the whole line: ~10 µs per spawn in this VM.)
pub(crate) struct Threads(pub(super) std::fs::File);

impl Threads {
    pub(crate) fn open() -> io::Result<Self> {
        std::fs::File::open("/proc/self/task").map(Self)
    }

    /// Threads of this process.
    pub(crate) fn count(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.0.metadata()?.nlink().saturating_sub(2))
    }
}

/// One page of the fork server's own that its children do not inherit
/// (`MADV_DONTFORK`). After a fork, every page the fork server shares with a
/// live child is write-protected, and its next write there copies the page
/// (a fault, ~5–10 µs in this VM): the kernel's write of the new pidfd hit
/// the stack right after each `clone3`, and the encoded reply a heap page.
/// Here they hit a page nobody shares.
pub(crate) struct Scratch(*mut libc::c_void);

impl Scratch {
    const SIZE: usize = 4096;

    pub(super) fn map() -> Option<Self> {
        // SAFETY: a fresh anonymous private mapping; madvise on it alone.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                return None;
            }
            // Without it the page is merely shared like any other: slower,
            // still correct.
            libc::madvise(page, Self::SIZE, libc::MADV_DONTFORK);
            Some(Self(page))
        }
    }

    /// Where `clone3` writes the child's pidfd. Not to be read in the child,
    /// which does not have this page.
    pub(super) fn pidfd(&self) -> *mut libc::c_int {
        self.0.cast()
    }

    /// Room for the encoded reply to the host (a pid, or an error message):
    /// the rest of the page.
    pub(super) fn reply(&mut self) -> &mut [u8] {
        // SAFETY: the page is mapped for the process's lifetime; bytes 64..
        // are reached only through this exclusive borrow.
        unsafe { std::slice::from_raw_parts_mut(self.0.cast::<u8>().add(64), Self::SIZE - 64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_directory_counts_this_processs_threads() {
        let threads = Threads::open().unwrap();
        let listed = || std::fs::read_dir("/proc/self/task").unwrap().count() as u64;
        let before = threads.count().unwrap();
        assert_eq!(before, listed());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let extra = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert_eq!(threads.count().unwrap(), before + 1);
        drop(tx);
        extra.join().unwrap();
    }

    #[test]
    fn tunables_keep_the_callers_own_and_turn_rseq_off() {
        // This test process's own GLIBC_TUNABLES decides which shape we see.
        let [(name, tunables), (saved_name, saved)] = tunables_for_fork_server();
        assert_eq!((name, saved_name), (TUNABLES, SAVED_TUNABLES));
        let tunables = tunables.to_string_lossy().into_owned();
        assert!(tunables.ends_with("glibc.pthread.rseq=0"), "{tunables}");
        match std::env::var(TUNABLES).ok().filter(|t| !t.is_empty()) {
            Some(own) => {
                assert_eq!(tunables, format!("{own}:glibc.pthread.rseq=0"));
                assert_eq!(saved.to_string_lossy(), format!("1{own}"));
            }
            None => {
                assert_eq!(tunables, "glibc.pthread.rseq=0");
                assert_eq!(saved, "0");
            }
        }
    }
}
