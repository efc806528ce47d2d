//! Security from outside (issue 9): the control channel's directory and peer
//! checks, pid and lock file ownership, and the privilege drop. Most cases
//! need root (to plant files owned by another user, or to drop to `nobody`);
//! CI runs as root, and they say so and pass trivially elsewhere.

use integration_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The uid and gid of `nobody`.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (CI runs as root)");
            return;
        }
    };
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn hello() -> std::path::PathBuf {
    example_bin("hello_world")
}

#[test]
fn a_planted_control_directory_is_refused() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o700);

    // Another user's directory where ours would be created.
    let planted = runtime.join("daemonic");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&planted, 0o755);
    let mut cmd = Command::new(hello());
    cmd.env("XDG_RUNTIME_DIR", &runtime)
        .args(["--interval", "0.05"]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "refusing control directory {}: it is owned by uid {NOBODY}",
            planted.display()
        )),
        "{out:?}"
    );
    assert!(
        !planted.join("hello_world").exists(),
        "nothing created in it"
    );

    // A symlink to a directory of ours is refused too.
    std::fs::remove_dir(&planted).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &planted).unwrap();
    let mut cmd = Command::new(hello());
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(out.stderr.contains("it is a symlink"), "{out:?}");
    assert!(!elsewhere.join("hello_world").exists());

    // And so is one of ours that others can write to.
    std::fs::remove_file(&planted).unwrap();
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o777);
    let mut cmd = Command::new(hello());
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(77), "{out:?}");
    assert!(
        out.stderr.contains("it is writable by group or other"),
        "{out:?}"
    );
}

#[test]
fn a_control_peer_with_another_uid_is_refused() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(hello());
    cmd.current_dir(dir.path()).args([
        "--pidfile",
        "h.pid",
        "--log-file",
        "h.log",
        "--interval",
        "0.05",
    ]);
    let _daemon = Daemon::spawn(cmd);
    let log = dir.path().join("h.log");
    let control = dir.path().join(".hello_world.control");
    let socket = control.join("control.sock");
    wait_for(DEADLINE, "the control socket", || socket.exists());
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);

    // An operator loosens the permissions by hand: only the daemon's own
    // check is left between another user and `stop`.
    chmod(dir.path(), 0o711);
    chmod(&control, 0o711);
    chmod(&socket, 0o666);
    for request in ["status", "stop"] {
        let mut cmd = Command::new(hello());
        cmd.current_dir(dir.path())
            .args(["--pidfile", "h.pid", request])
            .uid(NOBODY)
            .gid(NOBODY);
        let out = run_command(cmd);
        assert_eq!(out.exit.code(), Some(77), "{request}: {out:?}");
        assert!(
            out.stderr
                .contains("refused: uid 65534 may not use this daemon's control channel"),
            "{request}: {out:?}"
        );
    }
    wait_for_line(&log, "control channel: refused a connection from uid 65534");
    assert!(
        !read_lines(&log)
            .iter()
            .any(|l| l.contains("stop requested")),
        "the refused stop did nothing"
    );
    // Root still gets an answer.
    let mut cmd = Command::new(hello());
    cmd.current_dir(dir.path())
        .args(["--pidfile", "h.pid", "status"]);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
}
