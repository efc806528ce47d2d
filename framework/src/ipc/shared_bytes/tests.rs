//! Unit tests of `SharedBytes` and its link scopes.

use super::link::*;
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
    let back: SharedBytes = decode(&bytes, Attachments::received(Vec::new(), usize::MAX)).unwrap();
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
    let encoded = encode_attaching(true, || rmp_serde::to_vec(&many).map_err(|e| e.to_string()));
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
