//! Bytes that cross a worker link without being copied: [`SharedBytes`]
//! lives in a sealed memfd, and a call or result that holds one sends the
//! memfd's descriptor with its frame (see `fds.rs`), never the bytes.
//!
//! Serde has no notion of descriptors, so the link's encoder and decoder
//! say, through this module's thread-local state, whether the value they
//! are (de)serializing travels on a link that carries them. There, a
//! `SharedBytes` is written as `(index, length)` — the index of its
//! descriptor among the frame's — and its descriptor is collected; the
//! receiver takes the descriptor back by its index, checks that it is a
//! memfd sealed against every change and of that length (`shm.rs`), and
//! maps it. Everywhere else (JSON, a remote pool's NATS messages, a pool
//! whose transport carries no descriptors, the user's own serde) it is
//! plain bytes.
//!
//! The state is only active while the link's own code runs serde (see
//! [`encode_attaching`] and [`decode_attached`]): a worker method that
//! serializes a `SharedBytes` for its own purposes gets bytes.

use super::shm::{self, Mapping, ShmError};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most `SharedBytes` one call's arguments, or one result, may hold (a
/// frame carries at most this many descriptors besides a large payload's).
pub const MAX_SHARED_PER_VALUE: usize = super::fds::MAX_FDS - 1;

/// Name of a `SharedBytes` memfd, as `/proc/<pid>/fd` and `/proc/<pid>/maps`
/// show it (`/memfd:daemonic-shared`).
pub const SHARED_NAME: &str = "daemonic-shared";

/// The memfd name, as `memfd_create` takes it.
const SHARED_CNAME: &std::ffi::CStr = c"daemonic-shared";

/// Immutable bytes in shared memory, sent to and from worker processes
/// without being copied.
///
/// A call's arguments and results are normally encoded into the frame
/// that carries them, and decoded into new values on the other side: an
/// echo of 64 MiB copies the bytes four times (see BENCHMARKS.md). A
/// `SharedBytes` in them travels as a descriptor instead: the receiver
/// maps the same pages read-only, and passing it on (returning it, or
/// sending it to another worker) passes the same pages again. Its memfd is
/// sealed against every change before it is first shared, so what a
/// receiver reads cannot change under it; it is freed with its last
/// descriptor and mapping, so a process that dies leaves nothing behind.
///
/// A received one is mapped without its pages (passing it on costs
/// nothing); the first access to its bytes maps them all at once.
///
/// Build one in place with [`SharedBytesMut`] (no copy at all), from a
/// slice with [`copy_from_slice`](Self::copy_from_slice) (one copy, into
/// the memfd), or from a `Vec<u8>` (no copy now; copied into a memfd each
/// time it is sent to a worker). It derefs to `[u8]`; clones share the
/// bytes.
///
/// Outside a worker link (JSON, a remote pool over NATS, a pool on the
/// `IpcChannel` transport, an inline pool) it serializes as plain bytes,
/// and deserializes from them into memory of its own.
///
/// ```
/// use daemonic::worker::{SharedBytes, SharedBytesMut};
///
/// #[daemonic::worker]
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Images;
///
/// #[daemonic::worker]
/// impl Images {
///     /// The image's bytes are mapped, not copied; so is the result.
///     pub fn invert(&mut self, image: SharedBytes) -> Result<SharedBytes, String> {
///         let mut out = SharedBytesMut::new(image.len()).map_err(|e| e.to_string())?;
///         for (o, i) in out.iter_mut().zip(image.iter()) {
///             *o = !i;
///         }
///         out.freeze().map_err(|e| e.to_string())
///     }
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut image = SharedBytesMut::new(4)?;
/// image.copy_from_slice(&[1, 2, 3, 4]);
/// let image: SharedBytes = image.freeze()?;
/// assert_eq!(&image[..], &[1, 2, 3, 4]);
/// // pool.send(images::Invert { image }).await
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedBytes {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// In a sealed memfd, mapped read-only.
    Shared(Arc<Region>),
    /// In this process's memory: decoded from plain bytes, or made from a
    /// `Vec`.
    Heap(Arc<Vec<u8>>),
}

/// A sealed memfd and its read-only mapping.
struct Region {
    fd: OwnedFd,
    mapping: Mapping,
    /// Whether its bytes were asked for yet (see [`Region::bytes`]).
    touched: AtomicBool,
}

impl Region {
    /// A sealed memfd of `len` bytes (checked), mapped without its pages:
    /// a value passed on unread costs no page table.
    fn map(fd: OwnedFd, len: usize) -> Result<Region, ShmError> {
        let mapping = Mapping::map(fd.as_fd(), len, false)?;
        Ok(Region {
            fd,
            mapping,
            touched: AtomicBool::new(false),
        })
    }

    /// The bytes; the first time, every page is mapped at once (reading a
    /// large value page fault by page fault costs about twice as much) —
    /// unless the memfd is sparse: mapping its holes would allocate pages a
    /// reader may never touch.
    fn bytes(&self) -> &[u8] {
        if !self.touched.load(Ordering::Relaxed) && !self.touched.swap(true, Ordering::Relaxed) {
            let allocated = nix::sys::stat::fstat(&self.fd)
                .map(|st| u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512));
            if allocated.is_ok_and(|bytes| bytes >= self.mapping.len() as u64) {
                self.mapping.populate();
            }
        }
        &self.mapping
    }
}

impl SharedBytes {
    /// A new sealed memfd holding a copy of `bytes`.
    ///
    /// # Errors
    /// The memfd cannot be created, written, sealed or mapped (out of
    /// descriptors or memory).
    pub fn copy_from_slice(bytes: &[u8]) -> io::Result<SharedBytes> {
        let sealed = shm::sealed_named(bytes, SHARED_CNAME)?;
        let len = sealed.len();
        let region = Region::map(sealed.into_fd(), len)?;
        Ok(SharedBytes {
            repr: Repr::Shared(Arc::new(region)),
        })
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.repr {
            Repr::Shared(region) => region.bytes(),
            Repr::Heap(bytes) => bytes,
        }
    }

    /// Its length (without touching its pages).
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Shared(region) => region.mapping.len(),
            Repr::Heap(bytes) => bytes.len(),
        }
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether its bytes are in shared memory (they cross a worker link as
    /// a descriptor); `false`: in this process's own memory (they are
    /// copied into a memfd when sent to a worker).
    pub fn is_shared(&self) -> bool {
        matches!(self.repr, Repr::Shared(_))
    }

    /// Its bytes in a new `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// A descriptor of its sealed memfd to send, made first if its bytes
    /// are in this process's memory.
    fn share(&self) -> io::Result<OwnedFd> {
        match &self.repr {
            Repr::Shared(region) => region.fd.try_clone(),
            Repr::Heap(bytes) => Ok(shm::sealed_named(bytes, SHARED_CNAME)?.into_fd()),
        }
    }

    /// The `SharedBytes` whose sealed memfd `fd` is, if it holds exactly
    /// `len` bytes (at most `max`).
    fn receive(fd: OwnedFd, len: u64, max: usize) -> Result<SharedBytes, ShmError> {
        let len = shm::checked_len(fd.as_fd(), len, max)?;
        Ok(SharedBytes {
            repr: Repr::Shared(Arc::new(Region::map(fd, len)?)),
        })
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::borrow::Borrow<[u8]> for SharedBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for SharedBytes {
    /// Takes the `Vec` as it is: its bytes are copied into a sealed memfd
    /// each time the value is sent to a worker.
    fn from(bytes: Vec<u8>) -> Self {
        SharedBytes {
            repr: Repr::Heap(Arc::new(bytes)),
        }
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl PartialEq<[u8]> for SharedBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.is_shared() { "shared" } else { "heap" };
        write!(f, "SharedBytes({} bytes, {place})", self.len())
    }
}

/// A new memfd mapped read-write, to build a [`SharedBytes`] in place
/// without a copy; [`freeze`](Self::freeze) seals it.
///
/// It starts zeroed; pages are allocated as they are written.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let mut buf = daemonic::worker::SharedBytesMut::new(3)?;
/// buf.copy_from_slice(b"abc");
/// let bytes = buf.freeze()?;
/// assert_eq!(&bytes[..], b"abc");
/// # Ok(())
/// # }
/// ```
pub struct SharedBytesMut {
    /// Taken by `freeze`.
    fd: Option<OwnedFd>,
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the writable mapping is this value's alone (nobody else holds the
// memfd until `freeze` seals it), like a `Vec`'s buffer.
unsafe impl Send for SharedBytesMut {}
// SAFETY: as above; `&SharedBytesMut` only reads.
unsafe impl Sync for SharedBytesMut {}

impl SharedBytesMut {
    /// A zeroed buffer of `len` bytes in a new memfd.
    ///
    /// # Errors
    /// The memfd cannot be created, sized or mapped.
    pub fn new(len: usize) -> io::Result<SharedBytesMut> {
        let fd = shm::memfd(SHARED_CNAME)?;
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large"))?;
        nix::unistd::ftruncate(&fd, size).map_err(io::Error::from)?;
        if len == 0 {
            return Ok(SharedBytesMut {
                fd: Some(fd),
                ptr: None,
                len,
            });
        }
        // SAFETY: a shared read-write mapping of the `len` bytes the memfd
        // holds; nobody else holds the memfd, so nothing shrinks it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A child forked meanwhile (a library's `fork`) must not inherit the
        // writable mapping: it would keep `freeze` from sealing.
        // SAFETY: advice on exactly the range just mapped.
        unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) };
        Ok(SharedBytesMut {
            fd: Some(fd),
            ptr: NonNull::new(ptr.cast()),
            len,
        })
    }

    /// Seals the bytes as they are (no copy) and makes them a
    /// [`SharedBytes`].
    ///
    /// # Errors
    /// The memfd cannot be sealed or mapped again.
    pub fn freeze(mut self) -> io::Result<SharedBytes> {
        // A write seal needs every writable mapping gone first.
        self.unmap();
        let fd = self.fd.take().ok_or(io::ErrorKind::NotFound)?;
        shm::add_seals(fd.as_fd(), shm::FINAL)?;
        // Sealed: its size is final now; check it is still ours.
        let len = shm::checked_len(fd.as_fd(), self.len as u64, usize::MAX)?;
        let region = Region::map(fd, len)?;
        Ok(SharedBytes {
            repr: Repr::Shared(Arc::new(region)),
        })
    }

    fn unmap(&mut self) {
        if let Some(ptr) = self.ptr.take() {
            // SAFETY: unmapping exactly what `new` mapped, once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), self.len) };
        }
    }
}

impl std::ops::Deref for SharedBytesMut {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `len` bytes mapped until `self` is dropped or frozen.
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.len) },
            None => &[],
        }
    }
}

impl std::ops::DerefMut for SharedBytesMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self.ptr {
            // SAFETY: `len` writable bytes mapped until `self` is dropped or
            // frozen, reachable only through `self`.
            Some(ptr) => unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len) },
            None => &mut [],
        }
    }
}

impl Drop for SharedBytesMut {
    fn drop(&mut self) {
        self.unmap();
    }
}

impl fmt::Debug for SharedBytesMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytesMut({} bytes)", self.len)
    }
}

mod link;
#[cfg(test)]
mod tests;

pub(crate) use link::{decode_attached, encode_attaching, Attachments};

// ---- serde: plain bytes, or a reference on a link (see `link.rs`) ----

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = link::attach_outgoing(self);
        match index {
            Ok(Some(index)) => (index, self.len() as u64).serialize(serializer),
            Ok(None) => serializer.serialize_bytes(self),
            Err(e) => Err(ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if link::decoding_attached() {
            // The link's own encoding (rmp-serde) describes itself: a
            // reference is a pair, plain bytes (a raw call's) are bytes.
            deserializer.deserialize_any(SharedVisitor { attached: true })
        } else {
            deserializer.deserialize_byte_buf(SharedVisitor { attached: false })
        }
    }
}

struct SharedVisitor {
    attached: bool,
}

impl<'de> Visitor<'de> for SharedVisitor {
    type Value = SharedBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes, or a shared-bytes reference")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<SharedBytes, E> {
        Ok(SharedBytes::from(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<SharedBytes, E> {
        Ok(SharedBytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SharedBytes, A::Error> {
        if self.attached {
            let index: u32 = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            let len: u64 = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(1, &self))?;
            if seq.next_element::<de::IgnoredAny>()?.is_some() {
                return Err(de::Error::invalid_length(3, &self));
            }
            return link::take_incoming(index, len).map_err(de::Error::custom);
        }
        // Bytes as a sequence of numbers (JSON and the like).
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(SharedBytes::from(bytes))
    }
}
