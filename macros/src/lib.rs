//! Procedural macros for daemonic (`#[worker]`, `#[task]`), re-exported by the
//! `daemonic` crate. Use them through `daemonic`, not directly.
