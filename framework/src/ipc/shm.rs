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

use super::shared_bytes::Attachments;

/// Name of a payload's memfd, as `/proc/<pid>/fd` and `/proc/<pid>/maps`
/// show it (`/memfd:daemonic-payload`).
pub const PAYLOAD_NAME: &str = "daemonic-payload";

/// Seals that make a memfd's size and bytes final.
pub(crate) const FINAL: libc::c_int =
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

/// A memfd sealed against every change, and its length.
#[derive(Debug)]
pub(crate) struct Sealed {
    fd: OwnedFd,
    len: usize,
}

impl Sealed {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A descriptor of it to send (the bytes are final: any number of
    /// receivers may map it, and the sender may send it again).
    pub(crate) fn share(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Its descriptor.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Its bytes, read back.
    pub(crate) fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; self.len];
        let mut at = 0;
        while at < self.len {
            match nix::sys::uio::pread(&self.fd, &mut bytes[at..], at as libc::off_t) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(bytes)
    }
}

fn new_payload_memfd() -> io::Result<File> {
    let name = c"daemonic-payload";
    debug_assert_eq!(name.to_bytes(), PAYLOAD_NAME.as_bytes());
    Ok(File::from(memfd(name)?))
}

fn seal(file: File, len: usize) -> io::Result<Sealed> {
    let fd = OwnedFd::from(file);
    add_seals(fd.as_fd(), FINAL)?;
    Ok(Sealed { fd, len })
}

/// A sealed memfd holding `bytes`: its size and bytes are final.
pub(crate) fn sealed(bytes: &[u8]) -> io::Result<Sealed> {
    sealed_named(bytes, c"daemonic-payload")
}

/// A sealed memfd named `name` holding `bytes`.
pub(crate) fn sealed_named(bytes: &[u8], name: &CStr) -> io::Result<Sealed> {
    let mut file = File::from(memfd(name)?);
    // One write(2) copies the bytes into the memfd's pages: cheaper than
    // faulting in a fresh mapping page by page.
    file.write_all(bytes)?;
    seal(file, bytes.len())
}

/// A value encoded for a link: in memory, or in a sealed memfd.
#[derive(Debug)]
pub(crate) enum Encoded {
    Inline(Vec<u8>),
    Shared(Sealed),
}

impl Encoded {
    pub(crate) fn len(&self) -> usize {
        match self {
            Encoded::Inline(bytes) => bytes.len(),
            Encoded::Shared(sealed) => sealed.len(),
        }
    }
}

/// Encodes `value` (rmp-serde) in memory, or, once the encoding reaches
/// `threshold` bytes, straight into a sealed memfd: a large payload is
/// copied once, into the memfd's pages, with no buffer of its size on the
/// way (its allocation, in fresh pages, costs as much as the copy). With
/// `attach`, the [`SharedBytes`](super::shared_bytes::SharedBytes) in it
/// are sent as descriptors (returned), not as bytes.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(
    value: &T,
    threshold: Option<usize>,
    attach: bool,
) -> Result<(Encoded, Attachments), String> {
    let mut spill = Spill {
        // A small value is encoded without growing the buffer step by step.
        buf: Vec::with_capacity(crate::worker::protocol::FIRST_CAPACITY),
        threshold,
        file: None,
        len: 0,
    };
    let ((), attached) = super::shared_bytes::encode_attaching(attach, || {
        rmp_serde::encode::write(&mut spill, value).map_err(|e| e.to_string())
    })?;
    let encoded = match spill.file {
        None => Encoded::Inline(spill.buf),
        Some(file) => Encoded::Shared(
            seal(file, spill.len).map_err(|e| format!("cannot seal the payload: {e}"))?,
        ),
    };
    Ok((encoded, attached))
}

/// Bytes in memory until they reach the threshold, then in a memfd.
struct Spill {
    buf: Vec<u8>,
    threshold: Option<usize>,
    file: Option<File>,
    len: usize,
}

impl Write for Spill {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.threshold.is_some_and(|t| self.len + data.len() >= t) {
            match new_payload_memfd() {
                Ok(mut file) => {
                    file.write_all(&self.buf)?;
                    self.buf = Vec::new();
                    self.file = Some(file);
                }
                // No memfd to be had (out of descriptors): the payload stays
                // in memory and goes in its frame, as a small one does.
                Err(_) => self.threshold = None,
            }
        }
        match &mut self.file {
            Some(file) => file.write_all(data)?,
            None => self.buf.extend_from_slice(data),
        }
        self.len += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        let len = checked_len(fd.as_fd(), announced, max)?;
        Mapping::map(fd.as_fd(), len, true)
    }

    /// Maps the first `len` bytes of a memfd checked by [`checked_len`]
    /// read-only; with `populate`, every page at once (the bytes are about
    /// to be read), else page by page as they are touched.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize, populate: bool) -> Result<Mapping, ShmError> {
        if len == 0 {
            return Ok(Mapping { ptr: None, len: 0 });
        }
        let flags = if populate {
            libc::MAP_SHARED | libc::MAP_POPULATE
        } else {
            libc::MAP_SHARED
        };
        // SAFETY: a read-only shared mapping of `len` bytes of a memfd that
        // holds exactly `len` bytes and can neither shrink nor be written
        // (checked by `checked_len`): no access through it can fault or see
        // a change.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                flags,
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
    /// Maps every page of it now, in one system call, where a first read
    /// would fault them in 64 KiB at a time (about half the cost of reading
    /// a large mapping). Best effort: kernels before 5.14 lack it, and then
    /// the pages come as they are read.
    pub(crate) fn populate(&self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: advice on exactly the range this value maps; it
            // changes no byte and no protection.
            unsafe { libc::madvise(ptr.as_ptr().cast(), self.len, libc::MADV_POPULATE_READ) };
        }
    }
}

/// The size of `fd` if it is a memfd sealed against every change (its size
/// and bytes are final); why not otherwise.
pub(crate) fn sealed_size(fd: BorrowedFd<'_>) -> Result<u64, ShmError> {
    let stat = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    let kind = stat.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG {
        return Err(ShmError::NotAFile(kind));
    }
    match seals(fd)? {
        None => return Err(ShmError::NoSeals),
        Some(s) if s & REQUIRED != REQUIRED => return Err(ShmError::NotSealed(s)),
        Some(_) => {}
    }
    // Read after the seals: from here on, the size cannot change.
    let size = nix::sys::stat::fstat(fd).map_err(io::Error::from)?.st_size;
    Ok(u64::try_from(size).unwrap_or(u64::MAX))
}

/// Checks that `fd` is a sealed memfd of exactly `announced` bytes, at most
/// `max`: its length.
pub(crate) fn checked_len(
    fd: BorrowedFd<'_>,
    announced: u64,
    max: usize,
) -> Result<usize, ShmError> {
    let len = usize::try_from(announced)
        .ok()
        .filter(|&len| len <= max)
        .ok_or(ShmError::TooLarge {
            size: announced,
            max,
        })?;
    let actual = sealed_size(fd)?;
    if actual != announced {
        return Err(ShmError::WrongSize { announced, actual });
    }
    Ok(len)
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
pub enum Body {
    /// Bytes that came in a frame.
    Inline(Vec<u8>),
    /// Bytes that came in a sealed memfd.
    Mapped(Mapping),
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Inline(bytes) => bytes,
            Body::Mapped(mapping) => mapping,
        }
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
            let fd = sealed(&bytes).unwrap().share().unwrap();
            let mapping = Mapping::open(fd, len as u64, MAX).unwrap();
            assert_eq!(&*mapping, &bytes[..], "{len} bytes");
        }
    }

    #[test]
    fn an_encoding_spills_into_a_memfd_at_the_threshold() {
        let value = serde_bytes::ByteBuf::from(vec![9u8; 1000]);
        let plain = rmp_serde::to_vec(&value).unwrap();
        let n = plain.len();
        for (threshold, shared) in [
            (None, false),
            (Some(n + 1), false),
            (Some(n), true),
            (Some(0), true),
        ] {
            let (encoded, attached) = encode(&value, threshold, false).unwrap();
            assert!(!attached.enabled());
            assert_eq!(encoded.len(), n);
            let bytes = match encoded {
                Encoded::Inline(bytes) => {
                    assert!(!shared, "{threshold:?}");
                    bytes
                }
                Encoded::Shared(sealed) => {
                    assert!(shared, "{threshold:?}");
                    let copy = sealed.to_vec().unwrap();
                    let mapped = Mapping::open(sealed.share().unwrap(), n as u64, MAX).unwrap();
                    assert_eq!(&*mapped, &copy[..]);
                    copy
                }
            };
            assert_eq!(bytes, plain);
        }
    }

    #[test]
    fn its_bytes_and_size_are_final() {
        let fd = sealed(b"final").unwrap().share().unwrap();
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
        let fd = sealed(b"abc").unwrap().share().unwrap();
        assert!(matches!(
            wrong(fd, 4),
            ShmError::WrongSize {
                announced: 4,
                actual: 3
            }
        ));
        let fd = sealed(b"abc").unwrap().share().unwrap();
        assert!(matches!(
            Mapping::open(fd, 3, 2).unwrap_err(),
            ShmError::TooLarge { .. }
        ));
        let fd = sealed(b"").unwrap().share().unwrap();
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
