//! Large payloads through shared memory: a call's arguments or result above
//! the pool's threshold travel in a sealed `memfd` attached to their frame
//! (see [`frame`](super::frame)), not in the frame itself.
//!
//! The sender writes the bytes into a new memfd and seals it against every
//! change (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`); the
//! receiver checks those seals and the size before it maps the descriptor
//! read-only. A peer therefore cannot hand over a file it controls (a
//! regular file, a `/dev/shm` object, a pipe: none of them carries write
//! seals), shrink it under the mapping (which would fault), or change the
//! bytes after they were checked. A memfd is anonymous: it is freed with its
//! last descriptor and mapping, so a process that dies mid-transfer leaves
//! nothing behind (unlike SysV segments, which outlive their users).

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// Name of a payload's memfd, as `/proc/<pid>/fd` and `/proc/<pid>/maps`
/// show it (`/memfd:daemonic-payload`).
pub const PAYLOAD_NAME: &str = "daemonic-payload";

/// Seals that make a memfd's size and bytes final.
const FINAL: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// Seals a receiver insists on: nobody may change the size or the bytes.
const REQUIRED: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Why a received descriptor was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// Not a regular file (a pipe, a socket, a directory).
    #[error("the payload descriptor is not a memfd (file type {0:o})")]
    NotAFile(u32),
    /// A file that cannot carry seals: not a memfd.
    #[error("the payload descriptor is not a memfd (it carries no seals)")]
    NoSeals,
    /// A memfd whose size or bytes may still change.
    #[error("the payload memfd is not sealed (seals {0:#x}, need {REQUIRED:#x})")]
    NotSealed(libc::c_int),
    /// Its size is not the one its frame announced.
    #[error("the payload memfd holds {actual} bytes, its frame announced {announced}")]
    WrongSize {
        /// What the frame said.
        announced: u64,
        /// What the memfd holds.
        actual: u64,
    },
    /// More than the receiver accepts.
    #[error("a payload of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A system call failed.
    #[error("payload memfd: {0}")]
    Io(#[from] io::Error),
}

impl From<ShmError> for io::Error {
    fn from(e: ShmError) -> Self {
        match e {
            ShmError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// A new, empty memfd (close-on-exec, sealable).
pub(crate) fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: plain memfd creation with a NUL-terminated name.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `seals` to a memfd.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The seals of `fd`; `None` if it cannot carry any (not a memfd).
fn seals(fd: BorrowedFd<'_>) -> io::Result<Option<libc::c_int>> {
    // SAFETY: fcntl on a descriptor we hold.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 {
        return Ok(Some(seals));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) {
        return Ok(None);
    }
    Err(e)
}

/// A sealed memfd holding `bytes`: its size and bytes are final.
pub(crate) fn sealed(bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = c"daemonic-payload";
    debug_assert_eq!(name.to_bytes(), PAYLOAD_NAME.as_bytes());
    let mut file = File::from(memfd(name)?);
    // One write(2) copies the bytes into the memfd's pages: cheaper than
    // faulting in a fresh mapping page by page.
    file.write_all(bytes)?;
    let fd = OwnedFd::from(file);
    add_seals(fd.as_fd(), FINAL)?;
    Ok(fd)
}

/// A received payload, checked and mapped read-only; unmapped (and its
/// descriptor closed) when dropped.
pub struct Mapping {
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the mapping is read-only and its memfd is sealed against writes:
// the bytes never change, so sharing or moving it between threads is safe.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Checks that `fd` is a memfd sealed against every change and holds
    /// exactly `announced` bytes (at most `max`), then maps it read-only.
    /// The descriptor is closed either way: the mapping keeps the memory.
    pub fn open(fd: OwnedFd, announced: u64, max: usize) -> Result<Mapping, ShmError> {
        let len = usize::try_from(announced)
            .ok()
            .filter(|&len| len <= max)
            .ok_or(ShmError::TooLarge {
                size: announced,
                max,
            })?;
        let stat = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
        let kind = stat.st_mode & libc::S_IFMT;
        if kind != libc::S_IFREG {
            return Err(ShmError::NotAFile(kind));
        }
        match seals(fd.as_fd())? {
            None => return Err(ShmError::NoSeals),
            Some(s) if s & REQUIRED != REQUIRED => return Err(ShmError::NotSealed(s)),
            Some(_) => {}
        }
        // Read after the seals: from here on, the size cannot change.
        let size = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?.st_size;
        let actual = u64::try_from(size).unwrap_or(u64::MAX);
        if actual != announced {
            return Err(ShmError::WrongSize { announced, actual });
        }
        if len == 0 {
            return Ok(Mapping { ptr: None, len: 0 });
        }
        // SAFETY: a read-only shared mapping of `len` bytes of a memfd that
        // holds exactly `len` bytes and can neither shrink nor be written
        // (checked above): no access through it can fault or see a change.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ShmError::Io(io::Error::last_os_error()));
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()),
            len,
        })
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `len` readable bytes, mapped until `self` is dropped,
            // never written (sealed).
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.len) },
            None => &[],
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: unmapping exactly what `open` mapped.
            unsafe { libc::munmap(ptr.as_ptr().cast(), self.len) };
        }
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} bytes)", self.len)
    }
}

/// A payload's bytes: in memory, or in a received mapping.
#[derive(Debug)]
pub enum Payload {
    /// Bytes that came in a frame.
    Inline(Vec<u8>),
    /// Bytes that came in a sealed memfd.
    Mapped(Mapping),
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline(bytes) => bytes,
            Payload::Mapped(mapping) => mapping,
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Inline(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 30;

    #[test]
    fn a_sealed_payload_maps_back_unchanged() {
        for len in [0usize, 1, 4095, 4096, 4097, 3 << 20] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let fd = sealed(&bytes).unwrap();
            let mapping = Mapping::open(fd, len as u64, MAX).unwrap();
            assert_eq!(&*mapping, &bytes[..], "{len} bytes");
        }
    }

    #[test]
    fn its_bytes_and_size_are_final() {
        let fd = sealed(b"final").unwrap();
        assert!(nix::unistd::ftruncate(&fd, 0).is_err());
        assert!(nix::unistd::ftruncate(&fd, 100).is_err());
        assert!(nix::sys::uio::pwrite(&fd, b"X", 0).is_err());
        assert!(add_seals(fd.as_fd(), 0).is_err(), "seals are sealed");
        // SAFETY: asking for a writable shared mapping, which must fail.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                5,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_eq!(ptr, libc::MAP_FAILED);
    }

    fn unsealed(bytes: &[u8]) -> OwnedFd {
        let mut file = File::from(memfd(c"test").unwrap());
        file.write_all(bytes).unwrap();
        file.into()
    }

    #[test]
    fn what_is_not_a_sealed_memfd_of_the_announced_size_is_refused() {
        let wrong = |fd: OwnedFd, len: u64| Mapping::open(fd, len, MAX).unwrap_err();
        let (read, _write) = nix::unistd::pipe().unwrap();
        assert!(matches!(wrong(read, 0), ShmError::NotAFile(_)));
        let dir = File::open("/").unwrap();
        assert!(matches!(wrong(dir.into(), 0), ShmError::NotAFile(_)));
        let temp = tempfile::tempfile().unwrap();
        assert!(matches!(wrong(temp.into(), 0), ShmError::NoSeals));
        assert!(matches!(wrong(unsealed(b"abc"), 3), ShmError::NotSealed(_)));
        // Sealed against shrinking only: its bytes may still change.
        let partly = unsealed(b"abc");
        add_seals(partly.as_fd(), libc::F_SEAL_SHRINK | libc::F_SEAL_GROW).unwrap();
        assert!(matches!(wrong(partly, 3), ShmError::NotSealed(_)));
        let fd = sealed(b"abc").unwrap();
        assert!(matches!(
            wrong(fd, 4),
            ShmError::WrongSize {
                announced: 4,
                actual: 3
            }
        ));
        let fd = sealed(b"abc").unwrap();
        assert!(matches!(
            Mapping::open(fd, 3, 2).unwrap_err(),
            ShmError::TooLarge { .. }
        ));
        let fd = sealed(b"").unwrap();
        assert!(matches!(
            Mapping::open(fd, u64::MAX, MAX).unwrap_err(),
            ShmError::TooLarge { .. }
        ));
    }

    #[test]
    fn a_shared_memory_object_the_peer_controls_is_refused() {
        // A /dev/shm object: a tmpfs file, sealed against new seals from
        // its birth, so it can never carry write seals.
        let name = format!("/dev/shm/daemonic-test-{}", std::process::id());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&name)
            .unwrap();
        let _ = std::fs::remove_file(&name);
        file.write_all(b"abc").unwrap();
        let refused = Mapping::open(file.into(), 3, MAX).unwrap_err();
        assert!(
            matches!(refused, ShmError::NotSealed(_) | ShmError::NoSeals),
            "{refused}"
        );
    }
}
