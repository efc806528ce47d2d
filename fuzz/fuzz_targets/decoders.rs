//! Every target of `daemonic::fuzz` behind one libFuzzer entry point:
//! `DAEMONIC_FUZZ_TARGET=<name>` picks one, else the first byte of each input
//! does (libFuzzer learns which values reach new code).
//!
//! ```text
//! cargo +nightly fuzz run decoders corpus/all -- -max_total_time=3600
//! DAEMONIC_FUZZ_TARGET=worker_frames cargo +nightly fuzz run decoders corpus/worker_frames
//! ```
#![no_main]

use daemonic::fuzz::Target;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn targets() -> &'static (Vec<Target>, Option<usize>) {
    static TARGETS: OnceLock<(Vec<Target>, Option<usize>)> = OnceLock::new();
    TARGETS.get_or_init(|| {
        let all = daemonic::fuzz::targets();
        let only = std::env::var("DAEMONIC_FUZZ_TARGET").ok().map(|name| {
            all.iter()
                .position(|t| t.name == name)
                .unwrap_or_else(|| panic!("no target {name}"))
        });
        (all, only)
    })
}

fuzz_target!(|data: &[u8]| {
    let (all, only) = targets();
    let (target, input) = match only {
        Some(i) => (&all[*i], data),
        None => match data.split_first() {
            Some((which, rest)) => (&all[usize::from(*which) % all.len()], rest),
            None => return,
        },
    };
    if input.len() <= target.max_len {
        target.run(input);
    }
});
