//! A guide from a first daemon to workers, tasks, plugins and deployment,
//! in 30 minutes. The same text is `docs/guide.md` in the repository; every
//! Rust snippet in it is compiled as a doctest of this crate.
#![doc = include_str!("../../docs/guide.md")]
