//! A worker's progress word: how many calls it has started.
//!
//! The pool must know, when a worker dies or leaves holding several calls,
//! which of them it started (those resolve `Died`: they may have run) and
//! which it never started (those are queued again and run elsewhere). Calls
//! reach a worker in order and it starts them in order, so one number says
//! it all: the worker stores the count of calls it has started into a word
//! of shared memory (a `memfd` the pool creates and passes at spawn) before
//! it runs each one. That costs no system call per call, and the word
//! survives the worker: the pool reads it with `pread` after the death.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

const SIZE: usize = std::mem::size_of::<u64>();

/// The pool's side: creates the word and reads it.
#[derive(Debug)]
pub(crate) struct Progress(OwnedFd);

impl Progress {
    pub(crate) fn new() -> io::Result<Self> {
        let fd = crate::ipc::shm::memfd(c"daemonic-progress")?;
        nix::unistd::ftruncate(&fd, SIZE as libc::off_t)?;
        // The worker cannot shrink or grow it (its own mapping would fault,
        // and a read here past a shrunk end would see nothing).
        crate::ipc::shm::add_seals(
            fd.as_fd(),
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )?;
        Ok(Self(fd))
    }

    /// The descriptor to hand to the worker.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Calls the worker has started so far. After its death this is final.
    pub(crate) fn started(&self) -> u64 {
        let mut word = [0u8; SIZE];
        match nix::sys::uio::pread(&self.0, &mut word, 0) {
            Ok(SIZE) => u64::from_ne_bytes(word),
            _ => 0,
        }
    }
}

/// The worker's side: a mapping of the word.
pub(crate) struct ProgressWord {
    word: &'static AtomicU64,
}

impl ProgressWord {
    /// Maps the word the pool passed.
    pub(crate) fn map(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: a shared mapping of SIZE bytes of a memfd that is at least
        // that long and sealed against shrinking; it stays mapped for the
        // rest of the process (leaked on purpose).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: page-aligned, mapped for the process's lifetime, and only
        // ever accessed atomically.
        let word = unsafe { &*(ptr as *const AtomicU64) };
        Ok(Self { word })
    }

    /// Records that `count` calls have been started.
    pub(crate) fn started(&self, count: u64) {
        self.word.store(count, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_reads_what_the_worker_wrote() {
        let progress = Progress::new().unwrap();
        assert_eq!(progress.started(), 0);
        let theirs = progress.fd().try_clone_to_owned().unwrap();
        let word = ProgressWord::map(theirs).unwrap();
        word.started(3);
        assert_eq!(progress.started(), 3);
        // Sealed: nobody can shrink it under the pool's feet.
        assert!(nix::unistd::ftruncate(progress.fd(), 0).is_err());
    }
}
