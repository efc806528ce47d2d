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

/// The program's own code and read-only data (its `r-xp` and `r--p`
/// mappings), located once by the fork server. A fork copies no page-table
/// entry of a file mapping nobody wrote to, so a child faults in every
/// code page it runs; a warm spare maps them all at once with
/// `MADV_POPULATE_READ` while it waits, so the task it becomes does not
/// (see `spare.rs`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Code {
    ranges: [(usize, usize); Code::MAX],
    len: usize,
}

impl Code {
    const MAX: usize = 8;

    /// The mappings of `/proc/self/exe` in `/proc/self/maps`.
    pub(crate) fn locate() -> Self {
        let mut code = Self::default();
        let (Ok(exe), Ok(maps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/maps"),
        ) else {
            return code;
        };
        let Some(exe) = exe.to_str() else { return code };
        for line in maps.lines() {
            if let Some(range) = code_range(line, exe) {
                if code.len < Self::MAX {
                    code.ranges[code.len] = range;
                    code.len += 1;
                }
            }
        }
        code
    }

    /// Maps every page of the ranges into this process's page table
    /// (Linux 5.14; on older kernels, or if anything fails, pages are
    /// faulted in as they are used, as before).
    pub(crate) fn populate(&self) {
        const MADV_POPULATE_READ: libc::c_int = 22;
        for &(start, end) in &self.ranges[..self.len] {
            // SAFETY: populating (reading) a mapping of this process; the
            // advice changes no contents. The call is made through
            // `libc::syscall`, whose page a forked child has mapped.
            unsafe {
                libc::syscall(libc::SYS_madvise, start, end - start, MADV_POPULATE_READ);
            }
        }
    }
}

/// `(start, end)` of a line of `/proc/self/maps` if it maps `exe` read-only
/// or executable (not writable).
fn code_range(line: &str, exe: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let path = fields.nth(3)?;
    if path != exe || !perms.starts_with('r') || perms.as_bytes().get(1) != Some(&b'-') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ranges_are_the_programs_unwritable_mappings() {
        let exe = "/usr/bin/daemon";
        let line = |l: &str| code_range(l, exe);
        assert_eq!(
            line("55cf9c1db000-55cf9c1e0000 r-xp 00002000 fe:00 247030   /usr/bin/daemon"),
            Some((0x55cf9c1db000, 0x55cf9c1e0000))
        );
        assert!(line("55cf9c1d9000-55cf9c1db000 r--p 00000000 fe:00 247030 /usr/bin/daemon").is_some());
        assert_eq!(line("55cf9c1e4000-55cf9c1e5000 rw-p 0000a000 fe:00 247030 /usr/bin/daemon"), None);
        assert_eq!(line("7f856a04e000-7f856a1a4000 r-xp 00026000 fe:00 326279 /usr/lib/libc.so.6"), None);
        assert_eq!(line("55cfb1dce000-55cfb1def000 rw-p 00000000 00:00 0 [heap]"), None);
        let here = Code::locate();
        assert!(here.len > 0, "this test binary has code");
        here.populate();
    }

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
