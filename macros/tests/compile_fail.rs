//! Pins the errors users see when they misuse `#[worker]` and `#[task]`.
//!
//! The expected `.stderr` files depend on the compiler version; regenerate
//! them with `TRYBUILD=overwrite cargo test -p daemonic-macros --test compile_fail`
//! after a toolchain upgrade and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
