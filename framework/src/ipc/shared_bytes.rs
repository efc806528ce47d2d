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
use std::cell::RefCell;
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

// ---- serde, and the link's side of it ----

thread_local! {
    /// While a link encodes a value: the descriptors of its `SharedBytes`.
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// While a link decodes a value: the descriptors its frame carried,
    /// the largest `SharedBytes` accepted, and how many references may
    /// still be taken.
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// The descriptors of the `SharedBytes` in one encoded value, in the
/// order of their indices, and the largest `SharedBytes` a receiver takes
/// from them; `None`: the value was encoded as plain bytes (its link
/// carries no descriptors, or the caller is a remote pool's).
#[derive(Debug, Default)]
pub(crate) struct Attachments(Option<(Vec<OwnedFd>, usize)>);

impl Attachments {
    /// Plain bytes: no descriptors, and none expected back.
    pub(crate) fn plain() -> Attachments {
        Attachments(None)
    }

    /// Received: descriptors that came with a frame whose value was encoded
    /// with them (perhaps none); `SharedBytes` of up to `max` bytes are
    /// taken from them.
    pub(crate) fn received(fds: Vec<OwnedFd>, max: usize) -> Attachments {
        Attachments(Some((fds, max)))
    }

    fn fds(&self) -> &[OwnedFd] {
        self.0.as_ref().map_or(&[], |(fds, _)| fds)
    }

    /// Whether the value was encoded for a link that carries descriptors
    /// (its `SharedBytes` as descriptors, and so must its answer be).
    pub(crate) fn enabled(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.fds().len()
    }

    /// The descriptors, to send once.
    pub(crate) fn into_fds(self) -> Vec<OwnedFd> {
        self.0.map(|(fds, _)| fds).unwrap_or_default()
    }

    /// Copies of the descriptors, to send (the value may be sent again,
    /// to another worker, if this one never starts it).
    pub(crate) fn share(&self) -> io::Result<Vec<OwnedFd>> {
        self.fds().iter().map(|fd| fd.try_clone()).collect()
    }

    /// Checks each descriptor the way a `SharedBytes` will be checked
    /// before it is mapped: a memfd sealed against every change. A peer
    /// that sends anything else is broken (its link is dropped).
    pub(crate) fn check(&self) -> Result<(), ShmError> {
        for fd in self.fds() {
            shm::sealed_size(fd.as_fd())?;
        }
        Ok(())
    }
}

/// A value being decoded on a link: see [`decode_attached`].
struct Incoming {
    fds: Vec<OwnedFd>,
    max: usize,
    references_left: usize,
}

/// References one decoding may resolve: every `SharedBytes` of a value,
/// several times over for a deserializer that tries alternatives (an
/// untagged enum re-reads its content once per variant), and not so many
/// that a peer's frame of references keeps the daemon mapping for long.
const MAX_REFERENCES: usize = 1024;

/// Restores a thread-local's previous state when the (de)serialization
/// ends, panicking or not.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
    taken: Option<T>,
}

impl<T: 'static> Restore<T> {
    fn set(key: &'static std::thread::LocalKey<RefCell<Option<T>>>, value: Option<T>) -> Self {
        let previous = key.with(|cell| cell.replace(value));
        Restore {
            key,
            previous: Some(previous),
            taken: None,
        }
    }

    /// What the (de)serialization left, the previous state back.
    fn finish(mut self) -> Option<T> {
        self.restore();
        self.taken.take()
    }

    fn restore(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.taken = self.key.with(|cell| cell.replace(previous));
        }
    }
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Runs `encode` (a link's serde encoding of one value) with the value's
/// `SharedBytes` sent as descriptors if `attach`, as plain bytes if not.
pub(crate) fn encode_attaching<R>(
    attach: bool,
    encode: impl FnOnce() -> Result<R, String>,
) -> Result<(R, Attachments), String> {
    if !attach && OUTGOING.with(|cell| cell.borrow().is_none()) {
        // Plain bytes, and no scope to mask: nothing to set.
        return Ok((encode()?, Attachments::plain()));
    }
    let scope = Restore::set(&OUTGOING, attach.then(Vec::new));
    let encoded = encode();
    let fds = scope.finish();
    // (`SharedBytes::serialize` refuses the one over the limit.)
    let encoded = encoded?;
    // The sender's limit does not apply to what it sends.
    Ok((encoded, Attachments(fds.map(|fds| (fds, usize::MAX)))))
}

/// Runs `decode` (a link's serde decoding of one value) with the
/// descriptors its frame carried (and their size limit). They are closed
/// when it ends: the `SharedBytes` decoded hold copies.
pub(crate) fn decode_attached<R>(attached: Attachments, decode: impl FnOnce() -> R) -> R {
    if attached.0.is_none() && INCOMING.with(|cell| cell.borrow().is_none()) {
        // Plain bytes, and no scope to mask: nothing to set.
        return decode();
    }
    let incoming = attached.0.map(|(fds, max)| Incoming {
        fds,
        max,
        references_left: MAX_REFERENCES,
    });
    let scope = Restore::set(&INCOMING, incoming);
    let decoded = decode();
    drop(scope.finish());
    decoded
}

/// The `SharedBytes` of descriptor `index` of the frame being decoded (a
/// copy of the descriptor: a deserializer may read a value twice).
fn take_incoming(index: u32, len: u64) -> Result<SharedBytes, String> {
    INCOMING.with(|cell| {
        let mut incoming = cell.borrow_mut();
        let Some(incoming) = incoming.as_mut() else {
            return Err("a shared-bytes reference outside a link".to_string());
        };
        incoming.references_left = incoming
            .references_left
            .checked_sub(1)
            .ok_or_else(|| format!("more than {MAX_REFERENCES} shared-bytes references"))?;
        let fd = usize::try_from(index)
            .ok()
            .and_then(|i| incoming.fds.get(i))
            .ok_or_else(|| format!("shared bytes {index}: no such descriptor"))?
            .try_clone()
            .map_err(|e| format!("shared bytes {index}: {e}"))?;
        SharedBytes::receive(fd, len, incoming.max)
            .map_err(|e| format!("shared bytes {index}: {e}"))
    })
}

fn decoding_attached() -> bool {
    INCOMING.with(|cell| cell.borrow().is_some())
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = OUTGOING.with(|cell| -> Result<Option<u32>, String> {
            let mut outgoing = cell.borrow_mut();
            let Some(fds) = outgoing.as_mut() else {
                return Ok(None);
            };
            if fds.len() >= MAX_SHARED_PER_VALUE {
                return Err(format!(
                    "the value holds more than {MAX_SHARED_PER_VALUE} SharedBytes"
                ));
            }
            let fd = self
                .share()
                .map_err(|e| format!("cannot share the SharedBytes' memfd: {e}"))?;
            let index = u32::try_from(fds.len()).map_err(|_| "too many SharedBytes".to_string())?;
            fds.push(fd);
            Ok(Some(index))
        });
        match index {
            Ok(Some(index)) => (index, self.len() as u64).serialize(serializer),
            Ok(None) => serializer.serialize_bytes(self),
            Err(e) => Err(ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if decoding_attached() {
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
            return take_incoming(index, len).map_err(de::Error::custom);
        }
        // Bytes as a sequence of numbers (JSON and the like).
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(SharedBytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &impl Serialize, attach: bool) -> (Vec<u8>, Attachments) {
        encode_attaching(attach, || {
            rmp_serde::to_vec(value).map_err(|e| e.to_string())
        })
        .unwrap()
    }

    fn decode<T: serde::de::DeserializeOwned>(
        bytes: &[u8],
        attached: Attachments,
    ) -> Result<T, rmp_serde::decode::Error> {
        decode_attached(attached, || rmp_serde::from_slice(bytes))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn the_memfd_is_named_as_documented() {
        assert_eq!(SHARED_CNAME.to_bytes(), SHARED_NAME.as_bytes());
    }

    #[test]
    fn shared_bytes_cross_as_descriptors_and_map_the_same_pages() {
        for len in [0usize, 1, 4095, 4096, 4097, 1 << 20] {
            let mut buf = SharedBytesMut::new(len).unwrap();
            buf.copy_from_slice(&pattern(len));
            let value = (7u8, buf.freeze().unwrap(), "tail".to_string());
            let (bytes, attached) = encode(&value, true);
            assert_eq!(attached.len(), 1, "{len} bytes");
            // The frame holds a reference, not the bytes.
            assert!(bytes.len() < 32, "{len} bytes: {} encoded", bytes.len());
            let fds = attached.share().unwrap();
            let back: (u8, SharedBytes, String) =
                decode(&bytes, Attachments::received(fds, usize::MAX)).unwrap();
            assert_eq!(back, value);
            assert!(back.1.is_shared());
        }
    }

    #[test]
    fn outside_a_link_they_are_plain_bytes() {
        let value = SharedBytes::copy_from_slice(b"plain").unwrap();
        let (bytes, attached) = encode(&value, false);
        assert!(!attached.enabled());
        assert_eq!(
            bytes,
            rmp_serde::to_vec(&serde_bytes::Bytes::new(b"plain")).unwrap()
        );
        let back: SharedBytes = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(&back[..], b"plain");
        assert!(!back.is_shared());
        let json = serde_json::to_string(&value).unwrap();
        let back: SharedBytes = serde_json::from_str(&json).unwrap();
        assert_eq!(&back[..], b"plain");
        // A raw call's plain bytes decode on a link that carries descriptors.
        let back: SharedBytes =
            decode(&bytes, Attachments::received(Vec::new(), usize::MAX)).unwrap();
        assert_eq!(&back[..], b"plain");
        // And a `Vec` made into one is copied into a memfd on a link.
        let heap = SharedBytes::from(b"heap".to_vec());
        let (bytes, attached) = encode(&heap, true);
        let back: SharedBytes = decode(
            &bytes,
            Attachments::received(attached.share().unwrap(), usize::MAX),
        )
        .unwrap();
        assert!(back.is_shared());
        assert_eq!(back, heap);
    }

    fn received(attached: &Attachments) -> Attachments {
        Attachments::received(attached.share().unwrap(), usize::MAX)
    }

    #[test]
    fn a_reference_to_a_missing_or_wrong_descriptor_is_refused() {
        let one = SharedBytes::copy_from_slice(b"abc").unwrap();
        let (bytes, attached) = encode(&vec![one.clone(), one.clone()], true);
        assert_eq!(attached.len(), 2);
        // One descriptor short.
        let mut fds = attached.share().unwrap();
        fds.pop();
        let short = Attachments::received(fds, usize::MAX);
        assert!(decode::<Vec<SharedBytes>>(&bytes, short).is_err());
        // A length other than the memfd's.
        let wrong = rmp_serde::to_vec(&(0u32, 4u64)).unwrap();
        assert!(decode::<SharedBytes>(&wrong, received(&attached)).is_err());
        // A descriptor that is not a sealed memfd.
        let file: OwnedFd = tempfile::tempfile().unwrap().into();
        let not_sealed = Attachments::received(vec![file], usize::MAX);
        assert!(not_sealed.check().is_err());
        let right = rmp_serde::to_vec(&(0u32, 0u64)).unwrap();
        assert!(decode::<SharedBytes>(&right, not_sealed).is_err());
        // Over the receiver's limit.
        let limited = Attachments::received(attached.share().unwrap(), 2);
        let three = rmp_serde::to_vec(&(0u32, 3u64)).unwrap();
        assert!(decode::<SharedBytes>(&three, limited).is_err());
    }

    #[test]
    fn a_reference_read_twice_maps_the_same_memfd_but_not_endlessly() {
        let one = SharedBytes::copy_from_slice(b"abc").unwrap();
        let (_, attached) = encode(&one, true);
        let twice = rmp_serde::to_vec(&vec![(0u32, 3u64), (0u32, 3u64)]).unwrap();
        let back: Vec<SharedBytes> = decode(&twice, received(&attached)).unwrap();
        assert_eq!(back, vec![one.clone(), one]);
        let endless = rmp_serde::to_vec(&vec![(0u32, 3u64); MAX_REFERENCES + 1]).unwrap();
        assert!(decode::<Vec<SharedBytes>>(&endless, received(&attached)).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Either {
        Pair(SharedBytes, u64),
        Single(SharedBytes),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        maybe: Option<SharedBytes>,
        none: Option<SharedBytes>,
        either: Either,
        #[serde(flatten)]
        rest: std::collections::BTreeMap<String, SharedBytes>,
    }

    #[test]
    fn options_untagged_enums_and_flattened_maps_hold_them_too() {
        let bytes = |b: &[u8]| SharedBytes::copy_from_slice(b).unwrap();
        let value = Holder {
            maybe: Some(bytes(b"maybe")),
            none: None,
            either: Either::Single(bytes(b"single")),
            rest: [("extra".to_string(), bytes(b"extra"))].into(),
        };
        let (encoded, attached) = encode(&value, true);
        assert_eq!(attached.len(), 3);
        let back: Holder = decode(&encoded, received(&attached)).unwrap();
        assert_eq!(back, value);
        assert!(back.maybe.as_ref().is_some_and(SharedBytes::is_shared));
        // The same values as JSON: plain bytes.
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), value);
    }

    #[test]
    fn too_many_in_one_value_is_an_encoding_error() {
        let one = SharedBytes::copy_from_slice(b"x").unwrap();
        let many = vec![one; MAX_SHARED_PER_VALUE + 1];
        let encoded =
            encode_attaching(true, || rmp_serde::to_vec(&many).map_err(|e| e.to_string()));
        assert!(encoded.is_err());
    }

    /// Resident kilobytes of this process's mappings of `fd`'s inode.
    fn resident_kib(fd: &OwnedFd) -> u64 {
        let inode = nix::sys::stat::fstat(fd).unwrap().st_ino.to_string();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut mine = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields
                .first()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                mine = fields.get(4) == Some(&inode.as_str());
            } else if mine && fields.first() == Some(&"Rss:") {
                kib += fields[1].parse::<u64>().unwrap();
            }
        }
        kib
    }

    #[test]
    fn its_pages_are_mapped_on_the_first_access_to_its_bytes_all_at_once() {
        let len = 8 << 20;
        let value = SharedBytes::copy_from_slice(&vec![3u8; len]).unwrap();
        let Repr::Shared(region) = &value.repr else {
            panic!("in shared memory")
        };
        assert_eq!(resident_kib(&region.fd), 0, "mapped without its pages");
        assert_eq!((value.len(), value.is_empty()), (len, false));
        let (bytes, _) = encode(&value, true);
        assert!(bytes.len() < 32);
        assert_eq!(
            resident_kib(&region.fd),
            0,
            "its length and sending it touch none"
        );
        assert_eq!(value[len - 1], 3);
        if populate_supported() {
            let all = (len / 1024) as u64;
            assert_eq!(resident_kib(&region.fd), all, "one access maps them all");
        }
        // A sparse memfd is not: its holes would become pages.
        let sparse = SharedBytesMut::new(len).unwrap().freeze().unwrap();
        let Repr::Shared(region) = &sparse.repr else {
            panic!("in shared memory")
        };
        assert_eq!(sparse[len / 2], 0);
        assert!(
            resident_kib(&region.fd) < 1024,
            "{} KiB",
            resident_kib(&region.fd)
        );
    }

    /// `MADV_POPULATE_READ` exists on this kernel (5.14 and later).
    fn populate_supported() -> bool {
        // SAFETY: a private anonymous page, advised, then unmapped.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(page, libc::MAP_FAILED);
            let supported = libc::madvise(page, 4096, libc::MADV_POPULATE_READ) == 0;
            libc::munmap(page, 4096);
            supported
        }
    }

    #[test]
    fn frozen_bytes_are_final_for_everyone() {
        let mut buf = SharedBytesMut::new(5).unwrap();
        buf.copy_from_slice(b"final");
        let frozen = buf.freeze().unwrap();
        let fd = frozen.share().unwrap();
        assert!(nix::sys::uio::pwrite(&fd, b"X", 0).is_err());
        assert!(nix::unistd::ftruncate(&fd, 0).is_err());
        assert_eq!(shm::sealed_size(fd.as_fd()).unwrap(), 5);
    }
}
