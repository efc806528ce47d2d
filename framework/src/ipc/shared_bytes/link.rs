//! The link's side of `SharedBytes`' serde: while a link's own code
//! encodes a value, the descriptors of its `SharedBytes` are collected
//! ([`encode_attaching`]); while it decodes one, they are taken back by
//! index ([`decode_attached`]). Nowhere else are these scopes open.

use super::{SharedBytes, MAX_SHARED_PER_VALUE};
use crate::ipc::shm::{self, ShmError};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

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
pub(super) const MAX_REFERENCES: usize = 1024;

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
pub(super) fn take_incoming(index: u32, len: u64) -> Result<SharedBytes, String> {
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

pub(super) fn decoding_attached() -> bool {
    INCOMING.with(|cell| cell.borrow().is_some())
}

/// In an encoding scope: the index `bytes`' descriptor takes among the
/// value's (`None`: no scope, plain bytes).
pub(super) fn attach_outgoing(bytes: &SharedBytes) -> Result<Option<u32>, String> {
    OUTGOING.with(|cell| {
        let mut outgoing = cell.borrow_mut();
        let Some(fds) = outgoing.as_mut() else {
            return Ok(None);
        };
        if fds.len() >= MAX_SHARED_PER_VALUE {
            return Err(format!(
                "the value holds more than {MAX_SHARED_PER_VALUE} SharedBytes"
            ));
        }
        let fd = bytes
            .share()
            .map_err(|e| format!("cannot share the SharedBytes' memfd: {e}"))?;
        let index = u32::try_from(fds.len()).map_err(|_| "too many SharedBytes".to_string())?;
        fds.push(fd);
        Ok(Some(index))
    })
}
