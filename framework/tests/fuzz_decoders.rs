//! Property tests over every decoder of bytes another process writes
//! (`daemonic::fuzz`, feature `testing`): arbitrary bytes, truncations, bit
//! flips, huge announced lengths and deep nesting, generated from a fixed
//! seed so that CI runs the same bounded set of cases every time. A failure
//! prints the seed, the case and the input. The long runs are in
//! `framework/benches/fuzz.rs` (stable) and `fuzz/` (libFuzzer).

use daemonic::fuzz::{self, alloc::Tracking};

// Every allocation is recorded: a decoder that allocates from an announced
// length instead of the bytes that arrived fails its target.
#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Generated inputs per target, on top of its seeds.
const CASES: usize = 1500;
const SEED: u64 = 0x00da_e30c_f022;

fn check(name: &str) {
    let target = fuzz::targets()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    fuzz::check(&target, SEED, CASES);
}

#[test]
fn every_target_is_tested_here() {
    let source = include_str!("fuzz_decoders.rs");
    for target in fuzz::targets() {
        assert!(
            source.contains(&format!("fn {}()", target.name)),
            "no test for target {}",
            target.name
        );
    }
}

#[test]
fn stream_frames() {
    check("stream_frames");
}

#[test]
fn frame_with_fds() {
    check("frame_with_fds");
}

#[test]
fn link_with_fds() {
    check("link_with_fds");
}

#[test]
fn worker_frames() {
    check("worker_frames");
}

#[test]
fn payloads() {
    check("payloads");
}

#[test]
fn spawn_messages() {
    check("spawn_messages");
}

#[test]
fn spawn_recv_message() {
    check("spawn_recv_message");
}

#[test]
fn control_request() {
    check("control_request");
}

#[test]
fn control_reply() {
    check("control_reply");
}

#[test]
fn log_datagram() {
    check("log_datagram");
}

#[test]
fn log_socket() {
    check("log_socket");
}

#[test]
fn ipc_channel_message() {
    check("ipc_channel_message");
}

#[test]
fn ipc_channel_hello() {
    check("ipc_channel_hello");
}
