//! A small deterministic generator of hostile inputs: valid encodings
//! mutated by bit flips, truncations, huge lengths, deep nesting and
//! splices, or plain random bytes. The same seed gives the same inputs on
//! every machine, so a failure in CI is replayed by its seed alone.

/// SplitMix64: tiny, fast, and good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is `0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Bytes that mean something to one of the decoders: zero, sign and
/// boundary values, and MessagePack markers (nil, bool, bin/str/array/map
/// headers of every width, ext types).
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x07, 0x0a, 0x1b, 0x7f, 0x80, 0x81, 0x90, 0x91, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc9, 0xcc, 0xcf, 0xd3, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xfe,
    0xff,
];

/// Lengths a hostile peer announces: the limits and one past them, the
/// largest values of every width, and sign bits.
fn huge(rng: &mut Rng) -> u64 {
    const MAX_FRAME: u64 = crate::ipc::MAX_FRAME as u64;
    let pick = [
        u64::MAX,
        u64::MAX - 1,
        i64::MAX as u64,
        1 << 63,
        u32::MAX as u64,
        u32::MAX as u64 - 1,
        i32::MAX as u64,
        1 << 31,
        u16::MAX as u64,
        MAX_FRAME,
        MAX_FRAME + 1,
        MAX_FRAME - 1,
        1 << 40,
        16 * 1024,
        16 * 1024 + 1,
        32 * 1024,
        rng.next_u64(),
    ];
    pick[rng.below(pick.len())]
}

/// One input for a target: most often a mutated seed, sometimes random
/// bytes. Never longer than `max_len`.
pub fn input(rng: &mut Rng, seeds: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = if seeds.is_empty() || rng.one_in(8) {
        let len = rng.below(max_len.min(256) + 1);
        rng.bytes(len)
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        mutate(rng, &mut data, seeds, max_len);
        data.truncate(max_len);
    }
    data.truncate(max_len);
    data
}

/// Applies one mutation to `data`, adding at most about `room` bytes.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>], room: usize) {
    let len = data.len();
    match rng.below(11) {
        // A bit flip.
        0 | 1 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        // A byte that means something.
        2 if len > 0 => {
            let at = rng.below(len);
            data[at] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // Truncation.
        3 if len > 0 => data.truncate(rng.below(len)),
        // A huge length of 1, 2, 4 or 8 bytes, in either byte order.
        4 | 5 => {
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let value = huge(rng);
            // The low `width` bytes of the value.
            let (le, be) = (value.to_le_bytes(), value.to_be_bytes());
            let bytes = if rng.one_in(2) {
                &le[..width]
            } else {
                &be[8 - width..]
            };
            let at = rng.below(len + 1);
            let end = (at + width).min(len);
            data.splice(at..end, bytes.iter().copied());
        }
        // Random bytes inserted.
        6 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes = rng.bytes(n);
            data.splice(at..at, bytes);
        }
        // A range removed.
        7 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below(len - at);
            data.drain(at..at + n);
        }
        // A range repeated: deep nesting when it is an array or map header.
        8 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(8));
            let times = [2usize, 16, 1000, 100_000][rng.below(4)];
            let piece = data[at..at + n].to_vec();
            let repeated: Vec<u8> = piece
                .iter()
                .copied()
                .cycle()
                .take((n * times).min(room))
                .collect();
            data.splice(at..at, repeated);
        }
        // Spliced with another seed.
        9 if !seeds.is_empty() => {
            let other = &seeds[rng.below(seeds.len())];
            let at = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        // Nested MessagePack containers.
        _ => {
            let depth = [8usize, 200, 5000, 100_000][rng.below(4)].min(room);
            let marker = [0x91u8, 0x81, 0xdc][rng.below(3)];
            let at = rng.below(len + 1);
            let nest: Vec<u8> = if marker == 0xdc {
                [0xdc, 0x00, 0x01].repeat(depth)
            } else {
                vec![marker; depth]
            };
            data.splice(at..at, nest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let seeds = vec![
            b"seed one".to_vec(),
            vec![0x92, 0x01, 0xc4, 0x02, 0xaa, 0xbb],
        ];
        let a: Vec<Vec<u8>> = {
            let mut rng = Rng::new(7);
            (0..100).map(|_| input(&mut rng, &seeds, 4096)).collect()
        };
        let mut rng = Rng::new(7);
        let b: Vec<Vec<u8>> = (0..100).map(|_| input(&mut rng, &seeds, 4096)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|i| i.len() <= 4096));
        assert!(a.iter().any(|i| i != &seeds[0] && i != &seeds[1]));
    }
}
