//! The fork server starts with glibc's `rseq` turned off through
//! `GLIBC_TUNABLES` (see `process/server.rs`): its children must still see
//! the daemon's own environment, with the caller's `GLIBC_TUNABLES` (or its
//! absence) and without the variable that carried it.

use daemonic::testing::{fork_server, ChildStart, EntryPoint, SpawnOptions, ENTRY_POINTS};
use std::io::{Read, Write};

/// `name=value` (or `name unset`) for each variable, one per line.
fn describe(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| match std::env::var_os(name) {
            Some(value) => format!("{name}={}\n", value.to_string_lossy()),
            None => format!("{name} unset\n"),
        })
        .collect()
}

const WATCHED: [&str; 2] = ["GLIBC_TUNABLES", "DAEMONIC_FORK_SERVER_TUNABLES"];

fn report_env(mut start: ChildStart) -> i32 {
    let _ = start.channel().write_all(describe(&WATCHED).as_bytes());
    0
}

#[linkme::distributed_slice(ENTRY_POINTS)]
static REPORT_ENV: EntryPoint = EntryPoint {
    name: "spawn_env::report_env",
    run: report_env,
};

fn child_env() -> String {
    let options = SpawnOptions {
        entry: "spawn_env::report_env".into(),
        role: "test:env".into(),
        ..Default::default()
    };
    let mut spawned = fork_server().spawn(&options).expect("spawn");
    let mut text = String::new();
    spawned
        .channel
        .read_to_string(&mut text)
        .expect("read the child's report");
    assert!(spawned.process.wait_blocking().expect("reap").success());
    text
}

#[test]
fn a_child_sees_the_daemons_own_glibc_tunables() {
    assert_eq!(child_env(), describe(&WATCHED));
}

/// Runs [`a_child_sees_the_daemons_own_glibc_tunables`] again in a copy of
/// this test binary whose environment sets `GLIBC_TUNABLES`.
#[test]
fn a_callers_glibc_tunables_reach_the_children_unchanged() {
    let own = "glibc.malloc.perturb=0";
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_child_sees_the_daemons_own_glibc_tunables",
            "--test-threads=1",
        ])
        .env("GLIBC_TUNABLES", own)
        .output()
        .expect("run the test binary");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the inner test did not run"
    );
}
