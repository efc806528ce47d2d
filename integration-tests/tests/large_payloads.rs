//! Black-box test of the `large_payloads` example: the real binary, run to
//! its end, read from its output. Large `ByteBuf`s spill into memfds past
//! the threshold; `SharedBytes` never spill (a descriptor crosses instead),
//! and the worker shows the caller's memfd mapped read-only and its own
//! result's memfd mapped read-write, at every size.

use integration_tests::*;

#[test]
fn shared_bytes_cross_as_descriptors_and_large_byte_bufs_spill() {
    let finished = run(&example_bin("large_payloads"), ["--threshold", "262144"]);
    let out = &finished.stdout;
    assert_eq!(
        finished.exit.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        finished.stderr
    );
    // 1 KiB and 200 KiB in the frame; 1 MiB and 32 MiB spill both ways.
    let spilled: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("payloads through shared memory so far: ").nth(1))
        .collect();
    assert_eq!(spilled, ["0", "0", "2", "4"], "{out}");
    let shared: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("the result is in shared memory: true; payloads spilled: 0"))
        .collect();
    assert_eq!(shared.len(), 4, "{out}");
    let read_only = out
        .lines()
        .filter(|l| l.contains(" r--s ") && l.contains("memfd:daemonic-shared"))
        .count();
    let writable = out
        .lines()
        .filter(|l| l.contains(" rw-s ") && l.contains("memfd:daemonic-shared"))
        .count();
    assert_eq!((read_only, writable), (4, 4), "{out}");
}
